// classy_fast::reduce_loss_rows on CUDA: sums the per-row losses of a cross-entropy op and counts
// the rows that count (index targets != ignore_index), then writes the sum or the mean and the
// count. Up to kSingleBlockRows rows (every image batch) it is one single-block launch, replacing
// the four launches (sum, ne, sum, div) a torch-level reduction costs; at C = 1000 a loss step is
// bound by launches, not bytes. Beyond that (token-level batches of ~1M rows, where one SM would
// read every row alone) the rows are spread over up to kMaxBlocks blocks that each write a
// partial sum and count, and a second single-block launch combines them.
// Deterministic: the grid depends on the row count only, fixed strides and a fixed shuffle tree,
// no atomics.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "classy_fast/cross_entropy_checks.h"
#include "classy_fast/cuda/reduce.cuh"

namespace classy_fast::cuda {
namespace {

using at::Tensor;

constexpr int kThreads = 512;
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block_allreduce needs whole warps");
// One block reads up to 64 rows per thread (a few µs); more rows go over several blocks.
constexpr int64_t kSingleBlockRows = int64_t{kThreads} * 64;
// Each block of the first pass takes at least 16 rows per thread; at most this many blocks
// (a few per SM), which the second pass combines with one thread each.
constexpr int64_t kRowsPerBlock = int64_t{kThreads} * 16;
constexpr int kMaxBlocks = 1024;
static_assert(kMaxBlocks <= 2 * kThreads, "the combining pass reads at most two partials per thread");

struct SumCount {
  float sum;
  int count;

  static __device__ __forceinline__ SumCount identity() { return {0.f, 0}; }
  __device__ __forceinline__ void merge(const SumCount& o) {
    sum += o.sum;
    count += o.count;
  }
  __device__ __forceinline__ SumCount shfl_xor(int m) const {
    return {__shfl_xor_sync(kFullWarpMask, sum, m), __shfl_xor_sync(kFullWarpMask, count, m)};
  }
};

__device__ __forceinline__ void write_result(const SumCount& acc, bool mean, float* loss, float* counted) {
  const float count = static_cast<float>(acc.count);
  *loss = mean ? acc.sum / count : acc.sum;  // 0 / 0 = nan for no counted row, like torch
  *counted = count;
}

// This block's rows: block b of g takes rows b*blockDim + t, stepping by g*blockDim (g = 1: all rows).
__device__ __forceinline__ SumCount sum_rows(const float* rows, int64_t rows_stride, int64_t n, const int64_t* labels,
                                             int64_t labels_stride, int64_t ignore_index) {
  SumCount acc = SumCount::identity();
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    // Both loads issued before either is used (no dependent second latency); a select, not a
    // branch around the add, so an ignored row's value (even NaN) never reaches the sum.
    const float r = rows[i * rows_stride];
    const bool keep = labels == nullptr || labels[i * labels_stride] != ignore_index;
    acc.sum += keep ? r : 0.f;
    acc.count += keep ? 1 : 0;
  }
  return block_allreduce(acc);
}

// One block: the whole reduction.
__global__ void __launch_bounds__(kThreads)
    reduce_loss_rows_kernel(const float* rows, int64_t rows_stride, int64_t n, const int64_t* labels,
                            int64_t labels_stride, int64_t ignore_index, bool mean, float* loss, float* counted) {
  const SumCount acc = sum_rows(rows, rows_stride, n, labels, labels_stride, ignore_index);
  if (threadIdx.x == 0) write_result(acc, mean, loss, counted);
}

// First pass over many rows: one partial sum and count per block.
__global__ void __launch_bounds__(kThreads)
    partial_loss_rows_kernel(const float* rows, int64_t rows_stride, int64_t n, const int64_t* labels,
                             int64_t labels_stride, int64_t ignore_index, float* partial_sum, int* partial_count) {
  const SumCount acc = sum_rows(rows, rows_stride, n, labels, labels_stride, ignore_index);
  if (threadIdx.x == 0) {
    partial_sum[blockIdx.x] = acc.sum;
    partial_count[blockIdx.x] = acc.count;
  }
}

// Second pass: one block combines the `blocks` partials (at most two per thread).
__global__ void __launch_bounds__(kThreads)
    combine_partials_kernel(const float* partial_sum, const int* partial_count, int blocks, bool mean, float* loss,
                            float* counted) {
  SumCount acc = SumCount::identity();
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) acc.merge({partial_sum[b], partial_count[b]});
  acc = block_allreduce(acc);
  if (threadIdx.x == 0) write_result(acc, mean, loss, counted);
}

std::tuple<Tensor, Tensor> reduce_loss_rows(const Tensor& row_loss, const std::optional<Tensor>& target,
                                            int64_t ignore_index, bool mean) {
  constexpr const char* op = "classy_fast::reduce_loss_rows";
  ce::check_loss_rows(row_loss, target, op);
  TORCH_CHECK(row_loss.is_cuda(), op, ": row_loss must be a CUDA tensor here, got ", row_loss.device());
  TORCH_CHECK(row_loss.size(0) < (int64_t{1} << 31), op, ": too many rows (", row_loss.size(0), ")");
  const bool has_target = target.has_value() && target->defined();
  const c10::cuda::CUDAGuard guard(row_loss.device());
  Tensor loss = at::empty({}, row_loss.options());
  Tensor counted = at::empty({}, row_loss.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = row_loss.size(0);
  const float* rows = row_loss.const_data_ptr<float>();
  const int64_t* labels = has_target ? target->const_data_ptr<int64_t>() : nullptr;
  const int64_t labels_stride = has_target ? target->stride(0) : 0;
  if (n <= kSingleBlockRows) {
    reduce_loss_rows_kernel<<<1, kThreads, 0, stream>>>(rows, row_loss.stride(0), n, labels, labels_stride,
                                                       ignore_index, mean, loss.data_ptr<float>(),
                                                       counted.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {loss, counted};
  }
  const int blocks = static_cast<int>(std::min<int64_t>((n + kRowsPerBlock - 1) / kRowsPerBlock, kMaxBlocks));
  // Partials from the caching allocator (no memset: every block writes its own), on this stream.
  Tensor partial_sum = at::empty({blocks}, row_loss.options());
  Tensor partial_count = at::empty({blocks}, row_loss.options().dtype(at::kInt));
  partial_loss_rows_kernel<<<blocks, kThreads, 0, stream>>>(rows, row_loss.stride(0), n, labels, labels_stride,
                                                           ignore_index, partial_sum.data_ptr<float>(),
                                                           partial_count.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  combine_partials_kernel<<<1, kThreads, 0, stream>>>(partial_sum.const_data_ptr<float>(),
                                                      partial_count.const_data_ptr<int>(), blocks, mean,
                                                      loss.data_ptr<float>(), counted.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, counted};
}

}  // namespace
}  // namespace classy_fast::cuda

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) { m.impl("reduce_loss_rows", &classy_fast::cuda::reduce_loss_rows); }
