"""Plain-PyTorch reference implementations of the fused ops.

They define the semantics the fused kernels must match, serve as the fallback when the
extension isn't built, and are what the tests compare against. Like the fused ops they compute
in fp32 and return an fp32 loss whatever the logits' dtype (gradients come back in the logits'
dtype through the cast).
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

REDUCTIONS = ("none", "mean", "sum")


def cross_entropy_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """``F.cross_entropy`` on fp32 logits; ``target`` is int64 classes or float [B, C] probabilities."""
    x = logits.float()
    if target.is_floating_point():
        target = target.float()
    elif target.dtype != torch.int64:
        target = target.long()
    return F.cross_entropy(x, target, label_smoothing=label_smoothing, reduction=reduction, ignore_index=ignore_index)


def mixup_cross_entropy_reference(
    logits: torch.Tensor,
    target_a: torch.Tensor,
    target_b: torch.Tensor,
    lam: Union[float, torch.Tensor],
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``lam * CE(logits, target_a) + (1 - lam) * CE(logits, target_b)``, each label-smoothed."""
    x = logits.float()
    # No label is ignored (F.cross_entropy would skip -100 rows): out-of-range labels fail, as in the kernels.
    never = torch.iinfo(torch.int64).min
    loss_a = F.cross_entropy(x, target_a.long(), label_smoothing=label_smoothing, reduction=reduction,
                             ignore_index=never)
    loss_b = F.cross_entropy(x, target_b.long(), label_smoothing=label_smoothing, reduction=reduction,
                             ignore_index=never)
    if isinstance(lam, torch.Tensor):
        lam = lam.float().reshape(())
    return lam * loss_a + (1 - lam) * loss_b


def mixup_soft_target(
    target_a: torch.Tensor, target_b: torch.Tensor, lam: Union[float, torch.Tensor], num_classes: int
) -> torch.Tensor:
    """The [B, C] soft target the mixup loss equals (materialised; for tests and docs only)."""
    a = F.one_hot(target_a.long(), num_classes).double()
    b = F.one_hot(target_b.long(), num_classes).double()
    if isinstance(lam, torch.Tensor):
        lam = lam.double().reshape(())
    return lam * a + (1 - lam) * b
