"""Mixup and CutMix, drawn with a per-batch device generator and applied on the batch's device.

Each sample i is mixed with its mirror partner B-1-i (the batch flipped): Mixup blends the images,
``λ·x_i + (1-λ)·x_partner``; CutMix pastes a box of the partner into x_i and sets λ to the fraction
of x_i left. The target becomes the triple ``(target_a, target_b, λ)`` that the losses take
(``λ·CE(target_a) + (1-λ)·CE(target_b)``). Where λ < 0.5 the two targets are swapped and λ becomes
1-λ (the loss is unchanged), so ``target_a`` is always the dominant class: train accuracy, which
the task counts against ``target_a``, measures the class that covers most of the image.

Modes: 'batch' draws one λ (and one Mixup/CutMix choice, one box) per batch, so λ is a 0-dim tensor
and the fused mixup cross-entropy applies; 'pair' draws one per mirrored pair and 'elem' one per
sample, so λ has one value per sample and the loss builds B×C soft targets (``mixed_soft_targets``).

Nothing here reads a tensor on the host. The Beta draws use ``torch._standard_gamma`` (it takes a
generator; ``torch.distributions.Beta`` does not): Beta(α, α) = G₁ / (G₁ + G₂) with Gᵢ ~ Gamma(α).
That keeps every draw on the device and capture-friendly, where host draws would be baked into a
captured graph. Choices that differ per draw (Mixup or CutMix, mixed or not) are made with
``torch.where`` over both results rather than a Python branch. Determinism for resume: the
generator of batch k of epoch e is seeded from (seed, e, k, rank), like the data augmentation's, so a
run resumed mid-epoch mixes exactly as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import torch
import torch.nn.functional as F

from .data.batch_transform import MIXUP_STREAM, SeededBatchTransform
from .recipe_config import MixupConfig


@dataclass
class MixDraw:
    """One batch's random choices, each with one entry per draw (1, ⌈B/2⌉ or B entries by mode).

    ``lam``: the mixing weight of the sample's own image, after CutMix's area correction;
    ``use_cutmix``: bool; ``box``: (y1, y2, x1, x2) int64 tensors, the half-open pasted region.
    """

    lam: torch.Tensor
    use_cutmix: torch.Tensor
    box: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def sample_beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) from ``generator`` on ``device`` (float32)."""
    concentration = torch.full((2, n), float(alpha), dtype=torch.float32, device=device)
    g = torch._standard_gamma(concentration, generator=generator)
    # Tiny alphas can underflow both gammas to 0: clamp the sum so λ is 0 rather than NaN.
    return g[0] / (g[0] + g[1]).clamp_min(torch.finfo(torch.float32).tiny)


