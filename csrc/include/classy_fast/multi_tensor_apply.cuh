// Multi-tensor apply: one kernel launch walks many tensors (CUDA only).
//
// Why multi-tensor apply rather than one flat buffer holding every parameter: a flat buffer needs
// the model's parameters *and* their gradients to be views into it, which breaks as soon as
// autograd or the user replaces .grad (zero_grad(set_to_none=True) is torch's default), fights
// DDP's own gradient buckets and checkpoint loading, and pins the layout at construction.
// Multi-tensor apply takes any list of dense tensors as they are and still updates ResNet-50's
// 161 parameters in one launch, because since CUDA 12.1 a kernel may take 32 KB of parameters
// (4 KB before): the pointer table travels in the kernel's parameter space, no host->device copy,
// and a CUDA graph captures it by value.
//
// Work split: every tensor is cut into chunks of kChunkSize elements and each thread block
// processes one chunk. A launch carries up to kMaxBlocksPerLaunch chunks from up to
// TensorListMeta<DEPTH>::kMaxTensors tensors; longer lists are split over several launches, and a
// tensor whose chunks straddle two launches continues in the next one (its slot is carried over).
//
// DEPTH rows of pointers travel per tensor (param, grad, state...). Row 0 defines the element
// count; other rows either point at arrays laid out like row 0 or at a per-tensor scalar
// (e.g. a step counter); a row passed empty is nullptr everywhere.
//
// Blocks are numbered consecutively over all launches of one for_each_launch call (block_offset +
// blockIdx.x), in tensor order then chunk order: reduction kernels index per-chunk partial
// results with that number, which is deterministic (no atomics), so a captured graph replays
// bit-identically to eager.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace classy_fast {
namespace mta {

constexpr int64_t kChunkSize = 65536;  // elements per block: 32 iterations of 512 threads x 4
constexpr int kBlockSize = 512;
constexpr int kILP = 4;  // elements per thread per iteration (one 16-byte load for fp32)

#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr size_t kParamBytes = 32764;  // CUDA >= 12.1 on Volta and newer (we build sm_80+)
#else
constexpr size_t kParamBytes = 4096;
#endif
// Room left for the kernel's other arguments (an args struct of a few scalars and pointers).
constexpr size_t kOtherArgBytes = 512;
constexpr int kMaxBlocksPerLaunch = kParamBytes > 8192 ? 1280 : 128;

template <int DEPTH>
struct TensorListMeta {
  static constexpr size_t kBlockTableBytes = 2 * sizeof(int32_t) * kMaxBlocksPerLaunch + 2 * sizeof(int32_t);
  static constexpr size_t kPerTensorBytes = DEPTH * sizeof(void*) + sizeof(int64_t) + sizeof(int32_t);
  static constexpr int kMaxTensors =
      static_cast<int>((kParamBytes - kOtherArgBytes - kBlockTableBytes - 64) / kPerTensorBytes);

  void* addresses[DEPTH][kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t tensor_index[kMaxTensors];  // position of the tensor in the op's argument lists
  int32_t block_to_tensor[kMaxBlocksPerLaunch];  // slot in the tables above
  int32_t block_to_chunk[kMaxBlocksPerLaunch];
  int32_t block_offset;  // number of this launch's first block among all launches of the call
  int32_t num_blocks;
};

static_assert(sizeof(TensorListMeta<6>) + kOtherArgBytes <= kParamBytes, "metadata exceeds the parameter space");
static_assert(TensorListMeta<6>::kMaxTensors >= 32, "too few tensors per launch");

inline int64_t num_chunks(int64_t numel) { return (numel + kChunkSize - 1) / kChunkSize; }

// Calls launch(meta) once per kernel launch needed to cover rows[0][i] for i in `indices`
// (chunks of empty tensors: none). Returns the number of blocks (= chunks) launched in total.
// `block_offset` is where this call's block numbering starts (callers that reduce into one partial
// buffer over several dtype buckets chain the calls).
template <int DEPTH, typename LaunchFn>
int64_t for_each_launch(const std::vector<at::TensorList>& rows, const std::vector<int>& indices,
                        int64_t block_offset, LaunchFn&& launch) {
  using Meta = TensorListMeta<DEPTH>;
  TORCH_CHECK(rows.size() == DEPTH, "multi_tensor_apply: expected ", DEPTH, " rows, got ", rows.size());
  Meta meta;
  int slot = 0;    // tensors in the current launch
  int blocks = 0;  // blocks in the current launch
  int64_t launched = 0;
  meta.block_offset = static_cast<int32_t>(block_offset);

  auto flush = [&]() {
    meta.num_blocks = blocks;
    launch(meta);
    launched += blocks;
    TORCH_CHECK(block_offset + launched < INT32_MAX, "multi_tensor_apply: too many chunks");
    meta.block_offset = static_cast<int32_t>(block_offset + launched);
    blocks = 0;
  };

  for (int i : indices) {
    const int64_t numel = rows[0][i].numel();
    if (numel == 0) continue;
    for (int d = 0; d < DEPTH; ++d) {
      meta.addresses[d][slot] = rows[d].empty() ? nullptr : rows[d][i].data_ptr();
    }
    meta.numel[slot] = numel;
    meta.tensor_index[slot] = i;
    ++slot;
    const int64_t chunks = num_chunks(numel);
    TORCH_CHECK(chunks < INT32_MAX, "multi_tensor_apply: tensor too large");
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_to_tensor[blocks] = slot - 1;
      meta.block_to_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
      const bool last_chunk = c == chunks - 1;
      const bool blocks_full = blocks == kMaxBlocksPerLaunch;
      const bool slots_full = slot == Meta::kMaxTensors;
      if (blocks_full || (slots_full && last_chunk)) {
        flush();
        if (last_chunk) {
          slot = 0;
        } else {
          // The tensor goes on in the next launch: it becomes slot 0 there.
          for (int d = 0; d < DEPTH; ++d) meta.addresses[d][0] = meta.addresses[d][slot - 1];
          meta.numel[0] = meta.numel[slot - 1];
          meta.tensor_index[0] = meta.tensor_index[slot - 1];
          slot = 1;
        }
      }
    }
  }
  if (blocks > 0) flush();
  return launched;
}

// ------------------------------------------------------------------------------ device side

// The chunk one block works on.
struct BlockTask {
  int slot;       // tensor slot in the metadata
  int64_t start;  // first element of the chunk within the tensor
  int64_t n;      // elements in the chunk (< kChunkSize only for a tensor's last chunk)
};

template <int DEPTH>
__device__ __forceinline__ BlockTask block_task(const TensorListMeta<DEPTH>& meta) {
  const int slot = meta.block_to_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_to_chunk[blockIdx.x]) * kChunkSize;
  const int64_t left = meta.numel[slot] - start;
  return BlockTask{slot, start, left < kChunkSize ? left : kChunkSize};
}

