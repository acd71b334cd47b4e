"""A training batch source whose batches pass through a seeded transform on their device.

Mixup/CutMix (mixup.py) and random erasing (random_erasing.py) are applied to whole batches on the
device, after the data pipeline and outside the train step (the captured CUDA graph replays the step
only). Each wrapper draws from its own generator, seeded per (seed, epoch, batch index, stream, rank),
so a run resumed at batch k transforms exactly as one that never stopped, and ranks draw their own
values (as their own crops).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Tuple

import torch

from .. import distributed
from .memory import _mix_seed

# Stream tags of _mix_seed(seed, epoch, batch, tag, rank); the in-memory data's crop/flip uses 1.
MIXUP_STREAM = 2
RANDOM_ERASING_STREAM = 3

BatchTransformFn = Callable[[torch.Tensor, Any, torch.Generator], Tuple[torch.Tensor, Any]]


class SeededBatchTransform:
    """Wraps a source with the InMemoryImageData protocol (``__iter__``, ``__len__``, ``resume_at``,
    ``set_epoch``) and yields ``transform(images, target, generator)`` for each of its batches;
    everything else (num_samples, batch_size, ...) is the source's. ``source`` is the untransformed
    data (precise BN reads the source of the outermost wrapper: unmixed batches)."""

    def __init__(self, source: Any, transform: BatchTransformFn, seed: int, stream: int):
        self.source = source
        self.transform = transform
        self.seed = seed
        self.stream = stream
        self.rank = distributed.rank()
        self.epoch = 0
        self.start_batch = 0

    def __getattr__(self, name: str) -> Any:
        if name == "source":  # not yet set (copy/unpickle): avoid recursing
            raise AttributeError(name)
        return getattr(self.source, name)

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start_batch = 0
        self.epoch = epoch
        self.source.set_epoch(epoch)

    def resume_at(self, epoch: int, batch_index: int) -> None:
        self.epoch, self.start_batch = epoch, batch_index
        self.source.resume_at(epoch, batch_index)

    def generator(self, epoch: int, index: int, device: torch.device) -> torch.Generator:
        """The generator of batch ``index`` of ``epoch``."""
        seed = _mix_seed(self.seed, epoch, index, self.stream, self.rank)
        return torch.Generator(device=device).manual_seed(seed)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, Any]]:
        epoch, start = self.epoch, self.start_batch
        self.start_batch = 0
        for index, (images, target) in enumerate(self.source, start):
            yield self.transform(images, target, self.generator(epoch, index, images.device))


__all__ = ["MIXUP_STREAM", "RANDOM_ERASING_STREAM", "SeededBatchTransform"]
