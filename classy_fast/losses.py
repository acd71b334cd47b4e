"""Loss registry. Both losses run through ``classy_fast.ops``: the fused kernel where built, the
plain-PyTorch reference otherwise (``loss.impl`` chooses; 'fused' insists on the kernel).

A loss is called as ``loss(logits, target)`` where ``target`` is int64 class indices, B×C
probabilities, or a mixup triple ``(target_a, target_b, lam)`` with ``lam`` a float or 0-dim tensor.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn

from . import ops
from .config import LossConfig
from .mixup import mixed_soft_targets
from .registry import LOSSES

MixupTarget = Tuple[torch.Tensor, torch.Tensor, Union[float, torch.Tensor]]


class FusedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with label smoothing for index, soft and mixup targets (mean over the batch)."""

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean", ignore_index: int = -100, impl: str = "auto"):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing, self.reduction, self.ignore_index, self.impl = label_smoothing, reduction, ignore_index, impl

    def forward(self, logits: torch.Tensor, target: Union[torch.Tensor, MixupTarget]) -> torch.Tensor:
        if isinstance(target, (tuple, list)):
            target_a, target_b, lam = target
            if torch.is_tensor(lam) and lam.ndim == 1:
                # A λ per sample (mixup 'pair'/'elem' modes): the fused kernel takes one λ, so use B×C soft targets.
                soft = mixed_soft_targets(target_a, target_b, lam, logits.shape[-1])
                return ops.cross_entropy(logits, soft, label_smoothing=self.label_smoothing,
                                         reduction=self.reduction, impl=self.impl)
            return ops.mixup_cross_entropy(logits, target_a, target_b, lam, label_smoothing=self.label_smoothing,
                                           reduction=self.reduction, impl=self.impl)
        return ops.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction=self.reduction,
                                 ignore_index=self.ignore_index, impl=self.impl)


class SoftTargetCrossEntropyLoss(FusedCrossEntropyLoss):
    """Cross-entropy against B×C target probabilities (index targets are one-hot encoded on the fly)."""

    def forward(self, logits: torch.Tensor, target: Union[torch.Tensor, MixupTarget]) -> torch.Tensor:
        if torch.is_tensor(target) and target.ndim == 1:
            target = nn.functional.one_hot(target, logits.shape[1]).to(torch.float32)
        return super().forward(logits, target)


@LOSSES.register("cross_entropy")
def _cross_entropy(cfg: LossConfig) -> nn.Module:
    return FusedCrossEntropyLoss(label_smoothing=cfg.label_smoothing, impl=cfg.impl)


@LOSSES.register("soft_target_cross_entropy")
def _soft_target_cross_entropy(cfg: LossConfig) -> nn.Module:
    return SoftTargetCrossEntropyLoss(label_smoothing=cfg.label_smoothing, impl=cfg.impl)


def build_loss(cfg: LossConfig) -> nn.Module:
    return LOSSES.get(cfg.name)(cfg)
