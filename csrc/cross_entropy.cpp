// CPU kernels of the fused cross-entropy ops: argument checks, output allocation, row
// parallelism (at::parallel_for) and the choice of ISA for the row kernels
// (csrc/cpu/cross_entropy_row_kernels.h). Schemas: csrc/registration.cpp.
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "classy_fast/cross_entropy_checks.h"
#include "cpu/cross_entropy_row_kernels.h"

namespace classy_fast::cpu {
namespace {

using at::Tensor;

const CrossEntropyRowKernels& row_kernels() {
  // ATen's capability reflects the CPU and the ATEN_CPU_CAPABILITY override; AVX512 machines
  // run the AVX2 rows (ATen would too for most reductions).
  static const CrossEntropyRowKernels& table = []() -> const CrossEntropyRowKernels& {
    const std::string cap = at::get_cpu_capability();
    const CrossEntropyRowKernels* avx2 = cross_entropy_row_kernels_avx2();
    if (avx2 != nullptr && (cap == "AVX2" || cap == "AVX512")) return *avx2;
    return cross_entropy_row_kernels_default();
  }();
  return table;
}

ElemType elem_type(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ElemType::kFloat;
    case at::kBFloat16:
      return ElemType::kBFloat16;
    case at::kHalf:
      return ElemType::kHalf;
    default:
      TORCH_CHECK(false, "classy_fast: unsupported logits dtype ", t.scalar_type());
  }
}

void check_cpu(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor here, got ", t.device());
}

// Rows per task: enough work (~32k elements) to amortise a task, at least one row.
int64_t row_grain(int64_t num_classes) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, num_classes));
}

template <typename Args>
void run_rows(void (*fn)(const Args&, int64_t, int64_t), const Args& args, int64_t rows, int64_t num_classes) {
  if (rows == 0) return;
  at::parallel_for(0, rows, row_grain(num_classes), [&](int64_t begin, int64_t end) { fn(args, begin, end); });
}

// ---- hard targets (index and mixup) ----

struct HardInputs {
  Tensor logits, target_a, target_b;
  HardTargetRows rows;
};

HardInputs prepare_hard(const Tensor& logits_in, const Tensor& target_a, const Tensor* target_b, const Tensor* lam,
                        double label_smoothing, bool has_ignore, int64_t ignore_index, const char* op) {
  ce::check_logits(logits_in, op);
  check_cpu(logits_in, op, "logits");
  ce::check_label_smoothing(label_smoothing, op);
  HardInputs in;
  in.logits = ce::with_unit_column_stride(logits_in);
  const int64_t B = in.logits.size(0), C = in.logits.size(1);
  ce::check_index_target(target_a, in.logits, op, target_b ? "target_a" : "target");
  in.target_a = target_a.contiguous();
  ce::check_labels_in_range(in.target_a.data_ptr<int64_t>(), B, C, has_ignore, ignore_index, op,
                            target_b ? "target_a" : "target");
  HardTargetRows& r = in.rows;
  if (target_b != nullptr) {
    ce::check_index_target(*target_b, in.logits, op, "target_b");
    in.target_b = target_b->contiguous();
    ce::check_labels_in_range(in.target_b.data_ptr<int64_t>(), B, C, false, 0, op, "target_b");
    r.target_b = in.target_b.data_ptr<int64_t>();
    ce::check_lam(*lam, in.logits, op);
    r.lam = lam->item<float>();  // a CPU tensor: reading it is no sync
  }
  r.logits = in.logits.data_ptr();
  r.logits_row_stride = in.logits.stride(0);
  r.dtype = elem_type(in.logits);
  r.num_classes = C;
  r.target_a = in.target_a.data_ptr<int64_t>();
  r.has_ignore_index = has_ignore;
  r.ignore_index = ignore_index;
  r.label_smoothing = static_cast<float>(label_smoothing);
  return in;
}

