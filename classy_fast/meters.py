"""Meters: metrics accumulated in device tensors during a phase and read on the host only when asked.

``update`` never synchronizes with the host (it only launches tensor ops), so meters can run inside
a captured train step. ``value()`` reads the tensors (a sync): call it at log intervals and phase
ends. ``sync()`` all-reduces the counts across ranks (a no-op on one process).

Targets may be int64 class indices (B,) or B×C scores (soft, one-hot or multi-hot). For accuracy a
B×C target counts its argmax as the true class (under mixup: the dominant one); precision@k and
recall@k treat every class with a positive target as relevant. A k larger than the class count
counts as the class count (top-k then holds every class) for accuracy, precision@k and recall@k alike.
"""

from __future__ import annotations

import time
from typing import Dict, List

import torch

from . import distributed
from .config import MeterConfig
from .registry import METERS


class Meter:
    """Base class: subclasses keep their state as a dict of device tensors in ``self.state``."""

    name = "meter"

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.state: Dict[str, torch.Tensor] = {}
        self.synced = False  # True between sync() (phase end) and the next reset/load: state is then global

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def value(self) -> Dict[str, float]:
        raise NotImplementedError

    def reset(self) -> None:
        for t in self.state.values():
            t.zero_()
        self.synced = False

    def sync(self) -> None:
        for t in self.state.values():
            distributed.all_reduce_sum(t)
        self.synced = True

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The global state: mid-phase under torch.distributed this reduces a copy over ranks (a collective)."""
        if distributed.world_size() > 1 and not self.synced:
            local = {k: v.clone() for k, v in self.state.items()}
            self.sync()
            out = {k: v.detach().cpu().clone() for k, v in self.state.items()}
            for k, v in self.state.items():
                v.copy_(local[k])
            self.synced = False
            return out
        return {k: v.detach().cpu().clone() for k, v in self.state.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Load a global state: rank 0 holds it and the other ranks start from zero, so the phase-end sum is right."""
        for k, v in self.state.items():
            v.copy_(state[k])
        if distributed.rank() != 0:
            self.reset()
        self.synced = False


def _rank_index(topk: List[int], num_classes: int, device: torch.device):
    """Largest k needed (capped at the class count) and, per requested k, the rank column to read.

    Built once at construction: a per-step host→device copy would stall the step and break capture.
    """
    kmax = min(max(topk), num_classes)
    return kmax, torch.tensor([min(k, kmax) - 1 for k in topk], device=device)


def _topk_hits(logits: torch.Tensor, target: torch.Tensor, kmax: int) -> torch.Tensor:
    """B×kmax bool: whether the i-th ranked prediction is a true class."""
    pred = logits.topk(kmax, dim=1).indices
    if target.ndim == 1:
        return pred == target.unsqueeze(1)
    return target.gather(1, pred) > 0


class AccuracyMeter(Meter):
    """Top-k accuracy: the fraction of samples whose true class is among the k highest scores."""

    name = "accuracy"

    def __init__(self, topk: List[int], num_classes: int, device: torch.device):
        super().__init__(device)
        if not topk or min(topk) < 1:
            raise ValueError(f"accuracy topk must be positive integers, got {topk}")
        self.topk = sorted(topk)
        self._kmax, self._rank_index = _rank_index(self.topk, num_classes, self.device)
        self.state = {
            "correct": torch.zeros(len(self.topk), dtype=torch.int64, device=self.device),
            "count": torch.zeros((), dtype=torch.int64, device=self.device),
        }

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        labels = target if target.ndim == 1 else target.argmax(dim=1)
        hits = _topk_hits(logits, labels, self._kmax)
        # One label per row and distinct top-k indices: a row has at most one hit, so the samples hit
        # within the first r+1 ranks are a running sum over ranks of the hits per rank (4 launches).
        cum = hits.sum(dim=0).cumsum(dim=0)
        self.state["correct"] += cum.index_select(0, self._rank_index)
        self.state["count"] += labels.numel()

    def value(self) -> Dict[str, float]:
        correct, count = self.state["correct"].tolist(), int(self.state["count"])
        return {f"top{k}": (c / count if count else 0.0) for k, c in zip(self.topk, correct)}


class PrecisionRecallAtKMeter(Meter):
    """precision@k = relevant classes in the top k / k; recall@k = relevant in the top k / all relevant."""

    def __init__(self, topk: List[int], num_classes: int, device: torch.device, kind: str):
        super().__init__(device)
        if not topk or min(topk) < 1:
            raise ValueError(f"{kind}@k topk must be positive integers, got {topk}")
        self.topk, self.kind, self.name = sorted(topk), kind, f"{kind}_at_k"
        self.num_classes = num_classes
        self._kmax, self._rank_index = _rank_index(self.topk, num_classes, self.device)
        self.state = {
            "hits": torch.zeros(len(self.topk), dtype=torch.float64, device=self.device),
            "relevant": torch.zeros((), dtype=torch.float64, device=self.device),
            "count": torch.zeros((), dtype=torch.int64, device=self.device),
        }

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        hits = _topk_hits(logits, target, self._kmax).to(torch.float64).cumsum(dim=1).sum(dim=0)
        self.state["hits"] += hits.index_select(0, self._rank_index)
        self.state["relevant"] += target.numel() if target.ndim == 1 else (target > 0).sum()
        self.state["count"] += target.shape[0]

    def value(self) -> Dict[str, float]:
        hits, count = self.state["hits"].tolist(), int(self.state["count"])
        relevant = float(self.state["relevant"])
        if self.kind == "precision":
            # k is capped at the class count, as for accuracy: the top k of C < k classes are the C classes.
            return {f"precision@{k}": (h / (min(k, self.num_classes) * count) if count else 0.0)
                    for k, h in zip(self.topk, hits)}
        return {f"recall@{k}": (h / relevant if relevant else 0.0) for k, h in zip(self.topk, hits)}


