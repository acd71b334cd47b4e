// classy_fast::reduce_loss_rows on CUDA: one single-block launch sums the per-row losses of a
// cross-entropy op and counts the rows that count (index targets != ignore_index), then writes
// the sum or the mean and the count. It replaces the four launches (sum, ne, sum, div) a
// torch-level reduction costs; at C = 1000 a loss step is bound by launches, not bytes.
// Deterministic: a fixed per-thread stride and a fixed shuffle tree, no atomics.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "classy_fast/cross_entropy_checks.h"
#include "classy_fast/cuda/reduce.cuh"

namespace classy_fast::cuda {
namespace {

using at::Tensor;

constexpr int kThreads = 512;  // the rows are a few thousand per step: one block loops over them
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block_allreduce needs whole warps");

struct SumCount {
  float sum;
  int count;

  static __device__ __forceinline__ SumCount identity() { return {0.f, 0}; }
  __device__ __forceinline__ void merge(const SumCount& o) {
    sum += o.sum;
    count += o.count;
  }
  __device__ __forceinline__ SumCount shfl_xor(int m) const {
    return {__shfl_xor_sync(kFullWarpMask, sum, m), __shfl_xor_sync(kFullWarpMask, count, m)};
  }
};

__global__ void __launch_bounds__(kThreads)
    reduce_loss_rows_kernel(const float* rows, int64_t rows_stride, int64_t n, const int64_t* labels,
                            int64_t labels_stride, int64_t ignore_index, bool mean, float* loss, float* counted) {
  SumCount acc = SumCount::identity();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    // Both loads issued before either is used (no dependent second latency); a select, not a
    // branch around the add, so an ignored row's value (even NaN) never reaches the sum.
    const float r = rows[i * rows_stride];
    const bool keep = labels == nullptr || labels[i * labels_stride] != ignore_index;
    acc.sum += keep ? r : 0.f;
    acc.count += keep ? 1 : 0;
  }
  acc = block_allreduce(acc);
  if (threadIdx.x == 0) {
    const float count = static_cast<float>(acc.count);
    *loss = mean ? acc.sum / count : acc.sum;  // 0 / 0 = nan for no counted row, like torch
    *counted = count;
  }
}

std::tuple<Tensor, Tensor> reduce_loss_rows(const Tensor& row_loss, const std::optional<Tensor>& target,
                                            int64_t ignore_index, bool mean) {
  constexpr const char* op = "classy_fast::reduce_loss_rows";
  ce::check_loss_rows(row_loss, target, op);
  TORCH_CHECK(row_loss.is_cuda(), op, ": row_loss must be a CUDA tensor here, got ", row_loss.device());
  TORCH_CHECK(row_loss.size(0) < (int64_t{1} << 31), op, ": too many rows (", row_loss.size(0), ")");
  const bool has_target = target.has_value() && target->defined();
  const c10::cuda::CUDAGuard guard(row_loss.device());
  Tensor loss = at::empty({}, row_loss.options());
  Tensor counted = at::empty({}, row_loss.options());
  reduce_loss_rows_kernel<<<1, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      row_loss.const_data_ptr<float>(), row_loss.stride(0), row_loss.size(0),
      has_target ? target->const_data_ptr<int64_t>() : nullptr, has_target ? target->stride(0) : 0, ignore_index,
      mean, loss.data_ptr<float>(), counted.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, counted};
}

}  // namespace
}  // namespace classy_fast::cuda

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("reduce_loss_rows", &classy_fast::cuda::reduce_loss_rows); }
