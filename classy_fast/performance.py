"""Speed settings of a run: torch.compile of the forward + loss, TF32 and cuDNN autotuning.

``ForwardLoss`` is what the task's train and eval steps call: logits and loss of a batch under the
run's autocast. With ``compile`` it is ``torch.compile``d as one function (mode ``compile_mode``),
so the loss is in the same graph as the model: classy_fast's fused cross-entropy ops are
``torch.library`` custom ops with fake (shape) kernels and registered autograd formulas, so Dynamo
keeps them as single nodes instead of breaking the graph, and AOTAutograd puts their backward ops in
the backward graph. The model is passed in on each call (not captured), so a DDP wrapper applied to
``task.model`` after construction is what runs; the task's ``model`` attribute and its state-dict
keys stay those of the plain module. ``dynamic=False``: shapes are static per batch size (the
smaller last test batch compiles once more), which is what CUDA graphs ('reduce-overhead') need.

TF32 (``tf32``) lets float32 matmuls and convolutions on Ampere+ GPUs use TensorFloat-32 (10-bit
mantissa inputs, fp32 accumulation); ``cudnn_benchmark`` lets cuDNN time its algorithms for each
new input shape. Both are no-ops on the CPU. ``deterministic`` trades speed for bit-identical
reruns on one GPU (deterministic algorithms, cuDNN, cuBLAS workspace).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Tuple

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def set_tf32(enabled: bool) -> None:
    """Allow TF32 in float32 matmuls and convolutions (process-wide, as torch's flags are).

    Through the long-standing setters (``set_float32_matmul_precision``, ``cudnn.allow_tf32``): after
    them torch ≥ 2.9 answers both its legacy readers (``get_float32_matmul_precision``,
    ``matmul.allow_tf32``, which libraries still read) and its ``fp32_precision`` ones, where setting
    ``fp32_precision`` would make every later legacy read raise "mix of the legacy and new APIs"."""
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    return torch.get_float32_matmul_precision() != "highest"


def configure_backends(tf32: bool, cudnn_benchmark: bool, deterministic: bool = False) -> None:
    """Set the TF32, cuDNN benchmark and determinism switches (process-wide, as torch's flags are)."""
    set_tf32(tf32)
    if deterministic:
        # cuBLAS picks reduction splits by workspace: a fixed config makes its GEMMs repeatable. It must be
        # set before the first cuBLAS call of the process (a run's setup is before any).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel warns (naming itself) instead of ending the run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:  # determinism the user switched on by hand stays on
        torch.backends.cudnn.benchmark = cudnn_benchmark


class ForwardLoss:
    """``(logits, loss) = forward_loss(model, images, target)``: eager, or compiled as one graph."""

    def __init__(self, loss: Callable, precision: Any, compile: bool = False, mode: str = "default"):
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {mode!r}")
        self.loss = loss
        self.precision = precision
        self.compiled = compile
        self._fn = torch.compile(self._eager, mode=mode, dynamic=False) if compile else self._eager

    def _eager(self, model: nn.Module, images: torch.Tensor, target: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        with self.precision.autocast():
            logits = model(images)
            loss = self.loss(logits, target)
        return logits, loss

    def __call__(self, model: nn.Module, images: torch.Tensor, target: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._fn(model, images, target)
