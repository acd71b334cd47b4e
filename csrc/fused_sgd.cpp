// classy_fast::fused_sgd_ on CPU: same math and argument contract as csrc/cuda/fused_sgd.cu
// (torch.optim.SGD's update, GradScaler unscaling, clipping and the found_inf skip folded in).
// The device scalars (lr, grad scale, found_inf, norm) are CPU tensors here and read directly.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "classy_fast/dispatch.h"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cpu.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace {

using namespace optim_math;

template <typename P, typename S, bool kMaster, bool kMomentum>
void sgd_tensor(P* param, const P* grad, S* momentum, S* master, int64_t n, const GradTransform transform,
                const SgdHyper hyper) {
  optim_cpu::parallel_elements(n, [&](int64_t begin, int64_t end) {
    // Local copies: the stores below could alias the captured structs' floats, which would keep
    // the compiler from hoisting (and vectorizing) anything that reads them.
    const auto h = hyper;
    const auto t = transform;
    for (int64_t j = begin; j < end; ++j) {
      float w = kMaster ? static_cast<float>(master[j]) : static_cast<float>(param[j]);
      // Loaded even on the first step (the buffer starts as zeros and sgd_update ignores it then):
      // a conditional load would keep the loop from vectorizing.
      float buf = kMomentum ? static_cast<float>(momentum[j]) : 0.0f;
      sgd_update(w, t(static_cast<float>(grad[j])), buf, h);
      if constexpr (kMomentum) momentum[j] = static_cast<S>(buf);
      if constexpr (kMaster) master[j] = static_cast<S>(w);
      param[j] = static_cast<P>(w);
    }
  });
}

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
  for (size_t i = 0; i < params.size(); ++i) {
    float& step = *steps[i].data_ptr<float>();
    step += 1.0f;
    const SgdHyper hyper{lr_s.get(0.0f),  static_cast<float>(weight_decay), static_cast<float>(momentum),
                         static_cast<float>(dampening), nesterov, has_momentum, step == 1.0f};
    const int64_t n = params[i].numel();
    CLASSY_FAST_DISPATCH_FLOAT_TYPES(params[i].scalar_type(), kOp, [&] {
      using P = scalar_t;
      optim_cpu::with_state_type<P>(rows.has_master, [&](auto state_tag) {
        using S = decltype(state_tag);
        optim_cpu::with_flag(rows.has_master, [&](auto master_c) {
          optim_cpu::with_flag(has_momentum, [&](auto momentum_c) {
            constexpr bool kMaster = decltype(master_c)::value;
            constexpr bool kMomentum = decltype(momentum_c)::value;
            sgd_tensor<P, S, kMaster, kMomentum>(
                params[i].data_ptr<P>(), grads[i].const_data_ptr<P>(),
                optim_cpu::ptr_or_null<S>(kMomentum ? momentum_buffers[i] : params[i], kMomentum),
                optim_cpu::ptr_or_null<S>(kMaster ? master_params[i] : params[i], kMaster), n, transform, hyper);
          });
        });
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("fused_sgd_", &fused_sgd_cpu); }

}  // namespace classy_fast
