"""Fine-tuning: a frozen trunk stays bit-identical while the new head trains; plain state dicts; head/trunk lrs."""

import os

import pytest
import yaml
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


def test_resume_and_eval_of_a_finetuned_run_do_not_read_pretrained_again(tmp_path, pretrained, capsys):
    """The checkpoint holds every weight: resuming (or --eval-only --resume) a fine-tuning run works after
    the pretrained file is gone, still with the frozen trunk and the head/trunk lr groups."""
    import shutil

    from classy_fast import train

    torch.set_num_threads(1)
    own = str(tmp_path / "pre.pt")
    shutil.copy(pretrained, own)
    d = tiny_config_dict(tmp_path / "ft", epochs=2, finetune={"pretrained": own, "freeze_trunk": True,
                                                               "head_lr": 0.3})
    d["data"] = {**d["data"], "num_classes": 4}
    d["hooks"] = {**d["hooks"], "metrics_files": False}
    cfg_path = tmp_path / "ft.yaml"
    cfg_path.write_text(yaml.safe_dump({**d, "epochs": 1}))
    assert train.main(["--config", str(cfg_path)]) == 0
    os.remove(own)
    last = str(tmp_path / "ft" / "checkpoints" / "last.pt")
    trained = torch.load(last, weights_only=True)["model"]
    assert train.main(["--config", str(cfg_path), "--epochs", "2", "--resume", "auto"]) == 0, capsys.readouterr().err
    resumed = torch.load(last, weights_only=True)["model"]
    for key, value in trained.items():  # the trunk stayed frozen through the resumed epoch
        if not key.startswith("fc."):
            assert torch.equal(value, resumed[key]), key
    assert not torch.equal(trained["fc.weight"], resumed["fc.weight"])
    assert train.main(["--config", str(cfg_path), "--eval-only", "--resume", last]) == 0, capsys.readouterr().err
    # A fresh start still needs the file, and says so.
    assert train.main(["--config", str(cfg_path), "--output-dir", str(tmp_path / "fresh")]) == 2
    assert "finetune.pretrained: checkpoint not found" in capsys.readouterr().err


def test_resume_with_another_head_lr_uses_it(tmp_path, pretrained, caplog):
    """Head / trunk groups take this run's head_lr / trunk_lr on resume, each group its own."""
    torch.set_num_threads(1)
    top = dict(epochs=2, finetune={"pretrained": pretrained, "head_lr": 0.3, "trunk_lr": 0.01})
    first = make_task(tmp_path, "ft", **{**top, "epochs": 1})
    first.run()
    task = make_task(tmp_path, "ft", **{**top, "finetune": {**top["finetune"], "head_lr": 0.2}})
    head = {id(p) for p in task.model.fc.parameters()}
    with caplog.at_level("WARNING", logger="classy_fast"):
        task.load_state_dict(torch.load(str(tmp_path / "ft" / "checkpoints" / "last.pt"), weights_only=True))
    for group in task.optimizer.param_groups:
        in_head = any(id(p) in head for p in group["params"])
        assert group["base_lr"] == (0.2 if in_head else 0.01)
        assert float(group["lr"]) == pytest.approx(group["base_lr"] * task.lr.schedule(task.lr.where(task.num_updates)))
    head_groups = [i for i, g in enumerate(task.optimizer.param_groups) if any(id(p) in head for p in g["params"])]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"lr 0.3 → 0.2 (param groups {', '.join(map(str, head_groups))})" in warning


@pytest.mark.parametrize("key", ["head_lr", "trunk_lr", "freeze_trunk", "reset_head"])
def test_finetune_options_without_pretrained_are_refused(tmp_path, key):
    """Without finetune.pretrained there are no head/trunk groups: a head_lr would be silently ignored."""
    from classy_fast.config import ConfigError

    value = 0.01 if key.endswith("_lr") else True
    with pytest.raises(ConfigError, match=rf"finetune\.{key} needs finetune\.pretrained"):
        make_task(tmp_path, "t", finetune={key: value})
