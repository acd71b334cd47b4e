// Warp- and block-wide all-reductions of small accumulator structs.
//
// An accumulator type Acc is a plain aggregate (no constructors or member initialisers, so it
// can live in __shared__ memory) with:
//   static __device__ Acc identity();
//   __device__ void merge(const Acc& other);     // associative, commutative
//   __device__ Acc shfl_xor(int lane_mask) const; // each field through __shfl_xor_sync
// Several quantities reduce together in one pass of shuffles (e.g. max, sum-exp and two sums).
#pragma once

#include <cmath>

namespace classy_fast::cuda {

constexpr unsigned kFullWarpMask = 0xffffffffu;

// Every lane of the warp must call this (full-mask shuffles): launch blocks with a multiple of
// 32 threads, which the host code of every kernel here asserts.
template <typename Acc>
__device__ __forceinline__ Acc warp_allreduce(Acc a) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) a.merge(a.shfl_xor(offset));
  return a;
}

// Every thread of the block must call this; all get the block's result.
template <typename Acc>
__device__ __forceinline__ Acc block_allreduce(Acc a) {
  __shared__ Acc partial[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  a = warp_allreduce(a);
  if (lane == 0) partial[warp] = a;
  __syncthreads();
  if (warp == 0) {
    Acc b = lane < num_warps ? partial[lane] : Acc::identity();
    b = warp_allreduce(b);
    if (lane == 0) partial[0] = b;
  }
  __syncthreads();
  const Acc result = partial[0];
  __syncthreads();  // partial[] is overwritten by the next call
  return result;
}

// Running max and sum of exp(x - max), the one-pass ("online") softmax normaliser:
// log-sum-exp = max + log(sum). NaN propagates through the sum; an all -inf row gives -inf.
// max() that returns NaN when either side is NaN (fmaxf drops NaN): a NaN logit must make the
// row's log-sum-exp, and so its loss, NaN, as on the CPU and in torch, or the trainer's
// non-finite-loss check would never see it.
__device__ __forceinline__ float nan_propagating_max(float a, float b) { return (isnan(b) || b > a) ? b : a; }

struct MaxSumExp {
  float max;
  float sum;

  static __device__ __forceinline__ MaxSumExp identity() { return {-INFINITY, 0.f}; }

  __device__ __forceinline__ void merge(const MaxSumExp& o) {
    const float m = nan_propagating_max(max, o.max);
    if (m == -INFINITY) return;  // both empty (or all -inf): nothing to rescale
    sum = sum * expf(max - m) + o.sum * expf(o.max - m);
    max = m;
  }

  // Adds kN values at once: one rescale per pack instead of one per element.
  template <int kN>
  __device__ __forceinline__ void add(const float (&x)[kN]) {
    float m = max;
#pragma unroll
    for (int j = 0; j < kN; ++j) m = nan_propagating_max(m, x[j]);
    if (m == -INFINITY) return;
    float s = sum * expf(max - m);
#pragma unroll
    for (int j = 0; j < kN; ++j) s += expf(x[j] - m);
    sum = s;
    max = m;
  }

  __device__ __forceinline__ void add(float x) {
    const float v[1] = {x};
    add(v);
  }

  __device__ __forceinline__ MaxSumExp shfl_xor(int lane_mask) const {
    return {__shfl_xor_sync(kFullWarpMask, max, lane_mask), __shfl_xor_sync(kFullWarpMask, sum, lane_mask)};
  }
};

}  // namespace classy_fast::cuda
