"""The orchestrator contract: build_fused_optimizer, fused_optimizers_available, the registry
entries, and the reference fallback when the extension is missing."""

from __future__ import annotations

import warnings

import pytest
import torch

import classy_fast.optim as cf_optim
from classy_fast.config import OptimizerConfig
from classy_fast.ops import _extension
from classy_fast.optim import FusedAdamW, FusedLAMB, FusedLARS, FusedSGD, _backend, build_fused_optimizer
from classy_fast.registry import OPTIMIZERS
from tests.optim._helpers import make_model, needs_cpu_kernels, param_groups, train


@pytest.mark.parametrize("name,cls", [("sgd", FusedSGD), ("adamw", FusedAdamW), ("lars", FusedLARS),
                                      ("lamb", FusedLAMB)])
def test_build_from_config(name, cls):
    cfg = OptimizerConfig(name=name, lr=0.2, weight_decay=1e-3, max_grad_norm=2.0, trust_clamp=5.0,
                          kwargs={"master_weights": True, "foreach": True})  # torch-only switch: ignored
    model = make_model()
    groups = param_groups(model, lr=lambda: torch.tensor(0.2))
    opt = build_fused_optimizer(name, groups, cfg)
    assert type(opt) is cls
    assert opt.max_grad_norm == 2.0 and opt.master_weights and opt.fuses_grad_clipping
    assert opt.param_groups[0]["lr"] is groups[0]["lr"]
    assert opt.param_groups[1]["exclude_from_adaptation"]
    train(model, opt, steps=2)
    assert opt.last_grad_norm is not None


def test_lars_and_lamb_are_registered():
    assert "lars" in OPTIMIZERS and "lamb" in OPTIMIZERS
    opt = OPTIMIZERS.get("lars")(param_groups(make_model()), OptimizerConfig(name="lars", fused="torch"))
    assert isinstance(opt, FusedLARS) and opt.impl == "reference"


def test_unknown_name():
    with pytest.raises(KeyError, match="no fused optimizer 'rmsprop'"):
        build_fused_optimizer("rmsprop", param_groups(make_model()), OptimizerConfig())


@needs_cpu_kernels
def test_available_on_cpu_when_built():
    assert cf_optim.fused_optimizers_available("cpu")


def test_fallback_without_extension(monkeypatch):
    """No extension: fused_optimizers_available is False, 'auto' steps through the references with
    the ops' one-time warning, 'fused' raises."""
    monkeypatch.setattr(_extension, "EXTENSION_AVAILABLE", False)
    monkeypatch.setattr(_extension, "IMPORT_ERROR", "ImportError: test")
    monkeypatch.setattr(_extension, "_warned", set())
    assert not cf_optim.fused_optimizers_available("cpu")
    model = make_model()
    opt = FusedSGD(param_groups(model), lr=0.1, momentum=0.9)
    with pytest.warns(RuntimeWarning, match="reference implementations"):
        train(model, opt, steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model, opt, steps=1)  # warned once per process
    assert _backend.select("auto", torch.device("cpu"), {torch.float32}, "x") is cf_optim.reference
    with pytest.raises(RuntimeError, match="impl='fused'"):
        FusedSGD(param_groups(make_model()), lr=0.1, impl="fused")
    with pytest.raises(RuntimeError, match="impl='fused'"):
        build_fused_optimizer("sgd", param_groups(make_model()), OptimizerConfig(fused="fused"))


def test_params_on_two_devices_rejected():
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1, device="meta"))
    with pytest.raises(ValueError, match="one device"):
        FusedSGD([a, b], lr=0.1)
