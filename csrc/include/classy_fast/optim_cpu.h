// Helpers shared by the CPU optimizer / EMA kernels (csrc/*.cpp).
//
// The CPU kernels walk each tensor as a flat array (see optim_checks.h for why that is valid),
// split over threads with at::parallel_for, and call the per-element math of optim_math.h.
// Runtime feature flags (master weights, momentum) become compile-time constants through
// with_flag so the inner loops carry no branches and auto-vectorize.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <type_traits>

namespace classy_fast {
namespace optim_cpu {

// Elements per parallel task: below this the thread hand-off costs more than it saves.
constexpr int64_t kGrain = 32768;

template <typename F>
void with_flag(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// Calls f(S{}) with S the state storage type: fp32 for master weights (bf16/fp16 params), else P.
template <typename P, typename F>
void with_state_type(bool has_master, F&& f) {
  if constexpr (std::is_same_v<P, float>) {
    f(float{});
  } else {
    if (has_master) {
      f(float{});
    } else {
      f(P{});
    }
  }
}

template <typename T>
inline T* ptr_or_null(const at::Tensor& t, bool present) {
  return present ? static_cast<T*>(t.data_ptr()) : nullptr;
}

template <typename F>
void parallel_elements(int64_t n, F&& f) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) { f(begin, end); });
}

}  // namespace optim_cpu
}  // namespace classy_fast
