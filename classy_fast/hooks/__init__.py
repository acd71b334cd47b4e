"""Hooks: the task's extension points, and the registry that builds them from the config."""

from __future__ import annotations

import os
from typing import List

from ..config import ConfigError, TrainConfig, output_name
from ..registry import HOOKS
from .base import ClassyHook
from .checkpoint import CheckpointHook
from .complexity import ModelComplexityHook
from .early_stopping import EarlyStoppingHook
from .ema import EMAHook
from .export import ExportHook
from .logging import ConsoleLoggerHook
from .metrics_files import MetricsFilesHook
from .precise_bn import PreciseBNHook
from .predictions import PredictionsHook
from .profiler import ProfilerHook
from .progress import ProgressBarHook
from .tensorboard import TensorboardHook
from .time_to_accuracy import TimeToAccuracyHook

__all__ = [
    "ClassyHook", "CheckpointHook", "ConsoleLoggerHook", "EarlyStoppingHook", "EMAHook", "ExportHook", "MetricsFilesHook",
    "ModelComplexityHook", "PreciseBNHook", "PredictionsHook", "ProfilerHook", "ProgressBarHook", "TensorboardHook",
    "TimeToAccuracyHook", "build_hooks",
]

HOOKS.register("checkpoint", lambda cfg, run: CheckpointHook(os.path.join(run.output_dir, "checkpoints"), **cfg))
HOOKS.register("console_logger", lambda cfg, run: ConsoleLoggerHook(**cfg))
HOOKS.register("progress_bar", lambda cfg, run: ProgressBarHook(**cfg))
HOOKS.register("metrics_files", lambda cfg, run: MetricsFilesHook(run.output_dir, **cfg))
HOOKS.register("tensorboard", lambda cfg, run: TensorboardHook(run.output_dir, **cfg))
HOOKS.register("model_complexity", lambda cfg, run: ModelComplexityHook(**cfg))
HOOKS.register("time_to_accuracy", lambda cfg, run: TimeToAccuracyHook(**cfg))


def build_hooks(cfg: TrainConfig) -> List[ClassyHook]:
    """The hooks the config turns on, in the order they run (checkpoint last, after the others updated state)."""
    h = cfg.hooks
    hooks: List[ClassyHook] = []
    # Recipe hooks first: precise BN recomputes the statistics the EMA copies and the checkpoint saves;
    # the EMA adds its test metrics (top1_ema, ...) before the loggers and metrics files record them.
    if cfg.precise_bn.enabled:
        hooks.append(PreciseBNHook(cfg.precise_bn.num_samples))
    if cfg.ema.enabled:
        hooks.append(EMAHook(cfg.ema))
    if h.model_complexity:
        hooks.append(ModelComplexityHook())
    # User hooks before the loggers and metrics files, so metrics they add to a phase are recorded.
    for spec in h.extra:
        try:
            hooks.append(HOOKS.get(spec.name)(spec.options, cfg))
        except TypeError as e:  # options the hook's constructor does not take
            raise ConfigError(f"hooks.extra: hook {spec.name!r} with options {spec.options}: {e}") from None
    if h.early_stopping.enabled:  # after the EMA and the user hooks: it may watch top1_ema or a metric they add
        hooks.append(EarlyStoppingHook(h.early_stopping))
    hooks.append(ProgressBarHook(enabled=h.progress_bar))
    hooks.append(ConsoleLoggerHook(log_interval=h.log_interval))
    if h.metrics_files:
        hooks.append(MetricsFilesHook(cfg.output_dir, prefix=output_name(cfg, "")))
    if h.tensorboard:
        hooks.append(TensorboardHook(cfg.output_dir, log_interval=h.log_interval))
    if h.profiler.enabled:
        hooks.append(ProfilerHook(cfg.output_dir, h.profiler))
    if h.predictions.enabled:
        hooks.append(PredictionsHook(cfg.output_dir, h.predictions.path, prefix=output_name(cfg, "")))
    if h.export.enabled:
        hooks.append(ExportHook(cfg.output_dir, h.export.format, h.export.use_ema))
    c = h.checkpoint
    if c.enabled:
        hooks.append(CheckpointHook(os.path.join(cfg.output_dir, "checkpoints"), c.every_n_phases, c.keep_last,
                                    c.save_periodic, c.every_n_steps, c.best_metric, c.best_mode))
    return hooks
