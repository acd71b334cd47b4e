// AVX-512 build of the CPU optimizer / EMA / norm loops (csrc/cpu/optim_kernels_impl.h), in
// namespace classy_fast::cpu::AVX512; optim_kernels() hands this table out on CPUs for which ATen
// reports AVX512. The loops are bound by memory bandwidth, yet on the Zen 5 VM we measure on the
// 512-bit loop is ~4 % faster than the AVX2 one at one thread (SGD on ResNet-50: 8.8-9.1 vs
// 9.2-9.5 ms), which is the margin against torch's own AVX-512 fused kernels.
#include "cpu/optim_kernels.h"

#define CLASSY_FAST_TARGET_ISA_AVX512
#include "cpu/target_isa_begin.h"
#ifdef CLASSY_FAST_TARGET_ISA
#include "cpu/optim_kernels_impl.h"
// Back to the baseline ISA: the getter below runs before anyone knows the CPU has AVX-512.
#pragma GCC pop_options
#endif

namespace classy_fast::cpu {

const OptimKernels* optim_kernels_avx512() {
#ifdef CLASSY_FAST_TARGET_ISA
  static const OptimKernels table = CLASSY_FAST_OPTIM_KERNEL_TABLE("avx512");
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace classy_fast::cpu
