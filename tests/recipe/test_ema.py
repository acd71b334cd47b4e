"""Model EMA: the average against a hand computation, the hook's test metrics, its checkpoint state."""

import os

import pytest
import torch
from torch import nn

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import EMAHook, build_hooks
from classy_fast.hooks import ema as ema_module
from classy_fast.hooks.ema import ModelEMA
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict
from . import models  # noqa: F401  (registers test_one_bn)


@pytest.mark.parametrize("fused", [True, False])
def test_ema_against_hand_computed_average(monkeypatch, fused):
    if not fused:
        monkeypatch.setattr(ema_module, "_fused_ema_update", lambda: None)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.9, warmup=True, include_buffers=True)
    assert (ema._fused is not None) == (fused and ema_module._fused_ema_update() is not None)
    expected = model[0].weight.detach().clone()
    expected_mean = model[1].running_mean.clone()
    for n, value in enumerate([3.0, -1.0, 5.0, 2.0]):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(value / 2)
        model[1].num_batches_tracked += 1
        d = min(0.9, (1 + n) / (10 + n))  # the warmup ramp: 0.1, 0.1818..., 0.25, 0.3077...
        expected = d * expected + (1 - d) * value
        expected_mean = d * expected_mean + (1 - d) * value / 2
        ema.update()
        assert ema.decay_at(n) == pytest.approx(d)
    torch.testing.assert_close(ema.module[0].weight, expected)
    torch.testing.assert_close(ema.module[1].running_mean, expected_mean)
    assert int(ema.module[1].num_batches_tracked) == 4  # integer buffers are copied
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_ema_without_warmup_and_with_copied_buffers():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, warmup=False, include_buffers=False)
    with torch.no_grad():
        model[0].weight.fill_(4.0)
        model[1].running_var.fill_(9.0)
    ema.update()
    ema.update()
    assert float(ema.module[0].weight) == pytest.approx(0.5 * (0.5 * 0 + 0.5 * 4) + 0.5 * 4)  # 3.0
    assert float(ema.module[1].running_var) == 9.0


def make_task(tmp_path, name, **top):
    d = tiny_config_dict(tmp_path / name, ema={"enabled": True, "decay": 0.8, "every_n_updates": 2}, **top)
    cfg = config_from_dict(d, "test")
    return ClassificationTask(cfg, hooks=build_hooks(cfg))


def test_ema_hook_reports_ema_metrics_and_checkpoints_its_state(tmp_path):
    torch.set_num_threads(1)
    task = make_task(tmp_path, "run")
    result = task.run()
    assert {"top1_ema", "top5_ema", "loss_ema"} <= result.keys()
    hook = next(h for h in task.hooks if isinstance(h, EMAHook))
    assert hook.ema.updates == task.num_updates // 2 == 6
    state = load_checkpoint(os.path.join(tmp_path, "run", "checkpoints", "last.pt"))
    saved = state["hooks"]["ema"]
    assert saved["updates"] == 6
    for k, v in hook.ema.module.state_dict().items():
        assert torch.equal(saved["module"][k], v), k
    # A new task restores the EMA from the checkpoint (before its hooks built the EMA model).
    resumed = make_task(tmp_path, "run")
    resumed.load_state_dict(state)
    resumed_hook = next(h for h in resumed.hooks if isinstance(h, EMAHook))
    resumed_hook.on_start(resumed)
    assert resumed_hook.ema.updates == 6
    for k, v in hook.ema.module.state_dict().items():
        assert torch.equal(resumed_hook.ema.module.state_dict()[k], v), k
    # The EMA evaluation is the same as evaluating the EMA weights as the model.
    evaluator = make_task(tmp_path, "eval", test_only=True)
    evaluator.model.load_state_dict(saved["module"])
    assert evaluator.run()["top1"] == result["top1_ema"]


def test_eval_only_run_evaluates_the_checkpointed_ema_weights(tmp_path, caplog):
    torch.set_num_threads(1)
    trained = make_task(tmp_path, "run").run()
    state = load_checkpoint(os.path.join(tmp_path, "run", "checkpoints", "last.pt"))
    evaluator = make_task(tmp_path, "eval", test_only=True)
    evaluator.load_state_dict(state, weights_only=True)
    result = evaluator.run()
    assert result["top1"] == trained["top1"] and result["loss"] == pytest.approx(trained["loss"])
    assert result["top1_ema"] == trained["top1_ema"] and result["loss_ema"] == pytest.approx(trained["loss_ema"])
    assert evaluator.num_updates == 0  # the weights came, not the training progress

    # A checkpoint without an EMA: the model is still evaluated, and the log says why no _ema metrics.
    del state["hooks"]["ema"]
    plain = make_task(tmp_path, "eval_plain", test_only=True)
    plain.load_state_dict(state, weights_only=True)
    with caplog.at_level("WARNING", logger="classy_fast"):
        result = plain.run()
    assert result["top1"] == trained["top1"] and "top1_ema" not in result
    assert "no EMA state was loaded" in caplog.text


def bn_stats_through(model, batches):
    """Mean over batches of the per-batch mean / unbiased variance of ``model.conv``'s output (precise BN by hand)."""
    with torch.no_grad():
        feats = [model.conv(x) for x in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(dim=0)
    variances = torch.stack([f.transpose(0, 1).reshape(f.shape[1], -1).var(dim=1) for f in feats]).mean(dim=0)
    return means, variances


@pytest.mark.parametrize("ema_precise_bn", [True, False])
def test_precise_bn_recomputes_the_ema_statistics_through_the_ema_weights(tmp_path, ema_precise_bn):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=1, model={"name": "test_one_bn", "width": 3},
                         precise_bn={"enabled": True, "num_samples": 20},  # 2 batches of 16
                         ema={"enabled": True, "decay": 0.5, "precise_bn": ema_precise_bn})
    cfg = config_from_dict(d, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    task.run()
    ema = next(h for h in task.hooks if isinstance(h, EMAHook)).ema.module
    assert not ema.training and not ema.bn.training  # modes restored after the recompute
    task.train_data.resume_at(0, 0)
    batches = [x for x, _ in list(task.train_data)[:2]]
    model_stats = bn_stats_through(task.model, batches)
    torch.testing.assert_close((task.model.bn.running_mean, task.model.bn.running_var), model_stats)
    ema_stats = bn_stats_through(ema, batches)
    assert not torch.allclose(ema_stats[0], model_stats[0])  # the EMA weights differ from the model's
    got = (ema.bn.running_mean, ema.bn.running_var)
    if ema_precise_bn:
        torch.testing.assert_close(got, ema_stats)
    else:  # the EMA of the running statistics seen during training
        assert not torch.allclose(got[0], ema_stats[0])
