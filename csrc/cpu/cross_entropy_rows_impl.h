// CPU row kernels for the fused cross-entropy, written once against at::vec::Vectorized and
// compiled once per ISA (see cross_entropy_row_kernels.h). Include from exactly one
// translation unit per CPU_CAPABILITY, after defining CPU_CAPABILITY (and CPU_CAPABILITY_AVX2
// for the AVX2 build), then call CLASSY_FAST_DEFINE_ROW_KERNEL_TABLE.
//
// Math (per row x of C logits, smoothing eps, lse = log sum_c exp(x_c)):
//   index target t:   loss = (1-eps) (lse - x_t) + eps (lse - mean_c x_c)
//   mixup (a, b, lam): the same with x_t replaced by lam x_a + (1-lam) x_b
//   soft target p:    p' = (1-eps) p + eps/C;  loss = lse * sum(p') - sum(p' x)
//   gradients:        d/dx_c = g (sum(p') softmax_c - p'_c)   (sum(p') = 1 for hard targets)
// Linear sums are taken over y = x - r with r the row's first finite logit, so a large common
// offset in the logits doesn't cancel away the fp32 precision of the result.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "cross_entropy_row_kernels.h"

namespace classy_fast::cpu {
inline namespace CPU_CAPABILITY {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

template <typename T>
inline Vec load_float(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return Vec::loadu(p);
  } else {
    Vec out;
    at::vec::load_to_float<T>(p, out);  // reads kLanes elements of T
    return out;
  }
}

template <typename T>
inline void store_float(T* p, const Vec& v) {
  if constexpr (std::is_same_v<T, float>) {
    v.store(p);
  } else {
    at::vec::convert_from_float<T>(v, v).store(p, kLanes);
  }
}

inline float horizontal_max(const Vec& v) {
  alignas(64) float lanes[kLanes];
  v.store(lanes);
  float m = lanes[0];
  for (int64_t k = 1; k < kLanes; ++k) m = (lanes[k] > m || std::isnan(lanes[k])) ? lanes[k] : m;
  return m;
}

inline float horizontal_sum(const Vec& v) {
  alignas(64) float lanes[kLanes];
  v.store(lanes);
  float s = 0.f;
  for (int64_t k = 0; k < kLanes; ++k) s += lanes[k];
  return s;
}

inline float max_propagate_nan(float a, float b) {
  return (b > a || std::isnan(b)) ? b : a;
}

template <typename T>
inline float shift_of(const T* x) {
  const float x0 = static_cast<float>(x[0]);
  return std::isfinite(x0) ? x0 : 0.f;
}

// First pass over a row: max, and sum of (x - r) when label smoothing needs it.
template <typename T>
inline void row_max_and_shifted_sum(const T* x, int64_t C, float r, bool want_sum, float& max_out,
                                    float& sum_out) {
  Vec vmax(-std::numeric_limits<float>::infinity());
  Vec vsum(0.f);
  const Vec vr(r);
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    const Vec v = load_float(x + c);
    vmax = at::vec::maximum(vmax, v);
    if (want_sum) vsum += v - vr;
  }
  float m = horizontal_max(vmax);
  float s = want_sum ? horizontal_sum(vsum) : 0.f;
  for (; c < C; ++c) {
    const float v = static_cast<float>(x[c]);
    m = max_propagate_nan(m, v);
    if (want_sum) s += v - r;
  }
  max_out = m;
  sum_out = s;
}

// Second pass: sum exp(x - m).
template <typename T>
inline float row_sum_exp(const T* x, int64_t C, float m) {
  const Vec vm(m);
  Vec vs(0.f);
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) vs += (load_float(x + c) - vm).exp_u20();
  float s = horizontal_sum(vs);
  for (; c < C; ++c) s += std::exp(static_cast<float>(x[c]) - m);
  return s;
}

