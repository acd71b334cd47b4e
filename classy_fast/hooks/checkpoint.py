"""Checkpoint hook: OUTPUT/checkpoints/last.pt after train phases (and every N steps if asked),
periodic copies with keep-last-k, always a final one; with ``best_metric``, best.pt after each test
phase that improves that metric. Only the primary rank writes.

The best value and its epoch are part of the hook's checkpoint state, so a resumed run only
replaces best.pt with something better than what the run had before it stopped.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
from typing import Any, Dict, Optional, Set

from .. import distributed
from ..checkpoint import save_atomic
from .base import ClassyHook

log = logging.getLogger("classy_fast")

BEST_MODES = ("auto", "max", "min")


class CheckpointHook(ClassyHook):
    name = "checkpoint"

    def __init__(self, directory: str, every_n_phases: int = 1, keep_last: int = 2, save_periodic: bool = False,
                 every_n_steps: int = 0, best_metric: Optional[str] = None, best_mode: str = "auto"):
        if every_n_phases < 1:
            raise ValueError(f"hooks.checkpoint.every_n_phases must be ≥ 1, got {every_n_phases}")
        if best_mode not in BEST_MODES:
            raise ValueError(f"hooks.checkpoint.best_mode must be one of {BEST_MODES}, got {best_mode!r}")
        self.directory = directory
        self.every_n_phases = every_n_phases
        self.keep_last = keep_last
        self.save_periodic = save_periodic
        self.every_n_steps = every_n_steps
        self.best_metric = best_metric
        self.higher_is_better = best_mode == "max" or (best_mode == "auto" and not str(best_metric).startswith("loss"))
        self.best: Optional[Dict[str, Any]] = None  # {"metric", "value", "epoch"} of best.pt

    @property
    def last_path(self) -> str:
        return os.path.join(self.directory, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.directory, "best.pt")

    def save(self, task, periodic: bool = False) -> None:
        # A non-finite loss must never reach disk as the latest state: check (a sync) before writing.
        task.check_finite()
        state = task.state_dict()
        if distributed.is_primary():
            save_atomic(state, self.last_path)
            if periodic:
                self._periodic_copy(task)

    def _periodic_copy(self, task) -> None:
        path = os.path.join(self.directory, f"phase_{task.train_phases_done:04d}.pt")
        shutil.copyfile(self.last_path, path + ".tmp")
        os.replace(path + ".tmp", path)
        if self.keep_last > 0:
            for old in sorted(glob.glob(os.path.join(self.directory, "phase_*.pt")))[: -self.keep_last]:
                os.unlink(old)

    def on_step(self, task) -> None:
        if self.every_n_steps and task.in_train_phase and task.step_in_phase % self.every_n_steps == 0:
            self.save(task)

    def on_start(self, task) -> None:
        # Fail before the first epoch when the name can't be a test metric (hooks under hooks.extra
        # may add metrics of their own: those names are checked at the first test phase instead).
        if self.best_metric is not None and not task.cfg.hooks.extra:
            known = reported_test_metrics(task)
            if self.best_metric not in known:
                raise ValueError(f"hooks.checkpoint.best_metric {self.best_metric!r} is not a test metric of this "
                                 f"run; choose one of {sorted(known)}")

    def on_phase_end(self, task) -> None:
        if task.phase["type"] == "train":
            if task.train_phases_done % self.every_n_phases == 0:
                self.save(task, periodic=self.save_periodic)
        elif self.best_metric is not None and not task.cfg.test_only:
            self._save_if_best(task)

    def _save_if_best(self, task) -> None:
        metrics = task.last_phase_metrics
        if self.best_metric not in metrics:
            raise ValueError(f"hooks.checkpoint.best_metric {self.best_metric!r} is not among the test metrics "
                             f"{sorted(k for k in metrics if k not in ('phase_type', 'epoch'))}")
        value = float(metrics[self.best_metric])
        if not math.isfinite(value):
            return
        if self.best is not None:
            old = self.best["value"]
            if (value <= old) if self.higher_is_better else (value >= old):
                return
        self.best = {"metric": self.best_metric, "value": value, "epoch": task.phase["epoch"]}
        task.check_finite()
        state = task.state_dict()  # holds self.best: best.pt knows what it is the best of
        if distributed.is_primary():
            save_atomic(state, self.best_path)
            log.info("best %s so far (%.4f, epoch %d): %s", self.best_metric, value, task.phase["epoch"] + 1,
                     self.best_path)

    def state_dict(self) -> Dict[str, Any]:
        return {"best": dict(self.best)} if self.best is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        best = state.get("best")
        # A different best_metric now: its first value starts a new record.
        self.best = dict(best) if best is not None and best.get("metric") == self.best_metric else None

    def on_end(self, task) -> None:
        if not task.failed and not task.cfg.test_only:
            self.save(task)


def reported_test_metrics(task) -> Set[str]:
    """Names a test phase reports from the loss and the configured meters (and ``*_ema`` with an
    evaluated EMA). Reads the meters' (empty) state once: a sync, at start only."""
    names = {"loss", *(k for meter in task.meters for k in meter.value())}
    if task.cfg.ema.enabled and task.cfg.ema.evaluate:
        names |= {f"{k}_ema" for k in names}
    return names
