"""Export hook: the trained model as a self-contained file at the end of the run.

'export' writes ``torch.export`` (an ExportedProgram, ``OUTPUT/export/model.pt2``) with a dynamic
batch dimension; load it with ``torch.export.load(path).module()``. 'torchscript' writes a traced
TorchScript module (``OUTPUT/export/model.ts``, ``torch.jit.load``), for runtimes that still take
TorchScript (PyTorch deprecates it). The exported model is an eval-mode copy on the CPU (BatchNorm
uses its running statistics, dropout is off); it takes normalized N×C×H×W float images and returns
logits, like the model during the test phase. ``use_ema`` exports the EMA weights. Only the primary
rank writes, and nothing is exported after a failed run or an eval-only one.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Callable, Optional

import torch
from torch import nn

from .. import distributed
from .base import ClassyHook
from ..models import unwrap_model
from .ema import EMAHook

log = logging.getLogger("classy_fast")

EXPORT_FILES = {"export": "model.pt2", "torchscript": "model.ts"}


def export_model(model: nn.Module, example: torch.Tensor, path: str, fmt: str = "export") -> str:
    """Write ``model`` (put in eval mode) to ``path`` in ``fmt``, traced with ``example``; returns ``path``."""
    if fmt not in EXPORT_FILES:
        raise ValueError(f"export format must be one of {sorted(EXPORT_FILES)}, got {fmt!r}")
    model = model.eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Same directory (atomic rename) and same extension (torch.export.save checks it).
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    with torch.no_grad():
        if fmt == "export":
            batch = torch.export.Dim("batch")
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, tmp)
        else:
            traced = torch.jit.trace(model, example)
            traced.save(tmp)
    os.replace(tmp, path)
    return path


def load_exported(path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable model in a file written by ``export_model`` (by its extension)."""
    if path.endswith(".pt2"):
        return torch.export.load(path).module()
    return torch.jit.load(path, map_location="cpu")


class ExportHook(ClassyHook):
    name = "export"

    def __init__(self, output_dir: str, fmt: str = "export", use_ema: bool = False):
        if fmt not in EXPORT_FILES:
            raise ValueError(f"hooks.export.format must be one of {sorted(EXPORT_FILES)}, got {fmt!r}")
        self.path = os.path.join(output_dir, "export", EXPORT_FILES[fmt])
        self.fmt = fmt
        self.use_ema = use_ema
        self.written: Optional[str] = None

    def _model(self, task) -> nn.Module:
        if not self.use_ema:
            return unwrap_model(task.model)
        for hook in task.hooks:
            if isinstance(hook, EMAHook) and hook.ema is not None:
                return hook.ema.module
        raise ValueError("hooks.export.use_ema needs ema.enabled")

    def on_start(self, task) -> None:
        # Before training, not after it: the whole run would otherwise end on this error.
        if self.use_ema and not task.cfg.ema.enabled:
            raise ValueError("hooks.export.use_ema needs ema.enabled")

    def on_end(self, task) -> None:
        if task.failed or task.preempted or task.cfg.test_only or not distributed.is_primary():
            return
        model = copy.deepcopy(self._model(task)).cpu().float()
        # Batch 2, not 1: torch.export would specialize a size-1 dimension instead of keeping it dynamic.
        example = torch.zeros(2, *task.input_shape)
        if task.cfg.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        self.written = export_model(model, example, self.path, self.fmt)
        log.info("exported the %s model (%s) to %s", "EMA" if self.use_ema else "trained", self.fmt, self.written)
