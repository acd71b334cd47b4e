"""What every image-file backend (torchvision, nvjpeg, DALI) shares: the file list, this rank's
share of each epoch, the position in it, normalization settings and the bad-file counter.

The data-source interface is InMemoryImageData's (memory.py): ``__iter__`` yields (images, int64
labels) on the device, ``__len__`` is batches per epoch on this rank, plus ``num_samples``,
``num_classes``, ``in_channels``, ``image_size``, ``drop_last``, ``set_epoch``, ``set_shard``,
``resume_at`` and ``state_dict``. Subclasses implement ``_iterate(epoch, start_batch)``.

Order and position. The epoch's order is one permutation seeded by (seed, epoch), the same on
every rank, cut or padded and split into equal contiguous training shares (sharding.py: DALI's reader split); each
rank's share is cut to whole batches (``drop_last``) or its last batch filled by wrapping to its
start, so training batches always have ``batch_size`` images. Evaluation is in file order, split
into contiguous shards, last batch partial: each sample exactly once across ranks. So the files
of batch ``i`` of epoch ``e`` are known without reading anything: resuming at (e, i) starts there
directly, and a failing batch names its candidate files.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch

from .auto_augment import AutoAugment
from .bad_data import SkippedFiles
from .image_files import ImageList
from .memory import _mix_seed
from .sharding import check_shard, cycle_to_length, eval_shard_range, train_epoch_length, train_share_range, train_share_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def repeated_augmentation_order(order: torch.Tensor, repeats: int, world_size: int, length: int) -> torch.Tensor:
    """An epoch order for repeated augmentation (Hoffer et al. 2020; torchvision's RASampler): each sample
    of ``order`` is repeated ``repeats`` times, the copies dealt round-robin to the ranks (copy j of a
    sample goes to the rank after copy j-1's), and each rank's share laid out contiguously as the file
    sources read it. The epoch keeps its ``length``: it holds about length / repeats distinct samples,
    each augmented differently on ``repeats`` ranks (on one process: ``repeats`` copies in a row)."""
    repeated = order.repeat_interleave(repeats)
    if len(repeated) < length:  # more copies than samples per rank would need: wrap around (as RASampler)
        repeated = repeated.repeat(-(-length // len(repeated)))
    repeated = repeated[:length]
    return torch.cat([repeated[r::world_size] for r in range(world_size)])


class ImageFileSource:
    """Base of the image-file data sources: sharding, position, normalization, bad-file counting."""

    backend = "?"
    # Each rank reads a contiguous share of the epoch's order, so global batch i holds other samples
    # at another world size: a mid-epoch resume must keep the world size (ParallelTraining checks).
    batches_independent_of_world_size = False

    def __init__(
        self,
        files: ImageList,
        *,
        batch_size: int,
        train: bool,
        device: torch.device,
        seed: int = 0,
        crop_size: int = 224,
        resize_size: int = 256,
        scale: Tuple[float, float] = (0.08, 1.0),
        ratio: Tuple[float, float] = (3 / 4, 4 / 3),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: bool = True,
        flip: bool = True,
        drop_last: bool = True,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        num_workers: int = 4,
        prefetch: int = 2,
        skipped: Optional[SkippedFiles] = None,
        auto_augment: Optional[AutoAugment] = None,
        repeated_augmentations: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if crop_size < 1 or resize_size < 1:
            raise ValueError(f"crop sizes (data.crop_size, data.test_crop_size) and data.resize_size must be ≥ 1, "
                             f"got crop {crop_size}, resize {resize_size}")
        if len(mean) not in (1, 3) or len(std) not in (1, 3):
            raise ValueError(f"mean/std need 1 or 3 values, got {len(mean)} and {len(std)}")
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"bad random-resized-crop ranges: scale={scale}, ratio={ratio}")
        self.files = files
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.crop_size, self.resize_size = crop_size, resize_size
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.mean = tuple(float(m) for m in (mean * 3 if len(mean) == 1 else mean))
        self.std = tuple(float(s) for s in (std * 3 if len(std) == 1 else std))
        self.augment = augment and train
        if repeated_augmentations < 1:
            raise ValueError(f"data.repeated_augmentations must be ≥ 1, got {repeated_augmentations}")
        self.repeated_augmentations = repeated_augmentations if self.augment else 1
        self.auto_augment = auto_augment if self.augment else None  # the policy (data/auto_augment.py), training only
        self.flip = flip
        self.drop_last = drop_last and train
        self.channels_last = channels_last
        self.dtype = dtype
        self.num_workers = num_workers
        self.prefetch = max(1, prefetch)
        self.skipped = skipped if skipped is not None else SkippedFiles(strict=False)
        self.rank, self.world_size = 0, 1
        self.epoch = 0
        self.start_batch = 0
        self._affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        # The last good training sample read (image, label), for a batch whose every file is bad.
        self._last_good: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    # ------------------------------------------------------------------ shape facts
    @property
    def num_samples(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return self.files.num_classes

    @property
    def classes(self):
        return self.files.classes

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.crop_size, self.crop_size

    @property
    def skipped_files(self) -> int:
        """Bad files skipped so far by this source (this rank)."""
        return self.skipped.count

    @property
    def skipped_paths(self) -> frozenset:
        """The bad files behind ``skipped_files`` (the phase-end total is their union over ranks)."""
        return self.skipped.paths

    def share_size(self) -> int:
        """Samples this rank reads per epoch (before training's last-batch cut or fill)."""
        if self.train:
            return train_share_size(self.num_samples, self.world_size, self.drop_last)
        start, stop = eval_shard_range(self.num_samples, self.world_size, self.rank)
        return stop - start

    def __len__(self) -> int:
        n, b = self.share_size(), self.batch_size
        return n // b if self.drop_last else (n + b - 1) // b

    # ------------------------------------------------------------------ order
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Sample indices of the whole epoch in reading order (train: cut/padded to equal shares)."""
        n = self.num_samples
        if not self.train:
            return torch.arange(n)
        g = torch.Generator().manual_seed(_mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g)
        length = train_epoch_length(n, self.world_size, self.drop_last)
        if self.repeated_augmentations > 1:
            return repeated_augmentation_order(order, self.repeated_augmentations, self.world_size, length)
        return cycle_to_length(order, length)

    def share_bounds(self, rank: Optional[int] = None) -> Tuple[int, int]:
        """[start, stop) of this (or ``rank``'s) share within ``epoch_order``."""
        rank = self.rank if rank is None else rank
        if not self.train:
            return eval_shard_range(self.num_samples, self.world_size, rank)
        return train_share_range(self.num_samples, self.world_size, rank, self.drop_last)

    def rank_order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, cut to whole batches or filled (training)."""
        start, stop = self.share_bounds()
        share = self.epoch_order(epoch)[start:stop]
        if self.train:
            total = len(self) * self.batch_size
            if total > len(share) and len(share) > 0:  # fill the last batch from the share's start
                share = torch.cat([share, share.repeat(total // len(share) + 1)[: total - len(share)]])
            share = share[:total]
        return share

    def sample_seed(self, epoch: int, position: int) -> int:
        """Augmentation seed of the sample at ``position`` of this rank's epoch."""
        return _mix_seed(self.seed, self.rank, epoch, position, 2)

    # ------------------------------------------------------------------ batches
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W (on the device) → normalized ``dtype`` batch in the requested layout."""
        if self._affine is None or self._affine[0].device != images.device:  # made once, not per batch
            std, mean = torch.tensor(self.std), torch.tensor(self.mean)
            self._affine = ((1.0 / (255.0 * std)).view(1, -1, 1, 1).to(images.device),
                            (-mean / std).view(1, -1, 1, 1).to(images.device))
        scale, shift = self._affine
        x = torch.addcmul(shift, images.to(torch.float32), scale).to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def fill_batch(self, images: torch.Tensor, labels: torch.Tensor, wanted: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training keeps static shapes: rows lost to bad files are refilled with copies of good ones."""
        have = images.shape[0]
        if not self.train or have == 0:
            return images, labels
        # One row copied per batch, so that a later batch with no good file still has a sample to repeat.
        self._last_good = (images[-1:].clone(), labels[-1:].clone())
        if have >= wanted:
            return images, labels
        idx = torch.arange(wanted, device=images.device) % have
        return images.index_select(0, idx), labels.index_select(0, idx)

    def stand_in_batch(self, wanted: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """A training batch whose every file was bad: copies of the last good sample read, so every rank
        keeps the same step count (a rank one step short would hang DDP). None (the batch is skipped)
        for evaluation, and before this source has read any good training sample."""
        if not self.train or self._last_good is None:
            return None
        return self.fill_batch(*self._last_good, wanted)

    def _iterate(self, epoch: int, start_batch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        start, self.start_batch = self.start_batch, 0
        return self._iterate(self.epoch, start)

    def close(self) -> None:
        """Release worker processes or pipelines now (they are also released when the source is collected)."""

    # ------------------------------------------------------------------ position
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start_batch = 0
        self.epoch = epoch

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read only rank ``rank``'s share of each epoch (batch_size stays per rank)."""
        check_shard(rank, world_size)
        self.rank, self.world_size = rank, world_size

    def resume_at(self, epoch: int, batch_index: int) -> None:
        """Make the next iteration start at ``batch_index`` of ``epoch`` (without reading earlier batches)."""
        self.epoch, self.start_batch = epoch, batch_index

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "start_batch": self.start_batch, "skipped_files": self.skipped.count}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.start_batch = int(state["start_batch"])
