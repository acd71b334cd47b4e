// classy_fast::fused_sgd_ on CUDA: torch.optim.SGD's update for a whole param group in one
// multi-tensor launch per dtype, with GradScaler unscaling, global-norm clipping and the
// found_inf skip folded in (see optim_math.h for the per-element math).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>


#include "classy_fast/dispatch.h"
#include "classy_fast/multi_tensor_apply.cuh"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cuda.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace {

using namespace optim_math;

enum Row { kParam = 0, kGrad, kMomentum, kMaster, kStep, kDepth };
using Meta = mta::TensorListMeta<kDepth>;

struct SgdArgs {
  DeviceScalar lr;
  DeviceScalar grad_scale;
  DeviceScalar found_inf;
  DeviceScalar grad_norm;  // global norm of the unscaled grads: clip when given
  float max_grad_norm;
  float weight_decay;
  float momentum;
  float dampening;
  bool nesterov;
  bool maximize;
  bool has_momentum;
};

// P: param/grad storage type. S: momentum/master storage type (fp32 with master weights, else P).
template <typename P, typename S>
__global__ void __launch_bounds__(mta::kBlockSize)
    fused_sgd_kernel(const __grid_constant__ Meta meta, const SgdArgs args) {
  if (skip_step(args.found_inf)) return;  // whole grid exits: params and state untouched
  const mta::BlockTask task = mta::block_task(meta);
  P* param = mta::chunk_ptr<P>(meta, kParam, task);
  const P* grad = mta::chunk_ptr<const P>(meta, kGrad, task);
  S* momentum = mta::chunk_ptr<S>(meta, kMomentum, task);  // nullptr without momentum
  S* master = mta::chunk_ptr<S>(meta, kMaster, task);      // nullptr without master weights
  const float* step = mta::tensor_scalar<const float>(meta, kStep, task);

  const GradTransform transform = make_grad_transform(args.grad_scale, args.grad_norm, args.max_grad_norm,
                                                      args.maximize);
  const SgdHyper hyper{args.lr.get(0.0f), args.weight_decay, args.momentum,      args.dampening,
                       args.nesterov,     args.has_momentum, *step == 1.0f};
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(param) && mta::vec_aligned(grad) &&
                          mta::vec_aligned(momentum) && mta::vec_aligned(master);

  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float w[mta::kILP], g[mta::kILP], buf[mta::kILP] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (master != nullptr) {
      mta::load(w, master, ix);
    } else {
      mta::load(w, param, ix);
    }
    mta::load(g, grad, ix);
    if (momentum != nullptr && !hyper.first_step) mta::load(buf, momentum, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) sgd_update(w[k], transform(g[k]), buf[k], hyper);
    if (momentum != nullptr) mta::store(momentum, buf, ix);
    if (master != nullptr) mta::store(master, w, ix);
    mta::store(param, w, ix);
  });
}

void fused_sgd_cuda(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
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

  SgdArgs args;
  args.lr = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  args.grad_scale = optim_checks::device_scalar(kOp, grad_scale, rows.device, "grad_scale");
  args.found_inf = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  args.grad_norm = optim_checks::device_scalar(kOp, grad_norm, rows.device, "grad_norm");
  args.max_grad_norm = static_cast<float>(max_grad_norm);
  args.weight_decay = static_cast<float>(weight_decay);
  args.momentum = static_cast<float>(momentum);
  args.dampening = static_cast<float>(dampening);
  args.nesterov = nesterov;
  args.maximize = maximize;
  args.has_momentum = has_momentum;

  const c10::cuda::CUDAGuard guard(rows.device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Counted before the update reads them: step 1 initialises the momentum buffer.
  optim_cuda::increment_steps(steps, args.found_inf.ptr);

  const std::vector<at::TensorList> table = {params, grads, has_momentum ? momentum_buffers : at::TensorList(),
                                             rows.has_master ? master_params : at::TensorList(), steps};
  for (const auto& bucket : optim_checks::indices_by_dtype(params)) {
    optim_cuda::dispatch_param_and_state_types(bucket.first, rows.has_master, kOp, [&](auto param_tag, auto state_tag) {
      using scalar_t = decltype(param_tag);
      using S = decltype(state_tag);
      mta::for_each_launch<kDepth>(table, bucket.second, 0, [&](const Meta& meta) {
        fused_sgd_kernel<scalar_t, S><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("fused_sgd_", &fused_sgd_cuda); }

}  // namespace classy_fast
