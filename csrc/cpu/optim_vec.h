// Vector building blocks shared by every CPU optimizer / EMA / norm loop
// (csrc/cpu/optim_kernels_impl.h): fp32 loads and stores of fp32/bf16/fp16 arrays, the storage
// type and feature-flag dispatch, the sum-of-squares accumulator, and update_row, the one loop
// that SGD, AdamW, LARS and LAMB's apply pass plug their element math into.
//
// Compiled once per ISA: include only from optim_kernels_impl.h, after CPU_CAPABILITY is defined.
//
// Rounding: the vector math spells out the formulas of optim_math.h operation by operation with
// at::vec's mul / add / div / sqrt (each IEEE-rounded like the scalar ones), and the scalar tail
// of every loop calls optim_math.h itself. With FMA contraction off (optim_kernels_impl.h), a
// chunk's vector body and its tail round identically, and the baseline, AVX2 and AVX-512 builds
// give bit-identical results (tests/optim/test_cpu_vector_paths.py). Memory bandwidth, not
// arithmetic, bounds these loops, so FMA would buy little.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "optim_kernels.h"

namespace classy_fast::cpu {
inline namespace CPU_CAPABILITY {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
// Elements per loop iteration: two vectors, because one bf16/fp16 vector register holds two
// fp32 vectors' worth of elements (and the second independent chain helps the FP pipes anyway).
constexpr int64_t kBlock = 2 * kLanes;

// ---------------------------------------------------------------------------- loads and stores

template <typename T>
inline void load2(const T* p, Vec& lo, Vec& hi) {
  if constexpr (std::is_same_v<T, float>) {
    lo = Vec::loadu(p);
    hi = Vec::loadu(p + kLanes);
  } else {
    at::vec::load_to_float<T>(p, lo, hi);  // kBlock elements of T
  }
}

template <typename T>
inline void store2(T* p, const Vec& lo, const Vec& hi) {
  if constexpr (std::is_same_v<T, float>) {
    lo.store(p);
    hi.store(p + kLanes);
  } else {
    at::vec::convert_from_float<T>(lo, hi).store(p);  // round to nearest even, like c10's casts
  }
}

// -------------------------------------------------------------------------------- dispatch

// Calls f(std::bool_constant<b>...) with one compile-time constant per runtime flag, in order:
// the flags that steer the inner loop (first step, Nesterov, weight decay on/off) become template
// parameters, so each combination gets its own branch-free loop.
template <typename F>
inline decltype(auto) with_flags(F&& f) {
  return f();
}

template <typename F, typename... Rest>
inline decltype(auto) with_flags(F&& f, bool flag, Rest... rest) {
  return with_flags(
      [&](auto... tail) -> decltype(auto) {
        if (flag) return f(std::true_type{}, tail...);
        return f(std::false_type{}, tail...);
      },
      rest...);
}

// Calls f(P{}, S{}, std::bool_constant<master>{}) with P the param / grad type and S the state
// type of `row` (fp32 with master weights, else P).
template <typename F>
inline decltype(auto) with_row_types(const TensorRow& row, F&& f) {
  const bool master = row.master != nullptr;
  switch (row.dtype) {
    case c10::ScalarType::BFloat16:
      if (master) return f(c10::BFloat16{}, float{}, std::true_type{});
      return f(c10::BFloat16{}, c10::BFloat16{}, std::false_type{});
    case c10::ScalarType::Half:
      if (master) return f(c10::Half{}, float{}, std::true_type{});
      return f(c10::Half{}, c10::Half{}, std::false_type{});
    default:  // the ops only pass fp32 / bf16 / fp16 (optim_checks.h)
      TORCH_CHECK(row.dtype == c10::ScalarType::Float, "classy_fast: unexpected dtype ", row.dtype);
      return f(float{}, float{}, std::false_type{});
  }
}

// Calls f(T{}) with T the C++ type of `dtype` (fp32 / bf16 / fp16).
template <typename F>
inline decltype(auto) with_float_type(c10::ScalarType dtype, F&& f) {
  switch (dtype) {
    case c10::ScalarType::BFloat16:
      return f(c10::BFloat16{});
    case c10::ScalarType::Half:
      return f(c10::Half{});
    default:
      TORCH_CHECK(dtype == c10::ScalarType::Float, "classy_fast: unexpected dtype ", dtype);
      return f(float{});
  }
}

// ------------------------------------------------------------------------------ grad transform

// The vector form of optim_math::GradTransform: g * factor, then negated for maximize. Rounding is
// sign-symmetric, so g * (-factor) is bit-identical to -(g * factor).
inline Vec grad_factor(const optim_math::GradTransform& t) {
  return Vec(t.negate ? -t.factor : t.factor);
}

// ------------------------------------------------------------------------------ sum of squares

// Elements per step of the summing loops, the same on every ISA (four 8-lane vectors, two 16-lane
// ones): the lane each element is summed in, and where a range's scalar tail starts, then do not
// depend on the ISA, so the norms are bit-identical across the builds.
constexpr int64_t kSumBlock = 32;
constexpr int kSumVecs = static_cast<int>(kSumBlock / kLanes);
static_assert(kSumBlock % kBlock == 0, "a sum block is whole load2 / store2 pairs");

// Sum of squares for the norms: each of kSumBlock lanes keeps an fp32 partial sum of at most
// kFlushEvery squares (like the CUDA kernels' per-thread fp32 partials), which is then folded into
// a double lane, so a long tensor loses no precision to a long fp32 sum. The kSumVecs partial
// vectors are independent add chains.
class SquareSum {
 public:
  SquareSum() {
    for (int k = 0; k < kSumVecs; ++k) part_[k] = Vec(0.0f);
  }
  // One block: v[k] holds elements [k * kLanes, (k + 1) * kLanes) of it.
  void add(const Vec* v) {
    for (int k = 0; k < kSumVecs; ++k) part_[k] = part_[k] + v[k] * v[k];
    if (++pending_ == kFlushEvery) flush();
  }
  // Scalar tail: fp32 square, as the vector lanes do.
  void add(float x) { tail_ += static_cast<double>(x * x); }
  double total() {
    flush();
    double sum = tail_;
    for (int64_t k = 0; k < kSumBlock; ++k) sum += lanes_[k];
    return sum;
  }

 private:
  static constexpr int kFlushEvery = 32;
  void flush() {
    __at_align__ float parts[kSumBlock];
    for (int k = 0; k < kSumVecs; ++k) {
      part_[k].store(parts + k * kLanes);
      part_[k] = Vec(0.0f);
    }
    for (int64_t k = 0; k < kSumBlock; ++k) lanes_[k] += static_cast<double>(parts[k]);
    pending_ = 0;
  }
  Vec part_[kSumVecs];
  double lanes_[kSumBlock] = {};
  double tail_ = 0.0;
  int pending_ = 0;
};

// -------------------------------------------------------------------------------- update loop

// Which arrays of a TensorRow an update touches (besides the weight, always read and written).
struct RowAccess {
  int states;         // how many of state0, state1
  bool read_states;   // false: written only (SGD's first step sets the buffer to the grad)
  bool write_states;  // false: read only (LAMB's apply pass)
  bool grad;          // false: no gradient (LAMB's apply pass)
};

// The loop of every weight update: w from the master copy (or the param), the transformed grad
// and the state arrays go through `vec_op(w, g, s0, s1)` a vector at a time and through
// `scalar_op(w, g, s0, s1)` (optim_math.h's function) for the tail; then the state, the master
// copy and the param (rounded to P) are stored. Unused operands are dead code.
template <typename P, typename S, bool kMaster, RowAccess kAccess, typename VecOp, typename ScalarOp>
inline void update_row(const TensorRow& row, const optim_math::GradTransform& transform, int64_t begin, int64_t end,
                       const VecOp& vec_op, const ScalarOp& scalar_op) {
  static_assert(kMaster == (!std::is_same_v<P, float> && std::is_same_v<S, float>));
  P* const param = static_cast<P*>(row.param);
  const P* const grad = static_cast<const P*>(row.grad);
  S* const s0 = static_cast<S*>(row.state0);
  S* const s1 = static_cast<S*>(row.state1);
  float* const master = row.master;
  constexpr bool kRead0 = kAccess.states > 0 && kAccess.read_states;
  constexpr bool kRead1 = kAccess.states > 1 && kAccess.read_states;
  constexpr bool kWrite0 = kAccess.states > 0 && kAccess.write_states;
  constexpr bool kWrite1 = kAccess.states > 1 && kAccess.write_states;

  const Vec factor = grad_factor(transform);
  const Vec zero(0.0f);
  int64_t j = begin;
  for (; j + kBlock <= end; j += kBlock) {
    Vec w[2], g[2] = {zero, zero}, a[2] = {zero, zero}, b[2] = {zero, zero};
    if constexpr (kMaster) {
      load2(master + j, w[0], w[1]);
    } else {
      load2(param + j, w[0], w[1]);
    }
    if constexpr (kAccess.grad) {
      load2(grad + j, g[0], g[1]);
      g[0] = g[0] * factor;
      g[1] = g[1] * factor;
    }
    if constexpr (kRead0) load2(s0 + j, a[0], a[1]);
    if constexpr (kRead1) load2(s1 + j, b[0], b[1]);
    vec_op(w[0], g[0], a[0], b[0]);
    vec_op(w[1], g[1], a[1], b[1]);
    if constexpr (kWrite0) store2(s0 + j, a[0], a[1]);
    if constexpr (kWrite1) store2(s1 + j, b[0], b[1]);
    if constexpr (kMaster) store2(master + j, w[0], w[1]);
    store2(param + j, w[0], w[1]);
  }
  for (; j < end; ++j) {
    float w = kMaster ? master[j] : static_cast<float>(param[j]);
    float g = 0.0f, a = 0.0f, b = 0.0f;
    if constexpr (kAccess.grad) g = transform(static_cast<float>(grad[j]));
    if constexpr (kRead0) a = static_cast<float>(s0[j]);
    if constexpr (kRead1) b = static_cast<float>(s1[j]);
    scalar_op(w, g, a, b);
    if constexpr (kWrite0) s0[j] = static_cast<S>(a);
    if constexpr (kWrite1) s1[j] = static_cast<S>(b);
    if constexpr (kMaster) master[j] = w;
    param[j] = static_cast<P>(w);
  }
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace classy_fast::cpu
