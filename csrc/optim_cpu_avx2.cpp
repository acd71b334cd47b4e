// AVX2+FMA+F16C build of the CPU optimizer / EMA / norm loops (csrc/cpu/optim_kernels_impl.h).
// The loops live in namespace classy_fast::cpu::AVX2, apart from the baseline copies in
// csrc/optim_cpu_default.cpp; optim_kernels() hands this table out on AVX2 CPUs.
#include "cpu/optim_kernels.h"

#include "cpu/target_isa_begin.h"
#ifdef CLASSY_FAST_TARGET_ISA
#include "cpu/optim_kernels_impl.h"
// Back to the baseline ISA: the getter below runs before anyone knows the CPU has AVX2.
#pragma GCC pop_options
#endif

namespace classy_fast::cpu {

const OptimKernels* optim_kernels_avx2() {
#ifdef CLASSY_FAST_TARGET_ISA
  static const OptimKernels table = CLASSY_FAST_OPTIM_KERNEL_TABLE("avx2");
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace classy_fast::cpu
