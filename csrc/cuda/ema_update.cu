// classy_fast::ema_update_ on CUDA: ema = decay * ema + (1 - decay) * param over a whole list of
// tensors in one multi-tensor launch per dtype pair. The decay is either a constant or a device
// scalar read in the kernel (a warmup schedule can update it in place, graph-safe).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <utility>

#include "classy_fast/dispatch.h"
#include "classy_fast/multi_tensor_apply.cuh"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cuda.h"
#include "classy_fast/optim_math.h"

namespace classy_fast {
namespace {

using Meta = mta::TensorListMeta<2>;

// E: EMA storage type; P: model tensor type (E == P, or fp32 EMA of bf16/fp16 weights).
template <typename E, typename P>
__global__ void __launch_bounds__(mta::kBlockSize)
    ema_update_kernel(const __grid_constant__ Meta meta, optim_math::DeviceScalar decay_tensor, float decay_value) {
  const mta::BlockTask task = mta::block_task(meta);
  E* ema = mta::chunk_ptr<E>(meta, 0, task);
  const P* value = mta::chunk_ptr<const P>(meta, 1, task);
  const float decay = decay_tensor.get(decay_value);
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(ema) && mta::vec_aligned(value);
  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float e[mta::kILP], x[mta::kILP];
    mta::load(e, ema, ix);
    mta::load(x, value, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) e[k] = optim_math::ema_update(e[k], x[k], decay);
    mta::store(ema, e, ix);
  });
}

void ema_update_cuda(at::TensorList ema_params, at::TensorList params, const std::optional<at::Tensor>& decay_tensor,
                     double decay) {
  constexpr const char* kOp = "classy_fast::ema_update_";
  optim_checks::check_list_length(kOp, params, ema_params.size(), "params");
  if (ema_params.empty()) return;
  const c10::Device device = ema_params[0].device();
  std::map<std::pair<c10::ScalarType, c10::ScalarType>, std::vector<int>> buckets;
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
    buckets[{e.scalar_type(), p}].push_back(static_cast<int>(i));
  }
  const optim_math::DeviceScalar decay_ptr = optim_checks::device_scalar(kOp, decay_tensor, device, "decay_tensor");
  const float decay_value = static_cast<float>(decay);
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const std::vector<at::TensorList> table = {ema_params, params};
  for (const auto& kv : buckets) {
    const bool mixed = kv.first.first != kv.first.second;
    optim_cuda::dispatch_param_and_state_types(kv.first.second, mixed, kOp, [&](auto param_tag, auto ema_tag) {
      using scalar_t = decltype(param_tag);
      using E = decltype(ema_tag);
      mta::for_each_launch<2>(table, kv.second, 0, [&](const Meta& meta) {
        ema_update_kernel<E, scalar_t><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, decay_ptr,
                                                                                        decay_value);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("ema_update_", &ema_update_cuda); }

}  // namespace classy_fast
