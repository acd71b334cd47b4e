"""Learning-rate schedules as pure functions of training progress, written into device lr tensors.

A schedule maps ``where`` ∈ [0, 1] (the fraction of the run done) to a factor of the peak learning
rate. Because it depends only on the update count, a resumed run recomputes exactly the same value:
there is no scheduler state to save beyond the task's counters.

``LearningRateController`` writes ``base_lr × factor`` into each param group's lr. When the lr is a
0-dim device tensor (classy_fast's default) it is updated in place with ``fill_``, which launches a
tiny kernel and never synchronizes, so a captured optimizer step reads the new value on replay.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List

import torch

from .config import ConfigError, SchedulerConfig, _coerce, _from_dict
from .registry import SCHEDULERS

log = logging.getLogger("classy_fast")

Schedule = Callable[[float], float]


@SCHEDULERS.register("constant")
def constant(cfg: SchedulerConfig, epochs: int) -> Schedule:
    return lambda where: 1.0


@SCHEDULERS.register("step")
def step(cfg: SchedulerConfig, epochs: int) -> Schedule:
    size = cfg.step_size_epochs / epochs  # step_size_epochs > 0: checked by build_schedule (naming the key)
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
    """Consecutive schedules, each over a 'length' fraction of the run and evaluated on its own progress.

    The parts are laid out on the progress of the whole run, warmup included (``at_run_epochs``), as
    the docs say: a part of length 0.5 ends at half the run with or without a warmup, and a 'step'
    part's steps are epochs of the run counted from the part's start."""
    key = "scheduler"  # composites do not nest: this is always the run's scheduler
    if not cfg.schedules:
        raise ConfigError(f"scheduler 'composite' needs a non-empty {key}.schedules list")
    parts: List[tuple] = []
    for i, spec in enumerate(cfg.schedules):
        part_key = f"{key}.schedules[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{part_key}: expected a mapping {{name, length, ...}}, got {spec!r}")
        spec = dict(spec)
        if "length" not in spec or "name" not in spec:
            raise ConfigError(f"{part_key}: needs 'name' and 'length' (fraction of the run)")
        length = _coerce(spec.pop("length"), float, f"{part_key}.length", "config")
        if not length > 0:  # also NaN
            raise ConfigError(f"{part_key}.length must be > 0, got {length}")
        spec.setdefault("warmup_epochs", 0.0)  # the run-level default warmup belongs to the whole run, not each part
        # A part's lr changes when the run's does: per step or per epoch is the run's setting.
        spec.setdefault("update_interval", cfg.update_interval)
        sub_cfg = _from_dict(SchedulerConfig, spec, part_key, "config")
        if sub_cfg.update_interval != cfg.update_interval:
            raise ConfigError(f"{part_key}.update_interval: set update_interval on the scheduler, not per part "
                              f"(scheduler.update_interval is {cfg.update_interval!r})")
        if sub_cfg.name == "composite":
            raise ConfigError(f"{part_key}: composite schedules do not nest")
        sub_epochs = length * epochs  # > 0: the part's own length in epochs of the run
        parts.append((length, build_schedule(sub_cfg, sub_epochs, part_key)))
    total = sum(length for length, _ in parts)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{key}.schedules: lengths must add up to 1, got {total}")

    def schedule(where: float) -> float:
        start = 0.0
        for length, sub in parts:
            # The epsilon keeps a boundary that float sums round up (0.1 + 0.2 > 0.3) in the next part.
            if where < start + length - 1e-9 or sub is parts[-1][1]:
                return sub(min(max((where - start) / length, 0.0), 1.0))
            start += length
        return parts[-1][1](1.0)

    return at_run_epochs(schedule)


def _check(cfg: SchedulerConfig, epochs: float, key: str) -> None:
    """Reject settings that would silently give a meaningless schedule; errors name the key."""
    if not epochs > 0:  # the run's epochs (a composite part's are a fraction of them): schedules divide by it
        raise ConfigError(f"epochs must be ≥ 1, got {epochs}")
    if cfg.warmup_epochs is not None and not cfg.warmup_epochs >= 0:
        raise ConfigError(f"{key}.warmup_epochs must be ≥ 0 (0: no warmup), got {cfg.warmup_epochs}")
    if not 0.0 <= cfg.warmup_start_factor <= 1.0:
        raise ConfigError(f"{key}.warmup_start_factor must be in [0, 1] (the fraction of the lr the warmup "
                          f"starts from), got {cfg.warmup_start_factor}")
    if cfg.name == "polynomial" and not cfg.power > 0:
        raise ConfigError(f"{key}.power must be > 0, got {cfg.power}")
    if cfg.name == "step" and not cfg.step_size_epochs > 0:
        raise ConfigError(f"{key}.step_size_epochs must be > 0, got {cfg.step_size_epochs}")
    if cfg.name in ("step", "multistep") and not (math.isfinite(cfg.gamma) and cfg.gamma >= 0):
        raise ConfigError(f"{key}.gamma must be a finite factor ≥ 0, got {cfg.gamma}")
    if cfg.name in ("cosine", "linear", "polynomial") and not (math.isfinite(cfg.end_factor) and cfg.end_factor >= 0):
        raise ConfigError(f"{key}.end_factor must be a finite factor ≥ 0, got {cfg.end_factor}")
    if cfg.name == "multistep":
        if any(not (math.isfinite(m) and m >= 0) for m in cfg.milestones_epochs):
            raise ConfigError(f"{key}.milestones_epochs must be epochs ≥ 0, got {cfg.milestones_epochs}")
        late = [m for m in cfg.milestones_epochs if m >= epochs]
        if late:  # torch's MultiStepLR allows it too; most often a recipe's milestones on a shortened run
            log.warning("%s.milestones_epochs %s are not before the end of the run (%g epochs): no decay there",
                        key, late, epochs)
    if (cfg.update_interval == "epoch" and cfg.warmup_epochs is not None
            and not float(cfg.warmup_epochs).is_integer()):
        # Per-epoch updates would hold the whole first epoch at warmup_start_factor for a warmup that ends
        # inside it: the warmup must end on an epoch boundary.
        raise ConfigError(f"{key}.warmup_epochs must be a whole number of epochs with "
                          f"{key}.update_interval='epoch', got {cfg.warmup_epochs}")


def default_warmup_epochs(cfg: SchedulerConfig, epochs: float) -> float:
    """warmup_epochs, or its default when None: min(1, epochs / 5) epochs per step; per epoch, the whole
    epochs of that (1 from 5 epochs on, else none), since a per-epoch lr cannot ramp inside an epoch."""
    if cfg.warmup_epochs is not None:
        return cfg.warmup_epochs
    warmup = min(1.0, epochs / 5)
    return float(math.floor(warmup)) if cfg.update_interval == "epoch" else warmup


def build_schedule(cfg: SchedulerConfig, epochs: float, key: str = "scheduler") -> Schedule:
    """The registered schedule, preceded by a linear warmup over ``warmup_epochs`` when set.

    ``key``: the config key of ``cfg`` that errors name ('scheduler', 'scheduler.schedules[1]')."""
    _check(cfg, epochs, key)
    main = SCHEDULERS.get(cfg.name)(cfg, epochs)
    warmup = default_warmup_epochs(cfg, epochs)
    if warmup <= 0:
        return main
    w = warmup / epochs
    if w >= 1:
        raise ConfigError(f"{key}.warmup_epochs ({warmup}) must be shorter than the run ({epochs} epochs)")
    start = cfg.warmup_start_factor

    # Curves (cosine, linear, ...) run over what follows the warmup; step milestones and composite parts
    # stay at their epochs of the run.
    absolute = getattr(main, "at_run_epochs", False)
    # The warmup ramps up to the value the schedule has where the warmup ends (no jump there).
    peak = main(w) if absolute else main(0.0)

    def warmed(where: float) -> float:
        if where < w:
            return (start + (1.0 - start) * where / w) * peak
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
        """Resume: the groups keep this run's base lrs (the configured lr wins over the checkpoint's
        ``base_lrs``; ``ClassificationTask.load_state_dict`` warns when they differ). The next
        ``set_for_update`` writes the lr tensors whatever the last factor was."""
        self.last_factor = float("nan")
