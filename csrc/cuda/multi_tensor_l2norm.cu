// classy_fast::multi_tensor_l2norm on CUDA: global and per-tensor L2 norms of a tensor list in
// one pass (plus two tiny reduction launches), optionally of the GradScaler-unscaled values.
//
// Pass 1 (multi-tensor apply): every block writes the sum of squares of its chunk into its own
// slot of a partials buffer (no atomics). Pass 2 (segment_norms): one block per tensor sums that
// tensor's slots; one more block sums all slots for the global norm. Summation order is fixed,
// so the result is bit-identical run to run and inside a CUDA graph.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "classy_fast/dispatch.h"
#include "classy_fast/multi_tensor_apply.cuh"
#include "classy_fast/optim_checks.h"
#include "classy_fast/optim_cuda.h"

namespace classy_fast {
namespace {

using Meta = mta::TensorListMeta<1>;

// Squares are taken of the unscaled value (x / grad_scale) so scaled fp16 grads cannot overflow
// the fp32 sum; padded lanes of a partial chunk load as 0 and add nothing.
template <typename T>
__global__ void __launch_bounds__(mta::kBlockSize)
    l2norm_partials_kernel(const __grid_constant__ Meta meta, float* partials, optim_math::DeviceScalar grad_scale) {
  __shared__ float scratch[32];
  const mta::BlockTask task = mta::block_task(meta);
  const T* x = mta::chunk_ptr<const T>(meta, 0, task);
  const float inv_scale = 1.0f / grad_scale.get(1.0f);
  const bool vectorized = task.n % mta::kILP == 0 && mta::vec_aligned(x);
  float acc[mta::kILP] = {0.0f, 0.0f, 0.0f, 0.0f};
  mta::for_each_element_group(task.n, vectorized, [&](auto ix) {
    float r[mta::kILP];
    mta::load(r, x, ix);
#pragma unroll
    for (int k = 0; k < mta::kILP; ++k) {
      const float v = r[k] * inv_scale;
      acc[k] += v * v;
    }
  });
  const float total = mta::block_sum((acc[0] + acc[1]) + (acc[2] + acc[3]), scratch);
  if (threadIdx.x == 0) partials[meta.block_offset + blockIdx.x] = total;
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_l2norm_cuda(at::TensorList tensors,
                                                            const std::optional<at::Tensor>& grad_scale,
                                                            bool per_tensor) {
  constexpr const char* kOp = "classy_fast::multi_tensor_l2norm";
  TORCH_CHECK(!tensors.empty(), kOp, ": empty tensor list");
  const c10::Device device = tensors[0].device();
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device() == device, kOp, ": tensors[", i, "] is on ", tensors[i].device(),
                ", expected ", device);
    TORCH_CHECK(is_supported_float_type(tensors[i].scalar_type()), kOp, ": tensors[", i, "] has dtype ",
                tensors[i].scalar_type(), " (supported: float32, bfloat16, float16)");
    optim_checks::check_like(kOp, tensors[i], tensors[i], "tensors", i);
  }
  const optim_math::DeviceScalar scale = optim_checks::device_scalar(kOp, grad_scale, device, "grad_scale");
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto float_opts = tensors[0].options().dtype(at::kFloat);

  // Buckets by dtype (std::map: a fixed order); the chunk ranges follow the same order.
  std::vector<std::vector<int>> order;
  std::vector<c10::ScalarType> order_dtypes;
  for (auto& kv : optim_checks::indices_by_dtype(tensors)) {
    order_dtypes.push_back(kv.first);
    order.push_back(std::move(kv.second));
  }
  std::vector<int64_t> begin, end;
  const int64_t total_chunks = optim_cuda::chunk_ranges(tensors, order, begin, end);

  at::Tensor global = at::empty({}, float_opts);
  at::Tensor norms = at::empty({per_tensor ? static_cast<int64_t>(tensors.size()) : 0}, float_opts);
  if (total_chunks == 0) {  // every tensor is empty
    global.zero_();
    norms.zero_();
    return {global, norms};
  }
  at::Tensor partials = at::empty({1, total_chunks}, float_opts);
  float* partials_ptr = partials.data_ptr<float>();
  int64_t offset = 0;
  for (size_t b = 0; b < order.size(); ++b) {
    CLASSY_FAST_DISPATCH_FLOAT_TYPES(order_dtypes[b], kOp, [&] {
      offset += mta::for_each_launch<1>({tensors}, order[b], offset, [&](const Meta& meta) {
        l2norm_partials_kernel<scalar_t><<<meta.num_blocks, mta::kBlockSize, 0, stream>>>(meta, partials_ptr, scale);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  TORCH_CHECK(offset == total_chunks, kOp, ": internal error, chunk count mismatch");
  optim_cuda::segment_norms(partials, {0}, {total_chunks}, {global.data_ptr<float>()});
  if (per_tensor) optim_cuda::segment_norms(partials, begin, end, {norms.data_ptr<float>()});
  return {global, norms};
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("multi_tensor_l2norm", &multi_tensor_l2norm_cuda); }

}  // namespace classy_fast
