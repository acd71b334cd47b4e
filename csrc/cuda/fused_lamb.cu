// classy_fast::fused_lamb_moments_ / fused_lamb_apply_ on CUDA: LAMB (You et al. 2019) in two
// multi-tensor passes, because the trust ratio ||w|| / ||u|| needs the norm of the whole update
// direction u before any element of the tensor may move.
//
// Stage 1 (moments): reads g, m, v, w; writes m, v; writes per-chunk partial sums of w^2 and u^2
//   (u recomputed from the stored, rounded m and v), reduced to per-tensor norms by segment_norms.
// Stage 2 (apply): reads m, v, w and the norms; recomputes u with the same operations (so it is
//   bit-identical to stage 1's) and writes w -= lr * ratio * u.
// u is recomputed rather than stored: the traffic is the same (stage 1 would write u, stage 2 read
// it) and no temporary the size of the model is needed.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <tuple>
#include <utility>

#include "classy_fast/dispatch.h"
#include "classy_fast/multi_tensor_apply.cuh"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cuda.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace {

using namespace optim_math;

// ------------------------------------------------------------------------------------ stage 1

enum MomentRow { kGrad = 0, kExpAvg, kExpAvgSq, kWeight, kMomentStep, kMomentDepth };
using MomentMeta = mta::TensorListMeta<kMomentDepth>;

struct MomentArgs {
  float* partials;  // [2, chunks]: row 0 sums w^2, row 1 sums u^2
  int64_t partial_row_stride;
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

// P: grad storage type. S: moments/weight storage type (fp32 master weights, or P).
template <typename P, typename S>
__global__ void __launch_bounds__(mta::kBlockSize)
    lamb_moments_kernel(const __grid_constant__ MomentMeta meta, const MomentArgs args) {
  __shared__ float scratch[32];
  const int64_t slot_index = meta.block_offset + blockIdx.x;
  if (skip_step(args.found_inf)) {
    // Nothing moves in stage 2 either; the norms are still written so they are never garbage.
    if (threadIdx.x == 0) {
      args.partials[slot_index] = 0.0f;
      args.partials[args.partial_row_stride + slot_index] = 0.0f;
    }
    return;
  }
  const mta::BlockTask task = mta::block_task(meta);
  const P* grad = mta::chunk_ptr<const P>(meta, kGrad, task);
  S* exp_avg = mta::chunk_ptr<S>(meta, kExpAvg, task);
  S* exp_avg_sq = mta::chunk_ptr<S>(meta, kExpAvgSq, task);
  const S* weight = mta::chunk_ptr<const S>(meta, kWeight, task);
  const float step = *mta::tensor_scalar<const float>(meta, kMomentStep, task);

  const GradTransform transform = make_grad_transform(args.grad_scale, args.grad_norm, args.max_grad_norm,
                                                      args.maximize);
  const LambHyper hyper = make_lamb_hyper(args.beta1, args.beta2, args.eps, args.weight_decay, step);
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(grad) && mta::vec_aligned(exp_avg) &&
                          mta::vec_aligned(exp_avg_sq) && mta::vec_aligned(weight);
  float w_sq = 0.0f;
  float u_sq = 0.0f;
  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float g[mta::kILP], m[mta::kILP], v[mta::kILP], w[mta::kILP];
    mta::load(g, grad, ix);
    mta::load(m, exp_avg, ix);
    mta::load(v, exp_avg_sq, ix);
    mta::load(w, weight, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) {
      lamb_moments(transform(g[k]), m[k], v[k], hyper);
      // Round to the storage type first: stage 2 recomputes u from the stored values.
      m[k] = static_cast<float>(static_cast<S>(m[k]));
      v[k] = static_cast<float>(static_cast<S>(v[k]));
      if (ix.valid(k)) {
        const float u = lamb_direction(w[k], m[k], v[k], hyper);
        w_sq += w[k] * w[k];
        u_sq += u * u;
      }
    }
    mta::store(exp_avg, m, ix);
    mta::store(exp_avg_sq, v, ix);
  });
  w_sq = mta::block_sum(w_sq, scratch);
  u_sq = mta::block_sum(u_sq, scratch);
  if (threadIdx.x == 0) {
    args.partials[slot_index] = w_sq;
    args.partials[args.partial_row_stride + slot_index] = u_sq;
  }
}

