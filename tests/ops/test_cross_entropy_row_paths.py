"""The fused cross-entropy kernels' launch paths, case by case (CPU, and CUDA where present).

The CUDA kernels give a row to a warp while it is at most 256 16-byte packs (C <= 1024 fp32,
C <= 2048 bf16/fp16) and to a block of 64..1024 threads beyond; rows start at any 16-byte
phase. These cases sit on and around that threshold and inside block mode: partial thread
groups, in-place backward (loads before stores), ignored and out-of-range labels, misaligned
and column-sliced rows, soft targets at 128k classes, and run-to-run determinism. The CPU kernels
run the same cases (their vector body / tail split has thresholds of its own).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from classy_fast.ops import cross_entropy, extension_available, mixup_cross_entropy
from tests.ops._ce_cases import (
    CUDA,
    DEVICES,
    DTYPES,
    TOL,
    _assert_close,
    _fused_loss_of_kind,
    _assert_fused_matches,
    _labels,
    _logits,
    _skip_unless_fused,
)

pytestmark = pytest.mark.skipif(not extension_available(), reason="classy_fast._C is not built")

# Around the warp/block threshold and through the block sizes (64..1024 threads), per element size.
THRESHOLD_CLASSES = {
    torch.float32: (1023, 1024, 1025, 1031, 2049, 4097),
    torch.bfloat16: (2047, 2048, 2049, 2063, 4097, 8193),
    torch.float16: (2047, 2048, 2049, 2063, 4097, 8193),
}
THRESHOLD_CASES = [(dtype, c) for dtype in DTYPES for c in THRESHOLD_CLASSES[dtype]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,classes", THRESHOLD_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_index_targets_around_the_warp_block_threshold(device, dtype, classes):
    _skip_unless_fused(device)
    x = _logits(9, classes, dtype, device)
    t = _labels(9, classes, device, ignore_every=4)
    _, grad = _assert_fused_matches(
        lambda z: cross_entropy(z, t, label_smoothing=0.1, reduction="none", impl="fused"),
        lambda z: F.cross_entropy(z.float(), t, label_smoothing=0.1, reduction="none"),
        x,
    )
    assert torch.all(grad[t == -100] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,classes", [(torch.float32, 1025), (torch.bfloat16, 2049), (torch.float16, 4097)],
                         ids=lambda v: str(v).replace("torch.", ""))
def test_soft_and_mixup_targets_just_past_the_threshold(device, dtype, classes):
    _skip_unless_fused(device)
    soft = torch.softmax(torch.randn(9, classes, generator=torch.Generator().manual_seed(3)), 1).to(device)
    ta, tb = _labels(9, classes, device, seed=2), _labels(9, classes, device, seed=4)
    cases = {
        "soft": (lambda z: cross_entropy(z, soft, label_smoothing=0.1, reduction="none", impl="fused"),
                 lambda z: F.cross_entropy(z.float(), soft, label_smoothing=0.1, reduction="none")),
        "mixup": (lambda z: mixup_cross_entropy(z, ta, tb, 0.3, label_smoothing=0.1, reduction="none", impl="fused"),
                  lambda z: 0.3 * F.cross_entropy(z.float(), ta, label_smoothing=0.1, reduction="none")
                  + 0.7 * F.cross_entropy(z.float(), tb, label_smoothing=0.1, reduction="none")),
    }
    for name, (fused, reference) in cases.items():
        _assert_fused_matches(fused, reference, _logits(9, classes, dtype, device), name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,classes", [(torch.float32, 4099)] + [(d, 21843) for d in DTYPES],
                         ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("kind", ["index", "soft", "mixup"])
def test_block_mode_inplace_backward_equals_out_of_place(device, dtype, classes, kind):
    """Same kernels, same launch shape: the gradient written over the logits must be bit-identical
    to the one written to a new tensor (each element read before it is overwritten)."""
    _skip_unless_fused(device)
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, classes).to(device=device, dtype=dtype)
    inputs = torch.randn(5, 8, device=device, dtype=dtype)
    t = _labels(5, classes, device, ignore_every=3 if kind == "index" else 0)
    soft = torch.softmax(torch.randn(5, classes, device=device), 1)
    t2 = _labels(5, classes, device, seed=5)

    loss_fn = _fused_loss_of_kind(kind, t, soft, t2)

    logits = lin(inputs)
    loss_fn(logits, True).backward()  # the logits' storage now holds d loss / d logits
    x = lin(inputs).detach().requires_grad_()
    loss_fn(x, False).backward()
    assert torch.equal(logits.detach(), x.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("classes", [4099, 21843])
@pytest.mark.parametrize("layout", ["column_slice", "misaligned_rows"])
def test_block_mode_rows_at_any_16_byte_phase(device, classes, layout):
    """Column slices: logits rows and their gradient rows start at different 16-byte phases;
    misaligned rows: every row starts 2 bytes past a boundary (bf16: both paths in block mode)."""
    _skip_unless_fused(device)
    b = 5
    base = _logits(b + 1, classes + 16, torch.bfloat16, device, requires_grad=False)
    x = base[:b, 3 : 3 + classes] if layout == "column_slice" else base.flatten()[1 : 1 + b * classes].view(b, classes)
    x = x.detach().requires_grad_()
    t = _labels(b, classes, device, ignore_every=2)
    _assert_fused_matches(
        lambda z: cross_entropy(z, t, label_smoothing=0.1, reduction="none", impl="fused"),
        lambda z: F.cross_entropy(z.float(), t, label_smoothing=0.1, reduction="none"),
        x,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_soft_targets_at_128k_classes_with_fp32_targets_and_bf16_logits(device):
    _skip_unless_fused(device)
    x = _logits(2, 128000, torch.bfloat16, device)
    soft = torch.softmax(torch.randn(2, 128000, generator=torch.Generator().manual_seed(9)) * 2, 1).to(device)
    _assert_fused_matches(
        lambda z: cross_entropy(z, soft, label_smoothing=0.1, reduction="none", impl="fused"),
        lambda z: F.cross_entropy(z.float(), soft, label_smoothing=0.1, reduction="none"),
        x,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_runs_are_bit_identical(device, dtype):
    """No atomics and a fixed reduction order: the same inputs give the same bits, loss and grad."""
    _skip_unless_fused(device)
    t = _labels(64, 21843, device, ignore_every=5)
    results = []
    for _ in range(2):
        x = _logits(64, 21843, dtype, device)
        loss = cross_entropy(x, t, label_smoothing=0.1, impl="fused")
        loss.backward()
        results.append((loss.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_block_mode_bad_labels_give_nan_rows(dtype):
    """Out-of-range labels in block mode (C = 21843): NaN loss and gradient rows, never an
    out-of-bounds read; ignored rows 0; the other rows exact. Mixup with a bad second label too."""
    _skip_unless_fused("cuda")
    c = 21843
    x = _logits(5, c, dtype, "cuda")
    t = torch.tensor([0, c, -1, -100, c - 1], device="cuda")
    loss = cross_entropy(x, t, label_smoothing=0.1, reduction="none", impl="fused")
    loss.sum().backward()
    torch.cuda.synchronize()
    assert torch.isnan(loss[1]) and torch.isnan(loss[2]) and loss[3] == 0
    assert torch.isnan(x.grad[1].float()).all() and torch.isnan(x.grad[2].float()).all()
    assert torch.all(x.grad[3] == 0)
    good = [0, 4]
    ref = F.cross_entropy(x.detach()[good].float(), t[good], label_smoothing=0.1, reduction="none")
    _assert_close(loss[good], ref, TOL[dtype]["loss"], "good rows")
    ta = torch.tensor([0, 1, 2, 3, 4], device="cuda")
    mixed = mixup_cross_entropy(x.detach(), ta, torch.tensor([0, c + 5, 2, -3, 4], device="cuda"), 0.5,
                                reduction="none", impl="fused")
    assert torch.isnan(mixed[1]) and torch.isnan(mixed[3]) and torch.isfinite(mixed[[0, 2, 4]]).all()
