"""Fake (shape-only) kernels of the optimizer ops, for FakeTensor tracing, torch.compile and opcheck.

The in-place ops return nothing; the two that return norms return fresh float32 tensors. Only
registered when the extension defined the ops (the schemas live in csrc/registration.cpp).
"""

from __future__ import annotations

import torch

from classy_fast.ops import _extension

_registered = False


def _norm_vector(like: torch.Tensor, n: int) -> torch.Tensor:
    return torch.empty((n,), dtype=torch.float32, device=like.device)


def register_fake_kernels() -> None:
    global _registered
    if _registered or not _extension.EXTENSION_AVAILABLE or not _extension.has_kernel("fused_sgd_", "CPU"):
        return
    _registered = True

    @torch.library.register_fake("classy_fast::multi_tensor_l2norm")
    def _(tensors, grad_scale, per_tensor):
        torch._check(len(tensors) > 0, lambda: "classy_fast::multi_tensor_l2norm: empty tensor list")
        total = torch.empty((), dtype=torch.float32, device=tensors[0].device)
        return total, _norm_vector(tensors[0], len(tensors) if per_tensor else 0)

    @torch.library.register_fake("classy_fast::fused_lamb_moments_")
    def _(grads, exp_avgs, exp_avg_sqs, weights, steps, *args):
        torch._check(len(grads) > 0, lambda: "classy_fast::fused_lamb_moments_: empty gradient list")
        return _norm_vector(grads[0], len(grads)), _norm_vector(grads[0], len(grads))

    for name in ("fused_sgd_", "fused_adamw_", "fused_lars_", "fused_lamb_apply_", "ema_update_"):
        torch.library.register_fake(f"classy_fast::{name}")(lambda *args: None)
