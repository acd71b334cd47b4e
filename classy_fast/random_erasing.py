"""Random erasing (Zhong et al., 2017) of training batches, drawn and applied on the batch's device.

Each image is erased with probability ``prob``: a rectangle of area ``s·H·W`` (s uniform in
``scale``) and aspect ratio r (log-uniform in ``ratio``), h = round(√(s·H·W·r)), w = round(√(s·H·W/r)),
placed uniformly where it fits, is replaced by 0 (``value: zero``, the normalized mean colour) or by
per-pixel N(0, 1) noise (``value: random``, timm's 'pixel' mode). As in torchvision's
RandomErasing, up to 10 boxes are drawn and the first that fits (h < H and w < W) is used; if none
fits the image is left alone.

The draws for the whole batch are tensors (the 10 attempts side by side, the first fitting one
picked with argmax), so nothing is read on the host. It runs on the normalized batch, before
Mixup/CutMix (as timm orders them: per-sample augmentation, then mixing in the collate), in the
batch source (data/batch_transform.py) rather than in the captured step.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import torch

from .data.batch_transform import RANDOM_ERASING_STREAM, SeededBatchTransform
from .recipe_config import RandomErasingConfig

ATTEMPTS = 10


def validate(cfg: RandomErasingConfig) -> None:
    """Raise ValueError naming the field when a setting is out of range."""
    if not 0.0 <= cfg.prob <= 1.0:
        raise ValueError(f"random_erasing.prob must be in [0, 1], got {cfg.prob}")
    lo, hi = cfg.scale
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"random_erasing.scale must be (min, max) with 0 < min ≤ max < 1, got {tuple(cfg.scale)}")
    lo, hi = cfg.ratio
    if not 0.0 < lo <= hi:
        raise ValueError(f"random_erasing.ratio must be (min, max) with 0 < min ≤ max, got {tuple(cfg.ratio)}")


def erase_boxes(batch_size: int, height: int, width: int, cfg: RandomErasingConfig, generator: torch.Generator,
                device: torch.device) -> Tuple[torch.Tensor, ...]:
    """Per-image boxes (top, bottom, left, right) as int64 (B,) tensors, half-open; empty (0, 0, 0, 0)
    where the image is not erased (not drawn, or no attempt fitted)."""
    shape = (batch_size, ATTEMPTS)
    lo, hi = cfg.scale
    area = (torch.rand(shape, device=device, generator=generator) * (hi - lo) + lo) * (height * width)
    log_lo, log_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    aspect = torch.exp(torch.rand(shape, device=device, generator=generator) * (log_hi - log_lo) + log_lo)
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < height) & (w < width)  # as torchvision: a zero-sized draw fits (and erases nothing)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)  # first fitting attempt (0 when none)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    erased = fits.any(dim=1) & (torch.rand(batch_size, device=device, generator=generator) < cfg.prob)
    h, w = h * erased, w * erased
    # Uniform top-left among the positions where the box fits: floor(u · (H - h + 1)).
    u = torch.rand((2, batch_size), device=device, generator=generator)
    top = (u[0] * (height - h + 1)).long().clamp_max(height - h)
    left = (u[1] * (width - w + 1)).long().clamp_max(width - w)
    return top, top + h, left, left + w


def random_erase(images: torch.Tensor, cfg: RandomErasingConfig, generator: torch.Generator) -> torch.Tensor:
    """``images`` (B×C×H×W, normalized float) with random rectangles erased; memory format kept."""
    b, c, height, width = images.shape
    top, bottom, left, right = (t.view(b, 1, 1, 1) for t in
                                erase_boxes(b, height, width, cfg, generator, images.device))
    rows = torch.arange(height, device=images.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, 1, width)
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    if cfg.value == "random":
        fill = torch.randn(images.shape, device=images.device, dtype=torch.float32, generator=generator)
        fill = fill.to(images.dtype)
    else:
        fill = torch.zeros((), device=images.device, dtype=images.dtype)
    out = torch.where(inside, fill, images)
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class RandomErasing:
    """The batch transform: erases images, passes the target through."""

    def __init__(self, cfg: RandomErasingConfig):
        validate(cfg)
        self.cfg = cfg

    def __call__(self, images: torch.Tensor, target: Any, generator: torch.Generator) -> Tuple[torch.Tensor, Any]:
        if not images.is_floating_point():
            raise TypeError(f"random erasing needs normalized float images, got {images.dtype}")
        return random_erase(images, self.cfg, generator), target


def wrap_with_random_erasing(data: Any, cfg: RandomErasingConfig, seed: int) -> Any:
    """``data`` wrapped to yield erased batches when ``random_erasing.prob`` > 0, else ``data``."""
    validate(cfg)
    if data is None or cfg.prob == 0:
        return data
    return SeededBatchTransform(data, RandomErasing(cfg), seed, RANDOM_ERASING_STREAM)


__all__ = ["RandomErasing", "erase_boxes", "random_erase", "wrap_with_random_erasing"]
