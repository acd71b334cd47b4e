// The one TORCH_LIBRARY block of the classy_fast namespace: every op schema lives here.
//
// Kernels register per device elsewhere (TORCH_LIBRARY_IMPL(classy_fast, CPU|CUDA, m) in
// csrc/*.cpp and csrc/cuda/*.cu); fake (meta) kernels and autograd formulas are registered
// from Python (classy_fast/ops/). Going through the dispatcher, rather than pybind functions,
// keeps the ops visible to torch.compile, CUDA graphs and torch.library.opcheck.
//
// A namespace may have only one TORCH_LIBRARY block per process, which is also why the
// setup.py extension (classy_fast._C) and the CMake library must not both be loaded at once.
#include <ATen/core/enum_tag.h>
#include <torch/library.h>

TORCH_LIBRARY(classy_fast, m) {
  const std::vector<at::Tag> pt2 = {at::Tag::pt2_compliant_tag};

  // --- cross-entropy ops (csrc/cross_entropy.cpp, csrc/cuda/cross_entropy.cu) ---
  // Forward returns the per-row fp32 loss and the per-row log-sum-exp the backward needs.
  // `inplace_backward` is not read by the kernels: it tells the autograd formula registered in
  // classy_fast/ops/cross_entropy.py whether it may write the gradient over the logits.
  // Index targets (with ignore_index; ignored rows get loss 0 and zero gradient):
  m.def(
      "cross_entropy_fwd(Tensor logits, Tensor target, float label_smoothing, int ignore_index, "
      "bool inplace_backward) -> (Tensor loss, Tensor lse)",
      pt2);
  m.def(
      "cross_entropy_bwd(Tensor grad_loss, Tensor logits, Tensor target, Tensor lse, "
      "float label_smoothing, int ignore_index) -> Tensor",
      pt2);
  m.def(
      "cross_entropy_bwd_(Tensor grad_loss, Tensor(a!) logits, Tensor target, Tensor lse, "
      "float label_smoothing, int ignore_index) -> ()",
      pt2);
  // Mixup / CutMix: loss = lam * CE(target_a) + (1 - lam) * CE(target_b); lam is a one-value
  // fp32 tensor read on the device (no host sync, graph-capturable).
  m.def(
      "mixup_cross_entropy_fwd(Tensor logits, Tensor target_a, Tensor target_b, Tensor lam, "
      "float label_smoothing, bool inplace_backward) -> (Tensor loss, Tensor lse)",
      pt2);
  m.def(
      "mixup_cross_entropy_bwd(Tensor grad_loss, Tensor logits, Tensor target_a, Tensor target_b, "
      "Tensor lam, Tensor lse, float label_smoothing) -> Tensor",
      pt2);
  m.def(
      "mixup_cross_entropy_bwd_(Tensor grad_loss, Tensor(a!) logits, Tensor target_a, Tensor target_b, "
      "Tensor lam, Tensor lse, float label_smoothing) -> ()",
      pt2);
  // Soft targets: [B, C] class probabilities (fp32 or the logits' dtype).
  m.def(
      "soft_cross_entropy_fwd(Tensor logits, Tensor target, float label_smoothing, "
      "bool inplace_backward) -> (Tensor loss, Tensor lse)",
      pt2);
  m.def(
      "soft_cross_entropy_bwd(Tensor grad_loss, Tensor logits, Tensor target, Tensor lse, "
      "float label_smoothing) -> Tensor",
      pt2);
  m.def(
      "soft_cross_entropy_bwd_(Tensor grad_loss, Tensor(a!) logits, Tensor target, Tensor lse, "
      "float label_smoothing) -> ()",
      pt2);

  // --- optimizer ops ---
  // (schemas for the fused optimizer kernels go here)
}
