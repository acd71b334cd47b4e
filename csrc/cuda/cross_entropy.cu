// CUDA kernels of the fused cross-entropy ops (schemas: csrc/registration.cpp; math: see
// csrc/cpu/cross_entropy_rows_impl.h, which this file mirrors).
//
// One row group per logits row: a warp when the row is short (C up to 8 packs per lane), a
// block of 64..1024 threads otherwise. Forward: one pass over the row with 16-byte loads,
// online max / sum-exp and the linear sums label smoothing and soft targets need, all reduced
// together in fp32; writes the row's loss and log-sum-exp. Backward: one pass that recomputes
// softmax from the logits and the saved lse and writes the gradient (the soft-target backward
// first sums its target row). Everything runs on the current stream with no host sync, so the
// ops are CUDA-graph capturable.
//
// Labels cannot be range-checked on the host without a device->host sync. A row whose label is
// out of range (and not ignore_index) gets loss NaN and a NaN gradient row: it never reads out
// of bounds, and the trainer's non-finite-loss check at the next log interval surfaces it.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "classy_fast/cross_entropy_checks.h"
#include "classy_fast/cuda/reduce.cuh"
#include "classy_fast/cuda/vectorized.cuh"
#include "classy_fast/dispatch.h"

namespace classy_fast::cuda {
namespace {

using at::Tensor;

constexpr int kWarp = 32;
constexpr int kRowsPerWarpBlock = 4;        // warp-per-row kernels: 128-thread blocks
constexpr int kMaxPacksPerLaneForWarp = 8;  // rows up to 32*8 packs take the warp kernels
constexpr int kTargetPacksPerThread = 4;    // block size aims for this many packs per thread
constexpr int64_t kMaxGrid = 1 << 20;       // rows beyond it loop (grid-stride)

// ---- row groups: who works on which row ----

// kWarpPerRow: each warp owns rows; otherwise the whole block does. Row loops are uniform
// across the group, so the group's shuffles / __syncthreads are always reached by all of it.
template <bool kWarpPerRow>
struct RowGroup {
  __device__ __forceinline__ static int tid() { return kWarpPerRow ? (threadIdx.x & (kWarp - 1)) : threadIdx.x; }
  __device__ __forceinline__ static int size() { return kWarpPerRow ? kWarp : blockDim.x; }
  __device__ __forceinline__ static int64_t first_row() {
    return kWarpPerRow ? int64_t(blockIdx.x) * (blockDim.x / kWarp) + (threadIdx.x / kWarp) : int64_t(blockIdx.x);
  }
  __device__ __forceinline__ static int64_t row_step() {
    return kWarpPerRow ? int64_t(gridDim.x) * (blockDim.x / kWarp) : int64_t(gridDim.x);
  }
  template <typename Acc>
  __device__ __forceinline__ static Acc allreduce(const Acc& a) {
    if constexpr (kWarpPerRow) {
      return warp_allreduce(a);
    } else {
      return block_allreduce(a);
    }
  }
};

// The first finite logit of the row (else 0): linear sums are taken relative to it so a large
// common offset in the logits doesn't eat fp32 precision.
template <typename T>
__device__ __forceinline__ float row_shift(const T* x) {
  const float r = static_cast<float>(x[0]);
  return isfinite(r) ? r : 0.f;
}

// ---- forward accumulators ----

struct HardRowAcc {  // max / sum-exp, and sum of (x - r) for label smoothing
  MaxSumExp mse;
  float sum_y;
  static __device__ __forceinline__ HardRowAcc identity() { return {MaxSumExp::identity(), 0.f}; }
  __device__ __forceinline__ void merge(const HardRowAcc& o) {
    mse.merge(o.mse);
    sum_y += o.sum_y;
  }
  __device__ __forceinline__ HardRowAcc shfl_xor(int m) const {
    return {mse.shfl_xor(m), __shfl_xor_sync(kFullWarpMask, sum_y, m)};
  }
};

struct HardRowVisitor {
  HardRowAcc acc;
  float r;
  __device__ __forceinline__ void scalar(int64_t, float x) {
    acc.mse.add(x);
    acc.sum_y += x - r;
  }
  template <int kN>
  __device__ __forceinline__ void pack(int64_t, const float (&x)[kN]) {
    acc.mse.add(x);
#pragma unroll
    for (int j = 0; j < kN; ++j) acc.sum_y += x[j] - r;
  }
};

struct SoftRowAcc {  // + sum of targets and of target * (x - r)
  MaxSumExp mse;
  float sum_y, sum_t, sum_ty;
  static __device__ __forceinline__ SoftRowAcc identity() { return {MaxSumExp::identity(), 0.f, 0.f, 0.f}; }
  __device__ __forceinline__ void merge(const SoftRowAcc& o) {
    mse.merge(o.mse);
    sum_y += o.sum_y;
    sum_t += o.sum_t;
    sum_ty += o.sum_ty;
  }
  __device__ __forceinline__ SoftRowAcc shfl_xor(int m) const {
    return {mse.shfl_xor(m), __shfl_xor_sync(kFullWarpMask, sum_y, m), __shfl_xor_sync(kFullWarpMask, sum_t, m),
            __shfl_xor_sync(kFullWarpMask, sum_ty, m)};
  }
};

template <typename TT>
struct SoftRowVisitor {
  SoftRowAcc acc;
  float r;
  const TT* target;  // this row's targets; read element-wise (their alignment differs from the logits')
  __device__ __forceinline__ void scalar(int64_t c, float x) {
    const float t = static_cast<float>(target[c]);
    acc.mse.add(x);
    acc.sum_y += x - r;
    acc.sum_t += t;
    acc.sum_ty += t * (x - r);
  }
  template <int kN>
  __device__ __forceinline__ void pack(int64_t c0, const float (&x)[kN]) {
    acc.mse.add(x);
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float t = static_cast<float>(target[c0 + j]);
      acc.sum_y += x[j] - r;
      acc.sum_t += t;
      acc.sum_ty += t * (x[j] - r);
    }
  }
};

struct SumAcc {
  float sum;
  static __device__ __forceinline__ SumAcc identity() { return {0.f}; }
  __device__ __forceinline__ void merge(const SumAcc& o) { sum += o.sum; }
  __device__ __forceinline__ SumAcc shfl_xor(int m) const { return {__shfl_xor_sync(kFullWarpMask, sum, m)}; }
};

struct SumVisitor {
  SumAcc acc;
  __device__ __forceinline__ void scalar(int64_t, float x) { acc.sum += x; }
  template <int kN>
  __device__ __forceinline__ void pack(int64_t, const float (&x)[kN]) {
#pragma unroll
    for (int j = 0; j < kN; ++j) acc.sum += x[j];
  }
};

// ---- hard targets (index with ignore_index, or mixup) ----

struct HardParams {
  const void* logits;
  int64_t logits_row_stride;
  int64_t rows, classes;
  const int64_t* target_a;
  const int64_t* target_b;  // mixup only, else nullptr
  const float* lam_ptr;     // mixup: device pointer, or nullptr to use lam_value
  float lam_value;
  bool has_ignore_index;
  int64_t ignore_index;
  float label_smoothing;
  float* loss;                // forward
  float* lse;                 // forward output, backward input
  const float* grad_loss;     // backward
  int64_t grad_loss_stride;
  void* grad;                 // backward output (may be the logits)
  int64_t grad_row_stride;
};

enum class RowKind { kNormal, kIgnored, kBadLabel };

struct RowTargets {
  RowKind kind;
  int64_t a, b;   // b == -1 for index targets
  float wa, wb;   // weights of the one-hot parts, before (1 - eps)
};

__device__ __forceinline__ RowTargets read_targets(const HardParams& p, int64_t row) {
  RowTargets t;
  t.a = p.target_a[row];
  t.b = p.target_b != nullptr ? p.target_b[row] : int64_t(-1);
  const float lam = p.target_b == nullptr ? 1.f : (p.lam_ptr != nullptr ? *p.lam_ptr : p.lam_value);
  t.wa = lam;
  t.wb = 1.f - lam;
  if (p.has_ignore_index && t.a == p.ignore_index) {
    t.kind = RowKind::kIgnored;
  } else if (t.a < 0 || t.a >= p.classes || (p.target_b != nullptr && (t.b < 0 || t.b >= p.classes))) {
    t.kind = RowKind::kBadLabel;
  } else {
    t.kind = RowKind::kNormal;
  }
  return t;
}

// __launch_bounds__(1024): block mode launches up to 1024 threads; without the bound ptxas may use
// more than 64 registers per thread and such a launch would fail.
template <typename T, bool kWarpPerRow>
__global__ void __launch_bounds__(1024) hard_forward_kernel(const HardParams p) {
  using G = RowGroup<kWarpPerRow>;
  const T* logits = static_cast<const T*>(p.logits);
  const int64_t C = p.classes;
  const float eps = p.label_smoothing;
  for (int64_t row = G::first_row(); row < p.rows; row += G::row_step()) {
    const T* x = logits + row * p.logits_row_stride;
    HardRowVisitor v{HardRowAcc::identity(), row_shift(x)};
    visit_row(x, C, G::tid(), G::size(), v);
    const HardRowAcc acc = G::allreduce(v.acc);
    if (G::tid() != 0) continue;
    // lse - v is formed as (m - v) + log(s): rounding m + log(s) first would cost ~|lse| * 2^-24.
    const float m = acc.mse.max;
    const float log_s = logf(acc.mse.sum);
    p.lse[row] = m + log_s;
    const RowTargets t = read_targets(p, row);
    float loss;
    if (t.kind == RowKind::kIgnored) {
      loss = 0.f;
    } else if (t.kind == RowKind::kBadLabel) {
      loss = NAN;
    } else {
      float nll = (m - static_cast<float>(x[t.a])) + log_s;
      if (t.b >= 0) nll = t.wa * nll + t.wb * ((m - static_cast<float>(x[t.b])) + log_s);
      loss = eps > 0.f ? (1.f - eps) * nll + eps * (((m - v.r) + log_s) - acc.sum_y / static_cast<float>(C)) : nll;
    }
    p.loss[row] = loss;
  }
}

template <typename T, bool kWarpPerRow>
__global__ void __launch_bounds__(1024) hard_backward_kernel(const HardParams p) {
  using G = RowGroup<kWarpPerRow>;
  const T* logits = static_cast<const T*>(p.logits);
  T* grad = static_cast<T*>(p.grad);
  const int64_t C = p.classes;
  const float eps = p.label_smoothing;
  const float uniform = eps / static_cast<float>(C);
  for (int64_t row = G::first_row(); row < p.rows; row += G::row_step()) {
    const T* x = logits + row * p.logits_row_stride;
    T* out = grad + row * p.grad_row_stride;
    const RowTargets t = read_targets(p, row);
    if (t.kind != RowKind::kNormal) {
      const float fill = t.kind == RowKind::kIgnored ? 0.f : NAN;
      map_row(x, out, C, G::tid(), G::size(), [fill](int64_t, float) { return fill; });
      continue;
    }
    const float g = p.grad_loss[row * p.grad_loss_stride];
    const float lse = p.lse[row];
    const float keep = 1.f - eps;
    const float wa = keep * t.wa, wb = keep * t.wb;
    map_row(x, out, C, G::tid(), G::size(), [=](int64_t c, float xc) {
      float d = expf(xc - lse) - uniform;
      if (c == t.a) d -= wa;
      if (c == t.b) d -= wb;
      return d * g;
    });
  }
}

// ---- soft targets ----

struct SoftParams {
  const void* logits;
  int64_t logits_row_stride;
  int64_t rows, classes;
  const void* target;
  int64_t target_row_stride;
  float label_smoothing;
  float* loss;
  float* lse;
  const float* grad_loss;
  int64_t grad_loss_stride;
  void* grad;
  int64_t grad_row_stride;
};

template <typename T, typename TT, bool kWarpPerRow>
__global__ void __launch_bounds__(1024) soft_forward_kernel(const SoftParams p) {
  using G = RowGroup<kWarpPerRow>;
  const T* logits = static_cast<const T*>(p.logits);
  const TT* target = static_cast<const TT*>(p.target);
  const int64_t C = p.classes;
  const float eps = p.label_smoothing;
  for (int64_t row = G::first_row(); row < p.rows; row += G::row_step()) {
    const T* x = logits + row * p.logits_row_stride;
    SoftRowVisitor<TT> v{SoftRowAcc::identity(), row_shift(x), target + row * p.target_row_stride};
    visit_row(x, C, G::tid(), G::size(), v);
    const SoftRowAcc acc = G::allreduce(v.acc);
    if (G::tid() != 0) continue;
    const float log_s = logf(acc.mse.sum);
    const float lse_r = (acc.mse.max - v.r) + log_s;  // lse - r without rounding lse first
    float loss = (1.f - eps) * (acc.sum_t * lse_r - acc.sum_ty);
    if (eps > 0.f) loss += eps * (lse_r - acc.sum_y / static_cast<float>(C));
    p.lse[row] = acc.mse.max + log_s;
    p.loss[row] = loss;
  }
}

template <typename T, typename TT, bool kWarpPerRow>
__global__ void __launch_bounds__(1024) soft_backward_kernel(const SoftParams p) {
  using G = RowGroup<kWarpPerRow>;
  const T* logits = static_cast<const T*>(p.logits);
  const TT* target = static_cast<const TT*>(p.target);
  T* grad = static_cast<T*>(p.grad);
  const int64_t C = p.classes;
  const float eps = p.label_smoothing;
  for (int64_t row = G::first_row(); row < p.rows; row += G::row_step()) {
    const T* x = logits + row * p.logits_row_stride;
    const TT* tr = target + row * p.target_row_stride;
    T* out = grad + row * p.grad_row_stride;
    // Mass of the smoothed target, (1 - eps) sum(t) + eps: targets need not sum to 1.
    SumVisitor sv{SumAcc::identity()};
    visit_row(tr, C, G::tid(), G::size(), sv);
    const float sum_t = G::allreduce(sv.acc).sum;
    const float g = p.grad_loss[row * p.grad_loss_stride];
    const float lse = p.lse[row];
    const float mass_g = ((1.f - eps) * sum_t + eps) * g;
    const float keep_g = (1.f - eps) * g;
    const float uniform_g = eps / static_cast<float>(C) * g;
    map_row(x, out, C, G::tid(), G::size(), [=](int64_t c, float xc) {
      return mass_g * expf(xc - lse) - keep_g * static_cast<float>(tr[c]) - uniform_g;
    });
  }
}

// ---- launch configuration ----

struct LaunchShape {
  bool warp_per_row;
  unsigned threads;
  unsigned blocks;
};

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

LaunchShape launch_shape(int64_t rows, int64_t classes, int elem_bytes) {
  const int64_t packs = (classes * elem_bytes + kPackBytes - 1) / kPackBytes;
  LaunchShape s;
  s.warp_per_row = packs <= int64_t(kWarp) * kMaxPacksPerLaneForWarp;
  if (s.warp_per_row) {
    s.threads = kWarp * kRowsPerWarpBlock;
    s.blocks = static_cast<unsigned>(std::min<int64_t>((rows + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock, kMaxGrid));
  } else {
    const int64_t want = next_pow2((packs + kTargetPacksPerThread - 1) / kTargetPacksPerThread);
    s.threads = static_cast<unsigned>(std::clamp<int64_t>(want, 64, 1024));
    s.blocks = static_cast<unsigned>(std::min<int64_t>(rows, kMaxGrid));
  }
  // The group reductions use full-warp shuffles: blocks must be whole warps.
  TORCH_INTERNAL_ASSERT(s.threads % kWarp == 0);
  return s;
}

template <template <typename, bool> class Kernel, typename T, typename Params>
void launch_hard(const LaunchShape& s, const Params& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (s.warp_per_row) {
    Kernel<T, true>::launch(s, p, stream);
  } else {
    Kernel<T, false>::launch(s, p, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, bool W>
struct HardForwardLaunch {
  static void launch(const LaunchShape& s, const HardParams& p, cudaStream_t st) {
    hard_forward_kernel<T, W><<<s.blocks, s.threads, 0, st>>>(p);
  }
};
template <typename T, bool W>
struct HardBackwardLaunch {
  static void launch(const LaunchShape& s, const HardParams& p, cudaStream_t st) {
    hard_backward_kernel<T, W><<<s.blocks, s.threads, 0, st>>>(p);
  }
};

// ---- op entry points ----

void check_cuda(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor here, got ", t.device());
}

struct HardInputs {
  Tensor logits, target_a, target_b, lam;
  HardParams p;
};

HardInputs prepare_hard(const Tensor& logits_in, const Tensor& target_a, const Tensor* target_b, const Tensor* lam,
                        double label_smoothing, bool has_ignore, int64_t ignore_index, const char* op) {
  ce::check_logits(logits_in, op);
  check_cuda(logits_in, op, "logits");
  ce::check_label_smoothing(label_smoothing, op);
  HardInputs in;
  in.logits = ce::with_unit_column_stride(logits_in);
  ce::check_index_target(target_a, in.logits, op, target_b ? "target_a" : "target");
  in.target_a = target_a.contiguous();
  HardParams& p = in.p;
  p = HardParams{};
  p.target_b = nullptr;
  p.lam_ptr = nullptr;
  p.lam_value = 1.f;
  if (target_b != nullptr) {
    ce::check_index_target(*target_b, in.logits, op, "target_b");
    ce::check_lam(*lam, in.logits, op);
    in.target_b = target_b->contiguous();
    p.target_b = in.target_b.data_ptr<int64_t>();
    if (lam->is_cuda()) {
      in.lam = *lam;
      p.lam_ptr = in.lam.data_ptr<float>();  // read by the kernel: no host sync
    } else {
      p.lam_value = lam->item<float>();  // already in host memory
    }
  }
  p.logits = in.logits.data_ptr();
  p.logits_row_stride = in.logits.stride(0);
  p.rows = in.logits.size(0);
  p.classes = in.logits.size(1);
  p.target_a = in.target_a.data_ptr<int64_t>();
  p.has_ignore_index = has_ignore;
  p.ignore_index = ignore_index;
  p.label_smoothing = static_cast<float>(label_smoothing);
  return in;
}

std::tuple<Tensor, Tensor> hard_forward(HardInputs in, const char* op) {
  const c10::cuda::CUDAGuard guard(in.logits.device());
  const int64_t B = in.logits.size(0);
  Tensor loss = at::empty({B}, in.logits.options().dtype(at::kFloat));
  Tensor lse = at::empty({B}, in.logits.options().dtype(at::kFloat));
  if (B == 0) return {loss, lse};
  in.p.loss = loss.data_ptr<float>();
  in.p.lse = lse.data_ptr<float>();
  const LaunchShape s = launch_shape(B, in.p.classes, static_cast<int>(in.logits.element_size()));
  CLASSY_FAST_DISPATCH_FLOAT_TYPES(in.logits.scalar_type(), op,
                                   [&] { launch_hard<HardForwardLaunch, scalar_t>(s, in.p); });
  return {loss, lse};
}

void hard_backward(HardInputs& in, const Tensor& grad_loss, const Tensor& lse, const Tensor& grad, const char* op) {
  ce::check_row_vector(grad_loss, in.logits, op, "grad_loss");
  ce::check_row_vector(lse, in.logits, op, "lse");
  const c10::cuda::CUDAGuard guard(in.logits.device());
  const int64_t B = in.logits.size(0);
  if (B == 0) return;
  const Tensor lse_c = lse.contiguous();
  in.p.grad_loss = grad_loss.data_ptr<float>();
  in.p.grad_loss_stride = grad_loss.stride(0);
  in.p.lse = lse_c.data_ptr<float>();
  in.p.grad = grad.data_ptr();
  in.p.grad_row_stride = grad.stride(0);
  const LaunchShape s = launch_shape(B, in.p.classes, static_cast<int>(in.logits.element_size()));
  CLASSY_FAST_DISPATCH_FLOAT_TYPES(in.logits.scalar_type(), op,
                                   [&] { launch_hard<HardBackwardLaunch, scalar_t>(s, in.p); });
}

std::tuple<Tensor, Tensor> cross_entropy_fwd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                             int64_t ignore_index, bool /*inplace_backward*/) {
  constexpr const char* op = "classy_fast::cross_entropy_fwd";
  return hard_forward(prepare_hard(logits, target, nullptr, nullptr, label_smoothing, true, ignore_index, op), op);
}

Tensor cross_entropy_bwd(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                         double label_smoothing, int64_t ignore_index) {
  constexpr const char* op = "classy_fast::cross_entropy_bwd";
  HardInputs in = prepare_hard(logits, target, nullptr, nullptr, label_smoothing, true, ignore_index, op);
  Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  hard_backward(in, grad_loss, lse, grad, op);
  return grad;
}

void cross_entropy_bwd_(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                        double label_smoothing, int64_t ignore_index) {
  constexpr const char* op = "classy_fast::cross_entropy_bwd_";
  ce::check_inplace_logits(logits, op);
  HardInputs in = prepare_hard(logits, target, nullptr, nullptr, label_smoothing, true, ignore_index, op);
  hard_backward(in, grad_loss, lse, logits, op);
}

std::tuple<Tensor, Tensor> mixup_cross_entropy_fwd(const Tensor& logits, const Tensor& target_a,
                                                   const Tensor& target_b, const Tensor& lam, double label_smoothing,
                                                   bool /*inplace_backward*/) {
  constexpr const char* op = "classy_fast::mixup_cross_entropy_fwd";
  return hard_forward(prepare_hard(logits, target_a, &target_b, &lam, label_smoothing, false, 0, op), op);
}

Tensor mixup_cross_entropy_bwd(const Tensor& grad_loss, const Tensor& logits, const Tensor& target_a,
                               const Tensor& target_b, const Tensor& lam, const Tensor& lse, double label_smoothing) {
  constexpr const char* op = "classy_fast::mixup_cross_entropy_bwd";
  HardInputs in = prepare_hard(logits, target_a, &target_b, &lam, label_smoothing, false, 0, op);
  Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  hard_backward(in, grad_loss, lse, grad, op);
  return grad;
}

void mixup_cross_entropy_bwd_(const Tensor& grad_loss, const Tensor& logits, const Tensor& target_a,
                              const Tensor& target_b, const Tensor& lam, const Tensor& lse, double label_smoothing) {
  constexpr const char* op = "classy_fast::mixup_cross_entropy_bwd_";
  ce::check_inplace_logits(logits, op);
  HardInputs in = prepare_hard(logits, target_a, &target_b, &lam, label_smoothing, false, 0, op);
  hard_backward(in, grad_loss, lse, logits, op);
}

struct SoftInputs {
  Tensor logits, target;
  SoftParams p;
};

SoftInputs prepare_soft(const Tensor& logits_in, const Tensor& target_in, double label_smoothing, const char* op) {
  ce::check_logits(logits_in, op);
  check_cuda(logits_in, op, "logits");
  ce::check_label_smoothing(label_smoothing, op);
  ce::check_soft_target(target_in, logits_in, op);
  SoftInputs in;
  in.logits = ce::with_unit_column_stride(logits_in);
  in.target = ce::with_unit_column_stride(target_in);
  SoftParams& p = in.p;
  p = SoftParams{};
  p.logits = in.logits.data_ptr();
  p.logits_row_stride = in.logits.stride(0);
  p.rows = in.logits.size(0);
  p.classes = in.logits.size(1);
  p.target = in.target.data_ptr();
  p.target_row_stride = in.target.stride(0);
  p.label_smoothing = static_cast<float>(label_smoothing);
  return in;
}

template <typename T, typename TT>
void launch_soft(const LaunchShape& s, const SoftParams& p, bool forward) {
  const cudaStream_t st = c10::cuda::getCurrentCUDAStream();
  if (forward) {
    if (s.warp_per_row) {
      soft_forward_kernel<T, TT, true><<<s.blocks, s.threads, 0, st>>>(p);
    } else {
      soft_forward_kernel<T, TT, false><<<s.blocks, s.threads, 0, st>>>(p);
    }
  } else {
    if (s.warp_per_row) {
      soft_backward_kernel<T, TT, true><<<s.blocks, s.threads, 0, st>>>(p);
    } else {
      soft_backward_kernel<T, TT, false><<<s.blocks, s.threads, 0, st>>>(p);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void dispatch_soft(const SoftInputs& in, bool forward, const char* op) {
  const LaunchShape s = launch_shape(in.p.rows, in.p.classes, static_cast<int>(in.logits.element_size()));
  CLASSY_FAST_DISPATCH_FLOAT_TYPES(in.logits.scalar_type(), op, [&] {
    CLASSY_FAST_DISPATCH_TARGET_TYPE(in.target.scalar_type(), op,
                                     [&] { launch_soft<scalar_t, target_t>(s, in.p, forward); });
  });
}

std::tuple<Tensor, Tensor> soft_cross_entropy_fwd(const Tensor& logits, const Tensor& target, double label_smoothing,
                                                  bool /*inplace_backward*/) {
  constexpr const char* op = "classy_fast::soft_cross_entropy_fwd";
  SoftInputs in = prepare_soft(logits, target, label_smoothing, op);
  const c10::cuda::CUDAGuard guard(in.logits.device());
  const int64_t B = in.p.rows;
  Tensor loss = at::empty({B}, in.logits.options().dtype(at::kFloat));
  Tensor lse = at::empty({B}, in.logits.options().dtype(at::kFloat));
  if (B == 0) return {loss, lse};
  in.p.loss = loss.data_ptr<float>();
  in.p.lse = lse.data_ptr<float>();
  dispatch_soft(in, /*forward=*/true, op);
  return {loss, lse};
}

void soft_backward(SoftInputs& in, const Tensor& grad_loss, const Tensor& lse, const Tensor& grad, const char* op) {
  ce::check_row_vector(grad_loss, in.logits, op, "grad_loss");
  ce::check_row_vector(lse, in.logits, op, "lse");
  const c10::cuda::CUDAGuard guard(in.logits.device());
  if (in.p.rows == 0) return;
  const Tensor lse_c = lse.contiguous();
  in.p.grad_loss = grad_loss.data_ptr<float>();
  in.p.grad_loss_stride = grad_loss.stride(0);
  in.p.lse = lse_c.data_ptr<float>();
  in.p.grad = grad.data_ptr();
  in.p.grad_row_stride = grad.stride(0);
  dispatch_soft(in, /*forward=*/false, op);
}

Tensor soft_cross_entropy_bwd(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                              double label_smoothing) {
  constexpr const char* op = "classy_fast::soft_cross_entropy_bwd";
  SoftInputs in = prepare_soft(logits, target, label_smoothing, op);
  Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  soft_backward(in, grad_loss, lse, grad, op);
  return grad;
}

void soft_cross_entropy_bwd_(const Tensor& grad_loss, const Tensor& logits, const Tensor& target, const Tensor& lse,
                             double label_smoothing) {
  constexpr const char* op = "classy_fast::soft_cross_entropy_bwd_";
  ce::check_inplace_logits(logits, op);
  SoftInputs in = prepare_soft(logits, target, label_smoothing, op);
  soft_backward(in, grad_loss, lse, logits, op);
}

}  // namespace
}  // namespace classy_fast::cuda

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) {
  using namespace classy_fast::cuda;
  m.impl("cross_entropy_fwd", &cross_entropy_fwd);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd);
  m.impl("cross_entropy_bwd_", &cross_entropy_bwd_);
  m.impl("mixup_cross_entropy_fwd", &mixup_cross_entropy_fwd);
  m.impl("mixup_cross_entropy_bwd", &mixup_cross_entropy_bwd);
  m.impl("mixup_cross_entropy_bwd_", &mixup_cross_entropy_bwd_);
  m.impl("soft_cross_entropy_fwd", &soft_cross_entropy_fwd);
  m.impl("soft_cross_entropy_bwd", &soft_cross_entropy_bwd);
  m.impl("soft_cross_entropy_bwd_", &soft_cross_entropy_bwd_);
}
