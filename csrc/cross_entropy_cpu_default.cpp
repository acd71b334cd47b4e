// Baseline-ISA build of the CPU cross-entropy row kernels (runs on any x86-64 / aarch64).
// at::vec's generic Vectorized<float> is a fixed-size array the compiler vectorizes with
// whatever the baseline ISA offers; cross_entropy_cpu_avx2.cpp is the fast variant.
#define CPU_CAPABILITY DEFAULT
#include "cpu/cross_entropy_rows_impl.h"

namespace classy_fast::cpu {

const CrossEntropyRowKernels& cross_entropy_row_kernels_default() {
  static const CrossEntropyRowKernels table = CLASSY_FAST_ROW_KERNEL_TABLE("default");
  return table;
}

}  // namespace classy_fast::cpu
