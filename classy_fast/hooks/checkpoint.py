"""Checkpoint hook: OUTPUT/checkpoints/last.pt after train phases (and every N steps if asked),
periodic copies with keep-last-k, always a final one; with ``best_metric``, best.pt after each test
phase that improves that metric. Only the primary rank writes.

The best value and its epoch are part of the hook's checkpoint state, so a resumed run only
replaces best.pt with something better than what the run had before it stopped.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import Any, Dict, Optional

from .. import distributed
from ..checkpoint import save_atomic
from .base import ClassyHook
from .best_metric import BestMetric

log = logging.getLogger("classy_fast")


class CheckpointHook(ClassyHook):
    name = "checkpoint"

    def __init__(self, directory: str, every_n_phases: int = 1, keep_last: int = 2, save_periodic: bool = False,
                 every_n_steps: int = 0, best_metric: Optional[str] = None, best_mode: str = "auto"):
        if every_n_phases < 1:
            raise ValueError(f"hooks.checkpoint.every_n_phases must be ≥ 1, got {every_n_phases}")
        if keep_last < 0 or every_n_steps < 0:
            raise ValueError(f"hooks.checkpoint.keep_last and every_n_steps must be ≥ 0, got {keep_last} and "
                             f"{every_n_steps}")
        self.directory = directory
        self.every_n_phases = every_n_phases
        self.keep_last = keep_last
        self.save_periodic = save_periodic
        self.every_n_steps = every_n_steps
        # The record of best.pt; None: no best checkpoint.
        self.best = BestMetric(best_metric, best_mode, owner="hooks.checkpoint.best_metric") if best_metric else None

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
        if self.keep_last > 0:  # 0: keep every copy
            for old in sorted(glob.glob(os.path.join(self.directory, "phase_*.pt")))[: -self.keep_last]:
                os.unlink(old)

    def on_step(self, task) -> None:
        # Not at the phase's last step: the phase end saves right after (the same point, one phase on).
        if (self.every_n_steps and task.in_train_phase and task.step_in_phase % self.every_n_steps == 0
                and task.step_in_phase < task.phase_length):
            self.save(task)

    def on_start(self, task) -> None:
        if self.best is not None:
            self.best.check_known(task)

    def on_phase_end(self, task) -> None:
        if task.phase["type"] == "train":
            if task.train_phases_done % self.every_n_phases == 0:
                self.save(task, periodic=self.save_periodic)
        elif self.best is not None and not task.cfg.test_only:
            if self.best.update(task.last_phase_metrics, task.phase["epoch"]):
                task.check_finite()
                state = task.state_dict()  # holds the new record: best.pt knows what it is the best of
                if distributed.is_primary():
                    save_atomic(state, self.best_path)
                    log.info("best %s so far (%.4f, epoch %d): %s", self.best.metric, self.best.best["value"],
                             task.phase["epoch"] + 1, self.best_path)

    def on_end(self, task) -> None:
        if not task.failed and not task.cfg.test_only:
            self.save(task)

    def state_dict(self) -> Dict[str, Any]:
        return self.best.state_dict() if self.best is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.best is not None:
            self.best.load_state_dict(state)
