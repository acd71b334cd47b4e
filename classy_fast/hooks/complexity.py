"""Model complexity at the start: parameter count and forward FLOPs for one image at the input size."""

from __future__ import annotations

import logging

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import distributed
from .base import ClassyHook

log = logging.getLogger("classy_fast")


def count_flops(model: torch.nn.Module, input_shape, device) -> int:
    """Forward FLOPs (multiply-add = 2) of ``model`` on one input of ``input_shape`` (C, H, W)."""
    was_training = model.training
    model.eval()  # BN must not update its running stats from this dummy batch
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


class ModelComplexityHook(ClassyHook):
    name = "model_complexity"

    def __init__(self) -> None:
        self.params = 0
        self.flops = 0

    def on_start(self, task) -> None:
        self.params = sum(p.numel() for p in task.model.parameters())
        self.flops = count_flops(task.model, task.input_shape, task.device)
        if distributed.is_primary():
            log.info("model %s: %.3f M parameters, %.3f GFLOPs per image forward at %s", task.cfg.model.name,
                     self.params / 1e6, self.flops / 1e9, "×".join(map(str, task.input_shape)))
