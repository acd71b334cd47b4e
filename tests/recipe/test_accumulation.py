"""Gradient accumulation: k micro-batches of B equal one batch of k·B (BN-free model), with and without clipping."""

import pytest
import torch

from classy_fast.config import ConfigError, config_from_dict
from classy_fast.hooks import ClassyHook, build_hooks
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict
from . import models  # noqa: F401  (registers test_bn_free)


def make_task(tmp_path, name, batch_size, simulated=None, max_grad_norm=None, **top):
    d = tiny_config_dict(tmp_path / name, model={"name": "test_bn_free", "width": 4},
                         optimizer={"lr": 0.1, "fused": "torch", "max_grad_norm": max_grad_norm},
                         simulated_global_batch_size=simulated, **top)
    d["data"] = {**d["data"], "batch_size": batch_size, "augment": False}  # crops are drawn per batch index
    d["hooks"] = {"checkpoint": {"enabled": False}, "metrics_files": False, **d["hooks"]}
    cfg = config_from_dict(d, "test")
    return ClassificationTask(cfg, hooks=build_hooks(cfg))


@pytest.mark.parametrize("max_grad_norm", [None, 0.05])
def test_two_micro_batches_of_8_equal_one_batch_of_16(tmp_path, max_grad_norm):
    torch.set_num_threads(1)
    big = make_task(tmp_path, "big", 16, max_grad_norm=max_grad_norm)
    accumulated = make_task(tmp_path, "acc", 8, simulated=16, max_grad_norm=max_grad_norm)
    assert accumulated.accumulation.steps == 2
    assert accumulated.updates_per_epoch == big.updates_per_epoch == 6
    result_big, result_acc = big.run(), accumulated.run()
    assert accumulated.num_updates == big.num_updates == 12
    for (name, a), b in zip(big.model.state_dict().items(), accumulated.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert result_acc["top1"] == result_big["top1"]
    assert result_acc["loss"] == pytest.approx(result_big["loss"], rel=1e-5)
    if max_grad_norm is not None:  # clipping acted on the accumulated gradient, and its norm is reported
        assert float(big.grad_norm) > max_grad_norm
        assert float(accumulated.grad_norm) == pytest.approx(float(big.grad_norm), rel=1e-4)


def test_lr_schedule_counts_updates_and_trailing_batches_are_dropped(tmp_path):
    # 96 samples / batch 16 = 6 batches; 4 per update → 1 update per epoch, 2 batches left out.
    task = make_task(tmp_path, "t", 16, simulated=64, epochs=3)
    steps = []

    class Record(ClassyHook):
        def on_step(self, t):
            steps.append((t.phase["type"], t.step_in_phase, t.num_updates))

    task.hooks.append(Record())
    task.run()
    assert task.updates_per_epoch == 1 and task.num_updates == 3
    train_steps = [s for s in steps if s[0] == "train"]
    assert [s[1] for s in train_steps] == [1, 2, 3, 4] * 3  # 4 micro-steps per epoch
    assert [s[2] for s in train_steps[:4]] == [0, 0, 0, 1]
    assert task.lr.updates_per_epoch == 1


def test_simulated_batch_must_be_a_multiple_of_the_real_one(tmp_path):
    with pytest.raises(ConfigError, match=r"multiple of the real global batch.*16 × 1 = 16"):
        make_task(tmp_path, "bad", 16, simulated=24)
    with pytest.raises(ConfigError, match="every_n_steps"):
        make_task(tmp_path, "bad2", 8, simulated=16,
                  hooks={"progress_bar": False, "model_complexity": False, "checkpoint": {"every_n_steps": 3}})
    with pytest.raises(ValueError, match="every_n_steps must be ≥ 0"):  # not "a multiple of the accumulation steps"
        make_task(tmp_path, "bad3", 8, simulated=16,
                  hooks={"progress_bar": False, "model_complexity": False, "checkpoint": {"every_n_steps": -3}})


def test_resume_with_another_accumulation_continues_the_lr_schedule_at_its_epoch(tmp_path):
    """A phase-end checkpoint of 1 epoch × 6 updates resumed with 2 micro-steps per update (3 updates per
    epoch) of a 2-epoch linear decay: the second epoch starts halfway down the schedule, not at its end
    (6 updates of 2 × 3 is the whole run)."""
    from classy_fast.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    first = make_task(tmp_path, "run", 16, epochs=1, scheduler={"name": "linear", "warmup_epochs": 0.0},
                      hooks={"progress_bar": False, "model_complexity": False, "checkpoint": {}})
    first.run()
    resumed = make_task(tmp_path, "run", 16, simulated=32, epochs=2,
                        scheduler={"name": "linear", "warmup_epochs": 0.0})
    resumed.load_state_dict(load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt")))
    assert resumed.updates_per_epoch == 3 and resumed.num_updates == 3
    assert float(resumed.optimizer.param_groups[0]["lr"]) == pytest.approx(0.1 * 0.5)


def test_mid_epoch_resume_with_another_accumulation_is_refused(tmp_path):
    from classy_fast.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    first = make_task(tmp_path, "run", 16, epochs=1,
                      hooks={"progress_bar": False, "model_complexity": False, "checkpoint": {"every_n_steps": 2}})

    class Stop(Exception):
        pass

    class StopAt(ClassyHook):
        def on_step(self, t):
            if t.step_in_phase == 3:
                raise Stop

    first.hooks.append(StopAt())
    with pytest.raises(Stop):
        first.run()
    resumed = make_task(tmp_path, "run", 16, simulated=32, epochs=1)
    with pytest.raises(ValueError, match=r"cannot resume mid-epoch.*simulated_global_batch_size"):
        resumed.load_state_dict(load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt")))