std::tuple<Tensor, Tensor> hard_forward(HardInputs in) {
  const int64_t B = in.logits.size(0), C = in.logits.size(1);
  Tensor loss = at::empty({B}, in.logits.options().dtype(at::kFloat));
  Tensor lse = at::empty({B}, in.logits.options().dtype(at::kFloat));
  in.rows.loss = loss.data_ptr<float>();
  in.rows.lse = lse.data_ptr<float>();
  run_rows(row_kernels().hard_forward, in.rows, B, C);
  return {loss, lse};
}

void hard_backward(HardInputs& in, const Tensor& grad_loss, const Tensor& lse, const Tensor& grad, const char* op) {
  ce::check_row_vector(grad_loss, in.logits, op, "grad_loss");
  ce::check_row_vector(lse, in.logits, op, "lse");
  const Tensor lse_c = lse.contiguous();
  in.rows.grad_loss = grad_loss.data_ptr<float>();
  in.rows.grad_loss_stride = grad_loss.stride(0);
  in.rows.lse = const_cast<float*>(lse_c.data_ptr<float>());
  in.rows.grad_logits = grad.data_ptr();
  in.rows.grad_row_stride = grad.stride(0);
  run_rows(row_kernels().hard_backward, in.rows, in.logits.size(0), in.logits.size(1));
}

std::tuple<Tensor, Tensor> cross_entropy_fwd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                             int64_t ignore_index, bool /*inplace_backward*/) {
  constexpr const char* op = "classy_fast::cross_entropy_fwd";
  return hard_forward(prepare_hard(logits, target, nullptr, nullptr, label_smoothing, true, ignore_index, op));
}

Tensor cross_entropy_bwd(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                         double label_smoothing, int64_t ignore_index) {
  constexpr const char* op = "classy_fast::cross_entropy_bwd";
  HardInputs in = prepare_hard(logits, target, nullptr, nullptr, label_smoothing, true, ignore_index, op);
  Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  hard_backward(in, grad_loss, lse, grad, op);
  return grad;
}

void cross_entropy_bwd_(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                        double label_smoothing, int64_t ignore_index) {
  constexpr const char* op = "classy_fast::cross_entropy_bwd_";
  ce::check_inplace_logits(logits, op);
  HardInputs in = prepare_hard(logits, target, nullptr, nullptr, label_smoothing, true, ignore_index, op);
  hard_backward(in, grad_loss, lse, logits, op);
}

std::tuple<Tensor, Tensor> mixup_cross_entropy_fwd(const Tensor& logits, const Tensor& target_a,
                                                   const Tensor& target_b, const Tensor& lam, double label_smoothing,
                                                   bool /*inplace_backward*/) {
  constexpr const char* op = "classy_fast::mixup_cross_entropy_fwd";
  return hard_forward(prepare_hard(logits, target_a, &target_b, &lam, label_smoothing, false, 0, op));
}

Tensor mixup_cross_entropy_bwd(const Tensor& grad_loss, const Tensor& logits, const Tensor& target_a,
                               const Tensor& target_b, const Tensor& lam, const Tensor& lse, double label_smoothing) {
  constexpr const char* op = "classy_fast::mixup_cross_entropy_bwd";
  HardInputs in = prepare_hard(logits, target_a, &target_b, &lam, label_smoothing, false, 0, op);
  Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  hard_backward(in, grad_loss, lse, grad, op);
  return grad;
}

void mixup_cross_entropy_bwd_(const Tensor& grad_loss, const Tensor& logits, const Tensor& target_a,
                              const Tensor& target_b, const Tensor& lam, const Tensor& lse, double label_smoothing) {
  constexpr const char* op = "classy_fast::mixup_cross_entropy_bwd_";
  ce::check_inplace_logits(logits, op);
  HardInputs in = prepare_hard(logits, target_a, &target_b, &lam, label_smoothing, false, 0, op);
  hard_backward(in, grad_loss, lse, logits, op);
}

// ---- soft targets ----

struct SoftInputs {
  Tensor logits, target;
  SoftTargetRows rows;
};

