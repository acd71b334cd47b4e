// Per-element optimizer math shared by the CPU (csrc/*.cpp) and CUDA (csrc/cuda/*.cu) kernels.
//
// Every fused optimizer kernel is "load a few values, call one of these, store": keeping the
// arithmetic in one host/device header is what makes the CPU kernels a faithful executable
// reference for the CUDA ones (they share every rounding step), and the Python reference step
// functions (classy_fast/optim/reference.py) spell out the same formulas in torch ops.
//
// All arithmetic is fp32 whatever the storage type (bf16/fp16 values are widened on load).
// Everything is force-inlined: a call per element would keep the CPU loops from vectorizing.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace classy_fast {
namespace optim_math {

C10_HOST_DEVICE C10_ALWAYS_INLINE float sqrt_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float pow_f(float base, float exponent) {
#if defined(__CUDA_ARCH__)
  return ::powf(base, exponent);
#else
  return std::pow(base, exponent);
#endif
}

// A device scalar the kernels read at run time (lr, grad scale, found_inf, a norm). Reading it in
// the kernel rather than on the host is what keeps a step free of host syncs and lets a captured
// CUDA graph see values that schedulers and the GradScaler write in place between replays.
// nullptr means "not given".
struct DeviceScalar {
  const float* ptr;
  C10_HOST_DEVICE C10_ALWAYS_INLINE float get(float if_absent) const { return ptr != nullptr ? *ptr : if_absent; }
};

// Same formula as torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6), capped at 1.
C10_HOST_DEVICE C10_ALWAYS_INLINE float clip_coefficient(float total_norm, float max_norm) {
  const float coef = max_norm / (total_norm + 1e-6f);
  // min(coef, 1) that keeps a NaN norm's NaN, as clip_grad_norm_'s clamp(max=1) does: every param
  // then gets a NaN update (which the NaN-loss check reports) rather than only those with NaN grads.
  return coef >= 1.0f ? 1.0f : coef;
}

// What turns a stored gradient into the gradient the update uses: unscaling by the GradScaler's
// scale and the clip coefficient fold into one multiplier; `negate` implements maximize.
struct GradTransform {
  float factor;
  bool negate;
  C10_HOST_DEVICE C10_ALWAYS_INLINE float operator()(float g) const {
    const float x = g * factor;
    return negate ? -x : x;
  }
};

// grad_scale: the GradScaler's scale (the kernel unscales on the fly: multiplies by 1/scale).
// grad_norm: the global norm of the *unscaled* grads; clipping applies when it is given.
C10_HOST_DEVICE C10_ALWAYS_INLINE GradTransform make_grad_transform(DeviceScalar grad_scale, DeviceScalar grad_norm,
                                                         float max_grad_norm, bool maximize) {
  float factor = 1.0f / grad_scale.get(1.0f);
  if (grad_norm.ptr != nullptr) factor *= clip_coefficient(*grad_norm.ptr, max_grad_norm);
  return GradTransform{factor, maximize};
}

// A GradScaler step with non-finite grads must leave params and state untouched.
C10_HOST_DEVICE C10_ALWAYS_INLINE bool skip_step(DeviceScalar found_inf) {
  return found_inf.ptr != nullptr && *found_inf.ptr != 0.0f;
}

// ---------------------------------------------------------------------------------------- SGD
// torch.optim.SGD's update: weight decay added to the gradient, momentum buffer initialised to
// the first gradient (no dampening on that step), optional Nesterov look-ahead.
struct SgdHyper {
  float lr;
  float weight_decay;
  float momentum;
  float dampening;
  bool nesterov;
  bool has_momentum;
  bool first_step;  // the step count is 1: the buffer becomes the gradient itself
};

C10_HOST_DEVICE C10_ALWAYS_INLINE void sgd_update(float& w, float g, float& buf, const SgdHyper& h) {
  if (h.weight_decay != 0.0f) g += h.weight_decay * w;
  if (h.has_momentum) {
    buf = h.first_step ? g : h.momentum * buf + (1.0f - h.dampening) * g;
    g = h.nesterov ? g + h.momentum * buf : buf;
  }
  w -= h.lr * g;
}

// -------------------------------------------------------------------------------------- AdamW
// torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments).
struct AdamwHyper {
  float lr;
  float beta1;
  float beta2;
  float weight_decay;
  float eps;
  float bias_correction1;       // 1 - beta1^step
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};

C10_HOST_DEVICE C10_ALWAYS_INLINE AdamwHyper make_adamw_hyper(float lr, float beta1, float beta2, float weight_decay,
                                                   float eps, float step) {
  return AdamwHyper{lr,  beta1, beta2, weight_decay, eps, 1.0f - pow_f(beta1, step),
                    sqrt_f(1.0f - pow_f(beta2, step))};
}

C10_HOST_DEVICE C10_ALWAYS_INLINE void adamw_update(float& w, float g, float& m, float& v, const AdamwHyper& h) {
  w *= 1.0f - h.lr * h.weight_decay;
  m += (1.0f - h.beta1) * (g - m);  // torch: exp_avg.lerp_(grad, 1 - beta1)
  v = h.beta2 * v + (1.0f - h.beta2) * g * g;
  const float denom = sqrt_f(v) / h.bias_correction2_sqrt + h.eps;
  w -= (h.lr / h.bias_correction1) * (m / denom);
}

// --------------------------------------------------------------------------------------- LARS
// You et al. 2017 ("Large Batch Training of Convolutional Networks"), Algorithm 1, in the form
// of the MLPerf ResNet-50 reference: local lr = eta * ||w|| / (||g|| + wd * ||w|| + eps), falling
// back to 1 when either norm is zero; the momentum buffer accumulates lr-scaled steps
// (v = m * v + lr * local_lr * (g + wd * w); w -= v). Tensors excluded from adaptation (norm
// layers, biases) get local lr 1 and no weight decay.
C10_HOST_DEVICE C10_ALWAYS_INLINE float lars_trust_ratio(float w_norm, float g_norm, float trust_coefficient,
                                              float weight_decay, float eps) {
  if (w_norm > 0.0f && g_norm > 0.0f) {
    return trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps);
  }
  return 1.0f;
}

