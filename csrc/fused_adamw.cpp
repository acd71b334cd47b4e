// classy_fast::fused_adamw_ on CPU: same math and argument contract as csrc/cuda/fused_adamw.cu
// (torch.optim.AdamW's update, GradScaler unscaling, clipping and the found_inf skip folded in).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "classy_fast/dispatch.h"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cpu.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace {

using namespace optim_math;

template <typename P, typename S, bool kMaster>
void adamw_tensor(P* param, const P* grad, S* exp_avg, S* exp_avg_sq, S* master, int64_t n,
                  const GradTransform transform, const AdamwHyper hyper) {
  optim_cpu::parallel_elements(n, [&](int64_t begin, int64_t end) {
    // Local copies: the stores below could alias the captured structs' floats, which would keep
    // the compiler from hoisting (and vectorizing) anything that reads them.
    const auto h = hyper;
    const auto t = transform;
    for (int64_t j = begin; j < end; ++j) {
      float w = kMaster ? static_cast<float>(master[j]) : static_cast<float>(param[j]);
      float m = static_cast<float>(exp_avg[j]);
      float v = static_cast<float>(exp_avg_sq[j]);
      adamw_update(w, t(static_cast<float>(grad[j])), m, v, h);
      exp_avg[j] = static_cast<S>(m);
      exp_avg_sq[j] = static_cast<S>(v);
      if constexpr (kMaster) master[j] = static_cast<S>(w);
      param[j] = static_cast<P>(w);
    }
  });
}

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
  for (size_t i = 0; i < params.size(); ++i) {
    float& step = *steps[i].data_ptr<float>();
    step += 1.0f;
    const AdamwHyper hyper =
        make_adamw_hyper(lr_s.get(0.0f), static_cast<float>(beta1), static_cast<float>(beta2),
                         static_cast<float>(weight_decay), static_cast<float>(eps), step);
    CLASSY_FAST_DISPATCH_FLOAT_TYPES(params[i].scalar_type(), kOp, [&] {
      using P = scalar_t;
      optim_cpu::with_state_type<P>(rows.has_master, [&](auto state_tag) {
        using S = decltype(state_tag);
        optim_cpu::with_flag(rows.has_master, [&](auto master_c) {
          constexpr bool kMaster = decltype(master_c)::value;
          adamw_tensor<P, S, kMaster>(params[i].data_ptr<P>(), grads[i].const_data_ptr<P>(),
                                      static_cast<S*>(exp_avgs[i].data_ptr()),
                                      static_cast<S*>(exp_avg_sqs[i].data_ptr()),
                                      optim_cpu::ptr_or_null<S>(kMaster ? master_params[i] : params[i], kMaster),
                                      params[i].numel(), transform, hyper);
        });
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("fused_adamw_", &fused_adamw_cpu); }

}  // namespace classy_fast
