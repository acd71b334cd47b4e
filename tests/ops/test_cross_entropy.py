"""Fused cross-entropy (classy_fast.ops) against torch.nn.functional.cross_entropy and float64 references.

CPU cases run everywhere the extension is built; CUDA cases carry the `cuda` marker and run
on a GPU machine (benchmarks/gpu_check.sh). Losses are fp32 for every logits dtype and are
compared tightly; gradients come back in the logits' dtype and are compared to the reference
gradient rounded the same way, within a per-dtype tolerance (about 2 ulps).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from classy_fast.ops import (
    cross_entropy,
    cross_entropy_reference,
    extension_available,
    mixup_cross_entropy,
    mixup_cross_entropy_reference,
)
from classy_fast.ops.reference import mixup_soft_target
from tests.ops._ce_cases import (
    CUDA,
    DEVICES,
    DTYPES,
    TOL,
    TOL64,
    _assert_close,
    _fused_loss_of_kind,
    _fused_and_reference,
    _labels,
    _logits,
    _skip_unless_fused,
)

pytestmark = pytest.mark.skipif(
    not extension_available(),
    reason="classy_fast._C is not built (pip install --no-build-isolation --no-deps -e .); fused ops untestable",
)

# B in {1, 3, 17, 64} x C in {1, 2, 7, 1000, 1025}, plus 21843 classes with small batches.
SHAPES = [(b, c) for b in (1, 3, 17, 64) for c in (1, 2, 7, 1000, 1025)] + [(1, 21843), (3, 21843)]
SOFT_SHAPES = [(1, 1), (3, 7), (17, 1025), (64, 1000), (2, 21843)]


# ---- index targets ----


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}xC{s[1]}")
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_index_targets_match_torch(device, dtype, shape, label_smoothing):
    _skip_unless_fused(device)
    b, c = shape
    x = _logits(b, c, dtype, device)
    t = _labels(b, c, device, ignore_every=5 if b > 3 else 0)
    loss, ref, grad, grad_ref = _fused_and_reference(
        lambda z: cross_entropy(z, t, label_smoothing=label_smoothing, impl="fused"),
        lambda z: F.cross_entropy(z.float(), t, label_smoothing=label_smoothing),
        x,
    )
    _assert_close(loss, ref, TOL[dtype]["loss"], "loss")
    _assert_close(grad, grad_ref, TOL[dtype]["grad"], "grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_reductions_with_ignored_rows(device, reduction, label_smoothing):
    _skip_unless_fused(device)
    x = _logits(17, 33, torch.float32, device)
    t = _labels(17, 33, device, ignore_every=3)
    loss, ref, grad, grad_ref = _fused_and_reference(
        lambda z: cross_entropy(z, t, label_smoothing=label_smoothing, reduction=reduction, impl="fused"),
        lambda z: F.cross_entropy(z, t, label_smoothing=label_smoothing, reduction=reduction),
        x,
    )
    assert loss.shape == ref.shape
    _assert_close(loss, ref, TOL[torch.float32]["loss"], "loss")
    _assert_close(grad, grad_ref, TOL[torch.float32]["grad"], "grad")
    assert torch.all(grad[t == -100] == 0)
    if reduction == "none":
        assert torch.all(loss[t == -100] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_ignore_index_can_be_a_real_class(device):
    _skip_unless_fused(device)
    x = _logits(40, 5, torch.float32, device)
    t = _labels(40, 5, device)
    loss = cross_entropy(x, t, ignore_index=2, label_smoothing=0.1, impl="fused")
    ref = F.cross_entropy(x, t, ignore_index=2, label_smoothing=0.1)
    _assert_close(loss, ref, TOL[torch.float32]["loss"], "loss")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("classes,row,col", [(3, 0, 0), (1025, 1, 0), (1025, 1, 1024), (40000, 2, 3)])
def test_nan_logit_makes_its_row_nan_like_torch(device, classes, row, col):
    # A NaN anywhere in a row (first element, misaligned head, tail, block mode) must reach the loss:
    # the trainer stops on a non-finite loss, and a finite loss over NaN gradients would hide it.
    _skip_unless_fused(device)
    x = _logits(3, classes, torch.float32, device, requires_grad=False)
    x[row, col] = float("nan")
    t = torch.ones(3, dtype=torch.long, device=device)
    for eps in (0.0, 0.1):
        loss = cross_entropy(x, t, reduction="none", label_smoothing=eps, impl="fused")
        ref = F.cross_entropy(x, t, reduction="none", label_smoothing=eps)
        assert torch.isnan(loss[row]) and torch.isnan(ref[row])
        others = [r for r in range(3) if r != row]
        torch.testing.assert_close(loss[others], ref[others], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_all_rows_ignored_gives_nan_mean_like_torch(device):
    _skip_unless_fused(device)
    x = _logits(4, 6, torch.float32, device)
    t = torch.full((4,), -100, dtype=torch.long, device=device)
    assert torch.isnan(cross_entropy(x, t, impl="fused"))
    assert torch.isnan(F.cross_entropy(x, t))
    assert cross_entropy(x, t, reduction="sum", impl="fused").item() == 0.0
    cross_entropy(x, t, reduction="sum", impl="fused").backward()
    assert torch.all(x.grad == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_128k_classes(device, dtype):
    _skip_unless_fused(device)
    x = _logits(2, 128000, dtype, device)
    t = _labels(2, 128000, device)
    loss, ref, grad, grad_ref = _fused_and_reference(
        lambda z: cross_entropy(z, t, label_smoothing=0.1, reduction="none", impl="fused"),
        lambda z: F.cross_entropy(z.float(), t, label_smoothing=0.1, reduction="none"),
        x,
    )
    _assert_close(loss, ref, TOL[dtype]["loss"], "loss")
    _assert_close(grad, grad_ref, TOL[dtype]["grad"], "grad")


@pytest.mark.parametrize("device", DEVICES)
def test_large_common_offset_keeps_precision(device):
    # Logits around 1e4: the smoothing term's mean of the logits would lose ~1e-3 absolute if
    # summed unshifted in fp32.
    _skip_unless_fused(device)
    x = (_logits(8, 4099, torch.float32, device, requires_grad=False) + 1e4).requires_grad_()
    t = _labels(8, 4099, device)
    loss = cross_entropy(x, t, label_smoothing=0.3, reduction="none", impl="fused")
    ref = F.cross_entropy(x.double(), t, label_smoothing=0.3, reduction="none")
    _assert_close(loss, ref.float(), dict(rtol=1e-5, atol=2e-4), "loss")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_masked_minus_inf_logits_like_torch(device, label_smoothing):
    _skip_unless_fused(device)
    x = _logits(6, 10, torch.float32, device, requires_grad=False)
    x[:, 7:] = float("-inf")
    t = _labels(6, 7, device)
    loss = cross_entropy(x, t, label_smoothing=label_smoothing, reduction="none", impl="fused")
    ref = F.cross_entropy(x, t, label_smoothing=label_smoothing, reduction="none")
    torch.testing.assert_close(loss, ref, rtol=2e-5, atol=2e-5, equal_nan=True)
    if label_smoothing == 0.0:
        assert torch.isfinite(loss).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["column_slice", "transposed", "strided_columns", "misaligned_rows"])
def test_non_contiguous_and_misaligned_logits(device, layout):
    _skip_unless_fused(device)
    b, c = 9, 1001
    base = _logits(b + 3, 2 * c + 8, torch.bfloat16, device, requires_grad=False)
    if layout == "column_slice":  # unit column stride, row stride 2c+8, storage offset 3
        x = base[:b, 3 : 3 + c]
    elif layout == "transposed":  # column stride b: copied to a contiguous layout
        x = _logits(c, b, torch.bfloat16, device, requires_grad=False).t()
    elif layout == "strided_columns":
        x = base[:b, : 2 * c : 2]
    else:  # contiguous rows whose start is 2 bytes past a 16-byte boundary
        x = base.flatten()[1 : 1 + b * c].view(b, c)
    x = x.detach().requires_grad_()
    t = _labels(b, c, device)
    loss, ref, grad, grad_ref = _fused_and_reference(
        lambda z: cross_entropy(z, t, label_smoothing=0.1, reduction="none", impl="fused"),
        lambda z: F.cross_entropy(z.float(), t, label_smoothing=0.1, reduction="none"),
        x,
    )
    _assert_close(loss, ref, TOL[torch.bfloat16]["loss"], "loss")
    _assert_close(grad, grad_ref, TOL[torch.bfloat16]["grad"], "grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_empty_batch(device, reduction):
    _skip_unless_fused(device)
    x = torch.zeros(0, 10, device=device, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long, device=device)
    loss = cross_entropy(x, t, reduction=reduction, impl="fused")
    ref = F.cross_entropy(x, t, reduction=reduction)
    torch.testing.assert_close(loss, ref, equal_nan=True)
    loss.sum().backward()
    assert x.grad.shape == (0, 10)


@pytest.mark.parametrize("device", DEVICES)
def test_single_sample_1d_logits_and_int32_labels(device):
    _skip_unless_fused(device)
    x = _logits(1, 12, torch.float32, device, requires_grad=False)[0]
    t = torch.tensor(4, device=device)
    torch.testing.assert_close(cross_entropy(x, t, impl="fused"), F.cross_entropy(x, t))
    xb = _logits(5, 12, torch.float32, device, requires_grad=False)
    t32 = _labels(5, 12, device).int()
    torch.testing.assert_close(cross_entropy(xb, t32, impl="fused"), F.cross_entropy(xb, t32.long()))


# ---- in-place backward ----


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["index", "soft", "mixup"])
def test_inplace_backward_matches_and_overwrites_logits(device, dtype, kind):
    _skip_unless_fused(device)
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 37).to(device=device, dtype=dtype)
    inputs = torch.randn(11, 16, device=device, dtype=dtype)
    t = _labels(11, 37, device, ignore_every=4 if kind == "index" else 0)
    soft = torch.softmax(torch.randn(11, 37, device=device), 1)
    t2 = _labels(11, 37, device, seed=5)

    loss_fn = _fused_loss_of_kind(kind, t, soft, t2)

    grads = {}
    for inplace in (False, True):
        lin.zero_grad()
        logits = lin(inputs)
        loss_fn(logits, inplace).backward()
        grads[inplace] = lin.weight.grad.clone()
        if inplace:
            # The logits' storage now holds d loss / d logits; recompute it out of place.
            x = lin(inputs).detach().requires_grad_()
            loss_fn(x, False).backward()
            torch.testing.assert_close(logits.detach(), x.grad, **TOL[dtype]["grad"])
    torch.testing.assert_close(grads[True], grads[False], **TOL[dtype]["grad"])


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_backward_refuses_to_corrupt_saved_logits(device):
    _skip_unless_fused(device)
    lin = torch.nn.Linear(8, 5).to(device)
    logits = lin(torch.randn(6, 8, device=device))
    penalty = (logits**2).sum()  # saves the logits for its backward, which runs after ours
    loss = cross_entropy(logits, _labels(6, 5, device), impl="fused", inplace_backward=True) + penalty
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---- soft targets ----


def _soft_ce_float64(x, target, eps):
    logp = torch.log_softmax(x.double(), dim=1)
    t = target.double() * (1 - eps) + eps / x.shape[1]
    return -(t * logp).sum(dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SOFT_SHAPES, ids=lambda s: f"B{s[0]}xC{s[1]}")
@pytest.mark.parametrize("target_dtype", ["fp32", "logits"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_soft_targets_match_float64(device, dtype, shape, target_dtype, label_smoothing):
    _skip_unless_fused(device)
    b, c = shape
    x = _logits(b, c, dtype, device)
    g = torch.Generator().manual_seed(b + c)
    # Unnormalised on purpose (rows sum to ~0.5..1.5): torch doesn't renormalise, nor do we.
    target = (torch.softmax(torch.randn(b, c, generator=g), 1) * torch.rand(b, 1, generator=g).add(0.5)).to(device)
    if target_dtype == "logits":
        target = target.to(dtype)
    loss, ref, grad, grad_ref = _fused_and_reference(
        lambda z: cross_entropy(z, target, label_smoothing=label_smoothing, reduction="none", impl="fused"),
        lambda z: _soft_ce_float64(z, target, label_smoothing),
        x,
    )
    _assert_close(loss, ref.float(), TOL64[dtype]["loss"], "loss")
    _assert_close(grad, grad_ref, TOL64[dtype]["grad"], "grad")
    # and the torch formula (mean over rows) agrees
    mean = cross_entropy(x.detach(), target, label_smoothing=label_smoothing, impl="fused")
    mean_ref = F.cross_entropy(x.detach().float(), target.float(), label_smoothing=label_smoothing)
    _assert_close(mean, mean_ref, TOL[dtype]["loss"], "mean loss vs F.cross_entropy")


# ---- mixup ----


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 1025), (64, 1000), (3, 21843)], ids=lambda s: f"B{s[0]}xC{s[1]}")
@pytest.mark.parametrize("lam_kind", ["float", "tensor"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_mixup_matches_float64_soft_target(device, dtype, shape, lam_kind, label_smoothing):
    _skip_unless_fused(device)
    b, c = shape
    x = _logits(b, c, dtype, device)
    ta, tb = _labels(b, c, device, seed=2), _labels(b, c, device, seed=3)
    tb[:1] = ta[:1]  # a row mixing a class with itself
    lam = 0.35 if lam_kind == "float" else torch.tensor(0.35, device=device)
    soft = mixup_soft_target(ta, tb, 0.35, c)
    loss, ref, grad, grad_ref = _fused_and_reference(
        lambda z: mixup_cross_entropy(z, ta, tb, lam, label_smoothing=label_smoothing, reduction="none", impl="fused"),
        lambda z: _soft_ce_float64(z, soft, label_smoothing),
        x,
    )
    _assert_close(loss, ref.float(), TOL64[dtype]["loss"], "loss")
    _assert_close(grad, grad_ref, TOL64[dtype]["grad"], "grad")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_mixup_reductions_and_lam_gradient(device, reduction):
    _skip_unless_fused(device)
    x = _logits(13, 50, torch.float32, device)
    ta, tb = _labels(13, 50, device, seed=2), _labels(13, 50, device, seed=3)
    lam = torch.tensor(0.6, device=device, requires_grad=True)
    lam_ref = lam.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    loss = mixup_cross_entropy(x, ta, tb, lam, label_smoothing=0.1, reduction=reduction, impl="fused")
    ref = mixup_cross_entropy_reference(x_ref, ta, tb, lam_ref, label_smoothing=0.1, reduction=reduction)
    _assert_close(loss, ref, TOL[torch.float32]["loss"], "loss")
    loss.sum().backward()
    ref.sum().backward()
    _assert_close(x.grad, x_ref.grad, TOL[torch.float32]["grad"], "grad logits")
    _assert_close(lam.grad, lam_ref.grad, dict(rtol=1e-4, atol=1e-5), "grad lam")


# ---- errors ----


def test_out_of_range_labels_raise_on_cpu():
    x = _logits(4, 5, torch.float32, "cpu", requires_grad=False)
    with pytest.raises(RuntimeError, match=r"target\[2\] = 5 is out of range for 5 classes"):
        cross_entropy(x, torch.tensor([0, 1, 5, 2]), impl="fused")
    with pytest.raises(RuntimeError, match=r"target\[0\] = -3 is out of range"):
        cross_entropy(x, torch.tensor([-3, 1, 1, 2]), impl="fused")
    with pytest.raises(RuntimeError, match=r"target_b\[3\] = 7 is out of range"):
        mixup_cross_entropy(x, torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 7]), 0.5, impl="fused")


def test_bad_shapes_and_dtypes_raise_clear_errors():
    x = _logits(4, 5, torch.float32, "cpu", requires_grad=False)
    t = torch.tensor([0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="logits must be 2-D"):
        cross_entropy(x.reshape(2, 2, 5), t.reshape(2, 2), impl="fused")
    with pytest.raises(RuntimeError, match="logits dtype must be float32, bfloat16 or float16, got Double"):
        cross_entropy(x.double(), t, impl="fused")
    with pytest.raises(RuntimeError, match=r"target must have shape \[4\]"):
        cross_entropy(x, t[:3], impl="fused")
    with pytest.raises(RuntimeError, match="soft target must have the logits' shape"):
        cross_entropy(x, torch.rand(4, 6), impl="fused")
    with pytest.raises(RuntimeError, match="lam must hold one value"):
        mixup_cross_entropy(x, t, t, torch.tensor([0.5, 0.5]), impl="fused")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        cross_entropy(x, t, label_smoothing=1.5, impl="fused")
    with pytest.raises(ValueError, match="reduction must be one of"):
        cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="impl must be one of"):
        cross_entropy(x, t, impl="triton")


def test_reference_impl_is_the_plain_torch_path():
    x = _logits(7, 9, torch.bfloat16, "cpu", requires_grad=False)
    t = _labels(7, 9, "cpu", ignore_every=3)
    ref = cross_entropy(x, t, label_smoothing=0.1, impl="reference")
    torch.testing.assert_close(ref, cross_entropy_reference(x, t, label_smoothing=0.1))
    torch.testing.assert_close(cross_entropy(x, t, label_smoothing=0.1, impl="fused"), ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows", [1, 32768, 32769, 300_001, 4_000_000])
def test_reduce_loss_rows_on_one_block_and_on_many(device, rows):
    """Up to 32768 rows the CUDA reduction is one block; beyond, partials per block then a combining
    launch. Both against a float64 sum, over strided rows with ignored labels (their NaN never counts)."""
    _skip_unless_fused(device)
    g = torch.Generator().manual_seed(rows)
    pairs = torch.rand(rows, 2, generator=g)
    labels = torch.randint(0, 5, (rows,), generator=g)
    labels[::7] = -100
    pairs[::7, 0] = float("nan")
    row_loss, target = pairs.to(device)[:, 0], labels.to(device)  # row_loss has stride 2
    kept = pairs[:, 0].double()[labels != -100]
    for mean in (True, False):
        loss, counted = torch.ops.classy_fast.reduce_loss_rows(row_loss, target, -100, mean)
        expected = kept.mean() if mean else kept.sum()
        torch.testing.assert_close(loss.cpu().double(), expected, rtol=2e-5, atol=0, equal_nan=True)  # 0 rows: nan
        assert int(counted) == len(kept)
    loss, counted = torch.ops.classy_fast.reduce_loss_rows(pairs.to(device)[:, 1], None, -100, False)
    torch.testing.assert_close(loss.cpu().double(), pairs[:, 1].double().sum(), rtol=2e-5, atol=0)
    assert int(counted) == rows


# ---- torch.library / torch.compile integration ----


def _opcheck_samples(device):
    x = _logits(5, 7, torch.float32, device)
    t = _labels(5, 7, device, ignore_every=3)
    ta, tb = _labels(5, 7, device, seed=2), _labels(5, 7, device, seed=3)
    soft = torch.softmax(torch.randn(5, 7), 1).to(device)
    lam = torch.tensor(0.3, device=device)
    g = torch.rand(5, device=device)
    lse = torch.logsumexp(x.detach(), 1)
    ops = torch.ops.classy_fast
    return [
        (ops.cross_entropy_fwd, (x, t, 0.1, -100, False)),
        (ops.mixup_cross_entropy_fwd, (x, ta, tb, lam, 0.1, False)),
        (ops.soft_cross_entropy_fwd, (x, soft, 0.1, False)),
        (ops.cross_entropy_bwd, (g, x.detach(), t, lse, 0.1, -100)),
        (ops.mixup_cross_entropy_bwd, (g, x.detach(), ta, tb, lam, lse, 0.1)),
        (ops.soft_cross_entropy_bwd, (g, x.detach(), soft, lse, 0.1)),
        (ops.cross_entropy_bwd_, (g, x.detach().clone(), t, lse, 0.1, -100)),
        (ops.mixup_cross_entropy_bwd_, (g, x.detach().clone(), ta, tb, lam, lse, 0.1)),
        (ops.soft_cross_entropy_bwd_, (g, x.detach().clone(), soft, lse, 0.1)),
        (ops.reduce_loss_rows, (g, t, -100, True)),
        (ops.reduce_loss_rows, (g, None, -100, False)),
    ] + [
        # The losses users call, with their C++ autograd (lam differentiable too), per reduction.
        sample
        for reduction in (0, 1, 2)
        for sample in (
            (ops.cross_entropy_loss, (x, t, 0.1, -100, reduction, False)),
            (ops.mixup_cross_entropy_loss, (x, ta, tb, lam.clone().requires_grad_(), 0.1, reduction, False)),
            (ops.soft_cross_entropy_loss, (x, soft, 0.1, reduction, False)),
        )
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    _skip_unless_fused(device)
    for op, args in _opcheck_samples(device):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_inference_mode_and_no_grad_give_the_same_loss(device, reduction):
    """Inference mode skips the ops' autograd kernel (the forward kernel runs directly); no_grad
    goes through it without recording. Both must give what the autograd path gives."""
    _skip_unless_fused(device)
    x = _logits(9, 13, torch.float32, device)
    t = _labels(9, 13, device, ignore_every=4)
    ta, tb = _labels(9, 13, device, seed=2), _labels(9, 13, device, seed=3)
    soft = torch.softmax(torch.randn(9, 13), 1).to(device)

    def losses(inp):
        return [
            cross_entropy(inp, t, label_smoothing=0.1, reduction=reduction, impl="fused"),
            mixup_cross_entropy(inp, ta, tb, 0.4, label_smoothing=0.1, reduction=reduction, impl="fused"),
            cross_entropy(inp, soft, reduction=reduction, impl="fused"),
        ]

    with_grad = losses(x)
    assert all(v.requires_grad for v in with_grad)
    with torch.inference_mode():
        inference = losses(x.detach())
    with torch.no_grad():
        no_grad = losses(x)
    for a, b, c in zip(with_grad, inference, no_grad):
        assert not b.requires_grad and not c.requires_grad
        torch.testing.assert_close(b, a.detach(), rtol=0, atol=0)
        torch.testing.assert_close(c, a.detach(), rtol=0, atol=0)


def test_loss_op_rejects_an_unknown_reduction_code():
    _skip_unless_fused("cpu")
    x, t = _logits(3, 4, torch.float32, "cpu"), _labels(3, 4, "cpu")
    with pytest.raises(RuntimeError, match="reduction must be 0 \\(none\\), 1 \\(mean\\) or 2 \\(sum\\), got 5"):
        torch.ops.classy_fast.cross_entropy_loss(x, t, 0.0, -100, 5, False)


def test_compiled_loss_does_not_recompile_for_new_batch_sizes():
    """The C++ backward keeps the batch size symbolic: one graph serves every batch size."""
    _skip_unless_fused("cpu")
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    step = torch.compile(lambda x, t: cross_entropy(x, t, label_smoothing=0.1, impl="fused"),
                         backend="aot_eager", dynamic=True)
    for b in (6, 9, 13, 20):
        step(_logits(b, 7, torch.float32, "cpu"), _labels(b, 7, "cpu")).backward()
    assert counters["stats"]["unique_graphs"] == 1


def test_backward_records_only_under_create_graph_and_runs_no_fill_kernels():
    """With create_graph the gradient is recorded (ATen ops; second derivatives are compared with
    torch in test_cross_entropy_autograd_edges.py); otherwise the backward is the scale + row kernel."""
    _skip_unless_fused("cpu")
    x, t = _logits(5, 7, torch.float32, "cpu"), _labels(5, 7, "cpu")
    (g,) = torch.autograd.grad(cross_entropy(x, t, impl="fused"), x, create_graph=True)
    assert g.requires_grad
    (g,) = torch.autograd.grad(cross_entropy(x, t, impl="fused"), x)
    assert not g.requires_grad
    with torch.profiler.profile() as prof:
        cross_entropy(x, t, label_smoothing=0.1, impl="fused").backward()
    names = [e.name for e in prof.events()]
    assert "classy_fast::cross_entropy_bwd" in names
    # (backward() itself seeds the scalar loss's gradient with a fill: that one is torch's)
    assert not [n for n in names if n in ("aten::zeros", "aten::zeros_like", "aten::zero_")]


def test_inplace_backward_leaves_logits_alone_when_only_lam_needs_a_gradient():
    _skip_unless_fused("cpu")
    logits = _logits(6, 9, torch.float32, "cpu", requires_grad=False)
    before = logits.clone()
    lam = torch.tensor(0.3, requires_grad=True)
    ta, tb = _labels(6, 9, "cpu", seed=2), _labels(6, 9, "cpu", seed=3)
    mixup_cross_entropy(logits * 1, ta, tb, lam, inplace_backward=True, impl="fused").backward()
    assert torch.equal(logits, before) and lam.grad is not None


def test_soft_target_that_requires_grad_is_refused():
    _skip_unless_fused("cpu")
    soft = torch.softmax(torch.randn(4, 6), 1).requires_grad_()
    with pytest.raises(RuntimeError, match="soft target requires grad"):
        cross_entropy(_logits(4, 6, torch.float32, "cpu"), soft, impl="fused")


def _train_step_losses(x, t, ta, tb, lam, soft):
    return (
        cross_entropy(x, t, label_smoothing=0.1, impl="fused")
        + mixup_cross_entropy(x, ta, tb, lam, label_smoothing=0.1, impl="fused")
        + cross_entropy(x, soft, impl="fused")
    )


def _check_compiled(device, backend):
    x = _logits(6, 11, torch.float32, device)
    t = _labels(6, 11, device, ignore_every=4)
    ta, tb = _labels(6, 11, device, seed=2), _labels(6, 11, device, seed=3)
    soft = torch.softmax(torch.randn(6, 11), 1).to(device)
    compiled = torch.compile(_train_step_losses, fullgraph=True, backend=backend)
    x_ref = x.detach().clone().requires_grad_()
    for lam_value in (0.3, 0.8):  # a tensor lam: new values must not recompile or go stale
        x.grad, x_ref.grad = None, None
        lam = torch.tensor(lam_value, device=device)
        out = compiled(x, t, ta, tb, lam, soft)
        ref = _train_step_losses(x_ref, t, ta, tb, lam, soft)
        out.backward()
        ref.backward()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_aot_eager(device):
    _skip_unless_fused(device)
    torch._dynamo.reset()
    _check_compiled(device, "aot_eager")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device (inductor on 2 CPU cores is too slow for CI)")
def test_torch_compile_fullgraph_inductor_cuda():
    _skip_unless_fused("cuda")
    torch._dynamo.reset()
    _check_compiled("cuda", "inductor")


# ---- CUDA-only behaviour ----


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_out_of_range_label_gives_nan_rows_not_a_crash():
    _skip_unless_fused("cuda")
    x = _logits(4, 5, torch.float32, "cuda")
    t = torch.tensor([0, 9, 2, -7], device="cuda")
    loss = cross_entropy(x, t, reduction="none", impl="fused")
    loss.sum().backward()
    torch.cuda.synchronize()  # no device-side assert
    assert torch.isnan(loss[1]) and torch.isnan(loss[3])
    assert torch.isfinite(loss[0]) and torch.isfinite(loss[2])
    assert torch.isnan(x.grad[1]).all() and torch.isfinite(x.grad[0]).all()
    ta = torch.tensor([0, 1, 2, 3], device="cuda")
    mixed = mixup_cross_entropy(x.detach(), ta, torch.tensor([0, 1, 5, 3], device="cuda"), 0.5, reduction="none")
    assert torch.isnan(mixed[2]) and torch.isfinite(mixed[[0, 1, 3]]).all()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_no_host_sync_with_tensor_lam():
    _skip_unless_fused("cuda")
    x = _logits(64, 1000, torch.bfloat16, "cuda")
    t = _labels(64, 1000, "cuda", ignore_every=7)
    ta, tb = _labels(64, 1000, "cuda", seed=2), _labels(64, 1000, "cuda", seed=3)
    lam = torch.tensor(0.4, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = cross_entropy(x, t, label_smoothing=0.1, impl="fused")
        loss = loss + mixup_cross_entropy(x, ta, tb, lam, label_smoothing=0.1, impl="fused")
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_graph_capture_and_replay():
    _skip_unless_fused("cuda")
    b, c = 32, 1000
    static_x = _logits(b, c, torch.float16, "cuda", requires_grad=False)
    static_ta, static_tb = _labels(b, c, "cuda", seed=2), _labels(b, c, "cuda", seed=3)
    static_lam = torch.tensor(0.5, device="cuda")
    w = torch.ones(c, device="cuda", dtype=torch.float16, requires_grad=True)

    def step():
        w.grad = None
        loss = mixup_cross_entropy(static_x * w, static_ta, static_tb, static_lam, label_smoothing=0.1, impl="fused")
        loss.backward()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    for seed in (11, 12):
        static_x.copy_(_logits(b, c, torch.float16, "cuda", seed=seed, requires_grad=False))
        static_ta.copy_(_labels(b, c, "cuda", seed=seed))
        static_lam.fill_(0.2 + 0.1 * (seed - 11))
        graph.replay()
        ref = mixup_cross_entropy_reference(static_x, static_ta, static_tb, static_lam.item(), label_smoothing=0.1)
        torch.testing.assert_close(static_loss, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_more_than_2_pow_31_elements():
    _skip_unless_fused("cuda")
    b, c = 65600, 32768  # 2.15e9 bf16 elements (4.3 GB): element offsets overflow int32
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2**30:
        pytest.skip("needs ~12 GB of free GPU memory")
    x = torch.randn(b, c, device="cuda", dtype=torch.bfloat16)
    t = torch.randint(0, c, (b,), device="cuda")
    loss, lse = torch.ops.classy_fast.cross_entropy_fwd(x, t, 0.1, -100, False)
    tail = slice(b - 3, b)
    ref = F.cross_entropy(x[tail].float(), t[tail], label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(loss[tail], ref, rtol=2e-5, atol=2e-5)
    tail_logits = x[tail].float()
    g = torch.ones(b, device="cuda")
    torch.ops.classy_fast.cross_entropy_bwd_(g, x, t, lse, 0.1, -100)  # in place: no second 4 GB
    expect = torch.softmax(tail_logits, 1) - 0.1 / c - 0.9 * F.one_hot(t[tail], c)
    torch.testing.assert_close(x[tail].float(), expect, rtol=1.6e-2, atol=1e-6)
