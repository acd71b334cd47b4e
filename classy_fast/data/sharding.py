"""Contiguous per-rank shares of an epoch, as the image-file sources (and DALI's readers) cut them.

Every rank draws the same permutation of the n samples (seeded by seed and epoch, never by rank)
and reads one contiguous share of it: the split ``fn.readers.file(shard_id, num_shards)`` makes
of a file list, so a DALI pipeline and the torch loaders shard alike, and a batch's files follow
from its position alone. (In-memory data shares each global batch instead:
global_batch_sharding.py; both partition the epoch.)

- train: every rank gets the same number of samples (DDP needs equal step counts). With
  ``drop_last`` the order is cut to a multiple of the world size (the cut samples differ per
  epoch); without it, padded to one by repeating the order from its start, as often as needed
  (as DistributedSampler does).
- eval: no shuffle, no padding: rank r gets ``[n*r // world, n*(r+1) // world)``
  (global_batch_sharding.eval_shard_range), every sample exactly once across ranks.
"""

from __future__ import annotations

from typing import Tuple

from .global_batch_sharding import check_shard, cycle_to_length, eval_shard_range

__all__ = ["check_shard", "cycle_to_length", "eval_shard_range", "train_epoch_length", "train_share_range", "train_share_size"]


def train_share_size(n: int, world_size: int, drop_last: bool) -> int:
    """Training samples each rank reads per epoch (equal on every rank)."""
    return n // world_size if drop_last else -(-n // world_size)


def train_epoch_length(n: int, world_size: int, drop_last: bool) -> int:
    """Length of the epoch order after the cut (``drop_last``) or the padding to a multiple of the world size."""
    return train_share_size(n, world_size, drop_last) * world_size


def train_share_range(n: int, world_size: int, rank: int, drop_last: bool) -> Tuple[int, int]:
    """[start, stop) of rank's training share within the cut or padded epoch order."""
    check_shard(rank, world_size)
    size = train_share_size(n, world_size, drop_last)
    return rank * size, (rank + 1) * size
