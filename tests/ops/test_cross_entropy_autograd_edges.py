"""Autograd edges of the fused cross-entropy: second derivatives (create_graph=True, as input-gradient
penalties use), the in-place backward never writing over a user's tensor (a leaf or a view of one),
device checks in the fake kernels, and the loss modules as drop-ins for nn.CrossEntropyLoss."""

import pytest
import torch
import torch.nn.functional as F

from classy_fast import ops
from classy_fast.losses import FusedCrossEntropyLoss, SoftTargetCrossEntropyLoss
from classy_fast.ops import _extension as _ext

needs_ext = pytest.mark.skipif(not _ext.EXTENSION_AVAILABLE, reason="classy_fast._C is not built")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not (torch.cuda.is_available() and _ext.CUDA_KERNELS_AVAILABLE), reason="needs a CUDA device and kernels")])]
B, C, D = 6, 7, 5


def _penalty_grads(loss_fn, seed=0, lam=None, device="cpu"):
    """d/dW of ||d loss / d x||² through a linear layer: needs the loss's second derivative."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g).to(device).requires_grad_()
    lin = torch.nn.Linear(D, C).to(device)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(C, D, generator=g))
        lin.bias.copy_(torch.randn(C, generator=g))
    loss = loss_fn(lin(x), lam)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    penalty = gx.pow(2).sum()
    inputs = [lin.weight, lin.bias] + ([lam] if lam is not None else [])
    return [t.cpu() for t in (loss.detach(), penalty.detach(), *torch.autograd.grad(penalty, inputs))]


def _targets(seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, C, (B,), generator=g)
    index[2] = -100  # an ignored row
    soft = torch.softmax(torch.randn(B, C, generator=g), dim=1)
    a, b = torch.randint(0, C, (B,), generator=g), torch.randint(0, C, (B,), generator=g)
    return tuple(t.to(device) for t in (index, soft, a, b))


def _assert_all_close(ours, theirs):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "soft", "mixup"])
def test_second_derivatives_match_torch(kind, reduction, device):
    index, soft, a, b = _targets(device=device)

    def fused(logits, lam):
        if kind == "index":
            out = ops.cross_entropy(logits, index, label_smoothing=0.1, reduction=reduction, impl="fused")
        elif kind == "soft":
            out = ops.cross_entropy(logits, soft, label_smoothing=0.1, reduction=reduction, impl="fused")
        else:
            out = ops.mixup_cross_entropy(logits, a, b, lam, label_smoothing=0.1, reduction=reduction, impl="fused")
        return out.sum() if reduction == "none" else out

    def reference(logits, lam):
        if kind == "mixup":
            out = lam * F.cross_entropy(logits, a, label_smoothing=0.1, reduction=reduction) + \
                (1 - lam) * F.cross_entropy(logits, b, label_smoothing=0.1, reduction=reduction)
        else:
            out = F.cross_entropy(logits, index if kind == "index" else soft, label_smoothing=0.1, reduction=reduction)
        return out.sum() if reduction == "none" else out

    lam = (lambda: torch.tensor(0.7, device=device, requires_grad=True)) if kind == "mixup" else (lambda: None)
    _assert_all_close(_penalty_grads(fused, lam=lam(), device=device),
                      _penalty_grads(reference, lam=lam(), device=device))


@needs_ext
@pytest.mark.parametrize("kind", ["index", "soft", "mixup"])
def test_second_derivatives_of_the_per_row_ops(kind):
    index, soft, a, b = _targets()
    row_ops = torch.ops.classy_fast

    def fused(logits, _):
        if kind == "index":
            rows, _lse = row_ops.cross_entropy_fwd(logits, index, 0.1, -100, False)
        elif kind == "soft":
            rows, _lse = row_ops.soft_cross_entropy_fwd(logits, soft, 0.1, False)
        else:
            rows, _lse = row_ops.mixup_cross_entropy_fwd(logits, a, b, torch.tensor(0.7), 0.1, False)
        return rows.sum()

    def reference(logits, _):
        if kind == "mixup":
            return (0.7 * F.cross_entropy(logits, a, label_smoothing=0.1, reduction="none")
                    + 0.3 * F.cross_entropy(logits, b, label_smoothing=0.1, reduction="none")).sum()
        return F.cross_entropy(logits, index if kind == "index" else soft, label_smoothing=0.1, reduction="sum")

    _assert_all_close(_penalty_grads(fused), _penalty_grads(reference))


@needs_ext
@pytest.mark.parametrize("make_view", [lambda w: w.view(B, C), lambda w: w.reshape(B, C), lambda w: w[:].view(B, C)],
                         ids=["view", "reshape", "slice_view"])
def test_in_place_backward_never_writes_over_a_view_of_a_users_tensor(make_view):
    index, _, a, b = _targets()
    w = torch.randn(B * C, requires_grad=True)
    before = w.detach().clone()
    ops.cross_entropy(make_view(w), index, inplace_backward=True, impl="fused").backward()
    assert torch.equal(w.detach(), before) and w.grad.data_ptr() != w.data_ptr()
    leaf = before.view(B, C).clone().requires_grad_()
    F.cross_entropy(leaf, index).backward()
    torch.testing.assert_close(w.grad.view(B, C), leaf.grad)
    w.grad = None
    ops.mixup_cross_entropy(make_view(w), a, b, 0.3, inplace_backward=True, impl="fused").backward()
    assert torch.equal(w.detach(), before)
    rows, _ = torch.ops.classy_fast.cross_entropy_fwd(make_view(w), index.clamp_min(0), 0.0, -100, True)
    rows.sum().backward()
    assert torch.equal(w.detach(), before)


@needs_ext
def test_in_place_backward_still_reuses_an_activation():
    index, _, _, _ = _targets()
    x = torch.randn(B, C, requires_grad=True)
    logits = x * 2.0  # an activation: nothing else needs it after the backward
    seen = {}
    logits.register_hook(lambda grad: seen.update(ptr=grad.data_ptr()))
    ops.cross_entropy(logits, index, inplace_backward=True, impl="fused").backward()
    assert seen["ptr"] == logits.data_ptr()


@needs_ext
def test_fake_kernels_check_the_targets_device():
    logits = torch.randn(B, C)
    with pytest.raises(RuntimeError, match="target on meta but logits on cpu"):
        torch.ops.classy_fast.cross_entropy_loss(logits, torch.zeros(B, dtype=torch.int64, device="meta"),
                                                 0.0, -100, 1, False)


@needs_ext
def test_per_row_soft_op_refuses_a_target_that_requires_grad():
    target = torch.softmax(torch.randn(B, C), 1).requires_grad_()
    with pytest.raises(RuntimeError, match="soft target requires grad"):
        torch.ops.classy_fast.soft_cross_entropy_fwd(torch.randn(B, C, requires_grad=True), target, 0.0, False)


def test_fp64_and_spatial_logits_take_the_reference_under_auto():
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(B, C, dtype=torch.float64, generator=g)
    t = torch.randint(0, C, (B,), generator=g)
    torch.testing.assert_close(ops.cross_entropy(x64, t), F.cross_entropy(x64.float(), t))
    spatial = torch.randn(B, C, 3, 2, generator=g)
    ts = torch.randint(0, C, (B, 3, 2), generator=g)
    torch.testing.assert_close(ops.cross_entropy(spatial, ts, label_smoothing=0.1),
                               F.cross_entropy(spatial, ts, label_smoothing=0.1))
    one = torch.randn(C, generator=g)
    torch.testing.assert_close(ops.mixup_cross_entropy(one, t[0], t[1], 0.25),
                               0.25 * F.cross_entropy(one, t[0]) + 0.75 * F.cross_entropy(one, t[1]))


def test_mixup_labels_are_never_ignored_on_any_path():
    logits, a, b = torch.randn(3, C), torch.tensor([0, -100, 1]), torch.tensor([1, 2, 3])
    with pytest.raises((RuntimeError, IndexError)):
        ops.mixup_cross_entropy(logits, a, b, 0.5, impl="reference")


def test_loss_modules_are_drop_ins_for_nn_cross_entropy_loss():
    with pytest.raises(ValueError, match="per-class weights are not supported"):
        FusedCrossEntropyLoss(torch.ones(C))
    with pytest.raises(ValueError, match="reduction must be one of"):
        FusedCrossEntropyLoss(reduction="bogus")
    loss = FusedCrossEntropyLoss(label_smoothing=1.0, reduction="sum")
    assert "label_smoothing=1.0" in repr(loss) and "reduction='sum'" in repr(loss)
    logits, t = torch.randn(B, C), torch.randint(0, C, (B,))
    torch.testing.assert_close(loss(logits, t), F.cross_entropy(logits, t, label_smoothing=1.0, reduction="sum"))
    lam = torch.rand(B, requires_grad=True)
    with pytest.raises(ValueError, match="per-sample mixup λ that requires grad"):
        FusedCrossEntropyLoss()(logits, (t, t.flip(0), lam))
    # Index targets of any integer dtype are one-hot encoded by the soft-target loss.
    soft_loss = SoftTargetCrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(soft_loss(logits, t.int()), F.cross_entropy(logits, t, label_smoothing=0.1))
