"""In-memory image data: the whole uint8 set as one tensor, batches cut and augmented on its device.

For data that fits in memory (Fashion-MNIST, CIFAR-sized arrays) this needs no loader at all: the
epoch order is a permutation drawn from a generator seeded by (seed, epoch), and each batch's
augmentation (random crop with zero padding, horizontal flip) from a generator seeded by
(seed, epoch, batch index). So the data order and augmentation of any batch are a pure function of
the seed and position, and a run resumed mid-epoch sees exactly the batches it would have seen.
Nothing here reads a tensor back to the host.
"""

from __future__ import annotations

from typing import Dict, Iterator, Sequence, Tuple

import torch

from .global_batch_sharding import (check_shard, cycle_to_length, eval_shard_range, padded_epoch_length,
                                    train_batch_range, train_batches_per_epoch)


def _mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix-style) so nearby inputs give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop of the original size from a zero-padded copy, and random horizontal flips.

    ``images``: N×C×H×W (any dtype). Offsets and flips are drawn on the images' device.
    """
    n, c, h, w = images.shape
    dev = images.device
    out = images
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
        rows = (dy + torch.arange(h, device=dev)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
        tmp = padded.gather(2, rows)  # N×C×H×(W+2p): rows selected per image
        cols = (dx + torch.arange(w, device=dev)).view(n, 1, 1, w).expand(n, c, h, w)
        out = tmp.gather(3, cols)
    if flip:
        mask = torch.rand(n, device=dev, generator=generator) < 0.5
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(3), out)
    return out


class InMemoryImageData:
    """Batches of (normalized float images, int64 labels) from uint8 N×C×H×W images held on a device.

    ``train=True``: shuffled each epoch, augmented, last partial batch dropped when ``drop_last``.
    ``train=False``: in order, not augmented, every sample exactly once (the last batch may be smaller).
    """

    # Ranks take interleaved shares of each global batch (global_batch_sharding.py): global batch i holds
    # the same samples at any world size, so a mid-epoch resume may change it (with the global batch kept).
    batches_independent_of_world_size = True

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        batch_size: int,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        seed: int = 0,
        augment: bool = True,
        crop_padding: int = 2,
        flip: bool = True,
        drop_last: bool = True,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 N×C×H×W (or N×H×W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("the dataset is empty")
        lo, hi = int(labels.min()), int(labels.max())  # once, at construction: labels are host data here
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"label {hi if hi >= num_classes else lo} out of range for {num_classes} classes")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.augment = augment and train
        self.crop_padding = crop_padding
        self.flip = flip
        self.drop_last = drop_last and train
        self.channels_last = channels_last
        self.dtype = dtype
        c = self.images.shape[1]
        if len(mean) not in (1, c) or len(std) not in (1, c):
            raise ValueError(f"mean/std need 1 or {c} values")
        self._scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, -1, 1, 1).to(self.device)
        self._shift = (-torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).view(1, -1, 1, 1).to(self.device)
        self.epoch = 0
        self.start_batch = 0  # position to resume from within the current epoch
        self.rank, self.world_size = 0, 1  # data-parallel shard (see set_shard and data/global_batch_sharding.py)

    # ------------------------------------------------------------------ shape facts
    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        if self.train:
            return train_batches_per_epoch(n, b, self.world_size, self.drop_last)
        start, stop = eval_shard_range(n, self.world_size, self.rank)
        return (stop - start + b - 1) // b

    def set_shard(self, rank: int, world_size: int) -> None:
        """Read only rank ``rank``'s share of each epoch: batch_size stays per rank (the global batch is batch_size × world_size)."""
        check_shard(rank, world_size)
        self.rank, self.world_size = rank, world_size

    # ------------------------------------------------------------------ iteration
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start_batch = 0
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.train:
            return torch.arange(*eval_shard_range(self.num_samples, self.world_size, self.rank), device=self.device)
        # The same permutation on every rank (no rank in the seed): ranks take disjoint shares of it.
        # Drawn on the data's device by a generator seeded per epoch: no host work, no copy (on the
        # CPU the same permutation as a CPU generator's).
        g = torch.Generator(device=self.device).manual_seed(_mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=g, device=self.device)
        padded = padded_epoch_length(self.num_samples, self.batch_size, self.world_size, self.drop_last)
        return cycle_to_length(order, padded)

    def batch(self, order: torch.Tensor, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.train:
            start, stop = train_batch_range(self.num_samples, self.batch_size, self.world_size, self.rank, index,
                                            self.drop_last)
        else:
            start, stop = index * self.batch_size, (index + 1) * self.batch_size
        idx = order[start:stop]
        x = self.images.index_select(0, idx)
        if self.augment:
            # Augmentation differs per rank (rank 0 keeps the single-process stream).
            g = torch.Generator(device=self.device).manual_seed(
                _mix_seed(self.seed, self.epoch, index, 1, *((self.rank,) if self.rank else ())))
            x = random_crop_flip(x, self.crop_padding, self.flip, g)
        x = torch.addcmul(self._shift, x.to(torch.float32), self._scale).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels.index_select(0, idx)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        start, self.start_batch = self.start_batch, 0
        for i in range(start, len(self)):
            yield self.batch(order, i)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.start_batch = int(state["start_batch"])

    def resume_at(self, epoch: int, batch_index: int) -> None:
        """Make the next iteration start at ``batch_index`` of ``epoch``."""
        self.epoch, self.start_batch = epoch, batch_index
