"""Whole runs of the task on a tiny synthetic problem: resume equality, crash recovery, NaN stop, test-only."""

import json
import os

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import ClassyHook, build_hooks
from classy_fast.registry import LOSSES
from classy_fast.task import ClassificationTask, NonFiniteLossError

from ..conftest import tiny_config_dict


class Interrupt(Exception):
    pass


class InterruptAt(ClassyHook):
    """Simulates the process dying: raises after a given train step or at the end of a given train phase."""

    def __init__(self, step=None, phases=None):
        self.step, self.phases = step, phases

    def on_step(self, task):
        if self.step is not None and task.in_train_phase and task.num_updates == self.step:
            raise Interrupt

    def on_phase_end(self, task):
        if self.phases is not None and task.train_phases_done == self.phases and task.phase["type"] == "train":
            raise Interrupt


def make_task(cfg_dict, extra_hooks=(), resume=True):
    cfg = config_from_dict(cfg_dict, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg) + list(extra_hooks))
    last = os.path.join(cfg.output_dir, "checkpoints", "last.pt")
    if resume and os.path.exists(last):
        task.load_state_dict(load_checkpoint(last))
    return task


def weights(task):
    return {k: v.clone() for k, v in task.model.state_dict().items()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_one_epoch_is_bitwise_identical(tmp_path):
    torch.set_num_threads(1)
    straight = make_task(tiny_config_dict(tmp_path / "a"))
    straight.run()
    with pytest.raises(Interrupt):
        make_task(tiny_config_dict(tmp_path / "b"), [InterruptAt(phases=1)]).run()
    resumed = make_task(tiny_config_dict(tmp_path / "b"))
    assert resumed.phase_index == 1 and resumed.train_phases_done == 1
    final = resumed.run()
    assert_bitwise_equal(weights(straight), weights(resumed))
    assert final == pytest.approx({**straight.last_phase_metrics, "images_per_sec": final["images_per_sec"],
                                   "seconds": final["seconds"], "data_wait_pct": final["data_wait_pct"]})


def test_killed_mid_epoch_resumes_from_last_step_checkpoint(tmp_path):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "a", hooks={"progress_bar": False, "log_interval": 2, "model_complexity": False,
                                                "checkpoint": {"every_n_steps": 2}})
    straight = make_task(d)
    straight.run()
    d_b = {**d, "output_dir": str(tmp_path / "b")}
    with pytest.raises(Interrupt):
        make_task(d_b, [InterruptAt(step=9)]).run()  # 6 steps/epoch: dies at epoch 2 step 3
    state = load_checkpoint(str(tmp_path / "b" / "checkpoints" / "last.pt"))
    assert state["progress"]["num_updates"] == 8 and state["progress"]["step_in_phase"] == 2
    resumed = make_task(d_b)
    resumed.run()
    assert_bitwise_equal(weights(straight), weights(resumed))
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # train 1, test 1, (interrupted train 2 not written), train 2, test 2


@LOSSES.register("nan_after_5_calls", override=True)
def _nan_after(cfg):
    calls = {"n": 0}

    def loss(logits, target):
        calls["n"] += 1
        value = torch.nn.functional.cross_entropy(logits, target)
        return value * float("nan") if calls["n"] > 5 else value

    return loss


@LOSSES.register("nan_after_8_training_calls", override=True)
def _nan_after_training_calls(cfg):
    calls = {"n": 0}

    def loss(logits, target):
        if torch.is_grad_enabled():  # training steps only (evaluation runs under inference_mode)
            calls["n"] += 1
        value = torch.nn.functional.cross_entropy(logits, target)
        return value * float("nan") if calls["n"] > 8 else value

    return loss


