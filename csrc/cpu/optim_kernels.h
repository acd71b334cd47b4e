// Interface between the CPU optimizer / EMA / norm ops (csrc/fused_*.cpp, ema_update.cpp,
// multi_tensor_l2norm.cpp) and their element loops.
//
// The loops are written once against at::vec::Vectorized<float> (csrc/cpu/optim_kernels_impl.h)
// and compiled three times: for the baseline ISA (csrc/optim_cpu_default.cpp), and with AVX2+FMA
// or AVX-512 enabled by a target pragma (csrc/optim_cpu_avx2.cpp, optim_cpu_avx512.cpp), the
// scheme of the cross-entropy row kernels. optim_kernels() picks a table once from ATen's CPU
// capability, so one build runs on any x86-64 and is fast on AVX2 / AVX-512 machines. All three
// give bit-identical results (see optim_vec.h).
//
// The ops do the checks and the per-tensor scalars on the host, then hand each kernel one
// tensor's task and an element range [begin, end) of it (a chunk, see optim_cpu.h); the kernel
// resolves the storage types and the feature flags into a branch-free loop for that chunk.
// This header stays light (plain structs, function pointers): no ATen vec headers.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "classy_fast/optim_math.h"

namespace classy_fast::cpu {

// The flat arrays of one tensor of an update (numel elements each, same layout: optim_checks.h).
// Types: P = `dtype` for param and grad; the state arrays are fp32 when `master` is given
// (bf16/fp16 params with fp32 master weights), else P. The weight the math updates is read from
// `master` when given, else from `param`; both are written.
struct TensorRow {
  void* param = nullptr;
  const void* grad = nullptr;   // unused by LAMB's apply pass
  void* state0 = nullptr;       // momentum buffer (SGD, LARS) / exp_avg (AdamW, LAMB)
  void* state1 = nullptr;       // exp_avg_sq (AdamW, LAMB)
  float* master = nullptr;
  c10::ScalarType dtype = c10::ScalarType::Float;
};

struct SgdTask {
  TensorRow row;  // state0: momentum buffer (nullptr without momentum)
  optim_math::GradTransform transform;
  optim_math::SgdHyper hyper;
};

struct AdamwTask {
  TensorRow row;
  optim_math::GradTransform transform;
  optim_math::AdamwHyper hyper;
};

struct LarsTask {
  TensorRow row;
  optim_math::GradTransform transform;
  optim_math::LarsHyper hyper;
};

// LAMB stage 1: updates state0/state1 from the grad; `param` (or `master`) is the weight, read only.
struct LambMomentsTask {
  TensorRow row;
  optim_math::GradTransform transform;
  optim_math::LambHyper hyper;
};

// LAMB stage 2: w -= scaled_lr * u, u recomputed from the stored moments.
struct LambApplyTask {
  TensorRow row;
  optim_math::LambHyper hyper;
  float scaled_lr;  // lr * trust ratio of this tensor
};

// ema = decay * ema + (1 - decay) * value; the EMA is fp32 or `value_dtype`.
struct EmaTask {
  void* ema = nullptr;
  const void* value = nullptr;
  c10::ScalarType value_dtype = c10::ScalarType::Float;
  bool ema_is_fp32 = true;
  float decay = 0.0f;
};

// Sum of (x * inv_scale)^2.
struct NormTask {
  const void* x = nullptr;
  c10::ScalarType dtype = c10::ScalarType::Float;
  float inv_scale = 1.0f;
};

struct SquareSums {
  double w = 0.0;
  double u = 0.0;
  SquareSums& operator+=(const SquareSums& o) {
    w += o.w;
    u += o.u;
    return *this;
  }
};

// Each function processes elements [begin, end) of one tensor; the caller splits the work.
struct OptimKernels {
  const char* isa;
  void (*sgd)(const SgdTask&, int64_t begin, int64_t end);
  void (*adamw)(const AdamwTask&, int64_t begin, int64_t end);
  void (*lars)(const LarsTask&, int64_t begin, int64_t end);
  // Returns the sums of w^2 and u^2 over the range (u from the stored, rounded moments).
  SquareSums (*lamb_moments)(const LambMomentsTask&, int64_t begin, int64_t end);
  void (*lamb_apply)(const LambApplyTask&, int64_t begin, int64_t end);
  void (*ema)(const EmaTask&, int64_t begin, int64_t end);
  double (*sum_of_squares)(const NormTask&, int64_t begin, int64_t end);
};

const OptimKernels& optim_kernels_default();
// nullptr when this build has no such variant (non-x86 target or a compiler without the target
// pragma).
const OptimKernels* optim_kernels_avx2();
const OptimKernels* optim_kernels_avx512();
// The table for this CPU (chosen once; honours ATEN_CPU_CAPABILITY=default).
const OptimKernels& optim_kernels();

}  // namespace classy_fast::cpu
