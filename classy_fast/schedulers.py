"""Learning-rate schedules as pure functions of training progress, written into device lr tensors.

A schedule maps ``where`` ∈ [0, 1] (the fraction of the run done) to a factor of the peak learning
rate. Because it depends only on the update count, a resumed run recomputes exactly the same value:
there is no scheduler state to save beyond the task's counters.

``LearningRateController`` writes ``base_lr × factor`` into each param group's lr. When the lr is a
0-dim device tensor (classy_fast's default) it is updated in place with ``fill_``, which launches a
tiny kernel and never synchronizes, so a captured optimizer step reads the new value on replay.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import torch

from .config import ConfigError, SchedulerConfig, _from_dict
from .registry import SCHEDULERS

Schedule = Callable[[float], float]


@SCHEDULERS.register("constant")
def constant(cfg: SchedulerConfig, epochs: int) -> Schedule:
    return lambda where: 1.0


@SCHEDULERS.register("step")
def step(cfg: SchedulerConfig, epochs: int) -> Schedule:
    size = cfg.step_size_epochs / epochs
    if size <= 0:
        raise ConfigError(f"scheduler.step_size_epochs must be positive, got {cfg.step_size_epochs}")
    # The small epsilon keeps where = k·size (float-rounded) on the decayed side of the boundary.
    return at_run_epochs(lambda where: cfg.gamma ** math.floor(where / size + 1e-9))


@SCHEDULERS.register("multistep")
def multistep(cfg: SchedulerConfig, epochs: int) -> Schedule:
    marks = sorted(m / epochs for m in cfg.milestones_epochs)
    return at_run_epochs(lambda where: cfg.gamma ** sum(1 for m in marks if where + 1e-9 >= m))


def at_run_epochs(schedule: Schedule) -> Schedule:
    """Mark a schedule whose steps are epochs of the whole run (decay at epoch 30 means epoch 30 with or
    without a warmup before it, as in Goyal et al.'s recipe): the warmup does not rescale its progress."""
    schedule.at_run_epochs = True
    return schedule


@SCHEDULERS.register("cosine")
def cosine(cfg: SchedulerConfig, epochs: int) -> Schedule:
    end = cfg.end_factor
    return lambda where: end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * min(where, 1.0)))


@SCHEDULERS.register("linear")
def linear(cfg: SchedulerConfig, epochs: int) -> Schedule:
    end = cfg.end_factor
    return lambda where: 1.0 + (end - 1.0) * min(where, 1.0)


@SCHEDULERS.register("polynomial")
def polynomial(cfg: SchedulerConfig, epochs: int) -> Schedule:
    end, power = cfg.end_factor, cfg.power
    return lambda where: end + (1.0 - end) * (1.0 - min(where, 1.0)) ** power


@SCHEDULERS.register("composite")
def composite(cfg: SchedulerConfig, epochs: int) -> Schedule:
    """Consecutive schedules, each over a 'length' fraction of the run and evaluated on its own progress."""
    if not cfg.schedules:
        raise ConfigError("scheduler 'composite' needs a non-empty scheduler.schedules list")
    parts: List[tuple] = []
    for i, spec in enumerate(cfg.schedules):
        spec = dict(spec)
        if "length" not in spec or "name" not in spec:
            raise ConfigError(f"scheduler.schedules[{i}]: needs 'name' and 'length' (fraction of the run)")
        length = float(spec.pop("length"))
        spec.setdefault("warmup_epochs", 0.0)  # the run-level default warmup belongs to the whole run, not each part
        sub_cfg = _from_dict(SchedulerConfig, spec, f"scheduler.schedules[{i}]", "config")
        if sub_cfg.name == "composite":
            raise ConfigError(f"scheduler.schedules[{i}]: composite schedules do not nest")
        sub_epochs = max(length * epochs, 1e-12)
        parts.append((length, build_schedule(sub_cfg, sub_epochs)))
    total = sum(length for length, _ in parts)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"scheduler.schedules: lengths must add up to 1, got {total}")

    def schedule(where: float) -> float:
        start = 0.0
        for length, sub in parts:
            if where < start + length or sub is parts[-1][1]:
                return sub(min(max((where - start) / length, 0.0), 1.0))
            start += length
        return parts[-1][1](1.0)

    return schedule


def build_schedule(cfg: SchedulerConfig, epochs: float) -> Schedule:
    """The registered schedule, preceded by a linear warmup over ``warmup_epochs`` when set."""
    main = SCHEDULERS.get(cfg.name)(cfg, epochs)
    warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else min(1.0, epochs / 5)
    if warmup <= 0:
        return main
    w = warmup / epochs
    if w >= 1:
        raise ConfigError(f"scheduler.warmup_epochs ({warmup}) must be shorter than the run ({epochs} epochs)")
    start = cfg.warmup_start_factor

    # Curves (cosine, linear, ...) run over what follows the warmup; step milestones stay at their epochs.
    absolute = getattr(main, "at_run_epochs", False)

    def warmed(where: float) -> float:
        if where < w:
            return (start + (1.0 - start) * where / w) * main(0.0)
        return main(where if absolute else (where - w) / (1.0 - w))

    return warmed


class LearningRateController:
    """Sets every param group's lr to ``group['base_lr'] × schedule(where)``.

    ``updates_per_epoch``: optimizer updates per train phase; with ``interval='epoch'`` the factor
    changes only at epoch boundaries.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, epochs: int,
                 updates_per_epoch: int, interval: str = "step"):
        if updates_per_epoch < 1:
            raise ValueError("updates_per_epoch must be ≥ 1 (is the training set smaller than one batch?)")
        self.optimizer = optimizer
        self.schedule = schedule
        self.epochs = epochs
        self.updates_per_epoch = updates_per_epoch
        self.interval = interval
        for group in optimizer.param_groups:
            group.setdefault("base_lr", float(group["lr"]) if not torch.is_tensor(group["lr"]) else float(group["lr"].item()))
        self.last_factor = float("nan")

    def where(self, update: int) -> float:
        total = self.epochs * self.updates_per_epoch
        if self.interval == "epoch":
            return (update // self.updates_per_epoch) / self.epochs
        return update / total

    def set_for_update(self, update: int) -> None:
        """Write the lr that optimizer update number ``update`` (0-based) will use."""
        factor = self.schedule(self.where(update))
        if factor == self.last_factor:  # per-epoch schedules: nothing to launch between epochs' first steps
            return
        self.last_factor = factor
        for group in self.optimizer.param_groups:
            value = group["base_lr"] * factor
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(value)
            else:
                group["lr"] = value

    def lr_of_update(self, update: int) -> float:
        """The first group's lr at optimizer update ``update`` (0-based), computed on the host: no device read."""
        return self.optimizer.param_groups[0]["base_lr"] * self.schedule(self.where(update))

    def state_dict(self) -> Dict[str, Any]:
        return {"base_lrs": [g["base_lr"] for g in self.optimizer.param_groups]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for group, base in zip(self.optimizer.param_groups, state["base_lrs"]):
            group["base_lr"] = base
        self.last_factor = float("nan")
