// Argument checks shared by the CPU and CUDA optimizer / EMA ops (host code only).
//
// The kernels walk every tensor as one flat run of numel() elements in memory order. That is
// correct for any dense, non-overlapping layout (contiguous or channels_last) as long as every
// tensor of a row (param, grad, momentum, ...) has the same strides, which is what these checks
// guarantee. State buffers made with torch.empty_like/zeros_like keep the param's layout, and
// autograd gives dense params grads with matching strides.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <map>
#include <optional>
#include <vector>

#include "classy_fast/dispatch.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace optim_checks {

inline void check_list_length(const char* op, at::TensorList list, size_t expected, const char* name) {
  TORCH_CHECK(list.size() == expected, op, ": ", name, " has ", list.size(), " tensors, expected ", expected);
}

// `list` may be empty (feature unused) or must match `ref` tensor by tensor.
inline bool check_optional_list_length(const char* op, at::TensorList list, size_t expected, const char* name) {
  if (list.empty()) return false;
  check_list_length(op, list, expected, name);
  return true;
}

// `t` must be laid out like `ref` (same device, shape, strides) so both can be walked as flat arrays.
inline void check_like(const char* op, const at::Tensor& t, const at::Tensor& ref, const char* name, size_t i) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, "[", i, "] is on ", t.device(), ", expected ",
              ref.device());
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", name, "[", i, "] has shape ", t.sizes(), ", expected ",
              ref.sizes());
  TORCH_CHECK(t.numel() <= 1 || t.strides() == ref.strides(), op, ": ", name, "[", i,
              "] has strides ", t.strides(), " but the param has ", ref.strides(),
              " (grads and state buffers must be laid out like their param; a state buffer laid out "
              "otherwise usually means the param's memory format changed after the optimizer created its state)");
  TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": ", name, "[", i,
              "] must be dense and non-overlapping (contiguous or channels_last)");
  TORCH_CHECK(!t.is_sparse(), op, ": ", name, "[", i, "] is sparse; sparse gradients are not supported");
}

inline void check_dtype(const char* op, const at::Tensor& t, c10::ScalarType expected, const char* name,
                        size_t i) {
  TORCH_CHECK(t.scalar_type() == expected, op, ": ", name, "[", i, "] has dtype ", t.scalar_type(),
              ", expected ", expected);
}

inline bool is_low_precision(c10::ScalarType t) {
  return t == c10::ScalarType::Half || t == c10::ScalarType::BFloat16;
}

// A 1-element float32 tensor on `device` (lr, grad scale, found_inf, norm), or nullptr when absent.
inline optim_math::DeviceScalar device_scalar(const char* op, const std::optional<at::Tensor>& t,
                                              const c10::Device& device, const char* name) {
  if (!t.has_value() || !t->defined()) return optim_math::DeviceScalar{nullptr};
  TORCH_CHECK(t->numel() == 1, op, ": ", name, " must have one element, got shape ", t->sizes());
  TORCH_CHECK(t->scalar_type() == c10::ScalarType::Float, op, ": ", name, " must be float32, got ",
              t->scalar_type());
  TORCH_CHECK(t->device() == device, op, ": ", name, " is on ", t->device(), " but the tensors are on ",
              device);
  return optim_math::DeviceScalar{t->const_data_ptr<float>()};
}

inline optim_math::DeviceScalar device_scalar(const char* op, const at::Tensor& t, const c10::Device& device,
                                              const char* name) {
  return device_scalar(op, std::optional<at::Tensor>(t), device, name);
}

// Per-tensor norms produced by multi_tensor_l2norm: float32, contiguous, one per tensor.
inline const float* per_tensor_norms(const char* op, const std::optional<at::Tensor>& t, size_t n,
                                     const c10::Device& device, const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  TORCH_CHECK(t->dim() == 1 && static_cast<size_t>(t->numel()) == n, op, ": ", name,
              " must be a 1-D tensor of ", n, " norms, got shape ", t->sizes());
  TORCH_CHECK(t->scalar_type() == c10::ScalarType::Float && t->is_contiguous(), op, ": ", name,
              " must be a contiguous float32 tensor");
  TORCH_CHECK(t->device() == device, op, ": ", name, " is on ", t->device(), ", expected ", device);
  return t->const_data_ptr<float>();
}

// Step counters: one 0-dim float32 tensor per param, on the params' device (torch's convention
// for fused/capturable optimizers).
inline void check_steps(const char* op, at::TensorList steps, size_t n, const c10::Device& device) {
  check_list_length(op, steps, n, "steps");
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(steps[i].numel() == 1 && steps[i].scalar_type() == c10::ScalarType::Float, op, ": steps[", i,
                "] must be a one-element float32 tensor");
    TORCH_CHECK(steps[i].device() == device, op, ": steps[", i, "] is on ", steps[i].device(), ", expected ",
                device);
  }
}

// Params (fp32/bf16/fp16) with their grads (same dtype and layout) and state tensors in the state
// dtype: fp32 when master weights are used (bf16/fp16 params only), else the param dtype.
struct ParamRows {
  c10::Device device;
  bool has_master;
};

inline ParamRows check_params(const char* op, at::TensorList params, at::TensorList grads,
                              at::TensorList master_params) {
  TORCH_CHECK(!params.empty(), op, ": empty parameter list");
  check_list_length(op, grads, params.size(), "grads");
  const bool has_master = check_optional_list_length(op, master_params, params.size(), "master_params");
  const c10::Device device = params[0].device();
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(is_supported_float_type(p.scalar_type()), op, ": params[", i, "] has dtype ", p.scalar_type(),
                " (supported: float32, bfloat16, float16)");
    check_like(op, p, p, "params", i);  // dense, non-overlapping, not sparse
    TORCH_CHECK(p.device() == device, op, ": params[", i, "] is on ", p.device(), ", expected ", device);
    check_like(op, grads[i], p, "grads", i);
    check_dtype(op, grads[i], p.scalar_type(), "grads", i);
    if (has_master) {
      TORCH_CHECK(is_low_precision(p.scalar_type()), op, ": master weights are for bf16/fp16 params, params[",
                  i, "] is ", p.scalar_type());
      check_like(op, master_params[i], p, "master_params", i);
      check_dtype(op, master_params[i], c10::ScalarType::Float, "master_params", i);
    }
  }
  return ParamRows{device, has_master};
}

inline c10::ScalarType state_dtype(const at::Tensor& param, bool has_master) {
  return has_master ? c10::ScalarType::Float : param.scalar_type();
}

inline void check_state(const char* op, at::TensorList state, at::TensorList params, bool has_master,
                        const char* name) {
  check_list_length(op, state, params.size(), name);
  for (size_t i = 0; i < params.size(); ++i) {
    check_like(op, state[i], params[i], name, i);
    check_dtype(op, state[i], state_dtype(params[i], has_master), name, i);
  }
}

// Indices of `params` grouped by dtype: one multi-tensor launch sequence per dtype.
inline std::map<c10::ScalarType, std::vector<int>> indices_by_dtype(at::TensorList params) {
  std::map<c10::ScalarType, std::vector<int>> buckets;
  for (size_t i = 0; i < params.size(); ++i) buckets[params[i].scalar_type()].push_back(static_cast<int>(i));
  return buckets;
}

}  // namespace optim_checks
}  // namespace classy_fast
