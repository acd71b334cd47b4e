// Small CUDA kernels shared by the optimizer ops: step counters and the last stage of the
// multi-tensor L2 norms (per-chunk partial sums -> per-tensor or global norms).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "classy_fast/multi_tensor_apply.cuh"
#include "classy_fast/optim_cuda.h"

namespace classy_fast {
namespace optim_cuda {
namespace {

constexpr int kStepsPerLaunch = static_cast<int>((mta::kParamBytes - mta::kOtherArgBytes) / sizeof(float*));

struct StepTable {
  float* steps[kStepsPerLaunch];
};

// One thread per counter. The counters are separate 0-dim tensors, so their addresses travel in
// the parameter space like the multi-tensor tables. Skipped steps (found_inf) do not count, the
// same as torch's fused optimizers, so bias corrections stay those of the applied steps.
__global__ void increment_steps_kernel(const __grid_constant__ StepTable table, int n, const float* found_inf) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  *table.steps[i] += 1.0f;
}

constexpr int kSegmentsPerLaunch =
    static_cast<int>((mta::kParamBytes - mta::kOtherArgBytes) / (2 * sizeof(int32_t))) - 8;

struct SegmentTable {
  int32_t begin[kSegmentsPerLaunch];
  int32_t end[kSegmentsPerLaunch];
};

struct NormOutputs {
  float* row[kMaxNormRows];
};

constexpr int kSegmentBlock = 256;

// Block (s, row) sums partial columns [begin[s], end[s]) of `row` and writes the square root.
// An empty segment (a tensor with no elements) gives 0.
__global__ void __launch_bounds__(kSegmentBlock)
    segment_norms_kernel(const float* partials, int64_t partial_row_stride, const __grid_constant__ SegmentTable table,
                         const NormOutputs outs) {
  __shared__ float scratch[32];
  const int s = blockIdx.x;
  const float* src = partials + blockIdx.y * partial_row_stride;
  float acc = 0.0f;
  for (int32_t i = table.begin[s] + static_cast<int32_t>(threadIdx.x); i < table.end[s]; i += blockDim.x) {
    acc += src[i];
  }
  acc = mta::block_sum(acc, scratch);
  if (threadIdx.x == 0) outs.row[blockIdx.y][s] = sqrtf(acc);
}

}  // namespace

void increment_steps(at::TensorList steps, const float* found_inf) {
  if (steps.empty()) return;
  const c10::cuda::CUDAGuard guard(steps[0].device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int n = static_cast<int>(steps.size());
  for (int first = 0; first < n; first += kStepsPerLaunch) {
    const int count = std::min(kStepsPerLaunch, n - first);
    StepTable table;
    for (int i = 0; i < count; ++i) table.steps[i] = steps[first + i].data_ptr<float>();
    const int threads = 256;
    increment_steps_kernel<<<(count + threads - 1) / threads, threads, 0, stream>>>(table, count, found_inf);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void segment_norms(const at::Tensor& partials, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
                   const std::vector<float*>& outs) {
  TORCH_CHECK(begin.size() == end.size(), "segment_norms: begin/end size mismatch");
  TORCH_CHECK(partials.dim() == 2 && partials.is_contiguous() && partials.scalar_type() == at::kFloat,
              "segment_norms: partials must be a contiguous [rows, chunks] float32 tensor");
  const int64_t segments = static_cast<int64_t>(begin.size());
  if (segments == 0) return;
  const c10::cuda::CUDAGuard guard(partials.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t rows = partials.size(0);
  const int64_t stride = partials.size(1);
  TORCH_CHECK(rows >= 1 && rows <= kMaxNormRows && static_cast<int64_t>(outs.size()) == rows,
              "segment_norms: expected one output per partial row (at most ", kMaxNormRows, ")");
  for (int64_t first = 0; first < segments; first += kSegmentsPerLaunch) {
    const int count = static_cast<int>(std::min<int64_t>(kSegmentsPerLaunch, segments - first));
    SegmentTable table;
    for (int s = 0; s < count; ++s) {
      TORCH_CHECK(0 <= begin[first + s] && begin[first + s] <= end[first + s] && end[first + s] <= stride,
                  "segment_norms: segment out of range");
      table.begin[s] = static_cast<int32_t>(begin[first + s]);
      table.end[s] = static_cast<int32_t>(end[first + s]);
    }
    NormOutputs launch_outs;
    for (int64_t r = 0; r < rows; ++r) launch_outs.row[r] = outs[r] + first;
    const dim3 grid(count, static_cast<unsigned>(rows));
    segment_norms_kernel<<<grid, kSegmentBlock, 0, stream>>>(partials.const_data_ptr<float>(), stride, table,
                                                              launch_outs);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

int64_t chunk_ranges(at::TensorList tensors, const std::vector<std::vector<int>>& indices_in_order,
                     std::vector<int64_t>& begin, std::vector<int64_t>& end) {
  begin.assign(tensors.size(), 0);
  end.assign(tensors.size(), 0);
  int64_t offset = 0;
  for (const auto& indices : indices_in_order) {
    for (int i : indices) {
      begin[i] = offset;
      offset += mta::num_chunks(tensors[i].numel());
      end[i] = offset;
    }
  }
  TORCH_CHECK(offset < INT32_MAX, "multi-tensor norm: too many chunks");
  return offset;
}

}  // namespace optim_cuda
}  // namespace classy_fast
