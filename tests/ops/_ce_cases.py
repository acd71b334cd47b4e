"""Shared cases of the fused cross-entropy tests: devices, dtypes, the per-dtype tolerance table,
seeded logits and labels, and the fused-vs-reference comparison."""

from __future__ import annotations

import pytest
import torch

from classy_fast.ops import cuda_kernels_available

CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# Tolerances per logits dtype. Loss: fp32 math on the same (exactly upcast) inputs, so only
# exp/log rounding and summation order differ. Grad: one rounding to the logits' dtype on
# each side, so up to ~1-2 ulps of that dtype apart.
TOL = {
    torch.float32: {"loss": dict(rtol=2e-5, atol=2e-5), "grad": dict(rtol=1e-4, atol=1e-7)},
    torch.bfloat16: {"loss": dict(rtol=2e-5, atol=2e-5), "grad": dict(rtol=1.6e-2, atol=1e-6)},
    torch.float16: {"loss": dict(rtol=2e-5, atol=2e-5), "grad": dict(rtol=2e-3, atol=1e-7)},
}
# Against float64 references the fp32 kernels' own rounding over up to ~2e4 classes shows.
TOL64 = {
    torch.float32: {"loss": dict(rtol=1e-5, atol=1e-5), "grad": dict(rtol=1e-4, atol=1e-7)},
    torch.bfloat16: {"loss": dict(rtol=1e-5, atol=1e-5), "grad": dict(rtol=1.6e-2, atol=1e-6)},
    torch.float16: {"loss": dict(rtol=1e-5, atol=1e-5), "grad": dict(rtol=2e-3, atol=1e-7)},
}

def _skip_unless_fused(device: str) -> None:
    if device == "cuda" and not cuda_kernels_available():
        pytest.skip("classy_fast._C was built without CUDA kernels")


def _logits(b, c, dtype, device, seed=0, scale=3.0, requires_grad=True):
    g = torch.Generator().manual_seed(seed * 1000 + b * 31 + c)
    x = (torch.randn(b, c, generator=g) * scale).to(dtype=dtype, device=device)
    return x.requires_grad_(requires_grad)


def _labels(b, c, device, seed=1, ignore_every=0, ignore_index=-100):
    g = torch.Generator().manual_seed(seed * 7 + b * 13 + c)
    t = torch.randint(0, c, (b,), generator=g)
    if ignore_every:
        t[::ignore_every] = ignore_index
    return t.to(device)


def _fused_and_reference(fn_fused, fn_ref, x):
    """Loss and grad of the fused op, and of the reference on a copy of the same logits."""
    x_ref = x.detach().clone().requires_grad_(True)
    loss = fn_fused(x)
    loss_ref = fn_ref(x_ref)
    assert loss.dtype == torch.float32
    weight = torch.linspace(0.5, 1.5, loss.numel(), device=x.device).reshape(loss.shape)
    (loss * weight).sum().backward()
    (loss_ref * weight).sum().backward()
    assert x.grad.dtype == x.dtype
    return loss, loss_ref, x.grad, x_ref.grad


def _assert_close(actual, expected, tol, what):
    torch.testing.assert_close(actual, expected.to(actual.dtype), **tol, msg=lambda m: f"{what}: {m}")


def _assert_fused_matches(fn_fused, fn_ref, x, what=""):
    """Loss and grad of the fused op against the reference on the same logits, with the dtype's tolerances;
    returns (loss, grad) for further checks."""
    loss, ref, grad, grad_ref = _fused_and_reference(fn_fused, fn_ref, x)
    prefix = f"{what} " if what else ""
    _assert_close(loss, ref, TOL[x.dtype]["loss"], prefix + "loss")
    _assert_close(grad, grad_ref, TOL[x.dtype]["grad"], prefix + "grad")
    return loss, grad


def _fused_loss_of_kind(kind, index, soft, index_b):
    """loss_fn(logits, inplace) of the fused op for a target kind: 'index' (``index``), 'soft' (``soft``) or
    'mixup' (``index`` and ``index_b`` at λ = 0.7), all with label smoothing 0.1."""
    from classy_fast.ops import cross_entropy, mixup_cross_entropy

    def loss_fn(logits, inplace):
        if kind == "index":
            return cross_entropy(logits, index, label_smoothing=0.1, impl="fused", inplace_backward=inplace)
        if kind == "soft":
            return cross_entropy(logits, soft, label_smoothing=0.1, impl="fused", inplace_backward=inplace)
        return mixup_cross_entropy(logits, index, index_b, 0.7, label_smoothing=0.1, impl="fused",
                                   inplace_backward=inplace)

    return loss_fn
