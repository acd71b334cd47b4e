"""The ``arrays`` dataset: CIFAR-style uint8 arrays in one .npz, held on the device (no loader).

    --set data.name=arrays --set data.root=/data/cifar10.npz

The .npz holds ``train_images``, ``train_labels``, ``test_images``, ``test_labels``; images are
uint8 N×H×W×C (HWC, as CIFAR pickles and most numpy exports are), N×C×H×W (CHW) or N×H×W
(grayscale). The layout is read from the shape: a last axis of 1, 3 or 4 with a second axis that
isn't is HWC; anything else with 1, 3 or 4 on the second axis is CHW. The whole set goes to the
device once (InMemoryImageData): batched random crop with padding, flip and normalize run there,
the order is a device permutation, and the step never waits on a loader (the airbench approach).

Normalization defaults to the training images' per-channel mean and std (``data.mean``/``data.std``
override). The class count is the largest training label + 1; a label out of range (negative,
or a test label past it) is a bad sample: skipped and counted, or an error when ``data.strict``.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import Tuple

import numpy as np

from ..config import DataConfig
from ..registry import DATASETS
from .bad_data import SkippedFiles
from .datasets import _in_memory

CHANNEL_COUNTS = (1, 3, 4)


def to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 N×C×H×W from N×H×W×C, N×C×H×W or N×H×W (see the module docstring for the rule)."""
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{where}: images must be N×H×W×C, N×C×H×W or N×H×W, got shape {images.shape}")
    if images.shape[-1] in CHANNEL_COUNTS and images.shape[1] not in CHANNEL_COUNTS:
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if images.shape[1] in CHANNEL_COUNTS:
        return images
    raise ValueError(f"{where}: cannot tell the channel axis of shape {images.shape} "
                     f"(1, 3 or 4 channels first or last)")


def load_split(path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    if not path:
        raise ValueError("data.root must name the .npz file for data.name=arrays")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"arrays file {path} does not exist")
    keys = (f"{split}_images", f"{split}_labels")
    try:
        z = np.load(path)
        if not hasattr(z, "files"):  # an .npy file: one array, no names
            raise ValueError(f"it holds one {type(z).__name__}, not named arrays")
        with z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise KeyError(f"{path} has no {', '.join(missing)} (it holds: {', '.join(sorted(z.files))})")
            images, labels = z[keys[0]], z[keys[1]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # not an .npz, or a damaged one
        raise ValueError(f"{path}: cannot read it as an .npz of uint8 arrays ({e})") from None
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{path}: {split}_labels must be 1-D with one label per image, got shape {labels.shape} "
                         f"for {len(images)} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: {split}_labels must be integers, got {labels.dtype}")
    return to_nchw(images, f"{path}: {split}_images"), labels.astype(np.int64)


def channel_stats(images: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 N×C×H×W images."""
    total = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    for start in range(0, len(images), 4096):  # chunks: no float copy of the whole set
        chunk = images[start : start + 4096]
        total += chunk.sum(axis=(0, 2, 3), dtype=np.float64)
        squares += np.square(chunk, dtype=np.uint16).sum(axis=(0, 2, 3), dtype=np.float64)  # 255² fits uint16
    count = max(1, images.shape[0] * images.shape[2] * images.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(float(m) / 255 for m in mean), tuple(max(float(v) / 255, 1e-6) for v in std)


@DATASETS.register("arrays")
def arrays(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """uint8 images and labels from an .npz (train_images/train_labels/test_images/test_labels), on the device."""
    path = cfg.root
    train_images, train_labels = load_split(path, "train")
    images, labels = (train_images, train_labels) if split == "train" else load_split(path, "test")
    if images.shape[1] != train_images.shape[1]:  # the normalization statistics come from the train split
        raise ValueError(f"{path}: test_images have {images.shape[1]} channel(s), train_images "
                         f"{train_images.shape[1]}: both splits need the same channels")
    num_classes = int(train_labels.max()) + 1 if len(train_labels) else 0
    skipped = SkippedFiles(cfg.strict, split)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    for i in bad:
        skipped.report(f"{path}:{split}_labels[{i}]", f"label {labels[i]} out of range for {num_classes} classes")
    if len(bad):
        keep = np.setdiff1d(np.arange(len(labels)), bad)
        images, labels = images[keep], labels[keep]
    stats_mean, stats_std = channel_stats(train_images)
    mean = tuple(cfg.mean) if cfg.mean else stats_mean
    std = tuple(cfg.std) if cfg.std else stats_std
    data = _in_memory(cfg, split, images, labels, num_classes, mean, std, device=device, seed=seed,
                      channels_last=channels_last)
    data.skipped_files, data.skipped_paths = skipped.count, skipped.paths
    return data
