"""Registry entries for datasets of image files: ``image_folder`` and ``file_list``.

    --set data.name=image_folder --set data.root=/data/imagenet     # ROOT/train/<class>/..., ROOT/val/<class>/...
    --set data.name=file_list --set data.root=/data/lists           # ROOT/train.txt, ROOT/val.txt ("path label")

``data.backend`` picks the pipeline (docs/data.md compares them): 'dali' (DALIImageData),
'nvjpeg' (GPUJpegImageData: decode_jpeg on the device + the fused crop kernel), 'torchvision'
(TorchvisionImageData: PIL workers); 'auto' takes DALI when it is installed, else nvjpeg on a CUDA
device, else torchvision.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch

from ..config import DataConfig
from ..registry import DATASETS
from .auto_augment import AutoAugment, from_config
from .bad_data import SkippedFiles
from .dali_pipeline import DALI_HINT, DALIImageData, dali_import_error
from .datasets import checked_batch_size, checked_limit
from .file_source import DTYPES, IMAGENET_MEAN, IMAGENET_STD, ImageFileSource
from .image_files import ImageList, image_list
from .nvjpeg_loader import GPUJpegImageData
from .torchvision_loader import TorchvisionImageData

log = logging.getLogger("classy_fast")

BACKENDS = {"dali": DALIImageData, "nvjpeg": GPUJpegImageData, "torchvision": TorchvisionImageData}


def choose_backend(requested: str, device: torch.device, auto_augment: Optional[AutoAugment] = None) -> str:
    """The backend for ``data.backend``; 'auto' skips nvjpeg when an augmentation policy is configured."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"data.backend must be one of auto, {', '.join(BACKENDS)}; got {requested!r}")
        if requested == "dali" and dali_import_error() is not None:
            raise ImportError(f"data.backend=dali: {DALI_HINT} ({dali_import_error()})")
        if requested == "nvjpeg" and auto_augment is not None:
            raise ValueError(f"data.auto_augment={auto_augment.policy} needs data.backend torchvision or dali: the nvjpeg "
                             "backend crops, resizes and normalizes in one kernel, with no uint8 image to augment")
        return requested
    if dali_import_error() is None:
        return "dali"
    if auto_augment is not None:
        return "torchvision"
    return "nvjpeg" if torch.device(device).type == "cuda" else "torchvision"


def spread_subset(files: ImageList, limit) -> ImageList:
    """``limit`` files evenly spaced over the sorted list (every class keeps a share), in order."""
    if not limit or limit >= len(files):
        return files
    picks = np.unique(np.linspace(0, len(files) - 1, num=limit).round().astype(np.int64))
    return ImageList([files.paths[i] for i in picks], files.labels[picks], files.classes, files.source)


def build_image_files(cfg: DataConfig, split: str, kind: str, *, device, seed: int,
                      channels_last: bool) -> ImageFileSource:
    train = split == "train"
    skipped = SkippedFiles(cfg.strict, split)
    limit = checked_limit(cfg, split)
    files = spread_subset(image_list(cfg.root, kind, split, skipped), limit)
    eval_crop = cfg.crop_size if cfg.test_crop_size is None else cfg.test_crop_size
    if not train and eval_crop > cfg.resize_size:
        # torchvision would pad the crop with black, nvjpeg stretch a clamped box, DALI refuse: say it here.
        raise ValueError(f"the evaluation crop ({'data.test_crop_size' if cfg.test_crop_size else 'data.crop_size'}="
                         f"{eval_crop}) is larger than data.resize_size={cfg.resize_size}, the shorter side it is "
                         f"cut from; set data.resize_size ≥ the crop (e.g. 232 for a 224 crop)")
    auto_augment = from_config(cfg) if train else None
    backend = choose_backend(cfg.backend, device, auto_augment)
    log.info("data: %s %s split: %d files, %d classes, backend %s", kind, split, len(files), files.num_classes, backend)
    return BACKENDS[backend](
        files, batch_size=checked_batch_size(cfg, split), train=train, device=device, seed=seed,
        crop_size=cfg.crop_size if train or cfg.test_crop_size is None else cfg.test_crop_size,
        resize_size=cfg.resize_size, scale=cfg.scale, ratio=cfg.ratio,
        mean=cfg.mean or IMAGENET_MEAN, std=cfg.std or IMAGENET_STD, augment=cfg.augment, flip=cfg.flip,
        drop_last=cfg.drop_last, channels_last=channels_last, dtype=DTYPES[cfg.dtype], num_workers=cfg.num_workers,
        prefetch=cfg.prefetch, skipped=skipped, auto_augment=auto_augment,
        repeated_augmentations=cfg.repeated_augmentations)


@DATASETS.register("image_folder")
def image_folder(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """JPEG/PNG files in ROOT/train/<class>/ and ROOT/val/<class>/ (or ROOT/test); classes: sorted train dirs."""
    return build_image_files(cfg, split, "image_folder", device=device, seed=seed, channels_last=channels_last)


@DATASETS.register("file_list")
def file_list(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """Files listed in ROOT/train.txt and ROOT/val.txt (or test.txt), one 'path label' per line."""
    return build_image_files(cfg, split, "file_list", device=device, seed=seed, channels_last=channels_last)
