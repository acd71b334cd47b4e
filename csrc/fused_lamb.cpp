// classy_fast::fused_lamb_moments_ / fused_lamb_apply_ on CPU: same math and argument contract as
// csrc/cuda/fused_lamb.cu (LAMB, You et al. 2019, in two passes: moments + norms, then apply).
// This file checks the arguments and fills one task per tensor; the per-ISA element loops are in
// csrc/cpu/optim_kernels_impl.h, spread over threads by classy_fast/optim_cpu.h.
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

using namespace optim_math;

std::tuple<at::Tensor, at::Tensor> fused_lamb_moments_cpu(
    at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs, at::TensorList weights,
    at::TensorList steps, double beta1, double beta2, double weight_decay, double eps, bool maximize,
    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
    const std::optional<at::Tensor>& grad_norm, double max_grad_norm) {
  constexpr const char* kOp = "classy_fast::fused_lamb_moments_";
  TORCH_CHECK(!grads.empty(), kOp, ": empty gradient list");
  const size_t n = grads.size();
  optim_checks::check_list_length(kOp, weights, n, "weights");
  const c10::Device device = grads[0].device();
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(grads[i].device() == device, kOp, ": grads[", i, "] is on ", grads[i].device());
    TORCH_CHECK(is_supported_float_type(grads[i].scalar_type()), kOp, ": grads[", i, "] has dtype ",
                grads[i].scalar_type(), " (supported: float32, bfloat16, float16)");
    optim_checks::check_like(kOp, grads[i], grads[i], "grads", i);
    optim_checks::check_like(kOp, weights[i], grads[i], "weights", i);
    const c10::ScalarType state = weights[i].scalar_type();
    TORCH_CHECK(state == grads[i].scalar_type() ||
                    (state == at::kFloat && optim_checks::is_low_precision(grads[i].scalar_type())),
                kOp, ": weights[", i, "] must have the grad's dtype or be fp32 master weights, got ", state);
  }
  // exp_avgs / exp_avg_sqs take the weights' dtype (the state dtype).
  optim_checks::check_list_length(kOp, exp_avgs, n, "exp_avgs");
  optim_checks::check_list_length(kOp, exp_avg_sqs, n, "exp_avg_sqs");
  for (size_t i = 0; i < n; ++i) {
    optim_checks::check_like(kOp, exp_avgs[i], grads[i], "exp_avgs", i);
    optim_checks::check_dtype(kOp, exp_avgs[i], weights[i].scalar_type(), "exp_avgs", i);
    optim_checks::check_like(kOp, exp_avg_sqs[i], grads[i], "exp_avg_sqs", i);
    optim_checks::check_dtype(kOp, exp_avg_sqs[i], weights[i].scalar_type(), "exp_avg_sqs", i);
  }
  optim_checks::check_steps(kOp, steps, n, device);
  const DeviceScalar scale_s = optim_checks::device_scalar(kOp, grad_scale, device, "grad_scale");
  const DeviceScalar inf_s = optim_checks::device_scalar(kOp, found_inf, device, "found_inf");
  const DeviceScalar norm_s = optim_checks::device_scalar(kOp, grad_norm, device, "grad_norm");

  const auto float_opts = grads[0].options().dtype(at::kFloat);
  at::Tensor weight_norms = at::empty({static_cast<int64_t>(n)}, float_opts);
  at::Tensor update_norms = at::empty({static_cast<int64_t>(n)}, float_opts);
  if (skip_step(inf_s)) {  // nothing moves; the norms are defined anyway
    weight_norms.zero_();
    update_norms.zero_();
    return {weight_norms, update_norms};
  }
  float* w_out = weight_norms.data_ptr<float>();
  float* u_out = update_norms.data_ptr<float>();
  const GradTransform transform =
      make_grad_transform(scale_s, norm_s, static_cast<float>(max_grad_norm), maximize);
  std::vector<cpu::LambMomentsTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(n);
  numels.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    float& step = *steps[i].data_ptr<float>();
    step += 1.0f;
    const LambHyper hyper = make_lamb_hyper(static_cast<float>(beta1), static_cast<float>(beta2),
                                            static_cast<float>(eps), static_cast<float>(weight_decay), step);
    // The weights are fp32 master copies when their dtype differs from the grads'.
    const bool master = weights[i].scalar_type() != grads[i].scalar_type();
    void* weight = weights[i].data_ptr();  // only read by the kernel
    const cpu::TensorRow row{.param = master ? nullptr : weight,
                             .grad = grads[i].const_data_ptr(),
                             .state0 = exp_avgs[i].data_ptr(),
                             .state1 = exp_avg_sqs[i].data_ptr(),
                             .master = master ? static_cast<float*>(weight) : nullptr,
                             .dtype = grads[i].scalar_type()};
    tasks.push_back(cpu::LambMomentsTask{row, transform, hyper});
    numels.push_back(grads[i].numel());
  }
  const std::vector<cpu::SquareSums> sums =
      optim_cpu::reduce_chunks(tasks, numels, cpu::optim_kernels().lamb_moments);
  for (size_t i = 0; i < n; ++i) {
    w_out[i] = static_cast<float>(std::sqrt(sums[i].w));
    u_out[i] = static_cast<float>(std::sqrt(sums[i].u));
  }
  return {weight_norms, update_norms};
}

