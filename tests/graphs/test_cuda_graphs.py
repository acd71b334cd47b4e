"""Whole-step CUDA graphs: the CPU fallback here; graphed-vs-eager equality on a GPU."""

import logging

import pytest
import torch

from classy_fast.config import config_from_dict
from classy_fast.cuda_graphs import GraphedEvalStep, GraphedTrainStep, unsupported_reason
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict

def make_task(tmp_path, name, **top):
    d = tiny_config_dict(tmp_path / name, **top)
    d["hooks"] = {"progress_bar": False, "log_interval": 0, "model_complexity": False,
                  "checkpoint": {"enabled": False}, "metrics_files": False}
    return ClassificationTask(config_from_dict(d, "test"))


def test_cpu_run_says_why_and_trains_eagerly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="classy_fast"):
        task = make_task(tmp_path, "cpu", cuda_graphs=True)
    assert "CUDA graphs need a CUDA device" in caplog.text and "training eagerly" in caplog.text
    assert not isinstance(task._train_step, GraphedTrainStep)
    result = task.run()
    assert result["phase_type"] == "test" and 0.0 <= result["top1"] <= 1.0


def test_cpu_eval_is_eager(tmp_path):
    task = make_task(tmp_path, "cpu_eval", cuda_graphs=True)
    assert not isinstance(task._eval_step, GraphedEvalStep)


def test_reason_for_dynamic_shapes(tmp_path):
    task = make_task(tmp_path, "dyn", data={**tiny_config_dict("x")["data"], "drop_last": False})
    task.device = torch.device("cuda")  # pretend: only the shape rule should speak
    assert "static shapes" in unsupported_reason(task)


def run_steps(task, batches, graphed, lr_change_at=None):
    task.phase = task.phases[0]
    task.model.train()
    step = GraphedTrainStep(task, warmup_steps=2) if graphed else task.train_step
    for i, (x, y) in enumerate(batches):
        if lr_change_at is not None and i == lr_change_at:
            for g in task.optimizer.param_groups:
                g["base_lr"] *= 10  # the scheduler writes base_lr × factor into the device lr before each step
            task.lr.last_factor = float("nan")
            task.lr.set_for_update(task.num_updates)
        step(x, y)
    torch.cuda.synchronize()
    return {k: v.detach().float().cpu() for k, v in task.model.state_dict().items()}, task.loss_meter.value()["loss"]


@pytest.mark.parametrize("amp,channels_last", [("none", False), ("bf16", False), ("fp16", False), ("bf16", True)])
@pytest.mark.parametrize("lr_change_at", [None, 4])
@pytest.mark.cuda
def test_graphed_and_eager_training_match(tmp_path, amp, channels_last, lr_change_at):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    d = dict(device="cuda", amp=amp, seed=11, channels_last=channels_last)
    eager = make_task(tmp_path, "e", **d)
    graphed = make_task(tmp_path, "g", **d)
    batches = list(eager.train_data)  # one epoch: 6 batches
    w_eager, loss_eager = run_steps(eager, batches, graphed=False, lr_change_at=lr_change_at)
    w_graph, loss_graph = run_steps(graphed, batches, graphed=True, lr_change_at=lr_change_at)
    tol = 1e-5 if amp == "none" else 2e-2
    for k in w_eager:
        torch.testing.assert_close(w_graph[k], w_eager[k], rtol=tol, atol=tol, msg=k)
    assert loss_graph == pytest.approx(loss_eager, rel=tol)
    assert graphed.num_updates == eager.num_updates == len(batches) == 6


@pytest.mark.cuda
def test_compiled_forward_inside_the_graph_matches_compiled_eager(tmp_path):
    """compile: true with cuda_graphs: true (bench mode compile_graphs): the inductor-compiled
    forward/backward captured in the whole-step graph trains like the same compiled step eagerly."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch._dynamo.reset()
    d = dict(device="cuda", amp="bf16", seed=11, channels_last=True, compile=True)
    eager = make_task(tmp_path, "ce", **d)
    graphed = make_task(tmp_path, "cg", **d)
    batches = list(eager.train_data)
    w_eager, loss_eager = run_steps(eager, batches, graphed=False)
    w_graph, loss_graph = run_steps(graphed, batches, graphed=True)
    for k in w_eager:
        torch.testing.assert_close(w_graph[k], w_eager[k], rtol=2e-2, atol=2e-2, msg=k)
    assert loss_graph == pytest.approx(loss_eager, rel=2e-2)


@pytest.mark.cuda
def test_capture_under_ddp_world_size_1(tmp_path):
    """DDP (NCCL, one process) built before the task: the graph waits 11 eager steps, then replays."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from classy_fast import distributed
    from classy_fast.config import DistributedConfig

    distributed.init_distributed(DistributedConfig(single_process_ddp=True, timeout_seconds=60), "cuda")
    try:
        d = tiny_config_dict(tmp_path / "ddp", device="cuda", amp="bf16", cuda_graphs=True, epochs=3,
                             distributed={"single_process_ddp": True})
        d["hooks"] = {"progress_bar": False, "log_interval": 0, "model_complexity": False,
                      "checkpoint": {"enabled": False}, "metrics_files": False}
        task = ClassificationTask(config_from_dict(d, "test"))
        assert isinstance(task.train_model, torch.nn.parallel.DistributedDataParallel)
        step = task._train_step
        assert isinstance(step, GraphedTrainStep) and step.warmup_steps == 11
        result = task.run()  # 3 epochs × 6 steps: capture at step 12, replays after
        assert step.captured and task.num_updates == 18 and result["loss"] == result["loss"]  # finite
    finally:
        distributed.shutdown()


@pytest.mark.cuda
def test_graphed_eval_matches_eager_eval(tmp_path):
    """One eval graph per batch shape (40 test images in batches of 16: 16, 16, 8), reused across
    eval phases while training changes the weights in place; the metrics equal an eager eval."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    task = make_task(tmp_path, "eval", device="cuda", amp="bf16", seed=5, cuda_graphs=True, epochs=3)
    assert isinstance(task._eval_step, GraphedEvalStep)
    task.run()
    graphed = task.last_phase_metrics
    assert set(task._eval_step.graphs) and len(task._eval_step.graphs) == 2
    for meter in (*task.meters, task.loss_meter, task.throughput):
        meter.reset()
    task.model.eval()
    for images, target in task.test_data:
        task.eval_step(images, target)
    for meter in (*task.meters, task.loss_meter):
        meter.sync()
    eager = task.metrics()
    assert graphed["top1"] == pytest.approx(eager["top1"], abs=1e-6)
    assert graphed["loss"] == pytest.approx(eager["loss"], rel=1e-4)
