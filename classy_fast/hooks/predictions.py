"""Prediction file: one CSV row per test sample after the last test phase (``id,predicted,target``).

``id`` is the sample's index in the test set as loaded (after ``data.limit_test``); ``predicted``
the arg-max class of the model's logits; ``target`` the label. Useful with the eval CLI:

    python -m classy_fast.train --eval-only --resume PATH --set hooks.predictions.enabled=true

The hook makes its own pass over the test set (in order, under the run's autocast) once the last
test phase has ended, keeping the predictions on the device until the end: one read per run.
Under DDP each rank predicts its contiguous evaluation shard (data/sharding.py) and the primary
rank gathers the shards in rank order, which is the test set's order, and writes the file.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Optional

import torch

from .. import distributed
from .base import ClassyHook
from ..models import unwrap_model

log = logging.getLogger("classy_fast")


@torch.inference_mode()
def predict(model: torch.nn.Module, data, precision) -> tuple:
    """(predicted classes, targets) over ``data`` as CPU int64 tensors, in the data's order.

    Leaves ``model`` in eval mode (each phase sets the modes it needs when it starts)."""
    model.eval()
    preds, targets = [], []
    for images, target in data:
        with precision.autocast():
            logits = model(images)
        preds.append(logits.argmax(dim=1))
        targets.append(target)
    return torch.cat(preds).cpu(), torch.cat(targets).cpu()


class PredictionsHook(ClassyHook):
    name = "predictions"

    def __init__(self, output_dir: str, path: Optional[str] = None, prefix: str = ""):
        # prefix 'eval_' for an evaluation-only run: it may share the training run's directory.
        self.path = path or os.path.join(output_dir, f"{prefix}predictions.csv")

    def on_phase_end(self, task) -> None:
        # The last test phase: the plan's last, or the one after which early stopping ended the run.
        last = task.phase_index == len(task.phases) or task.stop_reason is not None
        if task.phase["type"] != "test" or not last:
            return
        preds, targets = predict(unwrap_model(task.model), task.test_data, task.precision)
        shards = distributed.gather_object((preds, targets))  # every rank takes part; the primary gets them all
        if not distributed.is_primary():
            return
        preds = torch.cat([p for p, _ in shards])
        targets = torch.cat([t for _, t in shards])
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "predicted", "target"])
            writer.writerows(zip(range(len(preds)), preds.tolist(), targets.tolist()))
        os.replace(tmp, self.path)
        log.info("wrote %d predictions to %s", len(preds), self.path)
