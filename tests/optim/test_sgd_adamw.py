"""FusedSGD / FusedAdamW follow torch.optim.SGD / AdamW over 50 steps (two param groups), on the
compiled CPU kernels and on the plain-PyTorch reference path, per dtype."""

from __future__ import annotations

import warnings

import pytest
import torch

from classy_fast.optim import FusedAdamW, FusedSGD
from tests.optim._helpers import (IMPLS, assert_weights_close, make_model, param_groups, torch_groups, train,
                                  weights)

SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov_wd": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "dampening": dict(lr=0.1, momentum=0.8, dampening=0.3),
    "maximize": dict(lr=0.05, momentum=0.9, maximize=True, weight_decay=1e-2),
}
ADAMW_CASES = {
    "default": dict(lr=1e-2),
    "betas_eps_wd": dict(lr=5e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    "maximize": dict(lr=1e-3, maximize=True),
}


def _fp32_lr(lr: float) -> float:
    # The groups' lr lives in a float32 tensor; a float64 run compares against that exact value.
    return float(torch.tensor(lr, dtype=torch.float32))


def _run_pair(fused_cls, torch_cls, kwargs, impl, dtype=torch.float32, master=False, lr_tensor=False):
    ours = make_model(dtype)
    lr = kwargs["lr"]
    groups = param_groups(ours, lr=(lambda: torch.tensor(lr)) if lr_tensor else None)
    opt = fused_cls(groups, **kwargs, impl=impl, master_weights=master)
    train(ours, opt)

    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    theirs = make_model(ref_dtype)
    ref_kwargs = dict(kwargs, lr=_fp32_lr(lr) if dtype == torch.float64 else lr)
    ref = torch_cls(torch_groups(param_groups(theirs)), **ref_kwargs)
    train(theirs, ref)
    return weights(ours, opt), weights(theirs)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_sgd_matches_torch(case, impl):
    actual, expected = _run_pair(FusedSGD, torch.optim.SGD, SGD_CASES[case], impl)
    assert_weights_close(actual, expected, torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sorted(ADAMW_CASES))
def test_adamw_matches_torch(case, impl):
    actual, expected = _run_pair(FusedAdamW, torch.optim.AdamW, ADAMW_CASES[case], impl)
    assert_weights_close(actual, expected, torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls,torch_cls,kwargs", [
    (FusedSGD, torch.optim.SGD, SGD_CASES["nesterov_wd"]),
    (FusedAdamW, torch.optim.AdamW, ADAMW_CASES["betas_eps_wd"]),
], ids=["sgd", "adamw"])
def test_tensor_lr_groups(cls, torch_cls, kwargs, impl):
    """The orchestrator passes each group's lr as a 0-dim device tensor; the optimizer keeps it."""
    actual, expected = _run_pair(cls, torch_cls, kwargs, impl, lr_tensor=True)
    assert_weights_close(actual, expected, torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("cls,torch_cls,kwargs", [
    (FusedSGD, torch.optim.SGD, SGD_CASES["nesterov_wd"]),
    (FusedAdamW, torch.optim.AdamW, ADAMW_CASES["default"]),
], ids=["sgd", "adamw"])
def test_low_precision_master_weights(cls, torch_cls, kwargs, dtype, impl):
    actual, expected = _run_pair(cls, torch_cls, kwargs, impl, dtype=dtype, master=True)
    assert_weights_close(actual, expected, dtype)


@pytest.mark.parametrize("cls,torch_cls,kwargs", [
    (FusedSGD, torch.optim.SGD, SGD_CASES["nesterov_wd"]),
    (FusedAdamW, torch.optim.AdamW, ADAMW_CASES["betas_eps_wd"]),
], ids=["sgd", "adamw"])
def test_float64_uses_reference_path(cls, torch_cls, kwargs):
    """The kernels take fp32/bf16/fp16; float64 params run the reference step in float64."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        actual, expected = _run_pair(cls, torch_cls, kwargs, "auto", dtype=torch.float64)
    assert_weights_close(actual, expected, torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
def test_master_weights_state_and_params(impl):
    model = make_model(torch.bfloat16)
    opt = FusedAdamW(param_groups(model), lr=1e-2, master_weights=True, impl=impl)
    train(model, opt, steps=3)
    for p in model.parameters():
        st = opt.state[p]
        assert st["master_param"].dtype == torch.float32 and st["exp_avg"].dtype == torch.float32
        assert torch.equal(p, st["master_param"].to(torch.bfloat16)), "params are the rounded master weights"
        assert st["step"].item() == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_channels_last_params(impl):
    """Conv weights in channels_last: state buffers share the layout and the update is elementwise."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    ref = torch.nn.Conv2d(3, 8, 3)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 6, 6)
    opt = FusedSGD(conv.parameters(), lr=0.1, momentum=0.9, impl=impl)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        for m, o, inp in ((conv, opt, x.to(memory_format=torch.channels_last)), (ref, ref_opt, x)):
            o.zero_grad()
            m(inp).square().mean().backward()
            o.step()
    assert opt.state[conv.weight]["momentum_buffer"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv.weight, ref.weight, atol=1e-6, rtol=1e-5)


def test_params_without_grad_are_skipped():
    model = make_model()
    opt = FusedSGD(model.parameters(), lr=0.1, momentum=0.9)
    frozen = model[0].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    train(model, opt, steps=2)
    assert torch.equal(frozen, before) and frozen not in opt.state


def test_constructor_validation():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="Nesterov"):
        FusedSGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdamW(p, amsgrad=True)
    with pytest.raises(ValueError, match="max_grad_norm"):
        FusedSGD(p, max_grad_norm=0.0)
    with pytest.raises(ValueError, match="float32 on the params' device"):
        FusedSGD(p, lr=torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="impl"):
        FusedSGD(p, impl="cuda")