void check_moment_lists(const char* op, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                        at::TensorList weights, at::TensorList steps) {
  TORCH_CHECK(!grads.empty(), op, ": empty gradient list");
  const size_t n = grads.size();
  optim_checks::check_list_length(op, weights, n, "weights");
  optim_checks::check_list_length(op, exp_avgs, n, "exp_avgs");
  optim_checks::check_list_length(op, exp_avg_sqs, n, "exp_avg_sqs");
  const c10::Device device = grads[0].device();
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& g = grads[i];
    TORCH_CHECK(g.device() == device, op, ": grads[", i, "] is on ", g.device(), ", expected ", device);
    TORCH_CHECK(is_supported_float_type(g.scalar_type()), op, ": grads[", i, "] has dtype ", g.scalar_type(),
                " (supported: float32, bfloat16, float16)");
    optim_checks::check_like(op, g, g, "grads", i);
    optim_checks::check_like(op, weights[i], g, "weights", i);
    const c10::ScalarType state = weights[i].scalar_type();
    TORCH_CHECK(state == g.scalar_type() ||
                    (state == at::kFloat && optim_checks::is_low_precision(g.scalar_type())),
                op, ": weights[", i, "] must have the grad's dtype or be fp32 master weights, got ", state);
    optim_checks::check_like(op, exp_avgs[i], g, "exp_avgs", i);
    optim_checks::check_dtype(op, exp_avgs[i], state, "exp_avgs", i);
    optim_checks::check_like(op, exp_avg_sqs[i], g, "exp_avg_sqs", i);
    optim_checks::check_dtype(op, exp_avg_sqs[i], state, "exp_avg_sqs", i);
  }
  optim_checks::check_steps(op, steps, n, device);
}

