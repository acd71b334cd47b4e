"""Prepare the next batch on a side CUDA stream while the training step runs on the current one.

A loader hands over host batches (pinned uint8 from DataLoader workers, or file bytes to decode
on the GPU). ``prefetch_to_device`` runs ``prepare`` (host→device copy, decode, crop, normalize)
for batch i+1 on a side stream as soon as batch i has been handed to the caller, so the copy and
the preprocessing overlap the step instead of sitting in front of it. The caller's stream waits
for the side stream (an event, not a host sync) before it uses a batch, and every tensor of the
batch is ``record_stream``-ed on the caller's stream so the caching allocator doesn't reuse its
memory while the step still reads it. Without CUDA this is a plain map.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

import torch


def _tensors(value: Any):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def prefetch_to_device(batches: Iterable[Any], prepare: Callable[[Any], Optional[Any]],
                       device: torch.device) -> Iterator[Any]:
    """Yield ``prepare(b)`` for each host batch ``b``, one batch ahead on a side stream on CUDA.

    ``prepare`` may return None for a batch that has nothing left (all its files were bad): it
    is skipped.
    """
    device = torch.device(device)
    if device.type != "cuda":
        for b in batches:
            out = prepare(b)
            if out is not None:
                yield out
        return
    side = torch.cuda.Stream(device=device)
    it = iter(batches)

    def load() -> Any:
        for b in it:
            with torch.cuda.stream(side):
                out = prepare(b)
            if out is not None:
                return out
        return None

    nxt = load()
    while nxt is not None:
        current = torch.cuda.current_stream(device)
        current.wait_stream(side)
        for t in _tensors(nxt):
            if t.is_cuda:
                t.record_stream(current)
        ready, nxt = nxt, load()  # queue the next batch's work before the caller's step
        yield ready
