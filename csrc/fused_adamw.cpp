// classy_fast::fused_adamw_ on CPU: same math and argument contract as csrc/cuda/fused_adamw.cu
// (torch.optim.AdamW's update, GradScaler unscaling, clipping and the found_inf skip folded in).
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

void fused_adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList master_params, at::TensorList steps,
                     const at::Tensor& lr, double beta1, double beta2, double weight_decay, double eps,
                     bool maximize, const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf, const std::optional<at::Tensor>& grad_norm,
                     double max_grad_norm) {
  constexpr const char* kOp = "classy_fast::fused_adamw_";
  if (params.empty()) return;
  const optim_checks::ParamRows rows = optim_checks::check_params(kOp, params, grads, master_params);
  optim_checks::check_state(kOp, exp_avgs, params, rows.has_master, "exp_avgs");
  optim_checks::check_state(kOp, exp_avg_sqs, params, rows.has_master, "exp_avg_sqs");
  optim_checks::check_steps(kOp, steps, params.size(), rows.device);
  const DeviceScalar lr_s = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  const DeviceScalar scale_s = optim_checks::device_scalar(kOp, grad_scale, rows.device, "grad_scale");
  const DeviceScalar inf_s = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  const DeviceScalar norm_s = optim_checks::device_scalar(kOp, grad_norm, rows.device, "grad_norm");
  if (skip_step(inf_s)) return;

  const GradTransform transform =
      make_grad_transform(scale_s, norm_s, static_cast<float>(max_grad_norm), maximize);
  std::vector<cpu::AdamwTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(params.size());
  numels.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    float& step = *steps[i].data_ptr<float>();
    step += 1.0f;
    const AdamwHyper hyper =
        make_adamw_hyper(lr_s.get(0.0f), static_cast<float>(beta1), static_cast<float>(beta2),
                         static_cast<float>(weight_decay), static_cast<float>(eps), step);
    const cpu::TensorRow row{.param = params[i].data_ptr(),
                             .grad = grads[i].const_data_ptr(),
                             .state0 = exp_avgs[i].data_ptr(),
                             .state1 = exp_avg_sqs[i].data_ptr(),
                             .master = static_cast<float*>(optim_cpu::data_or_null(master_params, i)),
                             .dtype = params[i].scalar_type()};
    tasks.push_back(cpu::AdamwTask{row, transform, hyper});
    numels.push_back(params[i].numel());
  }
  optim_cpu::run_chunks(tasks, numels, cpu::optim_kernels().adamw);
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("fused_adamw_", &fused_adamw_cpu); }

}  // namespace classy_fast
