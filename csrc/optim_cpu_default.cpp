// Baseline-ISA build of the CPU optimizer / EMA / norm loops (runs on any x86-64 / aarch64), and
// the choice between it and the AVX2 / AVX-512 builds (csrc/optim_cpu_avx2.cpp,
// optim_cpu_avx512.cpp). at::vec's generic Vectorized<float> is a fixed-size array the compiler
// vectorizes with whatever the baseline ISA offers.
#include <ATen/Version.h>

#include <string>

#include "cpu/optim_kernels.h"

#define CPU_CAPABILITY DEFAULT
#include "cpu/optim_kernels_impl.h"

namespace classy_fast::cpu {

const OptimKernels& optim_kernels_default() {
  static const OptimKernels table = CLASSY_FAST_OPTIM_KERNEL_TABLE("default");
  return table;
}

const OptimKernels& optim_kernels() {
  // ATen's capability reflects the CPU and the ATEN_CPU_CAPABILITY override (default / avx2 /
  // avx512), the same switch that steers ATen's own per-ISA kernels.
  static const OptimKernels& table = []() -> const OptimKernels& {
    const std::string cap = at::get_cpu_capability();
    const OptimKernels* avx512 = optim_kernels_avx512();
    const OptimKernels* avx2 = optim_kernels_avx2();
    if (avx512 != nullptr && cap == "AVX512") return *avx512;
    if (avx2 != nullptr && (cap == "AVX2" || cap == "AVX512")) return *avx2;
    return optim_kernels_default();
  }();
  return table;
}

}  // namespace classy_fast::cpu
