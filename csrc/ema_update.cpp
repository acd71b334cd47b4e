// classy_fast::ema_update_ on CPU: ema = decay * ema + (1 - decay) * param over a list of tensors
// (same contract as csrc/cuda/ema_update.cu).
// This file checks the arguments and fills one task per tensor; the per-ISA element loops are in
// csrc/cpu/optim_kernels_impl.h, spread over threads by classy_fast/optim_cpu.h.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

#include "classy_fast/dispatch.h"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cpu.h"
#include "cpu/optim_kernels.h"

namespace classy_fast {
namespace {

void ema_update_cpu(at::TensorList ema_params, at::TensorList params, const std::optional<at::Tensor>& decay_tensor,
                    double decay) {
  constexpr const char* kOp = "classy_fast::ema_update_";
  optim_checks::check_list_length(kOp, params, ema_params.size(), "params");
  if (ema_params.empty()) return;
  const c10::Device device = ema_params[0].device();
  for (size_t i = 0; i < ema_params.size(); ++i) {
    const at::Tensor& e = ema_params[i];
    TORCH_CHECK(e.device() == device, kOp, ": ema_params[", i, "] is on ", e.device(), ", expected ", device);
    TORCH_CHECK(is_supported_float_type(e.scalar_type()), kOp, ": ema_params[", i, "] has dtype ",
                e.scalar_type(), " (supported: float32, bfloat16, float16)");
    optim_checks::check_like(kOp, e, e, "ema_params", i);
    optim_checks::check_like(kOp, params[i], e, "params", i);
    const c10::ScalarType p = params[i].scalar_type();
    TORCH_CHECK(p == e.scalar_type() || (e.scalar_type() == at::kFloat && optim_checks::is_low_precision(p)), kOp,
                ": params[", i, "] has dtype ", p, "; expected the EMA's dtype ", e.scalar_type(),
                " (or bf16/fp16 params with an fp32 EMA)");
  }
  const float d = optim_checks::device_scalar(kOp, decay_tensor, device, "decay_tensor").get(static_cast<float>(decay));
  std::vector<cpu::EmaTask> tasks;
  std::vector<int64_t> numels;
  tasks.reserve(ema_params.size());
  numels.reserve(ema_params.size());
  for (size_t i = 0; i < ema_params.size(); ++i) {
    tasks.push_back(cpu::EmaTask{ema_params[i].data_ptr(), params[i].const_data_ptr(), params[i].scalar_type(),
                                 ema_params[i].scalar_type() == at::kFloat, d});
    numels.push_back(params[i].numel());
  }
  optim_cpu::run_chunks(tasks, numels, cpu::optim_kernels().ema);
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) { m.impl("ema_update_", &ema_update_cpu); }

}  // namespace classy_fast