// Row `row` of the block's tensor, advanced to the chunk start; nullptr when the row is unused.
template <typename T, int DEPTH>
__device__ __forceinline__ T* chunk_ptr(const TensorListMeta<DEPTH>& meta, int row, const BlockTask& task) {
  void* base = meta.addresses[row][task.slot];
  return base == nullptr ? nullptr : static_cast<T*>(base) + task.start;
}

// A per-tensor scalar row (e.g. the step counter).
template <typename T, int DEPTH>
__device__ __forceinline__ T* tensor_scalar(const TensorListMeta<DEPTH>& meta, int row, const BlockTask& task) {
  return static_cast<T*>(meta.addresses[row][task.slot]);
}

template <typename T>
struct alignas(sizeof(T) * kILP) Vec {
  T v[kILP];
};

// nullptr counts as aligned: unused rows never block the vector path.
template <typename T>
__device__ __forceinline__ bool vec_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(Vec<T>) == 0;
}

// Index of a thread's kILP elements in one iteration. Contiguous: elements 4v..4v+3, loaded as one
// vector (chunk size a multiple of kILP and every pointer aligned). Strided: elements
// first + k * blockDim.x (coalesced across the block), each bounds-checked against n.
struct Contiguous {
  int64_t vec;
  __device__ __forceinline__ bool valid(int) const { return true; }
};
struct Strided {
  int64_t first;
  int64_t n;
  __device__ __forceinline__ int64_t at(int k) const { return first + static_cast<int64_t>(k) * blockDim.x; }
  __device__ __forceinline__ bool valid(int k) const { return at(k) < n; }
};

template <typename T>
__device__ __forceinline__ void load(float (&r)[kILP], const T* p, Contiguous ix) {
  const Vec<T> x = reinterpret_cast<const Vec<T>*>(p)[ix.vec];
#pragma unroll
  for (int k = 0; k < kILP; ++k) r[k] = static_cast<float>(x.v[k]);
}
template <typename T>
__device__ __forceinline__ void load(float (&r)[kILP], const T* p, Strided ix) {
#pragma unroll
  for (int k = 0; k < kILP; ++k) r[k] = ix.valid(k) ? static_cast<float>(p[ix.at(k)]) : 0.0f;
}
template <typename T>
__device__ __forceinline__ void store(T* p, const float (&r)[kILP], Contiguous ix) {
  Vec<T> x;
#pragma unroll
  for (int k = 0; k < kILP; ++k) x.v[k] = static_cast<T>(r[k]);
  reinterpret_cast<Vec<T>*>(p)[ix.vec] = x;
}
template <typename T>
__device__ __forceinline__ void store(T* p, const float (&r)[kILP], Strided ix) {
#pragma unroll
  for (int k = 0; k < kILP; ++k) {
    if (ix.valid(k)) p[ix.at(k)] = static_cast<T>(r[k]);
  }
}

// Runs body(index) over a chunk of n elements; body loads/stores through the index it gets.
template <typename Body>
__device__ __forceinline__ void for_each_element_group(int64_t n, bool vectorized, Body&& body) {
  if (vectorized) {
    for (int64_t v = threadIdx.x; v * kILP < n; v += blockDim.x) body(Contiguous{v});
  } else {
    for (int64_t base = 0; base < n; base += static_cast<int64_t>(blockDim.x) * kILP) {
      body(Strided{base + threadIdx.x, n});
    }
  }
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). The result is valid in thread 0
// only. Fixed reduction order: deterministic. Safe to call repeatedly with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch /* >= 32 floats, shared */) {
  __syncthreads();  // earlier users of scratch are done
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    v = lane < warps ? scratch[lane] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

}  // namespace mta
}  // namespace classy_fast
