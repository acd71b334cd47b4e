"""Entry point for the multi-process tests: registers a BN-free model and a fault-injecting hook, then runs the CLI.

Run as ``python tests/distributed/rank_driver.py <train args>`` with torchrun-style environment
variables (or under torchrun). The fault hook (``hooks.extra: [{name: fault, options: ...}]``)
makes one rank die (SIGKILL), hang (sleep forever), raise, or receive SIGTERM at a given optimizer update.
"""

import os
import signal
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from classy_fast import distributed  # noqa: E402
from classy_fast.hooks import ClassyHook  # noqa: E402
from classy_fast.registry import HOOKS, MODELS  # noqa: E402


class ConvNetNoNorm(nn.Module):
    """Two convolutions and a linear head, no normalization: its gradient is a plain mean over the batch."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


@MODELS.register("convnet_no_norm", override=True)
def _convnet(cfg, num_classes, in_channels):
    return ConvNetNoNorm(num_classes, in_channels, cfg.width)


class FaultHook(ClassyHook):
    name = "fault"

    def __init__(self, rank: int, at_update: int, mode: str):
        self.rank, self.at_update, self.mode = rank, at_update, mode

    def on_step(self, task):
        if distributed.rank() != self.rank or not task.in_train_phase or task.num_updates != self.at_update:
            return
        print(f"fault: rank {self.rank} {self.mode} at update {self.at_update} t={time.time():.3f}", flush=True)
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.mode == "sigterm":  # preemption notice to this rank only
            os.kill(os.getpid(), signal.SIGTERM)
        elif self.mode == "hang":
            while True:
                time.sleep(1)
        else:
            raise ValueError(f"injected failure on rank {self.rank}")


HOOKS.register("fault", lambda options, cfg: FaultHook(**options), override=True)

if __name__ == "__main__":
    from classy_fast.train import main

    distributed.exit_process(main(sys.argv[1:]))
