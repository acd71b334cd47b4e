// Starts a region of a translation unit compiled for AVX2 (+FMA, F16C) or AVX-512 (F, BW, VL, DQ
// on top of that), for the per-ISA CPU kernels.
//
// setuptools compiles every .cpp of an extension with the same flags, so instead of -mavx2 a
// per-ISA file raises the target ISA with a pragma placed after its baseline includes and before
// the kernel code: every function defined in the region (ours and the at::vec specialisations) is
// compiled for that ISA, inside at::vec's namespace for it (CPU_CAPABILITY). Callers only reach
// that code after ATen reports a capable CPU, the same contract ATen's own per-ISA kernels use.
//
// Usage (see csrc/optim_cpu_avx2.cpp):
//   #define CLASSY_FAST_TARGET_ISA_AVX512    // optional: AVX-512 instead of AVX2
//   #include "cpu/target_isa_begin.h"
//   #ifdef CLASSY_FAST_TARGET_ISA
//   #include "cpu/..._impl.h"
//   #pragma GCC pop_options               // back to the baseline ISA
//   #endif
// Not an include-once header: each use opens one region. Building with -DCLASSY_FAST_NO_AVX2
// (or -DCLASSY_FAST_NO_AVX512 for the AVX-512 region alone) leaves the region out.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CLASSY_FAST_NO_AVX2) && \
    !(defined(CLASSY_FAST_TARGET_ISA_AVX512) && defined(CLASSY_FAST_NO_AVX512))
#define CLASSY_FAST_TARGET_ISA 1
#pragma GCC push_options
// ATen's vec headers carry '#pragma unroll' (CUDA-style) and pass vector registers by value;
// ATen builds them with these warnings off too.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma GCC diagnostic ignored "-Wpsabi"
#ifdef CLASSY_FAST_TARGET_ISA_AVX512
// GCC 12 flags the deliberately undefined registers inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The set ATen requires before it reports the AVX512 capability.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#else
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#endif
// g++ doesn't define the ISA macros for a target pragma, and sleef.h and at::vec declare their
// wide paths only under them; define the set the pragma enables.
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
#ifdef CLASSY_FAST_TARGET_ISA_AVX512
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#else
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif
#endif
