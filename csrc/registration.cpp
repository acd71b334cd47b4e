// The one TORCH_LIBRARY block of the classy_fast namespace: every op schema lives here.
//
// Kernels register per device elsewhere (TORCH_LIBRARY_IMPL(classy_fast, CPU|CUDA, m) in
// csrc/*.cpp and csrc/cuda/*.cu); fake (meta) kernels are registered from Python
// (classy_fast/ops/), autograd formulas from Python too except the loss ops' (C++, for speed:
// csrc/cross_entropy_loss.cpp). Going through the dispatcher, rather than pybind functions,
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

  // The losses users call (classy_fast.ops.cross_entropy / mixup_cross_entropy): the forward op
  // above plus the 'none' | 'mean' | 'sum' reduction (reduction: 0 | 1 | 2, torch's enum), with
  // their autograd formula in C++ (csrc/cross_entropy_loss.cpp) so that a loss step costs two
  // launches forward and two backward and almost no Python. `count` is the number of rows the
  // mean divides by (0-dim; shape [0] for 'none'); `lse` is what the backward needs.
  m.def(
      "cross_entropy_loss(Tensor logits, Tensor target, float label_smoothing, int ignore_index, "
      "int reduction, bool inplace_backward) -> (Tensor loss, Tensor lse, Tensor count)",
      pt2);
  m.def(
      "mixup_cross_entropy_loss(Tensor logits, Tensor target_a, Tensor target_b, Tensor lam, "
      "float label_smoothing, int reduction, bool inplace_backward) -> (Tensor loss, Tensor lse, Tensor count)",
      pt2);
  m.def(
      "soft_cross_entropy_loss(Tensor logits, Tensor target, float label_smoothing, int reduction, "
      "bool inplace_backward) -> (Tensor loss, Tensor lse, Tensor count)",
      pt2);
  // Sum (mean=False) or mean of fp32 per-row losses over the rows whose target != ignore_index
  // (all rows without a target), and that row count; both 0-dim fp32. One launch on CUDA.
  m.def("reduce_loss_rows(Tensor row_loss, Tensor? target, int ignore_index, bool mean) -> (Tensor, Tensor)", pt2);

  // --- optimizer ops ---
  // classy_fast/optim (fused SGD/AdamW/LARS/LAMB) and classy_fast.ops.ema_update_; kernels in
  // csrc/{fused_*,multi_tensor_l2norm,ema_update}.cpp and csrc/cuda/*.cu, fakes in
  // classy_fast/optim/_fake.py.
  // Multi-tensor L2 norms (global + optionally per tensor), of x / grad_scale when given.
  m.def("multi_tensor_l2norm(Tensor[] tensors, Tensor? grad_scale, bool per_tensor) -> (Tensor, Tensor)", pt2);
  // Fused optimizer steps for one param group (classy_fast/optim). Device scalars (lr, grad_scale,
  // found_inf, grad_norm) are read in the kernels: no host sync, CUDA-graph safe.
  m.def(
      "fused_sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, Tensor(c!)[] master_params, "
      "Tensor(d!)[] steps, Tensor lr, float weight_decay, float momentum, float dampening, bool nesterov, "
      "bool maximize, Tensor? grad_scale, Tensor? found_inf, Tensor? grad_norm, float max_grad_norm) -> ()",
      pt2);
  m.def(
      "fused_adamw_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] master_params, Tensor(e!)[] steps, Tensor lr, float beta1, float beta2, float weight_decay, "
      "float eps, bool maximize, Tensor? grad_scale, Tensor? found_inf, Tensor? grad_norm, float max_grad_norm) -> ()",
      pt2);
  m.def(
      "fused_lars_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, Tensor(c!)[] master_params, "
      "Tensor lr, Tensor? param_norms, Tensor? grad_norms, float weight_decay, float momentum, "
      "float trust_coefficient, float eps, bool nesterov, bool maximize, Tensor? grad_scale, Tensor? found_inf, "
      "Tensor? grad_norm, float max_grad_norm) -> ()",
      pt2);
  m.def(
      "fused_lamb_moments_(Tensor[] grads, Tensor(a!)[] exp_avgs, Tensor(b!)[] exp_avg_sqs, Tensor[] weights, "
      "Tensor(c!)[] steps, float beta1, float beta2, float weight_decay, float eps, bool maximize, "
      "Tensor? grad_scale, Tensor? found_inf, Tensor? grad_norm, float max_grad_norm) -> (Tensor, Tensor)",
      pt2);
  m.def(
      "fused_lamb_apply_(Tensor(a!)[] params, Tensor[] exp_avgs, Tensor[] exp_avg_sqs, Tensor(b!)[] master_params, "
      "Tensor[] steps, Tensor lr, Tensor? param_norms, Tensor? update_norms, float beta1, float beta2, "
      "float weight_decay, float eps, float trust_clamp, Tensor? found_inf) -> ()",
      pt2);
  // ema = decay * ema + (1 - decay) * param; decay_tensor (a device scalar) wins over decay.
  m.def("ema_update_(Tensor(a!)[] ema_params, Tensor[] params, Tensor? decay_tensor, float decay) -> ()", pt2);

  // --- image ops ---
  // Crop (per-image int64 box y0, x0, h, w) + bilinear resize to out_height x out_width + flip
  // (per-image bool) + (x / 255 - mean) / std of uint8 images (CHW, or HWC when input_hwc) of any
  // sizes, written once as dtype (fp32/bf16/fp16) in NCHW or channels_last. Kernels:
  // csrc/crop_resize_normalize.cpp, csrc/cuda/crop_resize_normalize.cu; fake and wrapper:
  // classy_fast/ops/crop_resize.py.
  m.def(
      "crop_resize_normalize(Tensor[] images, Tensor boxes, Tensor flip, int out_height, int out_width, "
      "float[] mean, float[] std, bool input_hwc, bool channels_last, ScalarType dtype) -> Tensor",
      pt2);
}
