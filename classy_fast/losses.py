"""Loss registry. Both losses run through ``classy_fast.ops``: the fused kernel where built, the
plain-PyTorch reference otherwise (``loss.impl`` chooses; 'fused' insists on the kernel).

A loss is called as ``loss(logits, target)`` where ``target`` is int64 class indices, B×C
probabilities, or a mixup triple ``(target_a, target_b, lam)`` with ``lam`` a float or 0-dim tensor.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from . import ops
from .config import LossConfig
from .mixup import mixed_soft_targets
from .ops.reference import REDUCTIONS
from .registry import LOSSES

MixupTarget = Tuple[torch.Tensor, torch.Tensor, Union[float, torch.Tensor]]


class FusedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with label smoothing for index, soft and mixup targets.

    A drop-in for ``nn.CrossEntropyLoss(ignore_index=..., reduction=..., label_smoothing=...)``: the
    same keywords, and ``weight`` as the first argument, where only ``None`` is accepted (the fused
    kernels have no per-class weights)."""

    def __init__(self, weight: Optional[torch.Tensor] = None, *, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, impl: str = "auto"):
        super().__init__()
        if weight is not None:
            raise ValueError("FusedCrossEntropyLoss: per-class weights are not supported by the fused kernels; "
                             "use torch.nn.CrossEntropyLoss(weight=...) for a weighted loss")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"FusedCrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"FusedCrossEntropyLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.label_smoothing, self.reduction, self.ignore_index, self.impl = label_smoothing, reduction, ignore_index, impl

    def extra_repr(self) -> str:
        return (f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}, "
                f"ignore_index={self.ignore_index}, impl={self.impl!r}")

    def forward(self, logits: torch.Tensor, target: Union[torch.Tensor, MixupTarget]) -> torch.Tensor:
        if isinstance(target, (tuple, list)):
            target_a, target_b, lam = target
            if torch.is_tensor(lam) and lam.ndim == 1:
                if lam.requires_grad and self.impl != "reference":
                    raise ValueError("FusedCrossEntropyLoss: a per-sample mixup λ that requires grad is only "
                                     "differentiated by impl='reference' (or pass lam.detach())")
                # A λ per sample (mixup 'pair'/'elem' modes): the fused kernel takes one λ, so use B×C soft targets.
                soft = mixed_soft_targets(target_a, target_b, lam, logits.shape[-1])
                return ops.cross_entropy(logits, soft, label_smoothing=self.label_smoothing,
                                         reduction=self.reduction, impl=self.impl)
            return ops.mixup_cross_entropy(logits, target_a, target_b, lam, label_smoothing=self.label_smoothing,
                                           reduction=self.reduction, impl=self.impl)
        return ops.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction=self.reduction,
                                 ignore_index=self.ignore_index, impl=self.impl)


class SoftTargetCrossEntropyLoss(FusedCrossEntropyLoss):
    """Cross-entropy against B×C target probabilities. Index targets (any integer dtype) are one-hot
    encoded on the fly, so every label must be a class: ``ignore_index`` does not apply here."""

    def forward(self, logits: torch.Tensor, target: Union[torch.Tensor, MixupTarget]) -> torch.Tensor:
        if torch.is_tensor(target) and target.ndim == 1 and not target.is_floating_point():
            target = nn.functional.one_hot(target.long(), logits.shape[1]).to(torch.float32)
        return super().forward(logits, target)


@LOSSES.register("cross_entropy")
def _cross_entropy(cfg: LossConfig) -> nn.Module:
    return FusedCrossEntropyLoss(label_smoothing=cfg.label_smoothing, impl=cfg.impl)


@LOSSES.register("soft_target_cross_entropy")
def _soft_target_cross_entropy(cfg: LossConfig) -> nn.Module:
    return SoftTargetCrossEntropyLoss(label_smoothing=cfg.label_smoothing, impl=cfg.impl)


def build_loss(cfg: LossConfig) -> nn.Module:
    return LOSSES.get(cfg.name)(cfg)
