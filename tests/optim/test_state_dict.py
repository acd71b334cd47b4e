"""state_dict / load_state_dict: a mid-run round trip continues the same trajectory; lr tensors
keep their identity; fp32 state of low-precision params stays fp32; torch.optim states load."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from classy_fast.optim import FusedAdamW, FusedLAMB, FusedLARS, FusedSGD
from tests.optim._helpers import IMPLS, make_model, param_groups, torch_groups, train, weights

OPTIMIZERS = {
    "sgd": (FusedSGD, dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    "adamw": (FusedAdamW, dict(lr=1e-2)),
    "lars": (FusedLARS, dict(lr=0.5, momentum=0.9, trust_coefficient=0.02, max_grad_norm=1.0)),
    "lamb": (FusedLAMB, dict(lr=1e-2, trust_clamp=2.0)),
}


def _tensor_lr_groups(model):
    return param_groups(model, lr=lambda: torch.tensor(0.0))  # the constructor's lr is filled in below


def _checkpoint(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16_master"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_round_trip_mid_run_continues_identically(name, dtype, impl):
    cls, kwargs = OPTIMIZERS[name]
    master = dtype == torch.bfloat16
    model = make_model(dtype)
    opt = cls(param_groups(model), **kwargs, impl=impl, master_weights=master)
    train(model, opt, steps=10)
    saved = _checkpoint({"model": model.state_dict(), "opt": opt.state_dict()})

    resumed = make_model(dtype, seed=123)
    resumed.load_state_dict(saved["model"])
    resumed_opt = cls(param_groups(resumed), **kwargs, impl=impl, master_weights=master)
    resumed_opt.load_state_dict(saved["opt"])

    train(model, opt, steps=10)
    train(resumed, resumed_opt, steps=10)
    for a, b in zip(weights(model, opt), weights(resumed, resumed_opt)):
        assert torch.equal(a, b)
    for p in resumed.parameters():
        for key, value in resumed_opt.state[p].items():
            if key == "step":
                assert value.dtype == torch.float32 and value.dim() == 0
            else:
                expected = torch.float32 if master else p.dtype
                assert value.dtype == expected, f"{key} is {value.dtype}"


def test_load_keeps_lr_tensor_identity_and_takes_saved_value():
    model = make_model()
    opt = FusedSGD(param_groups(model), lr=0.1, momentum=0.9)
    opt.param_groups[0]["lr"].fill_(0.025)
    sd = copy.deepcopy(opt.state_dict())

    other = FusedSGD(param_groups(make_model()), lr=0.3, momentum=0.9)
    lr_tensors = [g["lr"] for g in other.param_groups]
    other.load_state_dict(sd)
    for g, lr in zip(other.param_groups, lr_tensors):
        assert g["lr"] is lr, "schedulers and captured graphs hold the group's lr tensor"
    assert other.param_groups[0]["lr"].item() == pytest.approx(0.025)
    assert other.param_groups[1]["lr"].item() == pytest.approx(0.1)
    assert other.param_groups[1]["exclude_from_adaptation"] is True


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_loads_torch_optimizer_state(name, impl):
    cls, kwargs = OPTIMIZERS[name]
    torch_cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    theirs = make_model()
    ref = torch_cls(torch_groups(param_groups(theirs)), **kwargs)
    train(theirs, ref, steps=5)

    ours = make_model()
    ours.load_state_dict(theirs.state_dict())
    opt = cls(param_groups(ours), **kwargs, impl=impl)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    train(theirs, ref, steps=10)
    train(ours, opt, steps=10)
    for a, b in zip(weights(ours), weights(theirs)):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=2e-5)


def test_tensor_lr_updated_in_place_is_seen_by_the_next_step():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    lr = torch.tensor(0.5)
    opt = FusedSGD([{"params": [p], "lr": lr}])
    assert opt.param_groups[0]["lr"] is lr
    p.grad = torch.tensor([1.0])
    opt.step()
    lr.fill_(0.25)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.25]))
