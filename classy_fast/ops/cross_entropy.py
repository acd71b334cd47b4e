"""Fused cross-entropy: one kernel forward, one kernel backward, fp32 math, fp32/bf16/fp16 logits.

The forward kernel reads the logits once per row and saves only the per-row log-sum-exp; the
backward recomputes the softmax from the logits and writes the gradient, optionally over the
logits themselves (``inplace_backward=True``, for when nothing else needs them afterwards).
Label smoothing, ignore_index, soft targets and mixup are handled in-kernel without
materialising a [B, C] target. Kernels: csrc/cross_entropy.cpp (CPU), csrc/cuda/cross_entropy.cu.

The public wrappers make one dispatcher call each, to the loss ops (row kernel + reduction, with
a C++ autograd formula: csrc/cross_entropy_loss.cpp), because at C = 1000 the host path is the
step time. This module registers the fake (shape) kernels of every C++ op, and the Python
autograd formulas of the per-row forward ops, which stay public for callers that reduce
themselves.
"""

from __future__ import annotations

from typing import Union

import torch

from classy_fast.ops import _extension as _ext
from classy_fast.ops.reference import REDUCTIONS, cross_entropy_reference, mixup_cross_entropy_reference

__all__ = ["cross_entropy", "mixup_cross_entropy"]


def _row_outputs(logits: torch.Tensor):
    rows = logits.shape[0]
    return logits.new_empty(rows, dtype=torch.float32), logits.new_empty(rows, dtype=torch.float32)


def _check_fake_logits(logits: torch.Tensor, op: str, *targets: torch.Tensor, lam=None) -> None:
    torch._check(logits.dim() == 2, lambda: f"{op}: logits must be 2-D [batch, classes], got {tuple(logits.shape)}")
    # The real kernels check devices too; without this a meta target with CPU logits would dispatch
    # here (meta wins) and hand back uninitialised CPU tensors.
    for t in targets:
        torch._check(t.device == logits.device,
                     lambda: f"{op}: target on {t.device} but logits on {logits.device}")
    if lam is not None:  # a CPU scalar lam goes with logits anywhere
        torch._check(lam.device == logits.device or lam.device.type == "cpu",
                     lambda: f"{op}: lam on {lam.device} but logits on {logits.device}")


def _register_fake_kernels() -> None:
    @torch.library.register_fake("classy_fast::cross_entropy_fwd")
    def _(logits, target, label_smoothing, ignore_index, inplace_backward):
        _check_fake_logits(logits, "classy_fast::cross_entropy_fwd", target)
        return _row_outputs(logits)

    @torch.library.register_fake("classy_fast::mixup_cross_entropy_fwd")
    def _(logits, target_a, target_b, lam, label_smoothing, inplace_backward):
        _check_fake_logits(logits, "classy_fast::mixup_cross_entropy_fwd", target_a, target_b, lam=lam)
        return _row_outputs(logits)

    @torch.library.register_fake("classy_fast::soft_cross_entropy_fwd")
    def _(logits, target, label_smoothing, inplace_backward):
        _check_fake_logits(logits, "classy_fast::soft_cross_entropy_fwd", target)
        return _row_outputs(logits)

    def grad_like(logits):
        return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)

    torch.library.register_fake("classy_fast::cross_entropy_bwd")(lambda g, logits, *rest: grad_like(logits))
    torch.library.register_fake("classy_fast::mixup_cross_entropy_bwd")(lambda g, logits, *rest: grad_like(logits))
    torch.library.register_fake("classy_fast::soft_cross_entropy_bwd")(lambda g, logits, *rest: grad_like(logits))
    for name in ("cross_entropy_bwd_", "mixup_cross_entropy_bwd_", "soft_cross_entropy_bwd_"):
        torch.library.register_fake(f"classy_fast::{name}")(lambda *args: None)

    @torch.library.register_fake("classy_fast::reduce_loss_rows")
    def _(row_loss, target, ignore_index, mean):
        return row_loss.new_empty(()), row_loss.new_empty(())

    def loss_outputs(logits, reduction, op, *targets, lam=None):
        _check_fake_logits(logits, op, *targets, lam=lam)
        torch._check(reduction in (0, 1, 2), lambda: f"{op}: reduction must be 0, 1 or 2, got {reduction}")
        rows, lse = _row_outputs(logits)
        if reduction == 0:
            return rows, lse, rows.new_empty(0)
        return rows.new_empty(()), lse, rows.new_empty(())

    @torch.library.register_fake("classy_fast::cross_entropy_loss")
    def _(logits, target, label_smoothing, ignore_index, reduction, inplace_backward):
        return loss_outputs(logits, reduction, "classy_fast::cross_entropy_loss", target)

    @torch.library.register_fake("classy_fast::mixup_cross_entropy_loss")
    def _(logits, target_a, target_b, lam, label_smoothing, reduction, inplace_backward):
        return loss_outputs(logits, reduction, "classy_fast::mixup_cross_entropy_loss", target_a, target_b, lam=lam)

    @torch.library.register_fake("classy_fast::soft_cross_entropy_loss")
    def _(logits, target, label_smoothing, reduction, inplace_backward):
        return loss_outputs(logits, reduction, "classy_fast::soft_cross_entropy_loss", target)