def test_nan_step_counts_training_steps_only(tmp_path):
    # 6 training steps per epoch and a 3-step test phase after epoch 1: the 9th training step is step 3 of
    # epoch 2 (the test steps in between are not counted).
    d = tiny_config_dict(tmp_path / "n", loss={"name": "nan_after_8_training_calls"})
    with pytest.raises(NonFiniteLossError, match=r"training step 9 of the run \(step 3 of epoch 2"):
        make_task(d).run()


def test_nan_loss_stops_with_step_and_keeps_good_checkpoint(tmp_path):
    d = tiny_config_dict(tmp_path / "n", loss={"name": "nan_after_5_calls"},
                         hooks={"progress_bar": False, "log_interval": 4, "model_complexity": False,
                                "checkpoint": {"every_n_steps": 3}})
    task = make_task(d)
    with pytest.raises(NonFiniteLossError, match=r"training step 6 of the run \(step 6 of epoch 1"):
        task.run()
    state = load_checkpoint(str(tmp_path / "n" / "checkpoints" / "last.pt"))
    assert state["progress"]["num_updates"] == 3  # the step-6 save was refused; step 3's file is intact
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_test_only_run_from_train_checkpoint(tmp_path):
    trained = make_task(tiny_config_dict(tmp_path / "t"))
    final = trained.run()
    cfg = config_from_dict(tiny_config_dict(tmp_path / "e", test_only=True), "test")
    evaluator = ClassificationTask(cfg, hooks=build_hooks(cfg))
    evaluator.load_state_dict(load_checkpoint(str(tmp_path / "t" / "checkpoints" / "last.pt")), weights_only=True)
    result = evaluator.run()
    assert evaluator.train_data is None and result["phase_type"] == "test"
    assert "lr" not in result  # nothing trained: no lr to report
    assert result["top1"] == final["top1"] and result["loss"] == pytest.approx(final["loss"], rel=1e-6)
    assert not (tmp_path / "e" / "checkpoints" / "last.pt").exists()


def test_training_learns_and_writes_outputs(tmp_path):
    d = tiny_config_dict(tmp_path / "l", epochs=4, optimizer={"lr": 0.1},
                         data={**tiny_config_dict("x")["data"], "synthetic_train_size": 256, "augment": False})
    result = make_task(d).run()
    assert result["top1"] > 0.9  # fixed prototypes + noise are easy once learned (shifted crops would not be)
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "checkpoints/last.pt"):
        assert (tmp_path / "l" / name).exists(), name


def test_grad_clipping_in_task_logs_norm(tmp_path):
    d = tiny_config_dict(tmp_path / "c", epochs=1, optimizer={"lr": 0.05, "max_grad_norm": 1e-3, "fused": "torch"})
    task = make_task(d)
    task.run()
    assert task.grad_norm is not None and task.grad_norm.item() > 1e-3  # the pre-clip norm is reported


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_train_step_never_syncs(tmp_path):
    d = tiny_config_dict(tmp_path / "g", device="cuda", amp="bf16")
    task = make_task(d)
    task.phase = task.phases[0]
    images, target = next(iter(task.train_data))
    task.train_step(images, target)  # first step: lazy init (cuBLAS handles, optimizer state)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            task.train_step(images, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("first,then", [
    (dict(epochs=2, test_phase_period=3), dict(epochs=4, test_phase_period=3)),  # a finished run, continued longer
    (dict(epochs=4, test_phase_period=1), dict(epochs=4, test_phase_period=2)),  # another test period mid-run
])
def test_resume_with_another_plan_trains_every_epoch_once(tmp_path, first, then):
    torch.set_num_threads(1)
    hooks = [InterruptAt(phases=2)] if first["epochs"] == then["epochs"] else []
    try:
        make_task(tiny_config_dict(tmp_path / "run", **first), hooks).run()
    except Interrupt:
        pass
    resumed = make_task(tiny_config_dict(tmp_path / "run", **then))
    resumed.run()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    trained = [r["epoch"] for r in map(json.loads, lines) if r["phase_type"] == "train"]
    assert trained == [0, 1, 2, 3] and resumed.train_phases_done == 4


