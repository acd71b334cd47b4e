"""FusedLARS / FusedLAMB against float64 implementations written from the papers:

* LARS: You, Gitman, Ginsburg 2017, Algorithm 1 (MLPerf ResNet-50 form: lr-scaled momentum);
* LAMB: You et al. 2019, Algorithm 2 (bias-corrected Adam direction, trust ratio ||w|| / ||u||).

Groups flagged exclude_from_adaptation get neither the trust ratio nor weight decay.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional

import pytest
import torch

from classy_fast.optim import FusedLAMB, FusedLARS
from tests.optim._helpers import IMPLS, assert_weights_close, make_model, param_groups, train, weights


class PaperLARS:
    """Float64 LARS, one tensor at a time, from the paper's algorithm."""

    def __init__(self, groups: List[dict], lr: float, momentum: float, trust_coefficient: float, eps: float = 1e-9,
                 nesterov: bool = False, max_grad_norm: Optional[float] = None):
        self.groups, self.lr, self.momentum = groups, lr, momentum
        self.eta, self.eps, self.nesterov, self.max_grad_norm = trust_coefficient, eps, nesterov, max_grad_norm
        self.v = {p: torch.zeros_like(p, dtype=torch.float64) for g in groups for p in g["params"]}

    def zero_grad(self, set_to_none=True):
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self):
        clip = _clip_coefficient(self.groups, self.max_grad_norm)
        for group in self.groups:
            excluded = group.get("exclude_from_adaptation", False)
            wd = 0.0 if excluded else group["weight_decay"]
            for p in group["params"]:
                w, g = p.double(), p.grad.double() * clip
                local_lr = 1.0
                if not excluded:
                    w_norm, g_norm = w.norm().item(), g.norm().item()
                    if w_norm > 0 and g_norm > 0:
                        local_lr = self.eta * w_norm / (g_norm + wd * w_norm + self.eps)
                update = self.lr * local_lr * (g + wd * w)
                self.v[p] = self.momentum * self.v[p] + update
                w = w - (self.momentum * self.v[p] + update if self.nesterov else self.v[p])
                p.copy_(w)


class PaperLAMB:
    """Float64 LAMB, one tensor at a time, from the paper's algorithm."""

    def __init__(self, groups: List[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-6,
                 trust_clamp: Optional[float] = None, max_grad_norm: Optional[float] = None):
        self.groups, self.lr, self.betas, self.eps = groups, lr, betas, eps
        self.trust_clamp, self.max_grad_norm, self.t = trust_clamp, max_grad_norm, 0
        self.m = {p: torch.zeros_like(p, dtype=torch.float64) for g in groups for p in g["params"]}
        self.v = {p: torch.zeros_like(p, dtype=torch.float64) for g in groups for p in g["params"]}

    zero_grad = PaperLARS.zero_grad

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        clip = _clip_coefficient(self.groups, self.max_grad_norm)
        for group in self.groups:
            excluded = group.get("exclude_from_adaptation", False)
            wd = 0.0 if excluded else group["weight_decay"]
            for p in group["params"]:
                w, g = p.double(), p.grad.double() * clip
                self.m[p] = b1 * self.m[p] + (1 - b1) * g
                self.v[p] = b2 * self.v[p] + (1 - b2) * g * g
                m_hat = self.m[p] / (1 - b1 ** self.t)
                v_hat = self.v[p] / (1 - b2 ** self.t)
                u = m_hat / (v_hat.sqrt() + self.eps) + wd * w
                ratio = 1.0
                if not excluded:
                    w_norm, u_norm = w.norm().item(), u.norm().item()
                    if w_norm > 0 and u_norm > 0:
                        ratio = w_norm / u_norm
                    if self.trust_clamp is not None:
                        ratio = min(ratio, self.trust_clamp)
                p.copy_(w - self.lr * ratio * u)


def _clip_coefficient(groups, max_grad_norm) -> float:
    if max_grad_norm is None:
        return 1.0
    total = math.sqrt(sum(p.grad.double().square().sum().item() for g in groups for p in g["params"]))
    return min(1.0, max_grad_norm / (total + 1e-6))


def _fp32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


LARS_CASES = {
    "momentum": dict(lr=0.5, momentum=0.9, trust_coefficient=0.02, eps=1e-9),
    "nesterov": dict(lr=0.2, momentum=0.9, trust_coefficient=0.02, eps=1e-9, nesterov=True),
    "clipped": dict(lr=0.5, momentum=0.9, trust_coefficient=0.02, eps=1e-9, max_grad_norm=0.05),
}
LAMB_CASES = {
    "default": dict(lr=1e-2),
    "clamp": dict(lr=2e-2, betas=(0.8, 0.99), eps=1e-6, trust_clamp=0.5),
    "clipped": dict(lr=1e-2, max_grad_norm=0.05),
}


def _run(fused_cls, paper_cls, kwargs, impl, dtype, master=False):
    ours = make_model(dtype)
    opt = fused_cls(param_groups(ours, weight_decay=0.05), **kwargs, impl=impl, master_weights=master)
    train(ours, opt)
    theirs = make_model(torch.float64)
    paper_kwargs = dict(kwargs, lr=_fp32(kwargs["lr"]))  # our lr lives in a float32 tensor
    paper = paper_cls(param_groups(theirs, weight_decay=0.05), **paper_kwargs)
    train(theirs, paper)
    return weights(ours, opt), weights(theirs)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sorted(LARS_CASES))
