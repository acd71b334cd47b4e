// AVX2+FMA+F16C build of the CPU cross-entropy row kernels.
//
// cpu/target_isa_begin.h raises the target ISA for the code below it (setuptools compiles every
// .cpp with the same flags, so no -mavx2): every function defined in the region (ours and the
// at::vec AVX2 specialisations, which then use Sleef's exp from libtorch_cpu) is compiled for
// AVX2. The op only calls into this table after ATen reports an AVX2-capable CPU
// (csrc/cross_entropy.cpp). The kernels live in namespace classy_fast::cpu::AVX2, so they never
// collide with the baseline copies in cross_entropy_cpu_default.cpp.
#include "cpu/cross_entropy_row_kernels.h"

#include "cpu/target_isa_begin.h"
#ifdef CLASSY_FAST_TARGET_ISA
#include "cpu/cross_entropy_rows_impl.h"
// Back to the baseline ISA: the getter below runs before anyone knows the CPU has AVX2.
#pragma GCC pop_options
#endif

namespace classy_fast::cpu {

const CrossEntropyRowKernels* cross_entropy_row_kernels_avx2() {
#ifdef CLASSY_FAST_TARGET_ISA
  static const CrossEntropyRowKernels table = CLASSY_FAST_ROW_KERNEL_TABLE("avx2");
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace classy_fast::cpu
