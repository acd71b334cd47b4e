// classy_fast::fused_lars_ on CUDA: LARS (You et al. 2017) for a whole param group in one
// multi-tensor launch per dtype. The per-tensor norms ||w|| and ||g|| come from a preceding
// classy_fast::multi_tensor_l2norm pass (device tensors, indexed by the tensor's position in the
// list); each block turns its tensor's norms into the trust ratio, so no host sync anywhere.
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

enum Row { kParam = 0, kGrad, kMomentum, kMaster, kDepth };
using Meta = mta::TensorListMeta<kDepth>;

struct LarsArgs {
  DeviceScalar lr;
  const float* param_norms;  // per tensor; nullptr: group excluded from adaptation (trust ratio 1)
  const float* grad_norms;   // per tensor, of the unscaled, unclipped grads
  DeviceScalar grad_scale;
  DeviceScalar found_inf;
  DeviceScalar grad_norm;
  float max_grad_norm;
  float weight_decay;
  float momentum;
  float trust_coefficient;
  float eps;
  bool nesterov;
  bool maximize;
};

template <typename P, typename S>
__global__ void __launch_bounds__(mta::kBlockSize)
    fused_lars_kernel(const __grid_constant__ Meta meta, const LarsArgs args) {
  if (skip_step(args.found_inf)) return;
  const mta::BlockTask task = mta::block_task(meta);
  P* param = mta::chunk_ptr<P>(meta, kParam, task);
  const P* grad = mta::chunk_ptr<const P>(meta, kGrad, task);
  S* momentum = mta::chunk_ptr<S>(meta, kMomentum, task);
  S* master = mta::chunk_ptr<S>(meta, kMaster, task);

  const GradTransform transform = make_grad_transform(args.grad_scale, args.grad_norm, args.max_grad_norm,
                                                      args.maximize);
  float trust = 1.0f;
  if (args.param_norms != nullptr) {
    const int index = meta.tensor_index[task.slot];
    // Clipping scales the whole gradient, so it scales this tensor's grad norm too.
    const float clip = args.grad_norm.ptr != nullptr ? clip_coefficient(*args.grad_norm.ptr, args.max_grad_norm)
                                                     : 1.0f;
    trust = lars_trust_ratio(args.param_norms[index], args.grad_norms[index] * clip, args.trust_coefficient,
                             args.weight_decay, args.eps);
  }
  const LarsHyper hyper{args.lr.get(0.0f) * trust, args.weight_decay, args.momentum, args.nesterov};
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(param) && mta::vec_aligned(grad) &&
                          mta::vec_aligned(momentum) && mta::vec_aligned(master);

  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float w[mta::kILP], g[mta::kILP], buf[mta::kILP];
    if (master != nullptr) {
      mta::load(w, master, ix);
    } else {
      mta::load(w, param, ix);
    }
    mta::load(g, grad, ix);
    mta::load(buf, momentum, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) lars_update(w[k], transform(g[k]), buf[k], hyper);
    mta::store(momentum, buf, ix);
    if (master != nullptr) mta::store(master, w, ix);
    mta::store(param, w, ix);
  });
}

void fused_lars_cuda(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                     at::TensorList master_params, const at::Tensor& lr, const std::optional<at::Tensor>& param_norms,
                     const std::optional<at::Tensor>& grad_norms, double weight_decay, double momentum,
                     double trust_coefficient, double eps, bool nesterov, bool maximize,
                     const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                     const std::optional<at::Tensor>& grad_norm, double max_grad_norm) {
  constexpr const char* kOp = "classy_fast::fused_lars_";
  if (params.empty()) return;
  const optim_checks::ParamRows rows = optim_checks::check_params(kOp, params, grads, master_params);
  optim_checks::check_state(kOp, momentum_buffers, params, rows.has_master, "momentum_buffers");

  LarsArgs args;
  args.lr = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  args.param_norms = optim_checks::per_tensor_norms(kOp, param_norms, params.size(), rows.device, "param_norms");
  args.grad_norms = optim_checks::per_tensor_norms(kOp, grad_norms, params.size(), rows.device, "grad_norms");
  TORCH_CHECK((args.param_norms == nullptr) == (args.grad_norms == nullptr), kOp,
              ": param_norms and grad_norms go together (both for an adapted group, neither for an excluded one)");
  args.grad_scale = optim_checks::device_scalar(kOp, grad_scale, rows.device, "grad_scale");
  args.found_inf = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  args.grad_norm = optim_checks::device_scalar(kOp, grad_norm, rows.device, "grad_norm");
  args.max_grad_norm = static_cast<float>(max_grad_norm);
  args.weight_decay = static_cast<float>(weight_decay);
  args.momentum = static_cast<float>(momentum);
  args.trust_coefficient = static_cast<float>(trust_coefficient);
  args.eps = static_cast<float>(eps);
  args.nesterov = nesterov;
  args.maximize = maximize;

  const c10::cuda::CUDAGuard guard(rows.device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const std::vector<at::TensorList> table = {params, grads, momentum_buffers,
                                             rows.has_master ? master_params : at::TensorList()};
  for (const auto& bucket : optim_checks::indices_by_dtype(params)) {
    optim_cuda::dispatch_param_and_state_types(bucket.first, rows.has_master, kOp, [&](auto param_tag, auto state_tag) {
      using scalar_t = decltype(param_tag);
      using S = decltype(state_tag);
      mta::for_each_launch<kDepth>(table, bucket.second, 0, [&](const Meta& meta) {
        fused_lars_kernel<scalar_t, S><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("fused_lars_", &fused_lars_cuda); }

}  // namespace classy_fast
