// Host-side helpers shared by the CUDA optimizer ops (defined in csrc/cuda/optim_common.cu).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "classy_fast/dispatch.h"

namespace classy_fast {
namespace optim_cuda {

// Increments every step counter (0-dim float32 tensors on one CUDA device) by one, unless
// *found_inf != 0 (found_inf may be nullptr). One launch per ~4000 counters.
void increment_steps(at::TensorList steps, const float* found_inf);

// Per-chunk partial sums of squares -> L2 norms. `partials` is [rows, chunks] float32 (several
// reductions done in the same pass, at most kMaxNormRows); segment s of row r covers partial
// columns [begin[s], end[s]) and its norm goes to outs[r][s] (float32, on the same device).
// Deterministic: fixed summation order.
constexpr int kMaxNormRows = 2;
void segment_norms(const at::Tensor& partials, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
                   const std::vector<float*>& outs);

// Column range of each tensor's chunks when for_each_launch visits `indices_in_order`: tensor i
// gets [begin[i], end[i]). Returns the total number of chunks.
int64_t chunk_ranges(at::TensorList tensors, const std::vector<std::vector<int>>& indices_in_order,
                     std::vector<int64_t>& begin, std::vector<int64_t>& end);

// Calls fn(param_tag, state_tag): param_tag a value of the params' C++ type (float, BFloat16,
// Half), state_tag one of the type optimizer state / master weights / EMA copies are kept in:
// float when `fp32_state` (master weights, or an fp32 copy of low-precision params) or when the
// params are float, else the params' own type. Each kernel is instantiated for exactly these pairs.
template <typename Fn>
void dispatch_param_and_state_types(c10::ScalarType param_dtype, bool fp32_state, const char* op, const Fn& fn) {
  CLASSY_FAST_DISPATCH_FLOAT_TYPES(param_dtype, op, [&] {
    if (fp32_state) {
      fn(scalar_t{}, float{});
    } else {
      fn(scalar_t{}, scalar_t{});
    }
  });
}

}  // namespace optim_cuda
}  // namespace classy_fast
