"""TensorBoard event files under OUTPUT/tensorboard (needs the optional 'tensorboard' package)."""

from __future__ import annotations

import os

from .. import distributed
from .base import ClassyHook


class TensorboardHook(ClassyHook):
    name = "tensorboard"

    def __init__(self, output_dir: str, log_interval: int = 50):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("hooks.tensorboard=true needs the 'tensorboard' package: "
                              "pip install 'classy_fast[tensorboard]' (or pip install tensorboard)") from None
        self.log_interval = log_interval
        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard")) if distributed.is_primary() else None

    def on_step(self, task) -> None:
        if self.writer and task.in_train_phase and self.log_interval and task.step_in_phase % self.log_interval == 0:
            for k, v in task.metrics().items():
                self.writer.add_scalar(f"train_step/{k}", v, task.num_updates)

    def on_phase_end(self, task) -> None:
        if self.writer:
            m = task.last_phase_metrics
            for k, v in m.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(f"{m['phase_type']}/{k}", v, m["epoch"] + 1)
            self.writer.flush()

    def on_end(self, task) -> None:
        if self.writer:
            self.writer.close()
