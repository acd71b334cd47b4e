"""Per-phase metrics to OUTPUT/metrics.jsonl (one JSON object per phase) and OUTPUT/metrics.csv
(eval_metrics.* for a test-only run, which may share OUTPUT with the training run it evaluates).

The files describe one run: a fresh run replaces them, and a resumed run keeps the records of the
phases before the one it resumes at (a process killed after a test phase's record was written but
before the next checkpoint re-runs that phase, which must not appear twice)."""

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

    def on_start(self, task) -> None:
        if not distributed.is_primary():
            return
        resumed = task.phase_index > 0 or task.step_in_phase > 0
        records = self._read_records() if resumed else []
        if resumed and task.phase_index < len(task.phases):
            phase = task.phases[task.phase_index]
            for i, r in enumerate(records):
                if (r.get("phase_type"), r.get("epoch")) == (phase["type"], phase["epoch"]):
                    records = records[:i]  # this phase and what followed it run again
                    break
        self._rewrite(records)

    def _read_records(self) -> list:
        if not os.path.exists(self.jsonl_path):
            return []
        with open(self.jsonl_path, encoding="utf-8") as f:
            lines = f.readlines()
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                # A last line without its newline: a process killed while appending it, before that phase's
                # checkpoint (written after the record): the phase runs again, the torn record goes.
                if i == len(lines) - 1 and not line.endswith("\n"):
                    break
                raise ValueError(f"{self.jsonl_path}: line {i + 1} is not a JSON record: repair the file, or "
                                 f"remove it to resume without the records of the phases before") from None
        return records

    def _rewrite(self, records: list) -> None:
        for path in (self.jsonl_path, self.csv_path):
            if os.path.exists(path):
                os.remove(path)
        for record in records:
            self._append(record)

    def on_phase_end(self, task) -> None:
        if distributed.is_primary():
            self._append(task.last_phase_metrics)

    def _append(self, m: dict) -> None:
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(m)
