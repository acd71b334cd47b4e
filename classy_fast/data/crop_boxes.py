"""Crop boxes (top, left, height, width) of the standard ImageNet transforms, drawn per sample.

The torchvision loader and the GPU JPEG backend both crop through these boxes, so they agree on
what a "random resized crop" is: torchvision's ``RandomResizedCrop.get_params`` algorithm (ten
tries at an area in ``scale`` and a log-uniform aspect ratio in ``ratio``, then a center-crop
fallback), but drawn from a ``numpy.random.Generator`` seeded per sample instead of torch's
global generator, so a sample's crop doesn't depend on which worker decodes it or on what ran
before (exact resume). Evaluation's "resize the shorter side to R, center-crop S" is the box
of side S·short/R centred in the image, resized to S.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

Box = Tuple[int, int, int, int]  # top, left, height, width


def random_resized_crop_box(height: int, width: int, scale: Tuple[float, float], ratio: Tuple[float, float],
                            rng: np.random.Generator) -> Box:
    """A box covering a random area fraction in ``scale`` with aspect ratio (w/h) in ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback (as torchvision): the largest centred box with a ratio inside the range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, resize_size: int, crop_size: int) -> Box:
    """The region that "resize the shorter side to resize_size, then center-crop crop_size" keeps."""
    side = crop_size * min(height, width) / resize_size
    h = max(1, min(height, int(round(side))))
    w = max(1, min(width, int(round(side))))
    return (height - h) // 2, (width - w) // 2, h, w


def sample_box(height: int, width: int, *, train: bool, augment: bool, crop_size: int, resize_size: int,
               scale: Tuple[float, float], ratio: Tuple[float, float], flip: bool,
               rng: np.random.Generator) -> Tuple[Box, bool]:
    """The box and the mirror flag of one sample (random only for augmented training samples)."""
    if train and augment:
        box = random_resized_crop_box(height, width, scale, ratio, rng)
        return box, bool(flip and rng.random() < 0.5)
    return center_crop_box(height, width, resize_size, crop_size), False