# ---- autograd formulas: the backward ops, in place over the logits when asked and possible ----


def _grad_loss_fp32(grad_loss, logits):
    if grad_loss is None:  # only lse was used downstream; it has no gradient
        return logits.new_zeros(logits.shape[0], dtype=torch.float32)
    return grad_loss.float()


def _may_write_in_place(ctx, logits) -> bool:
    # The same rule as the loss ops' C++ backward (csrc/cross_entropy_loss.cpp): never over a user's
    # tensor (a leaf, or a view of one: its .grad would alias its data) nor while a graph of the
    # gradient is being built.
    owned_by_user = logits.is_leaf or (logits._base is not None and logits._base.is_leaf)
    return ctx.inplace_backward and logits.is_contiguous() and not owned_by_user and not torch.is_grad_enabled()


# With create_graph=True (input-gradient penalties, double backprop) the backward computes the
# kernels' gradient with differentiable ops instead, as the C++ loss ops do: the kernels' result
# would silently drop the loss's own second-derivative term.
def _graph_logits_grad(g, logits, q):
    """g_i (softmax(x_i) · Σq_i - q_i) for the per-row target distribution q, recorded."""
    p = torch.softmax(logits.float(), dim=1)
    return (g.unsqueeze(1) * (p * q.sum(1, keepdim=True) - q)).to(logits.dtype)


def _smoothed_one_hot(target, num_classes: int, eps: float):
    return torch.nn.functional.one_hot(target.long(), num_classes).float() * (1.0 - eps) + eps / num_classes


def _overwritten(logits: torch.Tensor) -> torch.Tensor:
    # The C++ op's (a!) annotation doesn't bump the autograd version counter; do it so that any
    # other node that saved these logits fails loudly ("modified by an inplace operation")
    # instead of computing its gradient from our gradient.
    torch.autograd.graph.increment_version(logits)
    return logits


def _ce_setup_context(ctx, inputs, output):
    logits, target, label_smoothing, ignore_index, inplace_backward = inputs
    _, lse = output
    ctx.save_for_backward(logits, target, lse)
    ctx.label_smoothing, ctx.ignore_index, ctx.inplace_backward = label_smoothing, ignore_index, inplace_backward
    ctx.mark_non_differentiable(lse)


def _ce_backward(ctx, grad_loss, _grad_lse):
    logits, target, lse = ctx.saved_tensors
    g = _grad_loss_fp32(grad_loss, logits)
    ops = torch.ops.classy_fast
    if torch.is_grad_enabled():
        valid = target != ctx.ignore_index
        q = _smoothed_one_hot(target.masked_fill(~valid, 0), logits.shape[1], ctx.label_smoothing)
        grad = _graph_logits_grad(g, logits, q * valid.unsqueeze(1))
    elif _may_write_in_place(ctx, logits):
        ops.cross_entropy_bwd_(g, logits, target, lse, ctx.label_smoothing, ctx.ignore_index)
        grad = _overwritten(logits)
    else:
        grad = ops.cross_entropy_bwd(g, logits, target, lse, ctx.label_smoothing, ctx.ignore_index)
    return grad, None, None, None, None


def _mixup_setup_context(ctx, inputs, output):
    logits, target_a, target_b, lam, label_smoothing, inplace_backward = inputs
    _, lse = output
    ctx.save_for_backward(logits, target_a, target_b, lam, lse)
    ctx.label_smoothing, ctx.inplace_backward = label_smoothing, inplace_backward
    ctx.mark_non_differentiable(lse)


