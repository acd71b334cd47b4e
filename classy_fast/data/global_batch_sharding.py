"""Which samples each rank reads from an in-memory epoch: shares *of each global batch*.

Every rank draws the same epoch permutation (seeded by seed and epoch, never by rank; the epoch in
the seed is the ``DistributedSampler.set_epoch`` of this scheme). The permutation is cut into
global batches of ``batch × world`` samples and rank r takes the r-th contiguous ``batch``-sized
share of each. So W ranks × batch B see, step for step, exactly the samples one process with batch
W·B sees: DDP's averaged gradient is that process's gradient (for models without batch statistics,
or with SyncBatchNorm), and a checkpoint resumes on another world size with the same global batch
at the same position. (``sharding.py``'s contiguous per-rank blocks, used by the file sources,
partition the epoch too but compose different global batches.)

With ``drop_last`` the tail of fewer than W·B samples is dropped; without it the last global batch
is padded to a multiple of W by repeating the permutation's first samples (as DistributedSampler
does), so each rank gets the same, non-zero number of samples and DDP sees one step per rank.

Evaluation: contiguous ranges whose sizes differ by at most one (the split ``sharding.py`` and
DALI's readers use too), no padding: every sample is counted exactly once across ranks whatever N
and W are (ranks may run one batch more or less: evaluation has no per-step collectives).
"""

from __future__ import annotations

from typing import Tuple

import torch



def check_shard(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid data shard: rank {rank} of world size {world_size}")


def eval_shard_range(num_samples: int, world_size: int, rank: int) -> Tuple[int, int]:
    """[start, stop) of the contiguous evaluation range of ``rank``: sizes differ by ≤ 1, no sample twice."""
    check_shard(rank, world_size)
    return rank * num_samples // world_size, (rank + 1) * num_samples // world_size


def train_batches_per_epoch(num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Steps per epoch: the same on every rank."""
    global_batch = batch_size * world_size
    if drop_last:
        return num_samples // global_batch
    return (num_samples + global_batch - 1) // global_batch


def cycle_to_length(order: torch.Tensor, length: int) -> torch.Tensor:
    """``order`` cut to ``length``, or padded by repeating it from its start as often as needed (as
    DistributedSampler does): with fewer samples than the padding needs (fewer than the ranks), one
    repeat would leave the last ranks an empty share, and a rank with fewer steps hangs DDP."""
    if length <= len(order):
        return order[:length]
    return order.repeat(-(-length // len(order)))[:length]


def padded_epoch_length(num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Length the epoch permutation must have so the last global batch splits evenly over ranks."""
    if drop_last or world_size == 1:
        return num_samples
    tail = num_samples % (batch_size * world_size)
    return num_samples + ((-tail) % world_size if tail else 0)


def train_batch_range(num_samples: int, batch_size: int, world_size: int, rank: int, index: int,
                      drop_last: bool) -> Tuple[int, int]:
    """[start, stop) of rank ``rank``'s share of global batch ``index`` in the (padded) permutation."""
    check_shard(rank, world_size)
    global_batch = batch_size * world_size
    start = index * global_batch
    length = padded_epoch_length(num_samples, batch_size, world_size, drop_last)
    per_rank = min(batch_size, (length - start) // world_size)  # smaller only in a padded last batch
    return start + rank * per_rank, start + (rank + 1) * per_rank