def _interrupted_after_one_epoch(d):
    with pytest.raises(Interrupt):
        make_task(d, [InterruptAt(phases=1)]).run()


@pytest.mark.parametrize("fused", ["torch", "auto"])  # torch.optim.SGD, and classy_fast's fused SGD when built
def test_resume_takes_this_runs_optimizer_settings_and_warns_once(tmp_path, caplog, fused):
    """A changed optimizer.lr / weight_decay / momentum on resume is used (the config says so), not the
    checkpoint's, with one warning naming old → new; the lr tensors stay the same objects (fill_ in place)."""
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "a", optimizer={"lr": 0.05, "fused": fused})
    _interrupted_after_one_epoch(d)
    changed = {**d, "optimizer": {"lr": 0.1, "weight_decay": 1e-3, "momentum": 0.8, "fused": fused}}
    cfg = config_from_dict(changed, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    lr_tensors = [g["lr"] for g in task.optimizer.param_groups]
    with caplog.at_level("WARNING", logger="classy_fast"):
        task.load_state_dict(load_checkpoint(os.path.join(d["output_dir"], "checkpoints", "last.pt")))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "lr 0.05 → 0.1" in warnings[0] and "momentum 0.9 → 0.8" in warnings[0]
    assert "weight_decay 0.0005 → 0.001 (param group 0)" in warnings[0]
    groups = task.optimizer.param_groups
    assert [g["lr"] for g in groups] == lr_tensors and all(g["lr"] is t for g, t in zip(groups, lr_tensors))
    assert [g["base_lr"] for g in groups] == [0.1, 0.1] and [g["momentum"] for g in groups] == [0.8, 0.8]
    assert [g["weight_decay"] for g in groups] == [1e-3, 0.0]
    expected = 0.1 * task.lr.schedule(task.lr.where(task.num_updates))
    assert all(float(t) == pytest.approx(expected) for t in lr_tensors) and task.num_updates == 6
    assert len(task.optimizer.state) > 0  # the momentum buffers still come from the checkpoint
    task.run()
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["phase_type"] == "train"]
    assert train[-1]["lr"] == pytest.approx(0.1 * task.lr.schedule(task.lr.where(11)))


def test_resume_with_unchanged_settings_does_not_warn(tmp_path, caplog):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "a")
    _interrupted_after_one_epoch(d)
    with caplog.at_level("WARNING", logger="classy_fast"):
        make_task(d)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_resume_with_other_meters(tmp_path):
    """At a phase boundary the meters start afresh anyway: another meter list just works. Inside a phase the
    saved meter state continues, so another list is a CheckpointError naming both, not a KeyError."""
    from classy_fast.checkpoint import CheckpointError

    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "a")
    _interrupted_after_one_epoch(d)
    other = {**d, "meters": [{"name": "precision_at_k", "topk": [1]}, {"name": "accuracy", "topk": [1]}]}
    task = make_task(other)
    assert task.phase_index == 1 and task.step_in_phase == 0
    final = task.run()
    assert "precision@1" in final and "top1" in final and "top5" not in final

    mid = tiny_config_dict(tmp_path / "b", hooks={"progress_bar": False, "log_interval": 2, "model_complexity": False,
                                                  "checkpoint": {"every_n_steps": 2}})
    with pytest.raises(Interrupt):
        make_task(mid, [InterruptAt(step=9)]).run()
    for meters in ([{"name": "precision_at_k", "topk": [1]}], [{"name": "accuracy", "topk": [1]}]):
        with pytest.raises(CheckpointError, match=r"inside an epoch with meters \[accuracy\(topk=\[1, 5\]\)\], this run "
                                                  r"has \[" + meters[0]["name"]):
            make_task({**mid, "meters": meters})
    assert make_task(mid).step_in_phase == 2  # the same meters resume


