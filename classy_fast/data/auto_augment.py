"""Automatic augmentation policies for training images from files: TrivialAugment and RandAugment.

    --set data.auto_augment=trivial_augment                     # TrivialAugmentWide (Müller & Hutter 2021)
    --set data.auto_augment=rand_augment --set data.auto_augment_ops=2 --set data.auto_augment_magnitude=9

The policy runs on the uint8 crop (after the random-resized crop, before normalization; the flip comes
before it on torchvision, after it in DALI, which gives the same distribution: the geometric operations
are mirror-symmetric in law), per sample, in the pipeline that decodes: torchvision's ``TrivialAugmentWide`` / ``RandAugment`` on the PIL
image in the DataLoader workers (``data.backend=torchvision``), DALI's ``auto_aug`` suites inside the
pipeline, on the GPU or the CPU (``data.backend=dali``). The two libraries define the operations and
magnitude ranges alike (31 magnitude bins; TrivialAugment translates by up to 32 pixels); areas left
empty by a geometric operation are filled with grey 128 on both. The nvjpeg backend crops, resizes
and normalizes in one fused kernel with no uint8 stage to augment, and the in-memory datasets
augment whole batches on the device: both refuse a policy with an error naming the setting.

Determinism: the torchvision policy draws from torch's generator, which each sample reseeds from
its augmentation seed (the one its crop uses) inside ``torch.random.fork_rng``, so the main
process's random state is untouched and a resumed run augments as an uninterrupted one. DALI draws
from the pipeline's seed (per epoch, rank and start batch, like its crops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..config import DataConfig

POLICIES = ("trivial_augment", "rand_augment")
NUM_MAGNITUDE_BINS = 31  # torchvision's and DALI's default: magnitudes 0..30
FILL = 128


@dataclass(frozen=True)
class AutoAugment:
    """A policy and its settings (RandAugment's ``num_ops`` and ``magnitude``; TrivialAugment draws both)."""

    policy: str
    num_ops: int = 2
    magnitude: int = 9

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"data.auto_augment must be one of none, {', '.join(POLICIES)}; got {self.policy!r}")
        if self.num_ops < 1:
            raise ValueError(f"data.auto_augment_ops must be ≥ 1, got {self.num_ops}")
        if not 0 <= self.magnitude < NUM_MAGNITUDE_BINS:
            raise ValueError(f"data.auto_augment_magnitude must be in [0, {NUM_MAGNITUDE_BINS - 1}], "
                             f"got {self.magnitude}")

    # ------------------------------------------------------------------ torchvision (PIL, in workers)
    def torchvision_transform(self) -> Any:
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode

        fill = [FILL] * 3
        if self.policy == "trivial_augment":
            return transforms.TrivialAugmentWide(NUM_MAGNITUDE_BINS, InterpolationMode.BILINEAR, fill)
        return transforms.RandAugment(self.num_ops, self.magnitude, NUM_MAGNITUDE_BINS, InterpolationMode.BILINEAR,
                                      fill)

    # ------------------------------------------------------------------ DALI (inside the pipeline)
    def dali_apply(self, images: Any) -> Any:
        """The policy applied to a DALI node of HWC uint8 images (needs ``enable_conditionals=True``)."""
        from nvidia.dali import types
        from nvidia.dali.auto_aug import rand_augment, trivial_augment

        kw = dict(num_magnitude_bins=NUM_MAGNITUDE_BINS, fill_value=FILL, interp_type=types.INTERP_LINEAR)
        if self.policy == "trivial_augment":
            return trivial_augment.trivial_augment_wide(images, **kw)
        return rand_augment.rand_augment(images, n=self.num_ops, m=self.magnitude, **kw)


def apply_pil(transform: Any, image: Any, seed: int) -> Any:
    """``transform(image)`` with torch's generator seeded by ``seed``, the caller's random state kept."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def from_config(cfg: DataConfig) -> Optional[AutoAugment]:
    """The configured policy, or None for ``data.auto_augment: none`` (or when augmentation is off)."""
    if cfg.auto_augment == "none" or not cfg.augment:
        return None
    return AutoAugment(cfg.auto_augment, cfg.auto_augment_ops, cfg.auto_augment_magnitude)


def refuse_for(cfg: DataConfig, what: str) -> None:
    """Raise when a policy is configured for a pipeline (``what``) that cannot apply it."""
    if from_config(cfg) is not None:
        raise ValueError(f"data.auto_augment={cfg.auto_augment} applies to image files (image_folder, file_list) "
                         f"with data.backend torchvision or dali; {what} cannot apply it. "
                         f"Set data.auto_augment=none (random_erasing and mixup work with every dataset).")


__all__ = ["AutoAugment", "POLICIES", "apply_pil", "from_config", "refuse_for"]
