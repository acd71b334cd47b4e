"""Dataset registry entries: the bundled Fashion-MNIST subset, Fashion-MNIST/MNIST IDX files, synthetic data."""

from __future__ import annotations

import os
from importlib import resources
from typing import Tuple

import numpy as np
import torch

from .. import distributed
from ..config import DataConfig
from ..registry import DATASETS
from .auto_augment import refuse_for as refuse_auto_augment
from .file_source import DTYPES
from .idx import read_idx_split
from .memory import InMemoryImageData, _mix_seed

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
EMBEDDED_FASHION_MNIST = "fashion_mnist_subset.npz"


def embedded_fashion_mnist_path() -> str:
    return str(resources.files("classy_fast.data").joinpath("embedded", EMBEDDED_FASHION_MNIST))


def checked_limit(cfg: DataConfig, split: str):
    """``data.limit_train`` or ``data.limit_test`` for ``split``; a negative one is refused, naming the key."""
    key = "limit_train" if split == "train" else "limit_test"
    limit = getattr(cfg, key)
    if limit is not None and limit < 0:
        raise ValueError(f"data.{key} must be ≥ 0, got {limit} (null or 0: every sample)")
    return limit


def checked_batch_size(cfg: DataConfig, split: str) -> int:
    """``data.batch_size`` or ``data.test_batch_size`` for ``split``; one below 1 is refused, naming the key."""
    key = "batch_size" if split == "train" else "test_batch_size"
    value = getattr(cfg, key)
    if value < 1:
        raise ValueError(f"data.{key} must be ≥ 1, got {value}")
    return value


def _limit(images: np.ndarray, labels: np.ndarray, limit) -> Tuple[np.ndarray, np.ndarray]:
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def _in_memory(cfg: DataConfig, split: str, images, labels, num_classes, mean, std, *, device, seed, channels_last):
    train = split == "train"
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:  # here the message can name the data (the in-memory source only knows tensors)
        where = f"data.root {cfg.root}" if cfg.root else f"dataset '{cfg.name}'"
        raise ValueError(f"{where}, {split} split: label {int(labels[bad[0]])} of sample {int(bad[0])} is out of range "
                         f"for {num_classes} classes ({bad.size} such labels)")
    refuse_auto_augment(cfg, f"the in-memory dataset '{cfg.name}'")
    if cfg.repeated_augmentations != 1:
        raise ValueError(f"data.repeated_augmentations={cfg.repeated_augmentations} applies to image files "
                         f"(image_folder, file_list); the in-memory dataset '{cfg.name}' reads each sample once per epoch")
    if cfg.crop_padding < 0:
        raise ValueError(f"data.crop_padding must be ≥ 0, got {cfg.crop_padding} (0: no random crop)")
    images, labels = _limit(images, labels, checked_limit(cfg, split))
    return InMemoryImageData(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(np.ascontiguousarray(labels)),
        num_classes=num_classes,
        batch_size=checked_batch_size(cfg, split),
        train=train,
        mean=mean,
        std=std,
        device=device,
        seed=seed,
        augment=cfg.augment,
        crop_padding=cfg.crop_padding,
        flip=cfg.flip,
        drop_last=cfg.drop_last,
        channels_last=channels_last,
        dtype=DTYPES[cfg.dtype],
    )


@DATASETS.register("fashion_mnist_embedded")
def fashion_mnist_embedded(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """The stratified subset shipped in the package: 12,000 train / 2,000 test images."""
    if cfg.root and not os.path.isfile(cfg.root):
        raise FileNotFoundError(f"data.root {cfg.root} is not a file: data.name=fashion_mnist_embedded reads the "
                                f"packaged subset (leave data.root unset) or an .npz laid out like it; for a "
                                f"directory of Fashion-MNIST IDX files use data.name=fashion_mnist")
    path = cfg.root or embedded_fashion_mnist_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedded Fashion-MNIST subset not found at {path} (reinstall classy_fast)")
    with np.load(path) as z:
        images, labels = z[f"{split}_images"], z[f"{split}_labels"].astype(np.int64)
    return _in_memory(cfg, split, images, labels, 10, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                      device=device, seed=seed, channels_last=channels_last)


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """The full Fashion-MNIST set from IDX files under ``data.root`` (torchvision raw layout, .gz or not)."""
    if not cfg.root:
        raise ValueError("data.root must name the directory of the Fashion-MNIST IDX files "
                         "(e.g. /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)")
    images, labels = read_idx_split(cfg.root, split)
    return _in_memory(cfg, split, images, labels, 10, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                      device=device, seed=seed, channels_last=channels_last)


@DATASETS.register("mnist")
def mnist(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """MNIST from IDX files under ``data.root``."""
    if not cfg.root:
        raise ValueError("data.root must name the directory of the MNIST IDX files")
    images, labels = read_idx_split(cfg.root, split)
    return _in_memory(cfg, split, images, labels, 10, (0.1307,), (0.3081,),
                      device=device, seed=seed, channels_last=channels_last)


def synthetic_images(n: int, num_classes: int, channels: int, size: int, seed: int, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Learnable random images: a random prototype per class (from ``seed``) plus per-image noise (from ``seed`` and ``split``)."""
    prototypes = np.random.default_rng(_mix_seed(seed, 7)).integers(0, 256, size=(num_classes, channels, size, size), dtype=np.int16)
    rng = np.random.default_rng(_mix_seed(seed, 8, 0 if split == "train" else 1))
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    noise = rng.integers(-64, 65, size=(n, channels, size, size), dtype=np.int16)
    return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels


@DATASETS.register("synthetic")
def synthetic(cfg: DataConfig, split: str, *, device, seed, channels_last):
    """Random images with learnable labels, any size and class count (for benchmarks and tests)."""
    n = cfg.synthetic_train_size if split == "train" else cfg.synthetic_test_size
    images, labels = synthetic_images(n, cfg.num_classes, cfg.channels, cfg.image_size, seed, split)
    return _in_memory(cfg, split, images, labels, cfg.num_classes, (0.5,) * cfg.channels, (0.25,) * cfg.channels,
                      device=device, seed=seed, channels_last=channels_last)


def build_data(cfg: DataConfig, split: str, *, device: torch.device, seed: int, channels_last: bool = False):
    """The dataset, sharded for this rank under torch.distributed (``seed`` must be the same on every rank)."""
    data = DATASETS.get(cfg.name)(cfg, split, device=device, seed=seed, channels_last=channels_last)
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1:
        if not hasattr(data, "set_shard"):
            raise ValueError(f"dataset '{cfg.name}' cannot be sharded over {world} processes (it has no set_shard)")
        data.set_shard(rank, world)
    return data
