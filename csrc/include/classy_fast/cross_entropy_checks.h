// Argument validation shared by the CPU and CUDA cross-entropy kernels, so both devices
// reject the same inputs with the same messages (tests match on them).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "classy_fast/dispatch.h"

namespace classy_fast::ce {

inline void check_logits(const at::Tensor& logits, const char* op) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be 2-D [batch, classes], got shape ", logits.sizes());
  TORCH_CHECK(is_supported_float_type(logits.scalar_type()), op,
              ": logits dtype must be float32, bfloat16 or float16, got ", logits.scalar_type());
  TORCH_CHECK(logits.size(1) >= 1, op, ": logits need at least one class, got shape ", logits.sizes());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& logits, const char* op, const char* name) {
  TORCH_CHECK(t.device() == logits.device(), op, ": ", name, " is on ", t.device(), " but logits are on ",
              logits.device());
}

inline void check_index_target(const at::Tensor& target, const at::Tensor& logits, const char* op,
                               const char* name) {
  TORCH_CHECK(target.scalar_type() == at::kLong, op, ": ", name, " must be int64 class indices, got ",
              target.scalar_type());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), op, ": ", name, " must have shape [",
              logits.size(0), "] to match logits ", logits.sizes(), ", got ", target.sizes());
  check_same_device(target, logits, op, name);
}

inline void check_soft_target(const at::Tensor& target, const at::Tensor& logits, const char* op) {
  TORCH_CHECK(target.sizes() == logits.sizes(), op, ": soft target must have the logits' shape ",
              logits.sizes(), ", got ", target.sizes());
  TORCH_CHECK(target.scalar_type() == at::kFloat || target.scalar_type() == logits.scalar_type(), op,
              ": soft target dtype must be float32 or the logits' dtype (", logits.scalar_type(), "), got ",
              target.scalar_type());
  check_same_device(target, logits, op, "target");
}

// lam: one fp32 value, on the logits' device (read by the kernel, no host sync) or on the CPU.
inline void check_lam(const at::Tensor& lam, const at::Tensor& logits, const char* op) {
  TORCH_CHECK(lam.numel() == 1, op, ": lam must hold one value, got shape ", lam.sizes());
  TORCH_CHECK(lam.scalar_type() == at::kFloat, op, ": lam must be float32, got ", lam.scalar_type());
  TORCH_CHECK(lam.device() == logits.device() || lam.device().is_cpu(), op, ": lam is on ", lam.device(),
              " but must be on the logits' device (", logits.device(), ") or the CPU");
}

inline void check_label_smoothing(double eps, const char* op) {
  TORCH_CHECK(eps >= 0.0 && eps <= 1.0, op, ": label_smoothing must be in [0, 1], got ", eps);
}

// Per-row fp32 vectors: the saved log-sum-exp and the incoming loss gradient (which autograd
// may hand over as an expanded scalar, stride 0: any 1-D stride is accepted).
inline void check_row_vector(const at::Tensor& v, const at::Tensor& logits, const char* op, const char* name) {
  TORCH_CHECK(v.dim() == 1 && v.size(0) == logits.size(0), op, ": ", name, " must have shape [",
              logits.size(0), "], got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", v.scalar_type());
  check_same_device(v, logits, op, name);
}

// Kernels index rows with a stride and columns contiguously; other layouts are copied once.
inline at::Tensor with_unit_column_stride(const at::Tensor& t) {
  return (t.size(1) <= 1 || t.stride(1) == 1) ? t : t.contiguous();
}

inline void check_inplace_logits(const at::Tensor& logits, const char* op) {
  TORCH_CHECK(logits.is_contiguous(), op, ": in-place backward needs contiguous logits, got strides ",
              logits.strides());
}

// reduce_loss_rows: per-row fp32 losses and, optionally, the index targets that say which rows
// count (those != ignore_index).
inline void check_loss_rows(const at::Tensor& row_loss, const std::optional<at::Tensor>& target, const char* op) {
  TORCH_CHECK(row_loss.dim() == 1, op, ": row_loss must be 1-D, got shape ", row_loss.sizes());
  TORCH_CHECK(row_loss.scalar_type() == at::kFloat, op, ": row_loss must be float32, got ",
              row_loss.scalar_type());
  if (target.has_value() && target->defined()) {
    TORCH_CHECK(target->scalar_type() == at::kLong, op, ": target must be int64, got ", target->scalar_type());
    TORCH_CHECK(target->dim() == 1 && target->size(0) == row_loss.size(0), op, ": target must have shape [",
                row_loss.size(0), "], got ", target->sizes());
    TORCH_CHECK(target->device() == row_loss.device(), op, ": target is on ", target->device(),
                " but row_loss is on ", row_loss.device());
  }
}

// Host-side label check, used where the labels already live in host memory (CPU tensors):
// on CUDA the same check would need a device->host sync, so the CUDA kernels write NaN for
// such rows instead (see docs/ops.md).
inline void check_labels_in_range(const int64_t* labels, int64_t n, int64_t num_classes, bool has_ignore,
                                  int64_t ignore_index, const char* op, const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = labels[i];
    if ((t < 0 || t >= num_classes) && !(has_ignore && t == ignore_index)) {
      TORCH_CHECK(false, op, ": ", name, "[", i, "] = ", t, " is out of range for ", num_classes,
                  " classes (valid: 0..", num_classes - 1,
                  has_ignore ? ", or ignore_index=" + std::to_string(ignore_index) : std::string(), ")");
    }
  }
}

}  // namespace classy_fast::ce
