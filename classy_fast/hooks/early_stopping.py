"""Early stopping: end the run when a test metric has not improved for ``patience`` test phases.

After each test phase the watched metric (``hooks.early_stopping.metric``; ``*_ema`` works when
the EMA is evaluated) is compared with the best so far (``BestMetric``: by more than
``min_delta``, in the metric's direction). After ``patience`` phases in a row without an
improvement the hook asks the task to stop: the phase loop ends there, the hooks' ``on_end``
runs (final checkpoint, export, predictions) and the last test phase's metrics are the run's.
Under DDP every rank sees the same all-reduced metrics and stops at the same phase.

The count and the decision are checkpoint state: a run resumed from a checkpoint written after
it stopped early stays stopped instead of training on.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

from ..recipe_config import EarlyStoppingConfig
from .base import ClassyHook
from .best_metric import BestMetric

log = logging.getLogger("classy_fast")


class EarlyStoppingHook(ClassyHook):
    name = "early_stopping"

    def __init__(self, cfg: EarlyStoppingConfig):
        if cfg.patience < 1:
            raise ValueError(f"hooks.early_stopping.patience must be ≥ 1, got {cfg.patience}")
        self.patience = cfg.patience
        self.tracker = BestMetric(cfg.metric, cfg.mode, cfg.min_delta, owner="hooks.early_stopping.metric")
        self.phases_without_improvement = 0
        self.stopped = False

    def on_start(self, task) -> None:
        self.tracker.check_known(task)
        if self.stopped:
            task.request_stop(f"the run stopped early before ({self._why()})")

    def on_phase_end(self, task) -> None:
        if task.phase["type"] != "test" or task.cfg.test_only or self.stopped:
            return
        if self.tracker.update(task.last_phase_metrics, task.phase["epoch"]):
            self.phases_without_improvement = 0
            return
        self.phases_without_improvement += 1
        if self.phases_without_improvement >= self.patience and task.phase_index < len(task.phases):
            self.stopped = True
            task.request_stop(self._why())

    def _why(self) -> str:
        best = self.tracker.best
        return (f"{self.tracker.metric} has not improved for {self.phases_without_improvement} test phases; "
                f"best {best['value']:.4f} at epoch {best['epoch'] + 1}" if best else
                f"{self.tracker.metric} never had a finite value")

    def state_dict(self) -> Dict[str, Any]:
        return {**self.tracker.state_dict(), "phases_without_improvement": self.phases_without_improvement,
                "stopped": self.stopped}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)
        self.phases_without_improvement = int(state.get("phases_without_improvement", 0))
        self.stopped = bool(state.get("stopped", False))