std::tuple<at::Tensor, at::Tensor> fused_lamb_moments_cuda(
    at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs, at::TensorList weights,
    at::TensorList steps, double beta1, double beta2, double weight_decay, double eps, bool maximize,
    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
    const std::optional<at::Tensor>& grad_norm, double max_grad_norm) {
  constexpr const char* kOp = "classy_fast::fused_lamb_moments_";
  check_moment_lists(kOp, grads, exp_avgs, exp_avg_sqs, weights, steps);
  const c10::Device device = grads[0].device();
  MomentArgs args;
  args.grad_scale = optim_checks::device_scalar(kOp, grad_scale, device, "grad_scale");
  args.found_inf = optim_checks::device_scalar(kOp, found_inf, device, "found_inf");
  args.grad_norm = optim_checks::device_scalar(kOp, grad_norm, device, "grad_norm");
  args.max_grad_norm = static_cast<float>(max_grad_norm);
  args.beta1 = static_cast<float>(beta1);
  args.beta2 = static_cast<float>(beta2);
  args.weight_decay = static_cast<float>(weight_decay);
  args.eps = static_cast<float>(eps);
  args.maximize = maximize;

  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto float_opts = grads[0].options().dtype(at::kFloat);
  const int64_t n = static_cast<int64_t>(grads.size());
  // Two separate outputs (an op's outputs must not alias each other).
  at::Tensor weight_norms = at::empty({n}, float_opts);
  at::Tensor update_norms = at::empty({n}, float_opts);

  // Bucket by (grad dtype, weight dtype): both select the kernel instantiation.
  std::map<std::pair<c10::ScalarType, c10::ScalarType>, std::vector<int>> buckets;
  for (int64_t i = 0; i < n; ++i) {
    buckets[{grads[i].scalar_type(), weights[i].scalar_type()}].push_back(static_cast<int>(i));
  }
  std::vector<std::vector<int>> order;
  for (const auto& kv : buckets) order.push_back(kv.second);
  std::vector<int64_t> begin, end;
  const int64_t total_chunks = optim_cuda::chunk_ranges(grads, order, begin, end);

  optim_cuda::increment_steps(steps, args.found_inf.ptr);  // bias corrections use the new count
  if (total_chunks == 0) {
    weight_norms.zero_();
    update_norms.zero_();
    return {weight_norms, update_norms};
  }
  at::Tensor partials = at::empty({2, total_chunks}, float_opts);
  args.partials = partials.data_ptr<float>();
  args.partial_row_stride = total_chunks;

  const std::vector<at::TensorList> table = {grads, exp_avgs, exp_avg_sqs, weights, steps};
  int64_t offset = 0;
  for (const auto& kv : buckets) {
    const bool master = kv.first.second != kv.first.first;
    optim_cuda::dispatch_param_and_state_types(kv.first.first, master, kOp, [&](auto param_tag, auto state_tag) {
      using scalar_t = decltype(param_tag);
      using S = decltype(state_tag);
      offset += mta::for_each_launch<kMomentDepth>(table, kv.second, offset, [&](const MomentMeta& meta) {
        lamb_moments_kernel<scalar_t, S><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  TORCH_CHECK(offset == total_chunks, kOp, ": internal error, chunk count mismatch");
  optim_cuda::segment_norms(partials, begin, end, {weight_norms.data_ptr<float>(), update_norms.data_ptr<float>()});
  return {weight_norms, update_norms};
}

// ------------------------------------------------------------------------------------ stage 2

enum ApplyRow { kParam = 0, kApplyExpAvg, kApplyExpAvgSq, kMaster, kApplyStep, kApplyDepth };
using ApplyMeta = mta::TensorListMeta<kApplyDepth>;

struct ApplyArgs {
  DeviceScalar lr;
  const float* param_norms;   // per tensor; nullptr: excluded from adaptation (ratio 1)
  const float* update_norms;  // per tensor
  DeviceScalar found_inf;
  float beta1;
  float beta2;
  float weight_decay;
  float eps;
  float trust_clamp;  // <= 0: none
};

template <typename P, typename S>
__global__ void __launch_bounds__(mta::kBlockSize)
    lamb_apply_kernel(const __grid_constant__ ApplyMeta meta, const ApplyArgs args) {
  if (skip_step(args.found_inf)) return;
  const mta::BlockTask task = mta::block_task(meta);
  P* param = mta::chunk_ptr<P>(meta, kParam, task);
  const S* exp_avg = mta::chunk_ptr<const S>(meta, kApplyExpAvg, task);
  const S* exp_avg_sq = mta::chunk_ptr<const S>(meta, kApplyExpAvgSq, task);
  S* master = mta::chunk_ptr<S>(meta, kMaster, task);
  const float step = *mta::tensor_scalar<const float>(meta, kApplyStep, task);

  const LambHyper hyper = make_lamb_hyper(args.beta1, args.beta2, args.eps, args.weight_decay, step);
  float ratio = 1.0f;
  if (args.param_norms != nullptr) {
    const int index = meta.tensor_index[task.slot];
    ratio = lamb_trust_ratio(args.param_norms[index], args.update_norms[index], args.trust_clamp);
  }
  const float scaled_lr = args.lr.get(0.0f) * ratio;
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(param) && mta::vec_aligned(exp_avg) &&
                          mta::vec_aligned(exp_avg_sq) && mta::vec_aligned(master);
  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float w[mta::kILP], m[mta::kILP], v[mta::kILP];
    if (master != nullptr) {
      mta::load(w, master, ix);
    } else {
      mta::load(w, param, ix);
    }
    mta::load(m, exp_avg, ix);
    mta::load(v, exp_avg_sq, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) w[k] -= scaled_lr * lamb_direction(w[k], m[k], v[k], hyper);
    if (master != nullptr) mta::store(master, w, ix);
    mta::store(param, w, ix);
  });
}

void fused_lamb_apply_cuda(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                           at::TensorList master_params, at::TensorList steps, const at::Tensor& lr,
                           const std::optional<at::Tensor>& param_norms, const std::optional<at::Tensor>& update_norms,
                           double beta1, double beta2, double weight_decay, double eps, double trust_clamp,
                           const std::optional<at::Tensor>& found_inf) {
  constexpr const char* kOp = "classy_fast::fused_lamb_apply_";
  if (params.empty()) return;
  // The grads are not read here; params stand in for them in the shared layout checks.
  const optim_checks::ParamRows rows = optim_checks::check_params(kOp, params, params, master_params);
  optim_checks::check_state(kOp, exp_avgs, params, rows.has_master, "exp_avgs");
  optim_checks::check_state(kOp, exp_avg_sqs, params, rows.has_master, "exp_avg_sqs");
  optim_checks::check_steps(kOp, steps, params.size(), rows.device);
  ApplyArgs args;
  args.lr = optim_checks::device_scalar(kOp, lr, rows.device, "lr");
  args.param_norms = optim_checks::per_tensor_norms(kOp, param_norms, params.size(), rows.device, "param_norms");
  args.update_norms = optim_checks::per_tensor_norms(kOp, update_norms, params.size(), rows.device, "update_norms");
  TORCH_CHECK((args.param_norms == nullptr) == (args.update_norms == nullptr), kOp,
              ": param_norms and update_norms go together");
  args.found_inf = optim_checks::device_scalar(kOp, found_inf, rows.device, "found_inf");
  args.beta1 = static_cast<float>(beta1);
  args.beta2 = static_cast<float>(beta2);
  args.weight_decay = static_cast<float>(weight_decay);
  args.eps = static_cast<float>(eps);
  args.trust_clamp = static_cast<float>(trust_clamp);

  const c10::cuda::CUDAGuard guard(rows.device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const std::vector<at::TensorList> table = {params, exp_avgs, exp_avg_sqs,
                                             rows.has_master ? master_params : at::TensorList(), steps};
  for (const auto& bucket : optim_checks::indices_by_dtype(params)) {
    optim_cuda::dispatch_param_and_state_types(bucket.first, rows.has_master, kOp, [&](auto param_tag, auto state_tag) {
      using scalar_t = decltype(param_tag);
      using S = decltype(state_tag);
      mta::for_each_launch<kApplyDepth>(table, bucket.second, 0, [&](const ApplyMeta& meta) {
        lamb_apply_kernel<scalar_t, S><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) {
  m.impl("fused_lamb_moments_", &fused_lamb_moments_cuda);
  m.impl("fused_lamb_apply_", &fused_lamb_apply_cuda);
}

}  // namespace classy_fast
