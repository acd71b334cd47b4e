"""Fine-tuning: a frozen trunk stays bit-identical while the new head trains; plain state dicts; head/trunk lrs."""

import os

import pytest
import torch

from classy_fast.checkpoint import CheckpointError
from classy_fast.config import config_from_dict
from classy_fast.hooks import build_hooks
from classy_fast.models import SmallResNet
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


def make_task(tmp_path, name, num_classes=6, channels=1, **top):
    d = tiny_config_dict(tmp_path / name, **top)
    d["data"] = {**d["data"], "num_classes": num_classes, "channels": channels}
    cfg = config_from_dict(d, "test")
    return ClassificationTask(cfg, hooks=build_hooks(cfg))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("pre")
    make_task(tmp, "pre", epochs=1).run()
    return str(tmp / "pre" / "checkpoints" / "last.pt")


def test_frozen_trunk_changes_only_the_head(tmp_path, pretrained):
    torch.set_num_threads(1)
    before = torch.load(pretrained, weights_only=True)["model"]
    task = make_task(tmp_path, "ft", num_classes=4, epochs=2,
                     finetune={"pretrained": pretrained, "freeze_trunk": True, "head_lr": 0.5})
    assert task.model.fc.out_features == 4
    assert {id(p) for g in task.optimizer.param_groups for p in g["params"]} == {id(p) for p in task.model.fc.parameters()}
    assert all(g["base_lr"] == 0.5 for g in task.optimizer.param_groups)
    start_head = task.model.fc.weight.detach().clone()
    task.run()
    after = task.model.state_dict()
    for key, value in after.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(value, before[key]), key  # weights and BatchNorm statistics (trunk in eval mode)
    assert not torch.equal(after["fc.weight"], start_head)
    assert not task.model.stem.training  # the trunk stayed in eval mode through the train phases


def test_plain_state_dict_rgb_to_gray_and_same_head(tmp_path):
    rgb = SmallResNet(num_classes=6, in_channels=3, width=4)
    path = os.path.join(tmp_path, "plain.pth")
    torch.save(rgb.state_dict(), path)  # a torchvision-style file: just the tensors
    task = make_task(tmp_path, "ft", finetune={"pretrained": path})
    conv = task.model.stem[0].weight
    torch.testing.assert_close(conv, rgb.stem[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(task.model.fc.weight, rgb.fc.weight)  # same class count: the head is kept ...
    reset = make_task(tmp_path, "ft2", finetune={"pretrained": path, "reset_head": True})
    assert not torch.equal(reset.model.fc.weight, rgb.fc.weight)  # ... unless reset_head


def test_head_and_trunk_learning_rates(tmp_path, pretrained):
    task = make_task(tmp_path, "lr", finetune={"pretrained": pretrained, "head_lr": 0.3, "trunk_lr": 0.01})
    head = {id(p) for p in task.model.fc.parameters()}
    for group in task.optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["base_lr"] == (0.3 if in_head.pop() else 0.01)
    task.lr.set_for_update(1)  # in the warmup: factor < 1
    factors = [float(g["lr"]) / g["base_lr"] for g in task.optimizer.param_groups]
    assert factors == pytest.approx([factors[0]] * len(factors), rel=1e-6) and factors[0] < 1  # one schedule factor


def test_checkpoint_that_does_not_fit_is_refused(tmp_path):
    path = os.path.join(tmp_path, "other.pth")
    torch.save(SmallResNet(num_classes=6, in_channels=1, width=8).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit SmallResNet.*stem.0.weight"):
        make_task(tmp_path, "bad", finetune={"pretrained": path})
