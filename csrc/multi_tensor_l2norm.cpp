// classy_fast::multi_tensor_l2norm on CPU: global and per-tensor L2 norms of a tensor list,
// optionally of the GradScaler-unscaled values (same contract as csrc/cuda/multi_tensor_l2norm.cu).
// Sums of squares accumulate in double here (the CUDA kernel sums fp32 per-thread partials of at
// most 128 elements, then fp32 tree reductions).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "classy_fast/dispatch.h"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cpu.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace {

template <typename T>
double sum_of_squares(const T* x, int64_t n, float inv_scale) {
  return at::parallel_reduce(
      0, n, optim_cpu::kGrain, 0.0,
      [&](int64_t begin, int64_t end, double acc) {
        // Squares in fp32 (the unscaled value, as on CUDA), sums in double: a long sequential fp32
        // sum would lose ~1e-5 relative over a large tensor.
        for (int64_t j = begin; j < end; ++j) {
          const float v = static_cast<float>(x[j]) * inv_scale;
          acc += static_cast<double>(v * v);
        }
        return acc;
      },
      [](double a, double b) { return a + b; });
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cpu(at::TensorList tensors,
                                                           const std::optional<at::Tensor>& grad_scale,
                                                           bool per_tensor) {
  constexpr const char* kOp = "classy_fast::multi_tensor_l2norm";
  TORCH_CHECK(!tensors.empty(), kOp, ": empty tensor list");
  const c10::Device device = tensors[0].device();
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device() == device, kOp, ": tensors[", i, "] is on ", tensors[i].device(),
                ", expected ", device);
    TORCH_CHECK(is_supported_float_type(tensors[i].scalar_type()), kOp, ": tensors[", i, "] has dtype ",
                tensors[i].scalar_type(), " (supported: float32, bfloat16, float16)");
    optim_checks::check_like(kOp, tensors[i], tensors[i], "tensors", i);
  }
  const optim_math::DeviceScalar scale = optim_checks::device_scalar(kOp, grad_scale, device, "grad_scale");
  const float inv_scale = 1.0f / scale.get(1.0f);
  const auto float_opts = tensors[0].options().dtype(at::kFloat);
  at::Tensor global = at::empty({}, float_opts);
  at::Tensor norms = at::empty({per_tensor ? static_cast<int64_t>(tensors.size()) : 0}, float_opts);
  double total = 0.0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    double sq = 0.0;
    CLASSY_FAST_DISPATCH_FLOAT_TYPES(tensors[i].scalar_type(), kOp, [&] {
      sq = sum_of_squares(tensors[i].const_data_ptr<scalar_t>(), tensors[i].numel(), inv_scale);
    });
    total += sq;
    if (per_tensor) norms.data_ptr<float>()[i] = static_cast<float>(std::sqrt(sq));
  }
  *global.data_ptr<float>() = static_cast<float>(std::sqrt(total));
  return {global, norms};
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("multi_tensor_l2norm", &multi_tensor_l2norm_cpu); }

}  // namespace classy_fast
