"""Recipes under DDP (2 gloo ranks): accumulation with no_sync, the EMA and the prediction file match one process.

2 ranks × batch 4 × 2 accumulation micro-steps = one update of 16, like 1 process × batch 16. Uses
the multi-process launcher of tests/distributed (ranks are subprocesses running the CLI).
"""

import csv

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import build_hooks
from classy_fast.task import ClassificationTask

from ..distributed import rank_driver  # noqa: F401  (registers convnet_no_norm in this process too)
from ..distributed.launch import read_metrics, run_ranks, tiny_config, write_config


def recipe_config(out, batch_size, simulated=None):
    cfg = tiny_config(out, ema={"enabled": True, "decay": 0.9}, simulated_global_batch_size=simulated)
    cfg["data"]["batch_size"] = batch_size
    cfg["hooks"]["predictions"] = {"enabled": True}
    return cfg


def test_two_ranks_with_accumulation_match_one_process(tmp_path):
    out = tmp_path / "two_ranks"
    results = run_ranks(2, ["--config", write_config(tmp_path / "two.yaml", recipe_config(out, 4, simulated=16))])
    for r in results:
        assert r.returncode == 0, f"rank {r.rank} failed:\n{r.output[-3000:]}"
    torch.set_num_threads(1)
    cfg = config_from_dict(recipe_config(tmp_path / "one", 16), "test")
    ref = ClassificationTask(cfg, hooks=build_hooks(cfg))
    ref.run()

    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert state["progress"]["num_updates"] == ref.num_updates == 12
    for key, value in ref.model.state_dict().items():
        torch.testing.assert_close(state["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    for key, value in state["hooks"]["ema"]["module"].items():
        torch.testing.assert_close(value, next(h for h in ref.hooks if h.key == "ema").ema.module.state_dict()[key],
                                   rtol=1e-4, atol=1e-6, msg=key)
    final, ref_final = read_metrics(out)[-1], read_metrics(ref.cfg.output_dir)[-1]
    assert final["top1_ema"] == pytest.approx(ref_final["top1_ema"], abs=1e-12)
    # Each rank predicted its half of the 41 test images; the primary wrote them all, in order.
    rows = list(csv.reader(open(out / "predictions.csv")))
    ref_rows = list(csv.reader(open(tmp_path / "one" / "predictions.csv")))
    assert len(rows) == 42 and rows == ref_rows
