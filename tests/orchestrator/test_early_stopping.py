"""Early stopping: the run ends after `patience` test phases without an improvement, and stays ended."""

import json

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import CheckpointHook, ClassyHook, EarlyStoppingHook, build_hooks
from classy_fast.hooks.best_metric import BestMetric
from classy_fast.recipe_config import EarlyStoppingConfig
from classy_fast.registry import HOOKS
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


def make_task(tmp_path, **early_stopping):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=6,
                         hooks={"progress_bar": False, "log_interval": 0, "model_complexity": False,
                                "early_stopping": {"enabled": True, **early_stopping}})
    cfg = config_from_dict(d, "test")
    return ClassificationTask(cfg, hooks=build_hooks(cfg))


def test_run_stops_after_patience_test_phases_without_improvement(tmp_path, caplog):
    # min_delta 10: after the first test phase nothing can count as an improvement.
    task = make_task(tmp_path, metric="loss", patience=2, min_delta=10.0)
    with caplog.at_level("INFO", logger="classy_fast"):
        result = task.run()
    assert task.train_phases_done == 3 and task.stop_reason is not None
    tests = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if r["phase_type"] == "test"]
    assert [r["epoch"] for r in tests] == [0, 1, 2] and result["epoch"] == 2
    assert "loss has not improved for 2 test phases; best" in caplog.text and "at epoch 1" in caplog.text
    state = load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt"))
    saved = state["hooks"]["early_stopping"]
    assert saved["stopped"] and saved["phases_without_improvement"] == 2 and saved["best"]["epoch"] == 0

    # Resumed from the checkpoint written at the stop: no further phase runs.
    resumed = make_task(tmp_path, metric="loss", patience=2, min_delta=10.0)
    resumed.load_state_dict(state)
    resumed.run()
    assert resumed.train_phases_done == 3 and "stopped early before" in resumed.stop_reason


def test_no_stop_while_the_metric_improves(tmp_path):
    task = make_task(tmp_path, metric="top1", patience=2)
    hook = next(h for h in task.hooks if isinstance(h, EarlyStoppingHook))
    outcomes = iter([True, False, True, False, True, True])  # single misses: the count resets each time
    hook.tracker.update = lambda metrics, epoch: next(outcomes)
    task.run()
    assert task.train_phases_done == 6 and task.stop_reason is None and hook.phases_without_improvement == 0


def test_best_metric_directions_and_min_delta():
    higher = BestMetric("top1", "auto", min_delta=0.01)
    assert [higher.update({"top1": v}, e) for e, v in enumerate([0.5, 0.505, 0.52, float("nan"), 0.6])] == \
        [True, False, True, False, True]
    lower = BestMetric("loss", "auto")
    assert [lower.update({"loss": v}, e) for e, v in enumerate([2.0, 2.5, 1.0, 1.0])] == [True, False, True, False]
    assert lower.best == {"metric": "loss", "value": 1.0, "epoch": 2}
    with pytest.raises(ValueError, match="'loss' is not among the test metrics"):
        lower.update({"top1": 0.3, "phase_type": "test", "epoch": 0}, 0)


def test_unknown_metric_and_bad_patience_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"hooks.early_stopping.metric 'acc' is not a test metric of this run"):
        make_task(tmp_path, metric="acc").run()
    with pytest.raises(ValueError, match="patience must be ≥ 1"):
        make_task(tmp_path, patience=0)


def test_a_run_stopped_early_still_writes_its_predictions(tmp_path):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=6,
                         hooks={"progress_bar": False, "log_interval": 0, "model_complexity": False,
                                "early_stopping": {"enabled": True, "metric": "loss", "patience": 1,
                                                   "min_delta": 10.0},
                                "predictions": {"enabled": True}})
    cfg = config_from_dict(d, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    task.run()
    assert task.train_phases_done == 2
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 40  # header + every test sample


class _AddsTestMetric(ClassyHook):
    """A user hook (hooks.extra) adding a metric of its own to every test phase's record."""

    def __init__(self, values):
        self.values = iter(values)

    def on_phase_end(self, task):
        if task.phase["type"] == "test":
            task.last_phase_metrics["custom"] = next(self.values)


HOOKS.register("test_adds_custom_metric", lambda options, cfg: _AddsTestMetric(**options), override=True)


def test_early_stopping_watches_a_metric_a_user_hook_adds(tmp_path):
    """The check at start is skipped with hooks.extra so that their metrics can be watched: early stopping
    must run after the user hooks to see them (it raised 'not among the test metrics' after epoch 1)."""
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=6,
                         hooks={"progress_bar": False, "log_interval": 0, "model_complexity": False,
                                "early_stopping": {"enabled": True, "metric": "custom", "mode": "max", "patience": 2},
                                "extra": [{"name": "test_adds_custom_metric",
                                           "options": {"values": [0.5, 0.6, 0.4, 0.4, 0.9, 0.9]}}]})
    task = ClassificationTask(config_from_dict(d, "test"))
    task.run()
    assert task.train_phases_done == 4 and "custom has not improved for 2 test phases" in task.stop_reason


def test_mode_and_min_delta_errors_name_their_own_keys():
    with pytest.raises(ValueError, match=r"^hooks.early_stopping.min_delta must be ≥ 0, got -1"):
        EarlyStoppingHook(EarlyStoppingConfig(enabled=True, metric="top1", min_delta=-1.0))
    with pytest.raises(ValueError, match=r"^hooks.early_stopping.mode must be one of"):
        EarlyStoppingHook(EarlyStoppingConfig(enabled=True, metric="top1", mode="largest"))
    with pytest.raises(ValueError, match=r"^hooks.checkpoint.best_mode must be one of"):
        CheckpointHook("unused", best_metric="top1", best_mode="largest")
