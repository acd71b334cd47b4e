// dtype dispatch shared by every classy_fast kernel (CPU and CUDA).
//
// The fused ops accept the three floating types used for training (fp32, bf16, fp16) and do
// their arithmetic in fp32. ATen's AT_DISPATCH_* macros also instantiate double and pull in
// a heavy header; this switch instantiates exactly what we support and names the op in the
// error, so a caller sees "classy_fast::cross_entropy_fwd: unsupported dtype Double".
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace classy_fast {

// Accumulation type: all math in fp32, whatever the storage type.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <typename scalar_t>
using acc_t = typename AccType<scalar_t>::type;

inline bool is_supported_float_type(c10::ScalarType t) {
  return t == c10::ScalarType::Float || t == c10::ScalarType::BFloat16 || t == c10::ScalarType::Half;
}

}  // namespace classy_fast

// Runs the trailing lambda body with `scalar_t` bound to float, c10::BFloat16 or c10::Half.
// Usage: CLASSY_FAST_DISPATCH_FLOAT_TYPES(x.scalar_type(), "op_name", [&] { kernel<scalar_t>(); });
#define CLASSY_FAST_DISPATCH_FLOAT_TYPES(SCALAR_TYPE, OP_NAME, ...)                          \
  [&] {                                                                                      \
    switch (SCALAR_TYPE) {                                                                   \
      case c10::ScalarType::Float: {                                                         \
        using scalar_t = float;                                                              \
        return __VA_ARGS__();                                                                \
      }                                                                                      \
      case c10::ScalarType::BFloat16: {                                                      \
        using scalar_t = c10::BFloat16;                                                      \
        return __VA_ARGS__();                                                                \
      }                                                                                      \
      case c10::ScalarType::Half: {                                                          \
        using scalar_t = c10::Half;                                                          \
        return __VA_ARGS__();                                                                \
      }                                                                                      \
      default:                                                                               \
        TORCH_CHECK(false, OP_NAME, ": unsupported dtype ", SCALAR_TYPE,                     \
                    " (supported: float32, bfloat16, float16)");                             \
    }                                                                                        \
  }()

// Binds `target_t` to fp32 or to `scalar_t` (the logits' type): soft targets come either
// way, and converting a bf16 B x C target to fp32 would cost a full extra pass.
#define CLASSY_FAST_DISPATCH_TARGET_TYPE(TARGET_TYPE, OP_NAME, ...)                          \
  [&] {                                                                                      \
    if ((TARGET_TYPE) == c10::CppTypeToScalarType<scalar_t>::value) {                        \
      using target_t = scalar_t;                                                             \
      return __VA_ARGS__();                                                                  \
    }                                                                                        \
    TORCH_CHECK((TARGET_TYPE) == c10::ScalarType::Float, OP_NAME,                            \
                ": soft target dtype must be float32 or the logits' dtype, got ", TARGET_TYPE); \
    using target_t = float;                                                                  \
    return __VA_ARGS__();                                                                    \
  }()