template <typename T>
void hard_forward_typed(const HardTargetRows& a, int64_t begin, int64_t end) {
  const int64_t C = a.num_classes;
  const float eps = a.label_smoothing;
  const bool smooth = eps > 0.f;
  const T* logits = static_cast<const T*>(a.logits);
  for (int64_t i = begin; i < end; ++i) {
    const T* x = logits + i * a.logits_row_stride;
    const float r = shift_of(x);
    float m, sum_y;
    row_max_and_shifted_sum(x, C, r, smooth, m, sum_y);
    // lse - v is formed as (m - v) + log(s): rounding m + log(s) first would cost ~|lse| * 2^-24.
    const float log_s = std::log(row_sum_exp(x, C, m));
    a.lse[i] = m + log_s;
    const int64_t ta = a.target_a[i];
    if (a.has_ignore_index && ta == a.ignore_index) {
      a.loss[i] = 0.f;
      continue;
    }
    float nll = (m - static_cast<float>(x[ta])) + log_s;
    if (a.target_b != nullptr) {
      nll = a.lam * nll + (1.f - a.lam) * ((m - static_cast<float>(x[a.target_b[i]])) + log_s);
    }
    float loss = smooth ? (1.f - eps) * nll : nll;
    if (smooth) loss += eps * (((m - r) + log_s) - sum_y / static_cast<float>(C));
    a.loss[i] = loss;
  }
}

template <typename T>
void hard_backward_typed(const HardTargetRows& a, int64_t begin, int64_t end) {
  const int64_t C = a.num_classes;
  const float eps = a.label_smoothing;
  const float uniform = eps / static_cast<float>(C);
  const T* logits = static_cast<const T*>(a.logits);
  T* grad = static_cast<T*>(a.grad_logits);
  for (int64_t i = begin; i < end; ++i) {
    const T* x = logits + i * a.logits_row_stride;
    T* out = grad + i * a.grad_row_stride;
    const int64_t ta = a.target_a[i];
    if (a.has_ignore_index && ta == a.ignore_index) {
      for (int64_t c = 0; c < C; ++c) out[c] = T(0.f);
      continue;
    }
    const float g = a.grad_loss[i * a.grad_loss_stride];
    const float lse = a.lse[i];
    const int64_t tb = a.target_b != nullptr ? a.target_b[i] : ta;
    // Read the target logits before the vector loop: in-place, it overwrites them.
    const float xa = static_cast<float>(x[ta]);
    const float xb = static_cast<float>(x[tb]);
    const Vec vlse(lse), vuniform(uniform), vg(g);
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      const Vec p = (load_float(x + c) - vlse).exp_u20();
      store_float(out + c, (p - vuniform) * vg);
    }
    for (; c < C; ++c) out[c] = T((std::exp(static_cast<float>(x[c]) - lse) - uniform) * g);
    // The one (or two) target columns, recomputed in fp32 so a low-precision store rounds once.
    const float wa = tb == ta ? 1.f : a.lam;
    out[ta] = T((std::exp(xa - lse) - uniform - (1.f - eps) * wa) * g);
    if (tb != ta) out[tb] = T((std::exp(xb - lse) - uniform - (1.f - eps) * (1.f - a.lam)) * g);
  }
}

template <typename T, typename TT>
void soft_forward_typed(const SoftTargetRows& a, int64_t begin, int64_t end) {
  const int64_t C = a.num_classes;
  const float eps = a.label_smoothing;
  const T* logits = static_cast<const T*>(a.logits);
  const TT* target = static_cast<const TT*>(a.target);
  for (int64_t i = begin; i < end; ++i) {
    const T* x = logits + i * a.logits_row_stride;
    const TT* p = target + i * a.target_row_stride;
    const float r = shift_of(x);
    const Vec vr(r);
    Vec vmax(-std::numeric_limits<float>::infinity()), vsum_y(0.f), vsum_p(0.f), vsum_py(0.f);
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      const Vec v = load_float(x + c);
      const Vec y = v - vr;
      const Vec t = load_float(p + c);
      vmax = at::vec::maximum(vmax, v);
      vsum_y += y;
      vsum_p += t;
      vsum_py = at::vec::fmadd(t, y, vsum_py);
    }
    float m = horizontal_max(vmax);
    float sum_y = horizontal_sum(vsum_y), sum_p = horizontal_sum(vsum_p), sum_py = horizontal_sum(vsum_py);
    for (; c < C; ++c) {
      const float v = static_cast<float>(x[c]);
      const float t = static_cast<float>(p[c]);
      m = max_propagate_nan(m, v);
      sum_y += v - r;
      sum_p += t;
      sum_py += t * (v - r);
    }
    const float log_s = std::log(row_sum_exp(x, C, m));
    a.lse[i] = m + log_s;
    const float lse_r = (m - r) + log_s;  // lse - r without rounding lse first
    float loss = (1.f - eps) * (sum_p * lse_r - sum_py);
    if (eps > 0.f) loss += eps * (lse_r - sum_y / static_cast<float>(C));
    a.loss[i] = loss;
  }
}

