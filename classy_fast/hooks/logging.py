"""Console logger: one line per log interval and one per phase (loss, top-1, lr, img/s, data-wait %)."""

from __future__ import annotations

import logging

from .. import distributed
from .base import ClassyHook

log = logging.getLogger("classy_fast")


def format_metrics(metrics: dict) -> str:
    parts = []
    for key in ("loss", "top1", "top5", "lr", "images_per_sec", "data_wait_pct", "grad_norm", "seconds"):
        if key in metrics:
            v = metrics[key]
            parts.append(
                f"{key}={v:.4g}" if key in ("lr", "grad_norm") else
                f"img/s={v:.0f}" if key == "images_per_sec" else
                f"data-wait={v:.1f}%" if key == "data_wait_pct" else
                f"{key}={v:.1f}s" if key == "seconds" else
                f"{key}={v:.4f}"
            )
    return " ".join(parts)


class ConsoleLoggerHook(ClassyHook):
    name = "console_logger"

    def __init__(self, log_interval: int = 50):
        if log_interval < 0:
            raise ValueError(f"hooks.log_interval must be ≥ 0 (0: phase ends only), got {log_interval}")
        self.log_interval = log_interval

    def on_step(self, task) -> None:
        if task.in_train_phase and self.log_interval and task.step_in_phase % self.log_interval == 0:
            metrics = task.metrics()  # reads device tensors: only at the log interval
            if distributed.is_primary():
                log.info("epoch %d step %d/%d %s", task.phase["epoch"] + 1, task.step_in_phase, task.phase_length,
                         format_metrics(metrics))

    def on_phase_end(self, task) -> None:
        if distributed.is_primary():
            m = task.last_phase_metrics
            log.info("%s epoch %d done: %s", m["phase_type"], m["epoch"] + 1, format_metrics(m))
