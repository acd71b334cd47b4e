"""The torchvision DataLoader backend: PIL decode and transforms in worker processes (the
fallback that needs nothing beyond torchvision, and the baseline the faster backends are
measured against).

Per sample, in a worker: PIL decode (odd modes converted to RGB) → random-resized crop (the box
from crop_boxes.py, seeded per sample) resized bilinearly by PIL → random horizontal flip → the
``data.auto_augment`` policy if any (auto_augment.py, same seed) → uint8 CHW tensor; evaluation: resize the shorter side, center crop. Batches are collated as uint8
(a quarter of float32's bytes through shared memory and PCIe), pinned by the DataLoader, and
copied to the device and normalized there on a side stream (prefetch.py), as NVIDIA's reference
PyTorch pipeline does. Workers are persistent across epochs.

Bad files: a worker returns (path, reason) instead of an image; the main process reports it
(bad_data.py: skip and count, or stop when strict) and training batches are refilled to full size.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .auto_augment import AutoAugment, apply_pil
from .bad_data import BadImageError
from .crop_boxes import sample_box
from .file_source import ImageFileSource
from .prefetch import prefetch_to_device


class ImageFileDataset(Dataset):
    """Decode + augment one sample; indexed by (sample index, augmentation seed) pairs."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, *, train: bool, augment: bool, crop_size: int,
                 resize_size: int, scale, ratio, flip: bool, auto_augment: Optional[AutoAugment] = None):
        self.paths, self.labels = list(paths), labels
        self.train, self.augment, self.flip = train, augment, flip
        self.crop_size, self.resize_size = crop_size, resize_size
        self.scale, self.ratio = scale, ratio
        self.policy = auto_augment.torchvision_transform() if auto_augment is not None and train and augment else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Tuple[int, int]):
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode

        from .image_files import load_rgb

        index, seed = key
        path, label = self.paths[index], int(self.labels[index])
        try:
            img = load_rgb(path)
        except BadImageError as e:
            return None, label, path, e.reason
        size = [self.crop_size, self.crop_size]
        if self.train and self.augment:
            rng = np.random.default_rng(seed)
            (top, left, h, w), mirror = sample_box(img.height, img.width, train=True, augment=True,
                                                   crop_size=self.crop_size, resize_size=self.resize_size,
                                                   scale=self.scale, ratio=self.ratio, flip=self.flip, rng=rng)
            img = F.resized_crop(img, top, left, h, w, size, InterpolationMode.BILINEAR)
            if mirror:
                img = F.hflip(img)
            if self.policy is not None:
                img = apply_pil(self.policy, img, seed)
        else:
            img = F.center_crop(F.resize(img, self.resize_size, InterpolationMode.BILINEAR), size)
        return F.pil_to_tensor(img), label, path, None


def collate_uint8(samples: List[Tuple[Any, int, str, Optional[str]]]):
    """Stack the good samples as uint8; return the bad ones' (path, reason) beside them."""
    good = [(img, label) for img, label, _, reason in samples if reason is None]
    bad = [(path, reason) for img, _, path, reason in samples if reason is not None]
    if not good:
        return None, None, bad, len(samples)
    images = torch.stack([img for img, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return images, labels, bad, len(samples)


class _PositionSampler(Sampler):
    """(sample index, seed) pairs of the source's current epoch, from its start position on.

    It holds its source weakly: source → loader → sampler → source would be a cycle, keeping a dropped
    source's persistent workers alive until a garbage collection (possibly in a forked worker)."""

    def __init__(self, source: "TorchvisionImageData"):
        self._source = weakref.ref(source)

    @property
    def source(self) -> "TorchvisionImageData":
        source = self._source()
        if source is None:
            raise RuntimeError("the image source of this sampler was released")
        return source

    def __iter__(self):
        s = self.source
        epoch, start = s._iter_epoch, s._iter_start * s.batch_size
        order = s.rank_order(epoch).tolist()
        for pos in range(start, len(order)):
            yield order[pos], s.sample_seed(epoch, pos)

    def __len__(self) -> int:
        s = self.source
        return max(0, len(s.rank_order(s._iter_epoch)) - s._iter_start * s.batch_size)


class DataLoaderImageSource(ImageFileSource):
    """An image-file source fed by a torch DataLoader: subclasses give ``_make_loader`` and ``_prepare``
    (host batch → device batch); iteration prefetches to the device on a side stream."""

    _loader = None

    def close(self) -> None:
        # Persistent workers otherwise live until garbage collection, which may run in a process
        # forked later (another loader's worker) and trip DataLoader's "not a child" assertion.
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
        self._loader = None

    def _iterate(self, epoch: int, start_batch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            self._loader = self._make_loader()
        if self._loader.num_workers > 0 and getattr(self._loader, "_iterator", None) is None:
            # The workers are about to be forked. Garbage the parent has not collected yet would be
            # collected in each worker instead, where finalizers of objects that own threads (a DALI
            # pipeline's __del__) deadlock: collect it here first.
            gc.collect()
        self._iter_epoch, self._iter_start = epoch, start_batch
        yield from prefetch_to_device(self._loader, self._prepare, self.device)


class TorchvisionImageData(DataLoaderImageSource):
    """Image files through a torch DataLoader of PIL workers (see the module docstring)."""

    backend = "torchvision"

    def __init__(self, files, **kw):
        super().__init__(files, **kw)
        self._loader: Optional[DataLoader] = None
        self._iter_epoch, self._iter_start = 0, 0

    def _make_loader(self) -> DataLoader:
        import torchvision.transforms.functional  # noqa: F401  (imported once here, inherited by forked workers)

        dataset = ImageFileDataset(self.files.paths, self.files.labels, train=self.train, augment=self.augment,
                                   crop_size=self.crop_size, resize_size=self.resize_size, scale=self.scale,
                                   ratio=self.ratio, flip=self.flip, auto_augment=self.auto_augment)
        workers = self.num_workers
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=_PositionSampler(self), collate_fn=collate_uint8,
            num_workers=workers, persistent_workers=workers > 0, prefetch_factor=self.prefetch if workers else None,
            pin_memory=self.device.type == "cuda", drop_last=False)

    def _prepare(self, batch):
        images, labels, bad, wanted = batch
        for path, reason in bad:
            self.skipped.report(path, reason)
        if images is None:
            return self.stand_in_batch(wanted)
        images = self.normalize(images.to(self.device, non_blocking=True))
        labels = labels.to(self.device, non_blocking=True)
        return self.fill_batch(images, labels, wanted)

