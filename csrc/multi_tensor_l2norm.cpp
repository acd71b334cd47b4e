// classy_fast::multi_tensor_l2norm on CPU: global and per-tensor L2 norms of a tensor list,
// optionally of the GradScaler-unscaled values (same contract as csrc/cuda/multi_tensor_l2norm.cu).
// Squares are summed in fp32 per vector lane over at most 32 elements, then in double per chunk of
// 65,536 elements and over the chunks in order (csrc/cpu/optim_vec.h, optim_cpu.h), so the result
// does not depend on the thread count. The CUDA kernel sums fp32 per-thread partials of at most
// 128 elements, then fp32 tree reductions. The per-ISA loop is in csrc/cpu/optim_kernels_impl.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "classy_fast/dispatch.h"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cpu.h"
#include "classy_fast/optim_math.h"
#include "cpu/optim_kernels.h"

namespace classy_fast {
namespace {

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
  std::vector<cpu::NormTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(tensors.size());
  numels.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    tasks.push_back(cpu::NormTask{t.const_data_ptr(), t.scalar_type(), inv_scale});
    numels.push_back(t.numel());
  }
  const std::vector<double> sums = optim_cpu::reduce_chunks(tasks, numels, cpu::optim_kernels().sum_of_squares);
  double total = 0.0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    total += sums[i];
    if (per_tensor) norms.data_ptr<float>()[i] = static_cast<float>(std::sqrt(sums[i]));
  }
  *global.data_ptr<float>() = static_cast<float>(std::sqrt(total));
  return {global, norms};
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("multi_tensor_l2norm", &multi_tensor_l2norm_cpu); }

}  // namespace classy_fast