struct LarsHyper {
  float scaled_lr;  // lr * trust ratio of this tensor
  float weight_decay;
  float momentum;
  bool nesterov;
};

C10_HOST_DEVICE C10_ALWAYS_INLINE void lars_update(float& w, float g, float& buf, const LarsHyper& h) {
  const float step = h.scaled_lr * (g + h.weight_decay * w);
  buf = h.momentum * buf + step;
  w -= h.nesterov ? h.momentum * buf + step : buf;
}

// --------------------------------------------------------------------------------------- LAMB
// You et al. 2019 ("Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"),
// Algorithm 2: Adam moments with bias correction, update direction
// u = m_hat / (sqrt(v_hat) + eps) + wd * w, per-tensor trust ratio ||w|| / ||u|| (1 when either
// norm is zero, optionally capped at trust_clamp), w -= lr * ratio * u.
// The direction is computed twice (stage 1 for its norm, stage 2 to apply it) from the same
// stored m, v, w with the same operations, so both stages see bit-identical values.
struct LambHyper {
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  float bias_correction1;  // 1 - beta1^step
  float bias_correction2;  // 1 - beta2^step
};

C10_HOST_DEVICE C10_ALWAYS_INLINE LambHyper make_lamb_hyper(float beta1, float beta2, float eps, float weight_decay,
                                                 float step) {
  return LambHyper{beta1, beta2, eps, weight_decay, 1.0f - pow_f(beta1, step), 1.0f - pow_f(beta2, step)};
}

C10_HOST_DEVICE C10_ALWAYS_INLINE void lamb_moments(float g, float& m, float& v, const LambHyper& h) {
  m += (1.0f - h.beta1) * (g - m);
  v = h.beta2 * v + (1.0f - h.beta2) * g * g;
}

C10_HOST_DEVICE C10_ALWAYS_INLINE float lamb_direction(float w, float m, float v, const LambHyper& h) {
  return (m / h.bias_correction1) / (sqrt_f(v / h.bias_correction2) + h.eps) + h.weight_decay * w;
}

// trust_clamp <= 0: no cap.
C10_HOST_DEVICE C10_ALWAYS_INLINE float lamb_trust_ratio(float w_norm, float u_norm, float trust_clamp) {
  float ratio = (w_norm > 0.0f && u_norm > 0.0f) ? w_norm / u_norm : 1.0f;
  if (trust_clamp > 0.0f && ratio > trust_clamp) ratio = trust_clamp;
  return ratio;
}

// ---------------------------------------------------------------------------------------- EMA
C10_HOST_DEVICE C10_ALWAYS_INLINE float ema_update(float ema, float value, float decay) {
  return decay * ema + (1.0f - decay) * value;
}

}  // namespace optim_math
}  // namespace classy_fast
