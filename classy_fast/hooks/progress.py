"""tqdm progress bar over each phase's steps; off when stderr is not a terminal or on non-primary ranks."""

from __future__ import annotations

import sys

from .. import distributed
from .base import ClassyHook


class ProgressBarHook(ClassyHook):
    name = "progress_bar"

    def __init__(self, enabled: bool = True, refresh_every: int = 10):
        self.enabled = enabled and sys.stderr.isatty() and distributed.is_primary()
        self.refresh_every = refresh_every
        self.bar = None

    def on_phase_start(self, task) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=task.phase_length, initial=task.step_in_phase, leave=False, dynamic_ncols=True,
                        desc=f"{task.phase['type']} {task.phase['epoch'] + 1}")

    def on_step(self, task) -> None:
        if self.bar is not None and task.step_in_phase % self.refresh_every == 0:
            self.bar.update(task.step_in_phase - self.bar.n)

    def on_phase_end(self, task) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    on_end = on_phase_end
