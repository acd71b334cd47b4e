// 16-byte vectorized access to rows of any alignment, for row-wise CUDA kernels.
//
// A row (e.g. a logits row of C elements at row * row_stride) is usually not 16-byte aligned:
// C = 1025 fp32 rows start at every 4-byte offset. Rather than giving up on vector loads for
// the whole tensor, each row is split into a scalar head up to its first 16-byte boundary,
// a body of aligned 16-byte packs (4 fp32 or 8 bf16/fp16 per load), and a scalar tail. Threads
// tid = 0..nthreads-1 of a row group share the work; consecutive threads take consecutive
// packs, so a warp's loads coalesce into full 128-byte lines.
#pragma once

#include <cstdint>

namespace classy_fast::cuda {

constexpr int kPackBytes = 16;

template <typename T>
struct alignas(kPackBytes) Pack {
  static constexpr int kSize = kPackBytes / static_cast<int>(sizeof(T));
  T v[kSize];
};

// Elements from p to its next 16-byte boundary (0 when aligned). p must be T-aligned, which
// every tensor element pointer is.
template <typename T>
__device__ __forceinline__ int64_t elements_to_pack_boundary(const T* p) {
  constexpr int64_t kSize = Pack<T>::kSize;
  const int64_t offset = static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) % kPackBytes) / sizeof(T));
  return (kSize - offset) % kSize;
}

// The head of a row: elements before its first 16-byte boundary, at most n.
template <typename T>
__device__ __forceinline__ int64_t row_head(const T* p, int64_t n) {
  const int64_t h = elements_to_pack_boundary(p);
  return h < n ? h : n;
}

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {  // p 16-byte aligned
  Pack<T> r;
  *reinterpret_cast<uint4*>(&r) = *reinterpret_cast<const uint4*>(p);
  return r;
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& r) {  // p 16-byte aligned
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&r);
}

// Calls visitor.scalar(c, x) or visitor.pack(c0, float (&x)[kSize]) for every element of
// row[0, n), each element exactly once, values converted to fp32.
template <typename T, typename Visitor>
__device__ __forceinline__ void visit_row(const T* row, int64_t n, int tid, int nthreads, Visitor& visitor) {
  constexpr int kSize = Pack<T>::kSize;
  const int64_t head = row_head(row, n);  // < kSize <= nthreads
  if (tid < head) visitor.scalar(tid, static_cast<float>(row[tid]));
  const T* body = row + head;
  const int64_t packs = (n - head) / kSize;
  for (int64_t k = tid; k < packs; k += nthreads) {
    const Pack<T> p = load_pack(body + k * kSize);
    float x[kSize];
#pragma unroll
    for (int j = 0; j < kSize; ++j) x[j] = static_cast<float>(p.v[j]);
    visitor.pack(head + k * kSize, x);
  }
  for (int64_t c = head + packs * kSize + tid; c < n; c += nthreads) visitor.scalar(c, static_cast<float>(row[c]));
}

// out[c] = T(fn(c, float(in[c]))) for c in [0, n). `in` and `out` may be the same row (each
// element is read and written by the same thread in the same step). Packs are used when both
// rows sit at the same offset from a 16-byte boundary; otherwise coalesced scalar accesses.
template <typename T, typename Fn>
__device__ __forceinline__ void map_row(const T* in, T* out, int64_t n, int tid, int nthreads, const Fn& fn) {
  constexpr int kSize = Pack<T>::kSize;
  const bool same_phase =
      (reinterpret_cast<uintptr_t>(in) % kPackBytes) == (reinterpret_cast<uintptr_t>(out) % kPackBytes);
  if (!same_phase) {
    for (int64_t c = tid; c < n; c += nthreads) out[c] = static_cast<T>(fn(c, static_cast<float>(in[c])));
    return;
  }
  const int64_t head = row_head(in, n);
  if (tid < head) out[tid] = static_cast<T>(fn(static_cast<int64_t>(tid), static_cast<float>(in[tid])));
  const int64_t packs = (n - head) / kSize;
  for (int64_t k = tid; k < packs; k += nthreads) {
    const int64_t c0 = head + k * kSize;
    const Pack<T> p = load_pack(in + c0);
    Pack<T> o;
#pragma unroll
    for (int j = 0; j < kSize; ++j) o.v[j] = static_cast<T>(fn(c0 + j, static_cast<float>(p.v[j])));
    store_pack(out + c0, o);
  }
  for (int64_t c = head + packs * kSize + tid; c < n; c += nthreads) {
    out[c] = static_cast<T>(fn(c, static_cast<float>(in[c])));
  }
}

}  // namespace classy_fast::cuda
