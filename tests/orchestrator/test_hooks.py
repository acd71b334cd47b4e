import os

import pytest
import torch

from classy_fast.config import config_from_dict
from classy_fast.hooks import ClassyHook, build_hooks
from classy_fast.hooks.complexity import count_flops
from classy_fast.registry import HOOKS
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


class Recorder(ClassyHook):
    def __init__(self, tag="r"):
        self.tag, self.events = tag, []

    def on_start(self, task):
        self.events.append("start")

    def on_phase_start(self, task):
        self.events.append(f"{task.phase['type']}_start")

    def on_phase_end(self, task):
        self.events.append(f"{task.phase['type']}_end")

    def on_end(self, task):
        self.events.append("end")


HOOKS.register("test_recorder", lambda options, cfg: Recorder(**options), override=True)


def test_lifecycle_order_and_registered_extra_hook(tmp_path):
    d = tiny_config_dict(tmp_path / "h", test_phase_period=2, epochs=3)
    d["hooks"]["extra"] = [{"name": "test_recorder", "options": {"tag": "x"}}]
    cfg = config_from_dict(d, "t")
    task = ClassificationTask(cfg)
    rec = next(h for h in task.hooks if isinstance(h, Recorder))
    task.run()
    assert rec.tag == "x"
    assert rec.events == ["start", "train_start", "train_end", "train_start", "train_end", "test_start", "test_end",
                          "train_start", "train_end", "test_start", "test_end", "end"]


def test_flops_of_a_linear_model():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    assert count_flops(model, (3, 2, 2), "cpu") == 2 * 12 * 5


def test_profiler_writes_a_trace(tmp_path):
    d = tiny_config_dict(tmp_path / "p", epochs=1)
    d["hooks"]["profiler"] = {"enabled": True, "wait": 0, "warmup": 1, "active": 2}
    ClassificationTask(config_from_dict(d, "t")).run()
    traces = os.listdir(tmp_path / "p" / "profiler")
    assert any(name.endswith(".json") or name.endswith(".json.gz") for name in traces), traces


def test_tensorboard_missing_is_a_clear_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    d = tiny_config_dict(tmp_path / "tb")
    d["hooks"]["tensorboard"] = True
    with pytest.raises(ImportError, match="pip install tensorboard"):
        build_hooks(config_from_dict(d, "t"))


def test_checkpoint_keeps_last_k_periodic_copies(tmp_path):
    d = tiny_config_dict(tmp_path / "k", epochs=4)
    d["hooks"]["checkpoint"] = {"save_periodic": True, "keep_last": 2}
    ClassificationTask(config_from_dict(d, "t")).run()
    files = sorted(os.listdir(tmp_path / "k" / "checkpoints"))
    assert files == ["last.pt", "phase_0003.pt", "phase_0004.pt"]
    d = tiny_config_dict(tmp_path / "all", epochs=3)
    d["hooks"]["checkpoint"] = {"save_periodic": True, "keep_last": 0}  # no limit
    ClassificationTask(config_from_dict(d, "t")).run()
    assert sorted(os.listdir(tmp_path / "all" / "checkpoints")) == [
        "last.pt", "phase_0001.pt", "phase_0002.pt", "phase_0003.pt"]
    for bad in ({"keep_last": -1}, {"every_n_steps": -2}):
        d["hooks"]["checkpoint"] = bad
        with pytest.raises(ValueError, match="must be ≥ 0"):
            ClassificationTask(config_from_dict(d, "t"))
    d["hooks"]["checkpoint"], d["hooks"]["log_interval"] = {}, -5
    with pytest.raises(ValueError, match="hooks.log_interval must be ≥ 0"):
        ClassificationTask(config_from_dict(d, "t"))


def test_metrics_added_by_a_user_hook_reach_metrics_jsonl(tmp_path):
    import json

    d = tiny_config_dict(tmp_path / "t", epochs=1)
    d["hooks"]["extra"] = [{"name": "time_to_accuracy", "options": {"target_top1": 0.0}}]
    ClassificationTask(config_from_dict(d, "t")).run()
    phases = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert phases[-1]["phase_type"] == "test" and phases[-1]["time_to_target_seconds"] > 0


def test_every_on_end_runs_when_one_fails_and_the_first_error_is_raised(tmp_path):
    """An on_end error (say, an export) must not cost the checkpoint hook's final save, which runs last."""
    from classy_fast.checkpoint import load_checkpoint

    class FailingEnd(ClassyHook):
        def on_end(self, task):
            raise OSError("disk full while exporting")

    torch.set_num_threads(1)
    cfg = config_from_dict(tiny_config_dict(tmp_path / "run", epochs=2), "test")
    hooks = build_hooks(cfg)
    task = ClassificationTask(cfg, hooks=[FailingEnd()] + hooks)
    with pytest.raises(OSError, match="disk full"):
        task.run()
    state = load_checkpoint(os.path.join(tmp_path, "run", "checkpoints", "last.pt"))
    assert state["progress"]["phase_index"] == len(task.phases)  # the final save happened


def test_export_of_ema_weights_without_an_ema_fails_before_training(tmp_path):
    d = tiny_config_dict(tmp_path / "run", hooks={"progress_bar": False, "model_complexity": False,
                                                   "export": {"enabled": True, "use_ema": True}})
    task = ClassificationTask(config_from_dict(d, "test"))
    with pytest.raises(ValueError, match="hooks.export.use_ema needs ema.enabled"):
        task.run()
    assert task.train_phases_done == 0


def test_time_to_accuracy_counts_on_across_a_resume_and_reports_once(tmp_path):
    from classy_fast.hooks import TimeToAccuracyHook

    first = TimeToAccuracyHook(target_top1=0.0)
    first.load_state_dict({"elapsed_seconds": 100.0, "reached_seconds": None, "reached_epoch": None})
    d = tiny_config_dict(tmp_path / "t", epochs=1)
    task = ClassificationTask(config_from_dict(d, "t"), hooks=[first])
    task.run()
    assert first.reached_seconds >= 100.0 and first.reached_epoch == 1  # the 100 s before the checkpoint count
    state = first.state_dict()
    again = TimeToAccuracyHook(target_top1=0.0)
    again.load_state_dict(state)
    task2 = ClassificationTask(config_from_dict(tiny_config_dict(tmp_path / "u", epochs=1), "t"), hooks=[again])
    task2.run()
    assert again.reached_seconds == first.reached_seconds and again.reached_epoch == 1  # not reported again


def test_time_to_accuracy_target_must_be_a_fraction(tmp_path):
    """top1 is a fraction: a target of 93 (meant as 93%) could never be reached and was accepted silently."""
    from classy_fast.config import ConfigError

    for target in (93.0, -0.1, float("nan")):
        d = tiny_config_dict(tmp_path / "t", epochs=1)
        d["hooks"]["extra"] = [{"name": "time_to_accuracy", "options": {"target_top1": target}}]
        with pytest.raises((ValueError, ConfigError), match=r"time_to_accuracy.*target_top1 must be in \[0, 1\]"):
            build_hooks(config_from_dict(d, "t"))
