"""Per-phase metrics to OUTPUT/metrics.jsonl (one JSON object per phase) and OUTPUT/metrics.csv
(eval_metrics.* for a test-only run, which may share OUTPUT with the training run it evaluates)."""

from __future__ import annotations

import csv
import json
import os

from .. import distributed
from .base import ClassyHook

CSV_COLUMNS = ["phase_type", "epoch", "loss", "top1", "top5", "lr", "images_per_sec", "seconds"]


class MetricsFilesHook(ClassyHook):
    name = "metrics_files"

    def __init__(self, output_dir: str, prefix: str = ""):
        self.jsonl_path = os.path.join(output_dir, f"{prefix}metrics.jsonl")
        self.csv_path = os.path.join(output_dir, f"{prefix}metrics.csv")

    def on_phase_end(self, task) -> None:
        if not distributed.is_primary():
            return
        m = task.last_phase_metrics
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(m)
