"""Tracking the best value of a test metric, for the hooks that act on it (best.pt, early stopping).

``BestMetric`` decides whether a test phase improved on the best so far ('max', 'min', or 'auto':
'min' for metrics named loss*, else 'max'; by more than ``min_delta``), and keeps the record
(value, epoch) as checkpoint state. The metric's name is checked against what a test phase
reports before the first epoch, so a typo fails in seconds rather than after an epoch.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Set

MODES = ("auto", "max", "min")


class BestMetric:
    def __init__(self, metric: str, mode: str = "auto", min_delta: float = 0.0, owner: str = "hook"):
        # ``owner``: the metric's config key; its siblings name the mode and min_delta keys in errors
        # (hooks.checkpoint.best_metric → best_mode, hooks.early_stopping.metric → mode, min_delta).
        prefix = owner[: -len("metric")] if owner.endswith("metric") else f"{owner} "
        if mode not in MODES:
            raise ValueError(f"{prefix}mode must be one of {MODES}, got {mode!r}")
        if min_delta < 0:
            raise ValueError(f"{prefix}min_delta must be ≥ 0, got {min_delta}")
        self.metric, self.min_delta, self.owner = metric, min_delta, owner
        self.higher_is_better = mode == "max" or (mode == "auto" and not metric.startswith("loss"))
        self.best: Optional[Dict[str, Any]] = None  # {"metric", "value", "epoch"}

    def check_known(self, task) -> None:
        """Raise if a test phase of ``task`` can't report the metric (skipped when hooks.extra may add
        metrics of their own: ``update`` checks at the first test phase then)."""
        if task.cfg.hooks.extra:
            return
        known = reported_test_metrics(task)
        if self.metric not in known:
            raise ValueError(f"{self.owner} {self.metric!r} is not a test metric of this run; "
                             f"choose one of {sorted(known)}")

    def update(self, metrics: Dict[str, Any], epoch: int) -> bool:
        """Record the phase's value if it is the best so far; True if it was. NaN/inf never improves."""
        if self.metric not in metrics:
            raise ValueError(f"{self.owner} {self.metric!r} is not among the test metrics "
                             f"{sorted(k for k in metrics if k not in ('phase_type', 'epoch'))}")
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return False
        if self.best is not None:
            gain = value - self.best["value"] if self.higher_is_better else self.best["value"] - value
            if gain <= self.min_delta:
                return False
        self.best = {"metric": self.metric, "value": value, "epoch": epoch}
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {"best": dict(self.best)} if self.best is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        best = state.get("best")
        # A record of another metric (the config changed between runs) does not carry over.
        self.best = dict(best) if best is not None and best.get("metric") == self.metric else None


def reported_test_metrics(task) -> Set[str]:
    """Names a test phase reports from the loss and the configured meters (and ``*_ema`` with an
    evaluated EMA). Reads the meters' (empty) state once: a sync, at start only."""
    names = {"loss", *(k for meter in task.meters for k in meter.value())}
    if task.cfg.ema.enabled and task.cfg.ema.evaluate:
        names |= {f"{k}_ema" for k in names}
    return names
