// CPU element loops of the fused optimizers, the EMA and the norms, written once against
// at::vec::Vectorized<float> and compiled once per ISA (see optim_kernels.h). Include from exactly
// one translation unit per CPU_CAPABILITY, after defining CPU_CAPABILITY (cpu/target_isa_begin.h
// does it for the AVX2 / AVX-512 builds), then build the table with CLASSY_FAST_OPTIM_KERNEL_TABLE.
//
// Each *Vec functor below is the vector twin of one optim_math.h function, operation for
// operation (same order, same constants, so the same rounding; see optim_vec.h); the loops' scalar
// tails call the optim_math.h function itself. Flags that would branch inside the loop are
// template parameters, resolved once per chunk.
#pragma once

// No FMA contraction in these loops. GCC contracts a * b + c into an FMA by default in C++ (also
// across at::vec intrinsics) wherever the target has FMA, which would make the AVX2 build round
// differently from the baseline one, and a chunk's vector body differently from its scalar tail,
// which the compiler contracts on its own terms. The STDC pragma does the same for clang.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#pragma STDC FP_CONTRACT OFF

#include "optim_vec.h"

namespace classy_fast::cpu {
inline namespace CPU_CAPABILITY {
namespace {

using namespace optim_math;

// ------------------------------------------------------------------------------------------ SGD

// sgd_update with its runtime branches (weight decay != 0, momentum, first step, Nesterov) fixed.
template <bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
struct SgdVec {
  Vec lr, weight_decay, momentum, one_minus_dampening;
  explicit SgdVec(const SgdHyper& h)
      : lr(h.lr), weight_decay(h.weight_decay), momentum(h.momentum), one_minus_dampening(1.0f - h.dampening) {}
  void operator()(Vec& w, const Vec& grad, Vec& buf, Vec& /*unused*/) const {
    Vec g = grad;
    if constexpr (kDecay) g = g + weight_decay * w;
    if constexpr (kMomentum) {
      buf = kFirst ? g : momentum * buf + one_minus_dampening * g;
      g = kNesterov ? g + momentum * buf : buf;
    }
    w = w - lr * g;
  }
};

void sgd(const SgdTask& t, int64_t begin, int64_t end) {
  const SgdHyper& h = t.hyper;
  with_row_types(t.row, [&](auto p_tag, auto s_tag, auto master) {
    const auto run = [&](auto decay, auto momentum, auto first, auto nesterov) {
      constexpr bool kMomentum = decltype(momentum)::value;
      constexpr bool kFirst = decltype(first)::value;
      constexpr RowAccess kAccess{kMomentum ? 1 : 0, !kFirst, true, true};
      update_row<decltype(p_tag), decltype(s_tag), decltype(master)::value, kAccess>(
          t.row, t.transform, begin, end,
          SgdVec<decltype(decay)::value, kMomentum, kFirst, decltype(nesterov)::value>(h),
          [&](float& w, float g, float& buf, float&) { sgd_update(w, g, buf, h); });
    };
    const bool decay = h.weight_decay != 0.0f;
    if (h.has_momentum) {
      with_flags([&](auto d, auto first, auto nesterov) { run(d, std::true_type{}, first, nesterov); }, decay,
                 h.first_step, h.nesterov);
    } else {  // first step and Nesterov mean nothing without momentum: no instantiations for them
      with_flags([&](auto d) { run(d, std::false_type{}, std::false_type{}, std::false_type{}); }, decay);
    }
  });
}

// ---------------------------------------------------------------------------------------- AdamW

struct AdamwVec {
  Vec decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, step_size;
  explicit AdamwVec(const AdamwHyper& h)
      : decay(1.0f - h.lr * h.weight_decay),
        one_minus_beta1(1.0f - h.beta1),
        beta2(h.beta2),
        one_minus_beta2(1.0f - h.beta2),
        bias_correction2_sqrt(h.bias_correction2_sqrt),
        eps(h.eps),
        step_size(h.lr / h.bias_correction1) {}
  void operator()(Vec& w, const Vec& g, Vec& m, Vec& v) const {
    w = w * decay;
    m = m + one_minus_beta1 * (g - m);
    v = beta2 * v + one_minus_beta2 * g * g;
    const Vec denom = v.sqrt() / bias_correction2_sqrt + eps;
    w = w - step_size * (m / denom);
  }
};

void adamw(const AdamwTask& t, int64_t begin, int64_t end) {
  const AdamwHyper& h = t.hyper;
  with_row_types(t.row, [&](auto p_tag, auto s_tag, auto master) {
    constexpr RowAccess kAccess{2, true, true, true};
    update_row<decltype(p_tag), decltype(s_tag), decltype(master)::value, kAccess>(
        t.row, t.transform, begin, end, AdamwVec(h),
        [&](float& w, float g, float& m, float& v) { adamw_update(w, g, m, v, h); });
  });
}

// ----------------------------------------------------------------------------------------- LARS

template <bool kNesterov>
struct LarsVec {
  Vec scaled_lr, weight_decay, momentum;
  explicit LarsVec(const LarsHyper& h) : scaled_lr(h.scaled_lr), weight_decay(h.weight_decay), momentum(h.momentum) {}
  void operator()(Vec& w, const Vec& g, Vec& buf, Vec& /*unused*/) const {
    const Vec step = scaled_lr * (g + weight_decay * w);
    buf = momentum * buf + step;
    w = w - (kNesterov ? momentum * buf + step : buf);
  }
};

void lars(const LarsTask& t, int64_t begin, int64_t end) {
  const LarsHyper& h = t.hyper;
  with_row_types(t.row, [&](auto p_tag, auto s_tag, auto master) {
    with_flags(
        [&](auto nesterov) {
          constexpr RowAccess kAccess{1, true, true, true};
          update_row<decltype(p_tag), decltype(s_tag), decltype(master)::value, kAccess>(
              t.row, t.transform, begin, end, LarsVec<decltype(nesterov)::value>(h),
              [&](float& w, float g, float& buf, float&) { lars_update(w, g, buf, h); });
        },
        h.nesterov);
  });
}

// ----------------------------------------------------------------------------------------- LAMB

// lamb_moments and lamb_direction.
struct LambVec {
  Vec one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, bias_correction1, bias_correction2;
  explicit LambVec(const LambHyper& h)
      : one_minus_beta1(1.0f - h.beta1),
        beta2(h.beta2),
        one_minus_beta2(1.0f - h.beta2),
        eps(h.eps),
        weight_decay(h.weight_decay),
        bias_correction1(h.bias_correction1),
        bias_correction2(h.bias_correction2) {}
  void moments(const Vec& g, Vec& m, Vec& v) const {
    m = m + one_minus_beta1 * (g - m);
    v = beta2 * v + one_minus_beta2 * g * g;
  }
  Vec direction(const Vec& w, const Vec& m, const Vec& v) const {
    return (m / bias_correction1) / ((v / bias_correction2).sqrt() + eps) + weight_decay * w;
  }
};

// Stage 1 is not a weight update (the weight is only read, and the loop reduces), so it has its
// own loop rather than update_row.
template <typename P, typename S, bool kMaster>
SquareSums lamb_moments_range(const LambMomentsTask& t, int64_t begin, int64_t end) {
  const P* const grad = static_cast<const P*>(t.row.grad);
  S* const exp_avg = static_cast<S*>(t.row.state0);
  S* const exp_avg_sq = static_cast<S*>(t.row.state1);
  const S* const weight = kMaster ? reinterpret_cast<const S*>(t.row.master) : static_cast<const S*>(t.row.param);
  const LambHyper& h = t.hyper;
  const LambVec lamb(h);
  const Vec factor = grad_factor(t.transform);
  SquareSum w_sum, u_sum;
  int64_t j = begin;
  for (; j + kSumBlock <= end; j += kSumBlock) {
    Vec w[kSumVecs], u[kSumVecs];
    for (int k = 0; k < kSumVecs; k += 2) {  // a pair of vectors at a time: fewer live registers
      const int64_t i = j + k * kLanes;
      Vec g[2], m[2], v[2];
      load2(grad + i, g[0], g[1]);
      load2(exp_avg + i, m[0], m[1]);
      load2(exp_avg_sq + i, v[0], v[1]);
      lamb.moments(g[0] * factor, m[0], v[0]);
      lamb.moments(g[1] * factor, m[1], v[1]);
      store2(exp_avg + i, m[0], m[1]);
      store2(exp_avg_sq + i, v[0], v[1]);
      if constexpr (!std::is_same_v<S, float>) {  // u from the stored (rounded) moments, as stage 2 sees them
        load2(exp_avg + i, m[0], m[1]);
        load2(exp_avg_sq + i, v[0], v[1]);
      }
      load2(weight + i, w[k], w[k + 1]);
      u[k] = lamb.direction(w[k], m[0], v[0]);
      u[k + 1] = lamb.direction(w[k + 1], m[1], v[1]);
    }
    w_sum.add(w);
    u_sum.add(u);
  }
  for (; j < end; ++j) {
    float m = static_cast<float>(exp_avg[j]);
    float v = static_cast<float>(exp_avg_sq[j]);
    lamb_moments(t.transform(static_cast<float>(grad[j])), m, v, h);
    exp_avg[j] = static_cast<S>(m);
    exp_avg_sq[j] = static_cast<S>(v);
    const float w = static_cast<float>(weight[j]);
    w_sum.add(w);
    u_sum.add(lamb_direction(w, static_cast<float>(exp_avg[j]), static_cast<float>(exp_avg_sq[j]), h));
  }
  return SquareSums{w_sum.total(), u_sum.total()};
}

SquareSums lamb_moments_kernel(const LambMomentsTask& t, int64_t begin, int64_t end) {
  return with_row_types(t.row, [&](auto p_tag, auto s_tag, auto master) {
    return lamb_moments_range<decltype(p_tag), decltype(s_tag), decltype(master)::value>(t, begin, end);
  });
}

void lamb_apply(const LambApplyTask& t, int64_t begin, int64_t end) {
  const LambHyper& h = t.hyper;
  const LambVec lamb(h);
  const Vec scaled_lr(t.scaled_lr);
  const float lr = t.scaled_lr;
  with_row_types(t.row, [&](auto p_tag, auto s_tag, auto master) {
    constexpr RowAccess kAccess{2, true, false, false};
    update_row<decltype(p_tag), decltype(s_tag), decltype(master)::value, kAccess>(
        t.row, GradTransform{1.0f, false}, begin, end,
        [&](Vec& w, const Vec&, Vec& m, Vec& v) { w = w - scaled_lr * lamb.direction(w, m, v); },
        [&](float& w, float, float& m, float& v) { w -= lr * lamb_direction(w, m, v, h); });
  });
}

// ------------------------------------------------------------------------------------------ EMA

template <typename E, typename P>
void ema_range(const EmaTask& t, int64_t begin, int64_t end) {
  E* const ema = static_cast<E*>(t.ema);
  const P* const value = static_cast<const P*>(t.value);
  const Vec decay(t.decay), one_minus_decay(1.0f - t.decay);
  int64_t j = begin;
  for (; j + kBlock <= end; j += kBlock) {
    Vec e[2], x[2];
    load2(ema + j, e[0], e[1]);
    load2(value + j, x[0], x[1]);
    for (int k = 0; k < 2; ++k) e[k] = decay * e[k] + one_minus_decay * x[k];  // ema_update
    store2(ema + j, e[0], e[1]);
  }
  for (; j < end; ++j) {
    ema[j] = static_cast<E>(ema_update(static_cast<float>(ema[j]), static_cast<float>(value[j]), t.decay));
  }
}

void ema(const EmaTask& t, int64_t begin, int64_t end) {
  with_float_type(t.value_dtype, [&](auto p_tag) {
    using P = decltype(p_tag);
    if (t.ema_is_fp32) {
      ema_range<float, P>(t, begin, end);
    } else {
      ema_range<P, P>(t, begin, end);
    }
  });
}

// ---------------------------------------------------------------------------------------- norms

template <typename T>
double sum_of_squares_range(const NormTask& t, int64_t begin, int64_t end) {
  const T* const x = static_cast<const T*>(t.x);
  const Vec inv_scale(t.inv_scale);
  SquareSum sum;
  int64_t j = begin;
  for (; j + kSumBlock <= end; j += kSumBlock) {
    Vec v[kSumVecs];
    for (int k = 0; k < kSumVecs; k += 2) {
      load2(x + j + k * kLanes, v[k], v[k + 1]);
      v[k] = v[k] * inv_scale;
      v[k + 1] = v[k + 1] * inv_scale;
    }
    sum.add(v);
  }
  for (; j < end; ++j) sum.add(static_cast<float>(x[j]) * t.inv_scale);
  return sum.total();
}

double sum_of_squares(const NormTask& t, int64_t begin, int64_t end) {
  return with_float_type(t.dtype, [&](auto tag) { return sum_of_squares_range<decltype(tag)>(t, begin, end); });
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace classy_fast::cpu

#pragma GCC pop_options

// The table of this translation unit's kernels.
#define CLASSY_FAST_OPTIM_KERNEL_TABLE(ISA_NAME)                                                            \
  ::classy_fast::cpu::OptimKernels {                                                                      \
    ISA_NAME, &::classy_fast::cpu::sgd, &::classy_fast::cpu::adamw, &::classy_fast::cpu::lars,              \
        &::classy_fast::cpu::lamb_moments_kernel, &::classy_fast::cpu::lamb_apply, &::classy_fast::cpu::ema, \
        &::classy_fast::cpu::sum_of_squares                                                                 \
  }