void fused_lamb_apply_cpu(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                          at::TensorList master_params, at::TensorList steps, const at::Tensor& lr,
                          const std::optional<at::Tensor>& param_norms, const std::optional<at::Tensor>& update_norms,
                          double beta1, double beta2, double weight_decay, double eps, double trust_clamp,
                          const std::optional<at::Tensor>& found_inf) {
  constexpr const char* kOp = "classy_fast::fused_lamb_apply_";
  if (params.empty()) return;
  const optim_checks::ParamRows rows = optim_checks::check_params(kOp, params, params, master_params);
  optim_checks::check_state(kOp, exp_avgs, params, rows.has_master, "exp_avgs");
  optim_checks::check_state(kOp, exp_avg_sqs, params, rows.has_master, "exp_avg_sqs");
  optim_checks::check_steps(kOp, steps, params.size(), rows.device);
  const DeviceScalar lr_s = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  const float* w_norms = optim_checks::per_tensor_norms(kOp, param_norms, params.size(), rows.device, "param_norms");
  const float* u_norms = optim_checks::per_tensor_norms(kOp, update_norms, params.size(), rows.device, "update_norms");
  TORCH_CHECK((w_norms == nullptr) == (u_norms == nullptr), kOp, ": param_norms and update_norms go together");
  const DeviceScalar inf_s = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  if (skip_step(inf_s)) return;

  std::vector<cpu::LambApplyTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(params.size());
  numels.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const LambHyper hyper =
        make_lamb_hyper(static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(eps),
                        static_cast<float>(weight_decay), *steps[i].const_data_ptr<float>());
    const float ratio =
        w_norms == nullptr ? 1.0f : lamb_trust_ratio(w_norms[i], u_norms[i], static_cast<float>(trust_clamp));
    // The moments are only read here.
    const cpu::TensorRow row{.param = params[i].data_ptr(),
                             .state0 = exp_avgs[i].data_ptr(),
                             .state1 = exp_avg_sqs[i].data_ptr(),
                             .master = static_cast<float*>(optim_cpu::data_or_null(master_params, i)),
                             .dtype = params[i].scalar_type()};
    tasks.push_back(cpu::LambApplyTask{row, hyper, lr_s.get(0.0f) * ratio});
    numels.push_back(params[i].numel());
  }
  optim_cpu::run_chunks(tasks, numels, cpu::optim_kernels().lamb_apply);
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) {
  m.impl("fused_lamb_moments_", &fused_lamb_moments_cpu);
  m.impl("fused_lamb_apply_", &fused_lamb_apply_cpu);
}

}  // namespace classy_fast