def _mixup_backward(ctx, grad_loss, _grad_lse):
    logits, target_a, target_b, lam, lse = ctx.saved_tensors
    g = _grad_loss_fp32(grad_loss, logits)
    grad_lam = None
    if ctx.needs_input_grad[3]:
        # d loss_i / d lam = CE_a - CE_b = (1 - eps) (x_b - x_a): the smoothing terms cancel.
        # Gathered before the backward kernel, which may overwrite the logits.
        x_a = logits.gather(1, target_a.unsqueeze(1)).squeeze(1).float()
        x_b = logits.gather(1, target_b.unsqueeze(1)).squeeze(1).float()
        d = (1.0 - ctx.label_smoothing) * (g * (x_b - x_a)).sum()
        grad_lam = d.to(lam.dtype).reshape(lam.shape).to(lam.device)
    ops = torch.ops.classy_fast
    if torch.is_grad_enabled():
        w, classes, eps = lam.float().reshape(()), logits.shape[1], ctx.label_smoothing
        q = w * _smoothed_one_hot(target_a, classes, eps) + (1 - w) * _smoothed_one_hot(target_b, classes, eps)
        grad = _graph_logits_grad(g, logits, q)
    elif _may_write_in_place(ctx, logits):
        ops.mixup_cross_entropy_bwd_(g, logits, target_a, target_b, lam, lse, ctx.label_smoothing)
        grad = _overwritten(logits)
    else:
        grad = ops.mixup_cross_entropy_bwd(g, logits, target_a, target_b, lam, lse, ctx.label_smoothing)
    return grad, None, None, grad_lam, None, None


def _soft_setup_context(ctx, inputs, output):
    logits, target, label_smoothing, inplace_backward = inputs
    if target.requires_grad:  # as the loss op (csrc/cross_entropy_loss.cpp): refuse, never drop it silently
        raise RuntimeError("classy_fast::soft_cross_entropy_fwd: the soft target requires grad, but the fused kernels "
                           "do not differentiate with respect to it; pass target.detach() or use impl='reference'")
    _, lse = output
    ctx.save_for_backward(logits, target, lse)
    ctx.label_smoothing, ctx.inplace_backward = label_smoothing, inplace_backward
    ctx.mark_non_differentiable(lse)


def _soft_backward(ctx, grad_loss, _grad_lse):
    logits, target, lse = ctx.saved_tensors
    g = _grad_loss_fp32(grad_loss, logits)
    ops = torch.ops.classy_fast
    if torch.is_grad_enabled():  # torch's smoothing of soft targets: (1 - eps) t + eps / C
        eps = ctx.label_smoothing
        grad = _graph_logits_grad(g, logits, target.float() * (1.0 - eps) + eps / logits.shape[1])
    elif _may_write_in_place(ctx, logits):
        ops.soft_cross_entropy_bwd_(g, logits, target, lse, ctx.label_smoothing)
        grad = _overwritten(logits)
    else:
        grad = ops.soft_cross_entropy_bwd(g, logits, target, lse, ctx.label_smoothing)
    # The kernels give soft targets no gradient (torch's composite F.cross_entropy would).
    return grad, None, None, None


def _register_autograd() -> None:
    torch.library.register_autograd("classy_fast::cross_entropy_fwd", _ce_backward, setup_context=_ce_setup_context)
    torch.library.register_autograd(
        "classy_fast::mixup_cross_entropy_fwd", _mixup_backward, setup_context=_mixup_setup_context
    )
    torch.library.register_autograd(
        "classy_fast::soft_cross_entropy_fwd", _soft_backward, setup_context=_soft_setup_context
    )


if _ext.EXTENSION_AVAILABLE:
    _register_fake_kernels()
    _register_autograd()


# ---- public API ----


def _check_common(reduction: str, label_smoothing: float, op: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"classy_fast.ops.{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"classy_fast.ops.{op}: label_smoothing must be in [0, 1], got {label_smoothing}")


# torch's at::Reduction values, which the *_loss ops take.
_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}


