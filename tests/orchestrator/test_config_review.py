"""Config, model-builder and optimizer-builder behaviour found in review: YAML 1.1 spellings of choices,
model options out of range, the optimizer options that were silently ignored or accepted."""

import math

import pytest
import torch
from torch import nn

from classy_fast.config import ConfigError, ModelConfig, OptimizerConfig, load_config
from classy_fast.models import build_model
from classy_fast.optimizers import build_optimizer
from classy_fast.registry import OPTIMIZERS


def test_broadcast_buffers_off_reads_unquoted_from_yaml_and_set(tmp_path):
    # YAML 1.1 reads a bare `off` as false; the documented choice 'off' must still be accepted.
    path = tmp_path / "c.yaml"
    path.write_text("distributed:\n  broadcast_buffers: off\n")
    assert load_config(str(path)).distributed.broadcast_buffers == "off"
    assert load_config(None, ["distributed.broadcast_buffers=off"]).distributed.broadcast_buffers == "off"
    assert load_config(None, ["distributed.broadcast_buffers='off'"]).distributed.broadcast_buffers == "off"
    # true is not a choice of this key: still an error naming it
    with pytest.raises(ConfigError, match="distributed.broadcast_buffers"):
        load_config(None, ["distributed.broadcast_buffers=on"])


@pytest.mark.parametrize("options, key", [({"width": 0}, "model.width"), ({"width": -4}, "model.width"),
                                           ({"dropout": -0.1}, "model.dropout"), ({"dropout": 1.5}, "model.dropout")])
def test_small_resnet_options_out_of_range_are_config_errors(options, key):
    with pytest.raises(ConfigError, match=key):
        build_model(ModelConfig(name="small_resnet", **options), 10, 1)


def test_rmsprop_refuses_fused_fused():
    # optimizer.fused='fused' demands classy_fast's fused optimizer; there is no fused RMSProp.
    model = nn.Linear(4, 2)
    with pytest.raises(ConfigError, match="rmsprop"):
        build_optimizer(model, OptimizerConfig(name="rmsprop", fused="fused"))
    assert isinstance(build_optimizer(model, OptimizerConfig(name="rmsprop", fused="auto")), torch.optim.RMSprop)


@pytest.mark.parametrize("fused", ["auto", "torch"])
@pytest.mark.parametrize("lr", [-0.1, math.nan, math.inf])
def test_optimizer_lr_must_be_finite_and_non_negative(lr, fused):
    with pytest.raises(ConfigError, match="optimizer.lr"):
        build_optimizer(nn.Linear(4, 2), OptimizerConfig(name="sgd", lr=lr, fused=fused))


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
@pytest.mark.parametrize("fused", ["auto", "torch"])
def test_optimizers_take_an_empty_first_group(name, fused):
    # ZeroRedundancyOptimizer hands each rank its share of every group, which may be empty.
    p = nn.Parameter(torch.ones(3))
    groups = [{"params": [], "lr": torch.tensor(0.1), "weight_decay": 0.1},
              {"params": [p], "lr": torch.tensor(0.1), "weight_decay": 0.0}]
    opt = OPTIMIZERS.get(name)(groups, OptimizerConfig(name=name, fused=fused))
    p.grad = torch.ones(3)
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(3))


def test_auto_fused_asks_about_the_params_device(monkeypatch):
    # 'auto' uses the fused optimizer where its kernels are built for the parameters' device, not for
    # the default device: CPU params on a machine with a GPU but a CPU-only build get the fused one.
    from classy_fast.optim import _backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_backend, "kernels_compiled_for", lambda device: torch.device(device).type == "cpu")
    opt = build_optimizer(nn.Linear(4, 2), OptimizerConfig(name="sgd", fused="auto"))
    assert type(opt).__name__ == "FusedSGD"


@pytest.mark.parametrize("name, text", [
    ("c.yaml", "optimizer:\n  lr: 0.05\nepochs: 2\noptimizer:\n  name: adamw\n"),
    ("c.yaml", "optimizer:\n  lr: 0.05\n  lr: 0.1\n"),
    ("c.json", '{"optimizer": {"lr": 0.05}, "optimizer": {"name": "adamw"}}'),
])
def test_duplicate_key_in_a_file_is_an_error_naming_it(tmp_path, name, text):
    # A repeated key silently dropped the first value (or a whole section) before.
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"(?s){name}.*duplicate key '(optimizer|lr)'"):
        load_config(str(path))


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# réglages\nepochs: 2\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml"):
        load_config(str(path))