def test_cli_resume_mid_epoch_with_other_meters_names_the_file_and_meters(tmp_path, capsys):
    from classy_fast import train

    torch.set_num_threads(1)
    mid = tiny_config_dict(tmp_path / "b", hooks={"progress_bar": False, "log_interval": 2, "model_complexity": False,
                                                  "checkpoint": {"every_n_steps": 2}})
    with pytest.raises(Interrupt):
        make_task(mid, [InterruptAt(step=9)]).run()
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**mid, "meters": [{"name": "recall_at_k", "topk": [2]}]}))
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {tmp_path / 'b' / 'checkpoints' / 'last.pt'}: the checkpoint was written inside an "
                          f"epoch with meters [accuracy(topk=[1, 5])], this run has [recall_at_k(topk=[2])]"), err


def _metrics_rows(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(line)["phase_type"], json.loads(line)["epoch"]) for line in lines]


def test_resumed_run_writes_each_phase_record_once(tmp_path):
    # The checkpoint comes from the end of train epoch 1; the test phase after it was recorded before the
    # process died in epoch 2, so the resumed run re-runs (and re-records) it.
    d = tiny_config_dict(tmp_path / "r")
    with pytest.raises(Interrupt):
        make_task(d, [InterruptAt(step=9)]).run()
    assert _metrics_rows(tmp_path / "r") == [("train", 0), ("test", 0)]
    make_task(d).run()
    assert _metrics_rows(tmp_path / "r") == [("train", 0), ("test", 0), ("train", 1), ("test", 1)]
    assert len((tmp_path / "r" / "metrics.csv").read_text().splitlines()) == 1 + 4
    # A fresh run in the same directory replaces the files instead of appending to them.
    make_task(d, resume=False).run()
    assert _metrics_rows(tmp_path / "r") == [("train", 0), ("test", 0), ("train", 1), ("test", 1)]


def test_resume_after_a_torn_metrics_record_drops_it_and_other_damage_names_the_file(tmp_path):
    """A process killed while appending leaves a last line without its newline: that phase's checkpoint was
    never written (the checkpoint hook runs after the metrics files), so the phase re-runs and the torn
    line goes. A damaged line elsewhere is an error naming the file (it was a bare JSONDecodeError)."""
    d = tiny_config_dict(tmp_path / "r")
    with pytest.raises(Interrupt):
        make_task(d, [InterruptAt(step=9)]).run()
    jsonl = tmp_path / "r" / "metrics.jsonl"
    jsonl.write_text(jsonl.read_text() + '{"phase_type": "train", "ep')
    make_task(d).run()
    assert _metrics_rows(tmp_path / "r") == [("train", 0), ("test", 0), ("train", 1), ("test", 1)]

    d2 = tiny_config_dict(tmp_path / "s")
    with pytest.raises(Interrupt):
        make_task(d2, [InterruptAt(step=9)]).run()
    jsonl = tmp_path / "s" / "metrics.jsonl"
    jsonl.write_text("garbage\n" + jsonl.read_text())
    with pytest.raises(ValueError, match=rf"{jsonl}: line 1 is not a JSON record"):
        make_task(d2).run()


def test_resume_with_another_param_group_layout_is_an_error_naming_the_file(tmp_path, capsys):
    """torch's bare 'loaded state dict has a different number of parameter groups' named neither the file
    nor the setting that changed the groups."""
    import yaml

    from classy_fast import train

    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "a", epochs=1)
    make_task(d).run()
    cfg = tmp_path / "c.yaml"
    d["optimizer"] = {**d["optimizer"], "no_weight_decay_on_norm_and_bias": False}
    cfg.write_text(yaml.safe_dump({**d, "epochs": 2}))
    assert train.main(["--config", str(cfg), "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    assert err.startswith(f"error: {last}: the checkpoint's optimizer has 2 parameter groups"), err
    assert "this run's 1" in err and "optimizer.no_weight_decay_on_norm_and_bias" in err