def mixed_soft_targets(target_a: torch.Tensor, target_b: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B×C float32 targets ``λ·onehot(a) + (1-λ)·onehot(b)`` for a per-sample (B,) or scalar λ; rows sum to 1."""
    a = F.one_hot(target_a.long(), num_classes).to(torch.float32)
    b = F.one_hot(target_b.long(), num_classes).to(torch.float32)
    lam = lam.to(torch.float32)
    lam = lam.view(-1, 1) if lam.ndim == 1 else lam
    return torch.lerp(b, a, lam)


class Mixup:
    """Mixes (images, int64 targets) batches; see the module docstring for the semantics."""

    def __init__(self, cfg: MixupConfig):
        if cfg.mixup_alpha < 0 or cfg.cutmix_alpha < 0:
            raise ValueError(f"mixup.mixup_alpha and mixup.cutmix_alpha must be ≥ 0, got {cfg.mixup_alpha}, {cfg.cutmix_alpha}")
        if cfg.cutmix_minmax is not None and not 0.0 <= cfg.cutmix_minmax[0] <= cfg.cutmix_minmax[1] <= 1.0:
            raise ValueError(f"mixup.cutmix_minmax must be (min, max) with 0 ≤ min ≤ max ≤ 1, got {cfg.cutmix_minmax}")
        for key in ("prob", "switch_prob"):
            if not 0.0 <= getattr(cfg, key) <= 1.0:
                raise ValueError(f"mixup.{key} must be in [0, 1], got {getattr(cfg, key)}")
        self.cfg = cfg
        self.use_mixup = cfg.mixup_alpha > 0
        self.use_cutmix = cfg.cutmix_alpha > 0 or cfg.cutmix_minmax is not None

    @property
    def active(self) -> bool:
        return (self.use_mixup or self.use_cutmix) and self.cfg.prob > 0

    # ------------------------------------------------------------------ drawing
    def num_draws(self, batch_size: int) -> int:
        return {"batch": 1, "pair": (batch_size + 1) // 2, "elem": batch_size}[self.cfg.mode]

    def draw(self, batch_size: int, height: int, width: int, generator: torch.Generator, device: torch.device) -> MixDraw:
        """The random choices for one batch (one entry per draw; see ``num_draws``)."""
        cfg, n = self.cfg, self.num_draws(batch_size)
        ones = torch.ones(n, dtype=torch.float32, device=device)
        lam_mix = sample_beta(cfg.mixup_alpha, n, generator, device) if self.use_mixup else ones
        if self.use_mixup and self.use_cutmix:
            use_cutmix = torch.rand(n, device=device, generator=generator) < cfg.switch_prob
        else:
            use_cutmix = torch.full((n,), self.use_cutmix, dtype=torch.bool, device=device)
        applied = torch.rand(n, device=device, generator=generator) < cfg.prob
        box = self._draw_box(n, height, width, applied, generator, device)
        y1, y2, x1, x2 = box
        lam_cut = 1.0 - ((y2 - y1) * (x2 - x1)).to(torch.float32) / float(height * width)
        lam = torch.where(use_cutmix, lam_cut, lam_mix)
        return MixDraw(lam=torch.where(applied, lam, ones), use_cutmix=use_cutmix, box=box)

    def _draw_box(self, n: int, height: int, width: int, applied: torch.Tensor, generator: torch.Generator,
                  device: torch.device) -> Tuple[torch.Tensor, ...]:
        """CutMix boxes (y1, y2, x1, x2), clipped to the image; empty where the draw is not applied."""
        cfg = self.cfg
        if not self.use_cutmix:
            zero = torch.zeros(n, dtype=torch.int64, device=device)
            return zero, zero, zero, zero
        if cfg.cutmix_minmax is not None:
            lo, hi = cfg.cutmix_minmax
            cut_h = _uniform_int(int(height * lo), int(height * hi), n, generator, device)
            cut_w = _uniform_int(int(width * lo), int(width * hi), n, generator, device)
            cut_h, cut_w = cut_h * applied, cut_w * applied
            # Box placed fully inside the image (as timm's minmax mode).
            y1 = (torch.rand(n, device=device, generator=generator) * (height - cut_h + 1)).long()
            x1 = (torch.rand(n, device=device, generator=generator) * (width - cut_w + 1)).long()
            return y1, y1 + cut_h, x1, x1 + cut_w
        lam = torch.where(applied, sample_beta(cfg.cutmix_alpha, n, generator, device), 1.0)
        ratio = torch.sqrt(1.0 - lam)
        cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
        # Box centred anywhere in the image, then clipped (as the CutMix paper and timm): λ is corrected
        # afterwards from the clipped area.
        cy = torch.randint(0, height, (n,), device=device, generator=generator)
        cx = torch.randint(0, width, (n,), device=device, generator=generator)
        y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
        x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
        return y1, y2, x1, x2

    # ------------------------------------------------------------------ applying
    def per_sample(self, values: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Expand one-entry-per-draw values to one per sample (pair mode: sample B-1-i shares draw i)."""
        mode = self.cfg.mode
        if mode == "batch":
            return values.expand(batch_size, *values.shape[1:])
        if mode == "pair":
            n = values.shape[0]
            return torch.cat([values, values[: batch_size - n].flip(0)])
        return values

    def apply(self, images: torch.Tensor, target: torch.Tensor, draw: MixDraw) -> Tuple[torch.Tensor, Tuple]:
        """Mix ``images`` (B×C×H×W float) with their mirror partners; returns (images, (target_a, target_b, λ))."""
        b, _, h, w = images.shape
        partner = images.flip(0)
        lam = self.per_sample(draw.lam, b)
        out = images
        if self.use_mixup:
            out = torch.lerp(partner, images, lam.view(b, 1, 1, 1).to(images.dtype))
        if self.use_cutmix:
            y1, y2, x1, x2 = (self.per_sample(t, b).view(b, 1, 1, 1) for t in draw.box)
            rows = torch.arange(h, device=images.device).view(1, 1, h, 1)
            cols = torch.arange(w, device=images.device).view(1, 1, 1, w)
            in_box = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
            cut = torch.where(in_box, partner, images)
            if self.use_mixup:
                out = torch.where(self.per_sample(draw.use_cutmix, b).view(b, 1, 1, 1), cut, out)
            else:
                out = cut
        if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        target_b = target.flip(0)
        # Make target_a the dominant class (λ ≥ 0.5); the loss λ·CE(a) + (1-λ)·CE(b) is unchanged.
        lam_t = draw.lam.reshape(()) if self.cfg.mode == "batch" else lam
        swap = lam_t < 0.5
        target_a_dom = torch.where(swap, target_b, target)
        target_b_dom = torch.where(swap, target, target_b)
        return out, (target_a_dom, target_b_dom, torch.where(swap, 1.0 - lam_t, lam_t))

    def __call__(self, images: torch.Tensor, target: torch.Tensor, generator: torch.Generator):
        _, _, h, w = images.shape
        return self.apply(images, target, self.draw(images.shape[0], h, w, generator, images.device))


def _uniform_int(low: int, high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n integers uniform in [low, high] (inclusive)."""
    return torch.randint(low, high + 1, (n,), device=device, generator=generator)


class MixupBatches(SeededBatchTransform):
    """A training batch source whose batches come mixed: it yields (images, (target_a, target_b, λ)).

    ``source`` is the unmixed data (precise BN reads it)."""

    def __init__(self, source: Any, mixup: Mixup, seed: int):
        super().__init__(source, mixup, seed, MIXUP_STREAM)
        self.mixup = mixup


def wrap_with_mixup(data: Any, cfg: MixupConfig, seed: int) -> Any:
    """``data`` wrapped to yield mixed batches when the config turns Mixup or CutMix on, else ``data``."""
    mixup = Mixup(cfg)
    return MixupBatches(data, mixup, seed) if data is not None and mixup.active else data


__all__ = ["MixDraw", "Mixup", "MixupBatches", "mixed_soft_targets", "sample_beta", "wrap_with_mixup"]
