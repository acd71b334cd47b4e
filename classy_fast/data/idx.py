"""Readers for the IDX format of (Fashion-)MNIST, in the torchvision raw layout.

A directory holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each optionally gzip-compressed (``.gz``), possibly under ``raw/``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Tuple

import numpy as np

_PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxFormatError(ValueError):
    """A file that is not a valid IDX file; the message names it."""


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (plain or .gz) into an array; errors name the file."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt .gz stream
        raise IdxFormatError(f"{path}: cannot read IDX file: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise IdxFormatError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxFormatError(f"{path}: expected {expected} bytes of data for shape {shape}, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_file(root: str, stem: str) -> str:
    for sub in ("", "raw", os.path.join("FashionMNIST", "raw"), os.path.join("MNIST", "raw")):
        for suffix in ("", ".gz"):
            path = os.path.join(root, sub, stem + suffix)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"{root}: no '{stem}' or '{stem}.gz' (looked in {root}, raw/, FashionMNIST/raw/, MNIST/raw/)")


def read_idx_split(root: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N×H×W uint8) and labels (N int64) of the 'train' or 'test' split under ``root``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset directory not found: {root}")
    prefix = _PREFIX[split]
    images_path = find_idx_file(root, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxFormatError(f"{images_path} / {labels_path}: shapes {images.shape} and {labels.shape} do not pair up")
    if images.dtype != np.uint8:  # a cast would wrap or truncate the pixels silently
        raise IdxFormatError(f"{images_path}: images are {images.dtype}, expected uint8 pixels (0-255)")
    return images, labels.astype(np.int64)