def _kernel_takes(logits: torch.Tensor, impl: str) -> bool:
    """Under impl='auto', inputs F.cross_entropy accepts that the kernels do not (fp64 logits, spatial
    [B, C, d1, ...] logits) take the reference, as a drop-in must; impl='fused' lets the op refuse them."""
    return impl != "auto" or (logits.dtype != torch.float64 and logits.dim() <= 2)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    impl: str = "auto",
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Cross-entropy of ``logits`` [B, C] (or [C]) against ``target``; the result is fp32.

    target: int64 class indices [B] (rows equal to ``ignore_index`` are skipped, and 'mean'
    divides by the number of other rows), or float [B, C] class probabilities (soft targets;
    label smoothing mixes them with the uniform distribution, as torch does).
    Same semantics as ``F.cross_entropy(logits.float(), target, ...)``; fp64 and spatial
    [B, C, d1, ...] logits run the reference under impl="auto" (the kernels take 2-D fp32/bf16/fp16).
    impl: "auto" (fused when built, else the reference with one warning), "fused" (error when
    not built), "reference".
    inplace_backward: write the gradient over ``logits`` (saves a [B, C] buffer); only when
    nothing else reads the logits after the backward.
    """
    _check_common(reduction, label_smoothing, "cross_entropy")
    if logits.dim() == 1:  # a single sample, like F.cross_entropy
        loss = cross_entropy(
            logits.unsqueeze(0),
            target.unsqueeze(0),
            label_smoothing=label_smoothing,
            reduction=reduction,
            ignore_index=ignore_index,
            impl=impl,
            inplace_backward=False,
        )
        return loss.squeeze(0) if reduction == "none" else loss
    if not _kernel_takes(logits, impl) or not _ext.use_fused(impl, logits, "cross_entropy"):
        return cross_entropy_reference(
            logits, target, label_smoothing=label_smoothing, reduction=reduction, ignore_index=ignore_index
        )
    # One dispatcher call: forward kernel, reduction and the C++ autograd formula
    # (csrc/cross_entropy_loss.cpp); at C = 1000 the step time is this host path.
    ops = torch.ops.classy_fast
    code = _REDUCTION_CODES[reduction]
    if target.is_floating_point():
        if target.dtype not in (torch.float32, logits.dtype):
            target = target.float()
        return ops.soft_cross_entropy_loss(logits, target, float(label_smoothing), code, bool(inplace_backward))[0]
    if target.dtype != torch.int64:
        target = target.long()
    return ops.cross_entropy_loss(
        logits, target, float(label_smoothing), int(ignore_index), code, bool(inplace_backward)
    )[0]


def mixup_cross_entropy(
    logits: torch.Tensor,
    target_a: torch.Tensor,
    target_b: torch.Tensor,
    lam: Union[float, torch.Tensor],
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    impl: str = "auto",
    inplace_backward: bool = False,
) -> torch.Tensor:
    """``lam * CE(logits, target_a) + (1 - lam) * CE(logits, target_b)`` (Mixup / CutMix), fp32.

    Each term is label-smoothed; no [B, C] target is built. ``lam`` is a Python float or a
    one-value tensor on the logits' device (or the CPU): the kernel reads it on the device, so a
    tensor lam costs no host sync and stays valid under CUDA-graph capture. Pass a tensor under
    torch.compile, or each new float value recompiles.
    """
    _check_common(reduction, label_smoothing, "mixup_cross_entropy")
    if logits.dim() == 1:  # a single sample, as cross_entropy takes it
        loss = mixup_cross_entropy(logits.unsqueeze(0), target_a.reshape(1), target_b.reshape(1), lam,
                                   label_smoothing=label_smoothing, reduction=reduction, impl=impl)
        return loss.squeeze(0) if reduction == "none" else loss
    if not _kernel_takes(logits, impl) or not _ext.use_fused(impl, logits, "mixup_cross_entropy"):
        return mixup_cross_entropy_reference(
            logits, target_a, target_b, lam, label_smoothing=label_smoothing, reduction=reduction
        )
    if isinstance(lam, torch.Tensor):
        lam_t = lam if lam.dtype == torch.float32 else lam.float()
    else:
        # A fill kernel, not a host->device copy (which would synchronise the stream).
        lam_t = torch.full((), float(lam), dtype=torch.float32, device=logits.device)
    return torch.ops.classy_fast.mixup_cross_entropy_loss(
        logits, target_a.long(), target_b.long(), lam_t, float(label_smoothing), _REDUCTION_CODES[reduction],
        bool(inplace_backward),
    )[0]
