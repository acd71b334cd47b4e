// classy_fast::reduce_loss_rows on CPU: the 'mean' / 'sum' reduction of the per-row losses of the
// cross-entropy ops, with the number of rows that count (index targets != ignore_index) computed
// in the same pass. It replaces four torch ops (sum, ne, sum, div) in the loss ops'
// forward; the CUDA kernel (csrc/cuda/reduce_loss_rows.cu) does the same in one launch.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "classy_fast/cross_entropy_checks.h"

namespace classy_fast::cpu {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> reduce_loss_rows(const Tensor& row_loss, const std::optional<Tensor>& target,
                                            int64_t ignore_index, bool mean) {
  constexpr const char* op = "classy_fast::reduce_loss_rows";
  ce::check_loss_rows(row_loss, target, op);
  TORCH_CHECK(row_loss.device().is_cpu(), op, ": row_loss must be a CPU tensor here, got ", row_loss.device());
  const bool has_target = target.has_value() && target->defined();
  const int64_t n = row_loss.size(0);
  const float* rows = row_loss.const_data_ptr<float>();
  const int64_t rows_stride = row_loss.stride(0);
  const int64_t* labels = has_target ? target->const_data_ptr<int64_t>() : nullptr;
  const int64_t labels_stride = has_target ? target->stride(0) : 0;
  // Double accumulation: a few thousand rows at most per step, and the result stays within
  // rounding of torch's (pairwise fp32) sum whatever the batch size.
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (labels != nullptr && labels[i * labels_stride] == ignore_index) continue;
    sum += rows[i * rows_stride];
    ++count;
  }
  Tensor loss = at::empty({}, row_loss.options());
  Tensor counted = at::empty({}, row_loss.options());
  // 0 / 0 = nan for a batch with no counted row, like F.cross_entropy.
  *loss.data_ptr<float>() = static_cast<float>(mean ? sum / static_cast<double>(count) : sum);
  *counted.data_ptr<float>() = static_cast<float>(count);
  return {loss, counted};
}

}  // namespace
}  // namespace classy_fast::cpu

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("reduce_loss_rows", &classy_fast::cpu::reduce_loss_rows); }
