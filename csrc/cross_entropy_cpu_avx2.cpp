// AVX2+FMA+F16C build of the CPU cross-entropy row kernels.
//
// setuptools compiles every .cpp of an extension with the same flags, so instead of -mavx2
// this file raises the target ISA with a pragma placed before any include: every function
// defined below (ours and the at::vec AVX2 specialisations, which then use Sleef's exp from
// libtorch_cpu) is compiled for AVX2. The op only calls into this table after ATen reports an
// AVX2-capable CPU (csrc/cross_entropy.cpp), the same contract ATen's own per-ISA kernels use.
// The kernels live in namespace classy_fast::cpu::AVX2, so they never collide with the
// baseline copies in cross_entropy_cpu_default.cpp.
#include "cpu/cross_entropy_row_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CLASSY_FAST_NO_AVX2)
#define CLASSY_FAST_HAVE_AVX2_ROWS 1
#pragma GCC push_options
// ATen's vec headers carry '#pragma unroll' (CUDA-style) and pass __m256 by value; ATen builds
// them with these warnings off too.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
// g++ doesn't define the ISA macros for a target pragma, and sleef.h and at::vec declare
// their 256-bit paths only under them; define the set the pragma enables.
#ifndef __SSE3__
#define __SSE3__ 1
#endif
#ifndef __SSSE3__
#define __SSSE3__ 1
#endif
#ifndef __SSE4_1__
#define __SSE4_1__ 1
#endif
#ifndef __SSE4_2__
#define __SSE4_2__ 1
#endif
#ifndef __POPCNT__
#define __POPCNT__ 1
#endif
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#ifndef __BMI__
#define __BMI__ 1
#endif
#ifndef __BMI2__
#define __BMI2__ 1
#endif
#ifndef __LZCNT__
#define __LZCNT__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "cpu/cross_entropy_rows_impl.h"
// Back to the baseline ISA: the getter below runs before anyone knows the CPU has AVX2.
#pragma GCC pop_options
#endif

namespace classy_fast::cpu {

const CrossEntropyRowKernels* cross_entropy_row_kernels_avx2() {
#ifdef CLASSY_FAST_HAVE_AVX2_ROWS
  static const CrossEntropyRowKernels table = CLASSY_FAST_ROW_KERNEL_TABLE("avx2");
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace classy_fast::cpu
