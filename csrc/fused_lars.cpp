// classy_fast::fused_lars_ on CPU: same math and argument contract as csrc/cuda/fused_lars.cu
// (LARS, You et al. 2017; per-tensor norms from classy_fast::multi_tensor_l2norm).
// This file checks the arguments and fills one task per tensor; the per-ISA element loops are in
// csrc/cpu/optim_kernels_impl.h, spread over threads by classy_fast/optim_cpu.h.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cpu.h"
#include "classy_fast/optim_math.h"
#include "cpu/optim_kernels.h"

namespace classy_fast {
namespace {

using namespace optim_math;

void fused_lars_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                    at::TensorList master_params, const at::Tensor& lr, const std::optional<at::Tensor>& param_norms,
                    const std::optional<at::Tensor>& grad_norms, double weight_decay, double momentum,
                    double trust_coefficient, double eps, bool nesterov, bool maximize,
                    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                    const std::optional<at::Tensor>& grad_norm, double max_grad_norm) {
  constexpr const char* kOp = "classy_fast::fused_lars_";
  if (params.empty()) return;
  const optim_checks::ParamRows rows = optim_checks::check_params(kOp, params, grads, master_params);
  optim_checks::check_state(kOp, momentum_buffers, params, rows.has_master, "momentum_buffers");
  const DeviceScalar lr_s = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  const float* w_norms = optim_checks::per_tensor_norms(kOp, param_norms, params.size(), rows.device, "param_norms");
  const float* g_norms = optim_checks::per_tensor_norms(kOp, grad_norms, params.size(), rows.device, "grad_norms");
  TORCH_CHECK((w_norms == nullptr) == (g_norms == nullptr), kOp,
              ": param_norms and grad_norms go together (both for an adapted group, neither for an excluded one)");
  const DeviceScalar scale_s = optim_checks::device_scalar(kOp, grad_scale, rows.device, "grad_scale");
  const DeviceScalar inf_s = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  const DeviceScalar norm_s = optim_checks::device_scalar(kOp, grad_norm, rows.device, "grad_norm");
  if (skip_step(inf_s)) return;

  const float max_norm = static_cast<float>(max_grad_norm);
  const GradTransform transform = make_grad_transform(scale_s, norm_s, max_norm, maximize);
  // Clipping scales the whole gradient, so it scales each tensor's grad norm too.
  const float clip = norm_s.ptr != nullptr ? clip_coefficient(*norm_s.ptr, max_norm) : 1.0f;
  std::vector<cpu::LarsTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(params.size());
  numels.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const float trust =
        w_norms == nullptr ? 1.0f
                           : lars_trust_ratio(w_norms[i], g_norms[i] * clip, static_cast<float>(trust_coefficient),
                                              static_cast<float>(weight_decay), static_cast<float>(eps));
    const LarsHyper hyper{lr_s.get(0.0f) * trust, static_cast<float>(weight_decay), static_cast<float>(momentum),
                          nesterov};
    const cpu::TensorRow row{.param = params[i].data_ptr(),
                             .grad = grads[i].const_data_ptr(),
                             .state0 = momentum_buffers[i].data_ptr(),
                             .master = static_cast<float*>(optim_cpu::data_or_null(master_params, i)),
                             .dtype = params[i].scalar_type()};
    tasks.push_back(cpu::LarsTask{row, transform, hyper});
    numels.push_back(params[i].numel());
  }
  optim_cpu::run_chunks(tasks, numels, cpu::optim_kernels().lars);
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("fused_lars_", &fused_lars_cpu); }

}  // namespace classy_fast
