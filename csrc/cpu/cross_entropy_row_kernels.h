// Interface between the CPU cross-entropy op (csrc/cross_entropy.cpp) and its row kernels.
//
// The row kernels are compiled twice: once for the baseline ISA
// (csrc/cross_entropy_cpu_default.cpp) and once with AVX2+FMA+F16C enabled by a target pragma
// (csrc/cross_entropy_cpu_avx2.cpp), each inside its own at::vec CPU_CAPABILITY namespace.
// The op picks a table at run time from ATen's CPU capability (which honours
// ATEN_CPU_CAPABILITY=default), so one build runs on any x86-64 and is fast on AVX2 machines.
// This header is deliberately light: plain structs and function pointers, no ATen vec headers.
#pragma once

#include <cstdint>

namespace classy_fast::cpu {

enum class ElemType : int32_t { kFloat, kBFloat16, kHalf };

// Index targets (one class per row, with ignore_index) and the mixup form (two classes per
// row mixed by lam; target_b != nullptr) share one kernel: both are "hard" targets whose
// smoothed distribution is (1-eps) * onehot-mix + eps/C and is never materialised.
struct HardTargetRows {
  const void* logits = nullptr;  // [B, C], unit column stride
  int64_t logits_row_stride = 0;
  ElemType dtype = ElemType::kFloat;
  int64_t num_classes = 0;
  const int64_t* target_a = nullptr;
  const int64_t* target_b = nullptr;  // mixup only
  float lam = 1.f;                    // weight of target_a (mixup); 1 for index targets
  bool has_ignore_index = false;
  int64_t ignore_index = -100;
  float label_smoothing = 0.f;
  // forward outputs / backward inputs (fp32, one per row)
  float* loss = nullptr;
  float* lse = nullptr;
  // backward only
  const float* grad_loss = nullptr;
  int64_t grad_loss_stride = 0;  // 0 when autograd hands us an expanded scalar
  void* grad_logits = nullptr;   // may equal logits (in-place backward)
  int64_t grad_row_stride = 0;
};

// Soft targets: float [B, C] probabilities (fp32 or the logits' dtype).
struct SoftTargetRows {
  const void* logits = nullptr;
  int64_t logits_row_stride = 0;
  ElemType dtype = ElemType::kFloat;
  int64_t num_classes = 0;
  const void* target = nullptr;
  int64_t target_row_stride = 0;
  bool target_is_fp32 = true;  // else the logits' dtype
  float label_smoothing = 0.f;
  float* loss = nullptr;
  float* lse = nullptr;
  const float* grad_loss = nullptr;
  int64_t grad_loss_stride = 0;
  void* grad_logits = nullptr;
  int64_t grad_row_stride = 0;
};

// Each function processes rows [begin, end); the caller splits rows across threads.
struct CrossEntropyRowKernels {
  const char* isa;
  void (*hard_forward)(const HardTargetRows&, int64_t begin, int64_t end);
  void (*hard_backward)(const HardTargetRows&, int64_t begin, int64_t end);
  void (*soft_forward)(const SoftTargetRows&, int64_t begin, int64_t end);
  void (*soft_backward)(const SoftTargetRows&, int64_t begin, int64_t end);
};

const CrossEntropyRowKernels& cross_entropy_row_kernels_default();
// nullptr when this build has no AVX2 variant (non-x86 target or a compiler without the
// target pragma).
const CrossEntropyRowKernels* cross_entropy_row_kernels_avx2();

}  // namespace classy_fast::cpu
