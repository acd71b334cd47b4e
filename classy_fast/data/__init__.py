"""Data sources. Each yields (images, int64 labels) batches on the training device."""

from .datasets import build_data, embedded_fashion_mnist_path, synthetic_images
from .idx import IdxFormatError, read_idx, read_idx_split
from .memory import InMemoryImageData, random_crop_flip
from . import arrays, image_datasets  # noqa: F401,E402  (register 'arrays', 'image_folder', 'file_list')
from .bad_data import BadImageError

__all__ = [
    "build_data", "embedded_fashion_mnist_path", "synthetic_images", "IdxFormatError", "read_idx",
    "read_idx_split", "InMemoryImageData", "random_crop_flip", "BadImageError",
]
