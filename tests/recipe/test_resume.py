"""A run with Mixup, random erasing, EMA, precise BN and accumulation, killed mid-epoch and resumed, ends bit-identical."""

import os

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import ClassyHook, EMAHook, build_hooks
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


class Interrupt(Exception):
    pass


class InterruptAtUpdate(ClassyHook):
    def __init__(self, update):
        self.update = update

    def on_step(self, task):
        if task.in_train_phase and task.num_updates == self.update:
            raise Interrupt


def make_task(out, extra_hooks=()):
    d = tiny_config_dict(out, simulated_global_batch_size=32, mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0,
                                                                     "mode": "pair"},
                         ema={"enabled": True, "decay": 0.9}, precise_bn={"enabled": True, "num_samples": 16},
                         random_erasing={"prob": 0.5, "value": "random"})
    d["data"] = {**d["data"], "synthetic_train_size": 128}  # 8 batches of 16 → 4 updates per epoch
    d["hooks"] = {**d["hooks"], "checkpoint": {"every_n_steps": 2}}
    cfg = config_from_dict(d, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg) + list(extra_hooks))
    last = os.path.join(out, "checkpoints", "last.pt")
    if os.path.exists(last):
        task.load_state_dict(load_checkpoint(last))
    return task


def test_recipe_run_resumes_bit_identically(tmp_path):
    torch.set_num_threads(1)
    straight = make_task(str(tmp_path / "a"))
    straight.run()
    with pytest.raises(Interrupt):
        make_task(str(tmp_path / "b"), [InterruptAtUpdate(6)]).run()  # epoch 2, after its second update
    resumed = make_task(str(tmp_path / "b"))
    assert resumed.phase_index == 2 and resumed.step_in_phase == 4
    resumed.run()
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    ema_a = next(h for h in straight.hooks if isinstance(h, EMAHook)).ema
    ema_b = next(h for h in resumed.hooks if isinstance(h, EMAHook)).ema
    assert ema_a.updates == ema_b.updates == 8
    for k, v in ema_a.module.state_dict().items():
        assert torch.equal(v, ema_b.module.state_dict()[k]), k
    assert straight.last_phase_metrics["top1_ema"] == resumed.last_phase_metrics["top1_ema"]
