// classy_fast::fused_sgd_ on CPU: same math and argument contract as csrc/cuda/fused_sgd.cu
// (torch.optim.SGD's update, GradScaler unscaling, clipping and the found_inf skip folded in).
// The device scalars (lr, grad scale, found_inf, norm) are CPU tensors here and read directly.
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

void fused_sgd_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList master_params, at::TensorList steps, const at::Tensor& lr, double weight_decay,
                   double momentum, double dampening, bool nesterov, bool maximize,
                   const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                   const std::optional<at::Tensor>& grad_norm, double max_grad_norm) {
  constexpr const char* kOp = "classy_fast::fused_sgd_";
  if (params.empty()) return;
  const optim_checks::ParamRows rows = optim_checks::check_params(kOp, params, grads, master_params);
  const bool has_momentum = momentum != 0.0;
  if (has_momentum) optim_checks::check_state(kOp, momentum_buffers, params, rows.has_master, "momentum_buffers");
  optim_checks::check_steps(kOp, steps, params.size(), rows.device);
  const DeviceScalar lr_s = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  const DeviceScalar scale_s = optim_checks::device_scalar(kOp, grad_scale, rows.device, "grad_scale");
  const DeviceScalar inf_s = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  const DeviceScalar norm_s = optim_checks::device_scalar(kOp, grad_norm, rows.device, "grad_norm");
  if (skip_step(inf_s)) return;  // params, state and step counts untouched

  const GradTransform transform =
      make_grad_transform(scale_s, norm_s, static_cast<float>(max_grad_norm), maximize);
  std::vector<cpu::SgdTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(params.size());
  numels.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    float& step = *steps[i].data_ptr<float>();
    step += 1.0f;
    const SgdHyper hyper{lr_s.get(0.0f),  static_cast<float>(weight_decay), static_cast<float>(momentum),
                         static_cast<float>(dampening), nesterov, has_momentum, step == 1.0f};
    const cpu::TensorRow row{.param = params[i].data_ptr(),
                             .grad = grads[i].const_data_ptr(),
                             .state0 = has_momentum ? momentum_buffers[i].data_ptr() : nullptr,
                             .master = static_cast<float*>(optim_cpu::data_or_null(master_params, i)),
                             .dtype = params[i].scalar_type()};
    tasks.push_back(cpu::SgdTask{row, transform, hyper});
    numels.push_back(params[i].numel());
  }
  optim_cpu::run_chunks(tasks, numels, cpu::optim_kernels().sgd);
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("fused_sgd_", &fused_sgd_cpu); }

}  // namespace classy_fast
