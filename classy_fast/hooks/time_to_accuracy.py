"""Time-to-accuracy: wall seconds from the start of training until a test phase reaches a target top-1.

One-time costs (CUDA-graph capture, the first compiled call) are measured by the train step and
reported separately, and subtracted from the figure, as speed runs conventionally do. The clock and
the result are checkpoint state: a resumed run counts on from the seconds spent before the
checkpoint, and a target reached before it is not reported again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

from .. import distributed
from .base import ClassyHook

log = logging.getLogger("classy_fast")


class TimeToAccuracyHook(ClassyHook):
    name = "time_to_accuracy"

    def __init__(self, target_top1: float = 0.93):
        if not 0.0 <= target_top1 <= 1.0:  # top1 is a fraction: 93 (for 93%) would never be reached
            raise ValueError(f"hooks.extra: time_to_accuracy target_top1 must be in [0, 1] (a fraction, 0.93 for "
                             f"93%), got {target_top1}")
        self.target = target_top1
        self.start: Optional[float] = None
        self.reached_seconds: Optional[float] = None
        self.reached_epoch: Optional[int] = None
        self.prior_seconds = 0.0  # spent before the checkpoint this run resumed from

    def on_start(self, task) -> None:
        self.start = time.perf_counter() - self.prior_seconds

    def one_time_seconds(self, task) -> float:
        return sum(float(getattr(step, "capture_seconds", 0.0)) for step in (task._train_step, task._eval_step))

    def on_phase_end(self, task) -> None:
        m = task.last_phase_metrics
        if self.reached_seconds is not None or m["phase_type"] != "test" or m.get("top1", 0.0) < self.target:
            return
        one_time = self.one_time_seconds(task)
        self.reached_seconds = time.perf_counter() - self.start - one_time
        self.reached_epoch = m["epoch"] + 1
        m["time_to_target_seconds"] = self.reached_seconds
        if distributed.is_primary():
            log.info("reached %.2f%% test top-1 (target %.2f%%) after epoch %d: %.2f s of wall time "
                     "(excluding %.2f s one-time capture/compilation)", 100 * m["top1"], 100 * self.target,
                     self.reached_epoch, self.reached_seconds, one_time)

    def on_end(self, task) -> None:
        if distributed.is_primary() and self.reached_seconds is None and not task.failed and not task.preempted:
            log.info("target %.2f%% test top-1 not reached (last: %.2f%%)", 100 * self.target,
                     100 * task.last_phase_metrics.get("top1", 0.0))

    def state_dict(self) -> Dict[str, Any]:
        elapsed = time.perf_counter() - self.start if self.start is not None else self.prior_seconds
        return {"elapsed_seconds": elapsed, "reached_seconds": self.reached_seconds, "reached_epoch": self.reached_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.prior_seconds = float(state.get("elapsed_seconds", 0.0))
        self.reached_seconds, self.reached_epoch = state.get("reached_seconds"), state.get("reached_epoch")
