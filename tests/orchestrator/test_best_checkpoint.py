"""best.pt: written after each test phase that improves hooks.checkpoint.best_metric, and only then."""

import json
import os

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import CheckpointHook, build_hooks
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


def run(tmp_path, name, **checkpoint):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / name, epochs=4, optimizer={"lr": 0.3},
                         hooks={"progress_bar": False, "log_interval": 0, "model_complexity": False,
                                "checkpoint": checkpoint})
    cfg = config_from_dict(d, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    task.run()
    tests = [r for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
             if r["phase_type"] == "test"]
    return task, tests


def best_of(tests, metric, higher):
    """(value, epoch) of the first strict best, as the hook keeps it."""
    best = None
    for r in tests:
        if best is None or (r[metric] > best[0] if higher else r[metric] < best[0]):
            best = (r[metric], r["epoch"])
    return best


@pytest.mark.parametrize("metric,higher", [("top1", True), ("loss", False)])
def test_best_checkpoint_holds_the_best_test_phase(tmp_path, metric, higher):
    task, tests = run(tmp_path, metric, best_metric=metric)
    value, epoch = best_of(tests, metric, higher)
    path = tmp_path / metric / "checkpoints" / "best.pt"
    state = load_checkpoint(str(path))
    record = state["hooks"]["checkpoint"]["best"]
    assert record == {"metric": metric, "value": pytest.approx(value), "epoch": epoch}
    # best.pt evaluates to the recorded figure.
    evaluator = ClassificationTask(config_from_dict(tiny_config_dict(tmp_path / "eval", test_only=True), "test"))
    evaluator.load_state_dict(state, weights_only=True)
    assert evaluator.run()[metric] == pytest.approx(value, rel=1e-6)
    # The record travels in last.pt too, so a resumed run only replaces best.pt with something better.
    hook = CheckpointHook(str(tmp_path / "x"), best_metric=metric)
    hook.load_state_dict(load_checkpoint(str(tmp_path / metric / "checkpoints" / "last.pt"))["hooks"]["checkpoint"])
    assert hook.best.best == record


def test_no_best_checkpoint_unless_asked(tmp_path):
    run(tmp_path, "plain")
    assert not os.path.exists(tmp_path / "plain" / "checkpoints" / "best.pt")


def test_a_record_for_another_metric_is_not_carried_over():
    hook = CheckpointHook("unused", best_metric="top5")
    hook.load_state_dict({"best": {"metric": "top1", "value": 0.9, "epoch": 3}})
    assert hook.best.best is None


def test_unknown_metric_and_mode_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"best_metric 'top7' is not a test metric of this run; choose one of "
                                         r"\['loss', 'top1', 'top5'\]"):
        run(tmp_path, "bad", best_metric="top7")
    with pytest.raises(ValueError, match="mode must be one of"):
        CheckpointHook("unused", best_metric="top1", best_mode="largest")
