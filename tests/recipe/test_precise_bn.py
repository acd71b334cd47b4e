"""Precise BN: recomputed statistics against a manual computation, and the hook inside a run."""

import torch
from torch import nn

from classy_fast.config import config_from_dict
from classy_fast.hooks import PreciseBNHook, build_hooks
from classy_fast.hooks.precise_bn import update_bn_stats
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict
from . import models  # noqa: F401  (registers test_one_bn)


def test_update_bn_stats_against_manual_computation():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    bn = nn.BatchNorm2d(3, momentum=0.1)
    model = nn.Sequential(conv, bn).train()
    bn.running_mean.fill_(7.0)  # stale statistics that must go
    batches = [torch.randn(5, 2, 6, 6) * (i + 1) + i for i in range(4)]
    with torch.no_grad():
        feats = [conv(x) for x in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(dim=0)
    # per-batch unbiased variance over (N, H, W), averaged over the batches
    variances = torch.stack([f.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for f in feats]).mean(dim=0)
    assert update_bn_stats(model, iter(batches)) == 4
    torch.testing.assert_close(bn.running_mean, means)
    torch.testing.assert_close(bn.running_var, variances)
    assert bn.momentum == 0.1 and model.training  # restored; modes untouched


def test_update_bn_stats_skips_eval_mode_layers_and_empty_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    model[1].eval()
    model[1].running_mean.fill_(3.0)
    assert update_bn_stats(model, iter([torch.randn(4, 1, 2, 2)])) == 0
    assert torch.equal(model[1].running_mean, torch.full((2,), 3.0))
    model.train()
    assert update_bn_stats(model, iter([])) == 0
    assert torch.equal(model[1].running_mean, torch.full((2,), 3.0))


def test_precise_bn_hook_uses_the_first_training_batches(tmp_path):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=1, model={"name": "test_one_bn", "width": 3},
                         precise_bn={"enabled": True, "num_samples": 20})  # 20 samples → 2 batches of 16
    cfg = config_from_dict(d, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    assert isinstance(task.hooks[0], PreciseBNHook)
    task.run()
    model = task.model
    task.train_data.resume_at(0, 0)
    batches = [x for x, _ in list(task.train_data)[:2]]
    with torch.no_grad():
        feats = [model.conv(x) for x in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(dim=0)
    variances = torch.stack([f.transpose(0, 1).reshape(3, -1).var(dim=1) for f in feats]).mean(dim=0)
    torch.testing.assert_close(model.bn.running_mean, means)
    torch.testing.assert_close(model.bn.running_var, variances)