SoftInputs prepare_soft(const Tensor& logits_in, const Tensor& target_in, double label_smoothing, const char* op) {
  ce::check_logits(logits_in, op);
  check_cpu(logits_in, op, "logits");
  ce::check_label_smoothing(label_smoothing, op);
  ce::check_soft_target(target_in, logits_in, op);
  SoftInputs in;
  in.logits = ce::with_unit_column_stride(logits_in);
  in.target = ce::with_unit_column_stride(target_in);
  SoftTargetRows& r = in.rows;
  r.logits = in.logits.data_ptr();
  r.logits_row_stride = in.logits.stride(0);
  r.dtype = elem_type(in.logits);
  r.num_classes = in.logits.size(1);
  r.target = in.target.data_ptr();
  r.target_row_stride = in.target.stride(0);
  r.target_is_fp32 = in.target.scalar_type() == at::kFloat;
  r.label_smoothing = static_cast<float>(label_smoothing);
  return in;
}

void soft_backward(SoftInputs& in, const Tensor& grad_loss, const Tensor& lse, const Tensor& grad, const char* op) {
  ce::check_row_vector(grad_loss, in.logits, op, "grad_loss");
  ce::check_row_vector(lse, in.logits, op, "lse");
  const Tensor lse_c = lse.contiguous();
  in.rows.grad_loss = grad_loss.data_ptr<float>();
  in.rows.grad_loss_stride = grad_loss.stride(0);
  in.rows.lse = const_cast<float*>(lse_c.data_ptr<float>());
  in.rows.grad_logits = grad.data_ptr();
  in.rows.grad_row_stride = grad.stride(0);
  run_rows(row_kernels().soft_backward, in.rows, in.logits.size(0), in.logits.size(1));
}

std::tuple<Tensor, Tensor> soft_cross_entropy_fwd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                                  bool /*inplace_backward*/) {
  constexpr const char* op = "classy_fast::soft_cross_entropy_fwd";
  SoftInputs in = prepare_soft(logits, target, label_smoothing, op);
  const int64_t B = in.logits.size(0), C = in.logits.size(1);
  Tensor loss = at::empty({B}, in.logits.options().dtype(at::kFloat));
  Tensor lse = at::empty({B}, in.logits.options().dtype(at::kFloat));
  in.rows.loss = loss.data_ptr<float>();
  in.rows.lse = lse.data_ptr<float>();
  run_rows(row_kernels().soft_forward, in.rows, B, C);
  return {loss, lse};
}

Tensor soft_cross_entropy_bwd(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                              double label_smoothing) {
  constexpr const char* op = "classy_fast::soft_cross_entropy_bwd";
  SoftInputs in = prepare_soft(logits, target, label_smoothing, op);
  Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  soft_backward(in, grad_loss, lse, grad, op);
  return grad;
}

void soft_cross_entropy_bwd_(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                             double label_smoothing) {
  constexpr const char* op = "classy_fast::soft_cross_entropy_bwd_";
  ce::check_inplace_logits(logits, op);
  SoftInputs in = prepare_soft(logits, target, label_smoothing, op);
  soft_backward(in, grad_loss, lse, logits, op);
}

}  // namespace
}  // namespace classy_fast::cpu

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) {
  using namespace classy_fast::cpu;
  m.impl("cross_entropy_fwd", &cross_entropy_fwd);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd);
  m.impl("cross_entropy_bwd_", &cross_entropy_bwd_);
  m.impl("mixup_cross_entropy_fwd", &mixup_cross_entropy_fwd);
  m.impl("mixup_cross_entropy_bwd", &mixup_cross_entropy_bwd);
  m.impl("mixup_cross_entropy_bwd_", &mixup_cross_entropy_bwd_);
  m.impl("soft_cross_entropy_fwd", &soft_cross_entropy_fwd);
  m.impl("soft_cross_entropy_bwd", &soft_cross_entropy_bwd);
  m.impl("soft_cross_entropy_bwd_", &soft_cross_entropy_bwd_);
}