class LossMeter(Meter):
    """Mean loss over samples, plus the first step whose loss was not finite (-1: none)."""

    name = "loss"
    # "No non-finite step yet" inside the state is the largest int64, so that the earliest bad step wins
    # both the per-step minimum and the MIN all-reduce over ranks (with -1, MAX picked the latest rank's).
    # Checkpoints keep -1 for none (state_dict / load_state_dict convert), as before.
    NONE = torch.iinfo(torch.int64).max

    def __init__(self, device: torch.device):
        super().__init__(device)
        self.state = {
            "sum": torch.zeros((), dtype=torch.float64, device=self.device),
            "count": torch.zeros((), dtype=torch.int64, device=self.device),
            "first_nonfinite_step": torch.full((), self.NONE, dtype=torch.int64, device=self.device),
        }
        # A constant operand (not state): torch.where with a Python int fills a new device tensor each step.
        self._none = torch.full((), self.NONE, dtype=torch.int64, device=self.device)

    def reset(self) -> None:
        super().reset()
        self.state["first_nonfinite_step"].fill_(self.NONE)

    def update_loss(self, loss: torch.Tensor, batch_size: int, step: torch.Tensor) -> None:
        """``loss``: the batch-mean loss (0-dim); ``step``: a 0-dim int64 device tensor counting training steps (the step a NaN report names).

        Six small launches per step, ten before (the eager step at small images is launch-bound):
        the sum is accumulated in float64 by one add; ``loss * 0 == 0`` is the finiteness test
        (inf * 0 and NaN * 0 are NaN) in two launches where ``torch.isfinite`` takes four."""
        loss = loss.detach()
        self.state["sum"].add_(loss, alpha=batch_size)
        self.state["count"] += batch_size
        first = self.state["first_nonfinite_step"]
        torch.minimum(first, torch.where(loss.mul(0).eq(0), self._none, step), out=first)

    def sync(self) -> None:
        distributed.all_reduce_sum(self.state["sum"])
        distributed.all_reduce_sum(self.state["count"])
        distributed.all_reduce_min(self.state["first_nonfinite_step"])
        self.synced = True

    def first_nonfinite_step(self) -> int:
        """The earliest training step (over ranks once synced) whose loss was not finite; -1 if none."""
        step = int(self.state["first_nonfinite_step"])
        return -1 if step == self.NONE else step

    def state_dict(self) -> Dict[str, torch.Tensor]:
        out = super().state_dict()
        first = out["first_nonfinite_step"]
        first.copy_(torch.where(first == self.NONE, torch.full_like(first, -1), first))
        return out

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        state = dict(state)
        first = torch.as_tensor(state["first_nonfinite_step"])
        state["first_nonfinite_step"] = torch.where(first < 0, torch.full_like(first, self.NONE), first)
        super().load_state_dict(state)

    def value(self) -> Dict[str, float]:
        count = int(self.state["count"])
        return {"loss": float(self.state["sum"]) / count if count else float("nan")}


class ThroughputMeter:
    """Images per second over a phase, measured on the host (batch sizes are host integers)."""

    name = "throughput"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.images = 0

    def update(self, batch_size: int) -> None:
        self.images += batch_size

    def sync(self) -> None:
        """Count every rank's images (phase end): images_per_sec is then the job's throughput."""
        self.images = int(distributed.all_reduce_host_sum(self.images))

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def value(self) -> Dict[str, float]:
        s = self.seconds()
        return {"images_per_sec": self.images / s if s > 0 else 0.0, "seconds": s}


@METERS.register("accuracy")
def _accuracy(cfg: MeterConfig, num_classes: int, device: torch.device) -> Meter:
    return AccuracyMeter(cfg.topk, num_classes, device)


@METERS.register("precision_at_k")
def _precision(cfg: MeterConfig, num_classes: int, device: torch.device) -> Meter:
    return PrecisionRecallAtKMeter(cfg.topk, num_classes, device, "precision")


@METERS.register("recall_at_k")
def _recall(cfg: MeterConfig, num_classes: int, device: torch.device) -> Meter:
    return PrecisionRecallAtKMeter(cfg.topk, num_classes, device, "recall")


def build_meters(cfgs: List[MeterConfig], num_classes: int, device: torch.device) -> List[Meter]:
    return [METERS.get(c.name)(c, num_classes, device) for c in cfgs]