def test_lars_matches_paper(case, impl):
    actual, expected = _run(FusedLARS, PaperLARS, LARS_CASES[case], impl, torch.float32)
    assert_weights_close(actual, expected, torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sorted(LAMB_CASES))
def test_lamb_matches_paper(case, impl):
    actual, expected = _run(FusedLAMB, PaperLAMB, LAMB_CASES[case], impl, torch.float32)
    assert_weights_close(actual, expected, torch.float32)


@pytest.mark.parametrize("fused_cls,paper_cls,kwargs", [
    (FusedLARS, PaperLARS, LARS_CASES["nesterov"]), (FusedLAMB, PaperLAMB, LAMB_CASES["clamp"])],
    ids=["lars", "lamb"])
def test_float64_reference_path_matches_paper(fused_cls, paper_cls, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        actual, expected = _run(fused_cls, paper_cls, kwargs, "auto", torch.float64)
    assert_weights_close(actual, expected, torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fused_cls,paper_cls,kwargs", [
    (FusedLARS, PaperLARS, LARS_CASES["momentum"]), (FusedLAMB, PaperLAMB, LAMB_CASES["default"])],
    ids=["lars", "lamb"])
def test_bf16_master_weights(fused_cls, paper_cls, kwargs, impl):
    actual, expected = _run(fused_cls, paper_cls, kwargs, impl, torch.bfloat16, master=True)
    assert_weights_close(actual, expected, torch.bfloat16)


@pytest.mark.parametrize("impl", IMPLS)
def test_lars_excluded_group_is_plain_momentum(impl):
    """Norm layers and biases: local lr 1 and no weight decay, whatever the group says."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = FusedLARS([{"params": [p], "weight_decay": 0.5, "exclude_from_adaptation": True}], lr=0.1,
                    momentum=0.9, impl=impl)
    v = torch.zeros(3)
    w = p.detach().clone()
    for g in ([1.0, 1.0, 1.0], [0.5, -1.0, 2.0]):
        p.grad = torch.tensor(g)
        opt.step()
        v = 0.9 * v + 0.1 * torch.tensor(g)
        w = w - v
    torch.testing.assert_close(p.detach(), w)


@pytest.mark.parametrize("impl", IMPLS)
def test_lars_reports_grad_norm(impl):
    model = make_model()
    opt = FusedLARS(param_groups(model), lr=0.1, impl=impl)
    train(model, opt, steps=1)
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    torch.testing.assert_close(opt.last_grad_norm, expected)
