"""torch.profiler trace of a few train steps, written to OUTPUT/profiler (Chrome trace / TensorBoard)."""

from __future__ import annotations

import logging
import os

import torch

from .. import distributed
from ..config import ProfilerConfig
from .base import ClassyHook

log = logging.getLogger("classy_fast")


class ProfilerHook(ClassyHook):
    name = "profiler"

    def __init__(self, output_dir: str, cfg: ProfilerConfig):
        if cfg.wait < 0 or cfg.warmup < 0 or cfg.active < 1:
            raise ValueError(f"hooks.profiler: wait and warmup must be ≥ 0 and active ≥ 1, got wait={cfg.wait}, "
                             f"warmup={cfg.warmup}, active={cfg.active}")
        self.directory = os.path.join(output_dir, "profiler")
        self.cfg = cfg
        self.profiler = None
        self.done = False

    def on_phase_start(self, task) -> None:
        if self.done or not task.in_train_phase or not distributed.is_primary():
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if task.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        os.makedirs(self.directory, exist_ok=True)
        self.profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=self.cfg.wait, warmup=self.cfg.warmup, active=self.cfg.active, repeat=1),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(self.directory),
            record_shapes=True,
        )
        self.profiler.start()

    def on_step(self, task) -> None:
        if self.profiler is not None:
            self.profiler.step()
            if task.step_in_phase >= self.cfg.wait + self.cfg.warmup + self.cfg.active:
                self._stop()

    def _stop(self) -> None:
        self.profiler.stop()
        self.profiler = None
        self.done = True
        log.info("profiler trace written to %s", self.directory)

    def on_phase_end(self, task) -> None:
        if self.profiler is not None:
            self._stop()

    on_end = on_phase_end
