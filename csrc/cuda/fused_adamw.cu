// classy_fast::fused_adamw_ on CUDA: torch.optim.AdamW's update for a whole param group in one
// multi-tensor launch per dtype, with GradScaler unscaling, global-norm clipping and the
// found_inf skip folded in. Bias corrections come from each tensor's device step counter, so
// nothing is computed on the host and a captured graph replays correctly.
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

enum Row { kParam = 0, kGrad, kExpAvg, kExpAvgSq, kMaster, kStep, kDepth };
using Meta = mta::TensorListMeta<kDepth>;

struct AdamwArgs {
  DeviceScalar lr;
  DeviceScalar grad_scale;
  DeviceScalar found_inf;
  DeviceScalar grad_norm;
  float max_grad_norm;
  float beta1;
  float beta2;
  float weight_decay;
  float eps;
  bool maximize;
};

// P: param/grad storage type. S: moment/master storage type (fp32 with master weights, else P).
template <typename P, typename S>
__global__ void __launch_bounds__(mta::kBlockSize)
    fused_adamw_kernel(const __grid_constant__ Meta meta, const AdamwArgs args) {
  if (skip_step(args.found_inf)) return;
  const mta::BlockTask task = mta::block_task(meta);
  P* param = mta::chunk_ptr<P>(meta, kParam, task);
  const P* grad = mta::chunk_ptr<const P>(meta, kGrad, task);
  S* exp_avg = mta::chunk_ptr<S>(meta, kExpAvg, task);
  S* exp_avg_sq = mta::chunk_ptr<S>(meta, kExpAvgSq, task);
  S* master = mta::chunk_ptr<S>(meta, kMaster, task);  // nullptr without master weights
  const float step = *mta::tensor_scalar<const float>(meta, kStep, task);

  const GradTransform transform = make_grad_transform(args.grad_scale, args.grad_norm, args.max_grad_norm,
                                                      args.maximize);
  const AdamwHyper hyper =
      make_adamw_hyper(args.lr.get(0.0f), args.beta1, args.beta2, args.weight_decay, args.eps, step);
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(param) && mta::vec_aligned(grad) &&
                          mta::vec_aligned(exp_avg) && mta::vec_aligned(exp_avg_sq) && mta::vec_aligned(master);

  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float w[mta::kILP], g[mta::kILP], m[mta::kILP], v[mta::kILP];
    if (master != nullptr) {
      mta::load(w, master, ix);
    } else {
      mta::load(w, param, ix);
    }
    mta::load(g, grad, ix);
    mta::load(m, exp_avg, ix);
    mta::load(v, exp_avg_sq, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) adamw_update(w[k], transform(g[k]), m[k], v[k], hyper);
    mta::store(exp_avg, m, ix);
    mta::store(exp_avg_sq, v, ix);
    if (master != nullptr) mta::store(master, w, ix);
    mta::store(param, w, ix);
  });
}

void fused_adamw_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
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

  AdamwArgs args;
  args.lr = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  args.grad_scale = optim_checks::device_scalar(kOp, grad_scale, rows.device, "grad_scale");
  args.found_inf = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  args.grad_norm = optim_checks::device_scalar(kOp, grad_norm, rows.device, "grad_norm");
  args.max_grad_norm = static_cast<float>(max_grad_norm);
  args.beta1 = static_cast<float>(beta1);
  args.beta2 = static_cast<float>(beta2);
  args.weight_decay = static_cast<float>(weight_decay);
  args.eps = static_cast<float>(eps);
  args.maximize = maximize;

  const c10::cuda::CUDAGuard guard(rows.device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  optim_cuda::increment_steps(steps, args.found_inf.ptr);  // the update uses the new count

  const std::vector<at::TensorList> table = {params, grads, exp_avgs, exp_avg_sqs,
                                             rows.has_master ? master_params : at::TensorList(), steps};
  for (const auto& bucket : optim_checks::indices_by_dtype(params)) {
    optim_cuda::dispatch_param_and_state_types(bucket.first, rows.has_master, kOp, [&](auto param_tag, auto state_tag) {
      using scalar_t = decltype(param_tag);
      using S = decltype(state_tag);
      mta::for_each_launch<kDepth>(table, bucket.second, 0, [&](const Meta& meta) {
        fused_adamw_kernel<scalar_t, S><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("fused_adamw_", &fused_adamw_cuda); }

}  // namespace classy_fast