template <typename T, typename TT>
void soft_backward_typed(const SoftTargetRows& a, int64_t begin, int64_t end) {
  const int64_t C = a.num_classes;
  const float eps = a.label_smoothing;
  const float uniform = eps / static_cast<float>(C);
  const T* logits = static_cast<const T*>(a.logits);
  const TT* target = static_cast<const TT*>(a.target);
  T* grad = static_cast<T*>(a.grad_logits);
  for (int64_t i = begin; i < end; ++i) {
    const T* x = logits + i * a.logits_row_stride;
    const TT* p = target + i * a.target_row_stride;
    T* out = grad + i * a.grad_row_stride;
    const float g = a.grad_loss[i * a.grad_loss_stride];
    const float lse = a.lse[i];
    // sum(p') = (1-eps) sum(p) + eps; targets need not sum to 1 (torch doesn't renormalise).
    Vec vsum_p(0.f);
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes) vsum_p += load_float(p + c);
    float sum_p = horizontal_sum(vsum_p);
    for (; c < C; ++c) sum_p += static_cast<float>(p[c]);
    const float mass = (1.f - eps) * sum_p + eps;
    const Vec vlse(lse), vmass(mass * g), vkeep((1.f - eps) * g), vuniform(uniform * g);
    c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      const Vec e = (load_float(x + c) - vlse).exp_u20();
      const Vec t = load_float(p + c);
      store_float(out + c, e * vmass - t * vkeep - vuniform);
    }
    for (; c < C; ++c) {
      const float e = std::exp(static_cast<float>(x[c]) - lse);
      out[c] = T((mass * e - (1.f - eps) * static_cast<float>(p[c]) - uniform) * g);
    }
  }
}

template <template <typename> class Fn, typename Args>
inline void dispatch_elem(const Args& a, int64_t begin, int64_t end) {
  switch (a.dtype) {
    case ElemType::kFloat:
      return Fn<float>::run(a, begin, end);
    case ElemType::kBFloat16:
      return Fn<c10::BFloat16>::run(a, begin, end);
    case ElemType::kHalf:
      return Fn<c10::Half>::run(a, begin, end);
  }
}

template <typename T>
struct HardForward {
  static void run(const HardTargetRows& a, int64_t b, int64_t e) { hard_forward_typed<T>(a, b, e); }
};
template <typename T>
struct HardBackward {
  static void run(const HardTargetRows& a, int64_t b, int64_t e) { hard_backward_typed<T>(a, b, e); }
};
template <typename T>
struct SoftForward {
  static void run(const SoftTargetRows& a, int64_t b, int64_t e) {
    if (a.target_is_fp32) {
      soft_forward_typed<T, float>(a, b, e);
    } else {
      soft_forward_typed<T, T>(a, b, e);
    }
  }
};
template <typename T>
struct SoftBackward {
  static void run(const SoftTargetRows& a, int64_t b, int64_t e) {
    if (a.target_is_fp32) {
      soft_backward_typed<T, float>(a, b, e);
    } else {
      soft_backward_typed<T, T>(a, b, e);
    }
  }
};

void hard_forward(const HardTargetRows& a, int64_t b, int64_t e) { dispatch_elem<HardForward>(a, b, e); }
void hard_backward(const HardTargetRows& a, int64_t b, int64_t e) { dispatch_elem<HardBackward>(a, b, e); }
void soft_forward(const SoftTargetRows& a, int64_t b, int64_t e) { dispatch_elem<SoftForward>(a, b, e); }
void soft_backward(const SoftTargetRows& a, int64_t b, int64_t e) { dispatch_elem<SoftBackward>(a, b, e); }

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace classy_fast::cpu

// Expands to the definition of a table getter returning this TU's kernels.
#define CLASSY_FAST_ROW_KERNEL_TABLE(ISA_NAME)                                                     \
  ::classy_fast::cpu::CrossEntropyRowKernels{ISA_NAME, &::classy_fast::cpu::hard_forward,           \
                                             &::classy_fast::cpu::hard_backward,                    \
                                             &::classy_fast::cpu::soft_forward,                     \
                                             &::classy_fast::cpu::soft_backward}
