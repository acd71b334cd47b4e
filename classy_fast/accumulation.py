"""Gradient accumulation: one optimizer update per ``simulated_global_batch_size`` samples.

With a real global batch of ``batch_size × world_size`` and k = simulated / real, the task runs k
forward/backward passes ("micro-steps") per optimizer update, each backward on ``loss / k`` so the
accumulated gradient is the gradient of the mean loss over the k·B samples, exactly as one batch of
k·B would give (for models without batch statistics; BatchNorm still normalizes per micro-batch).
Under DDP the gradient all-reduce is skipped on the k-1 non-update micro-steps (``no_sync``).

The learning-rate schedule and ``task.num_updates`` count optimizer updates; an epoch has
``len(train_data) // k`` of them, and the trailing ``len(train_data) % k`` batches of an epoch are
not used, so an update never spans two epochs (checkpoints at phase ends never hold half-accumulated
gradients). Within a phase, step checkpoints must fall on update boundaries for the same reason.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import torch

from . import distributed
from .config import ConfigError, DistributedConfig

log = logging.getLogger("classy_fast")


def accumulation_steps(simulated_global_batch_size: Optional[int], batch_size: int, world_size: int) -> int:
    """Micro-steps per optimizer update (1 without accumulation); a clear error when it is not a whole number."""
    if simulated_global_batch_size is None:
        return 1
    real = batch_size * world_size
    if simulated_global_batch_size < real or simulated_global_batch_size % real != 0:
        raise ConfigError(
            f"simulated_global_batch_size ({simulated_global_batch_size}) must be a multiple of the real global "
            f"batch, data.batch_size × world size = {batch_size} × {world_size} = {real}")
    return simulated_global_batch_size // real


class GradientAccumulation:
    """Which micro-steps update, how the loss is scaled for backward, what DDP needs for it.

    The task wraps non-update micro-steps in ``ParallelTraining.no_sync`` (DDP's ``no_sync``)."""

    def __init__(self, steps: int = 1):
        if steps < 1:
            raise ValueError(f"accumulation steps must be ≥ 1, got {steps}")
        self.steps = steps

    def is_update_step(self, step_in_phase: int) -> bool:
        """Whether micro-step ``step_in_phase`` (0-based within the phase) ends an accumulation and updates."""
        return (step_in_phase + 1) % self.steps == 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate: the mean over the k micro-batches' samples."""
        return loss if self.steps == 1 else loss / self.steps

    def ddp_config(self, cfg: DistributedConfig) -> DistributedConfig:
        """The DDP options to use: ``static_graph`` off when accumulating.

        DDP(static_graph=True) with ``no_sync`` micro-steps fails its first backward with an
        ``expect_autograd_hooks_`` internal assert, and past that stops all-reducing from the second
        update on (pytorch/pytorch#143580, fix pending in #187732); seen with torch 2.14.
        """
        if self.steps == 1 or not cfg.static_graph:
            return cfg
        if distributed.is_primary() and distributed.world_size() > 1:
            log.info("gradient accumulation: DDP static_graph turned off (PyTorch's static graph breaks with no_sync)")
        return dataclasses.replace(cfg, static_graph=False)

    def check_step_checkpoints(self, every_n_steps: int) -> None:
        """Step checkpoints between updates would lose the half-accumulated gradients: refuse them."""
        if every_n_steps > 0 and every_n_steps % self.steps != 0:  # a negative one: the hook names it
            raise ConfigError(
                f"hooks.checkpoint.every_n_steps ({every_n_steps}) must be a multiple of the gradient accumulation "
                f"steps ({self.steps}) so that checkpoints fall between optimizer updates")
