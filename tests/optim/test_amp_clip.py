"""GradScaler protocol (unscale in the kernel, skip on inf without a host sync) and fused clipping."""

from __future__ import annotations

import pytest
import torch

from classy_fast.optim import FusedAdamW, FusedLAMB, FusedLARS, FusedSGD
from tests.optim._helpers import IMPLS, make_model, param_groups, snapshot, torch_groups, train, weights

OPTIMIZERS = {
    "sgd": (FusedSGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    "adamw": (FusedAdamW, dict(lr=1e-2)),
    "lars": (FusedLARS, dict(lr=0.5, momentum=0.9, trust_coefficient=0.02)),
    "lamb": (FusedLAMB, dict(lr=1e-2)),
}
TORCH_EQUIVALENT = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def _scaler(scale: float = 2.0 ** 12) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=3)


def _close(actual, expected, atol=2e-6, rtol=2e-5):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_scaled_steps_equal_unscaled_steps(name, impl):
    """Power-of-two scales unscale exactly: a GradScaler run follows the unscaled run."""
    cls, kwargs = OPTIMIZERS[name]
    scaled_model, plain_model = make_model(), make_model()
    scaled_opt = cls(param_groups(scaled_model), **kwargs, impl=impl)
    train(scaled_model, scaled_opt, steps=12, scaler=_scaler())
    plain_opt = cls(param_groups(plain_model), **kwargs, impl=impl)
    train(plain_model, plain_opt, steps=12)
    _close(weights(scaled_model), weights(plain_model))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_inf_grad_skips_the_step(name, impl):
    cls, kwargs = OPTIMIZERS[name]
    model = make_model()
    opt = cls(param_groups(model), **kwargs, impl=impl)
    scaler = _scaler()
    seen = {}

    def inject(step):
        if step == 3:
            next(model.parameters()).grad[0, 0] = float("inf")
            seen["before"] = snapshot(model, opt)
            seen["scale"] = scaler.get_scale()

    train(model, opt, steps=4, scaler=scaler, before_step=inject)
    after = snapshot(model, opt)
    assert len(after) == len(seen["before"])
    for a, b in zip(after, seen["before"]):
        assert torch.equal(a, b), "a skipped step must leave params, state and step counts untouched"
    assert scaler.get_scale() == seen["scale"] / 2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_scaler_step_matches_torch(name, impl):
    cls, kwargs = OPTIMIZERS[name]
    ours, theirs = make_model(), make_model()
    opt = cls(param_groups(ours), **kwargs, impl=impl)
    train(ours, opt, steps=10, scaler=_scaler())
    ref = TORCH_EQUIVALENT[name](torch_groups(param_groups(theirs)), **kwargs)
    train(theirs, ref, steps=10, scaler=_scaler())
    _close(weights(ours), weights(theirs))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("with_scaler", [False, True], ids=["no_scaler", "scaler"])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_clipping_equals_clip_grad_norm_then_step(name, with_scaler, impl):
    cls, kwargs = OPTIMIZERS[name]
    max_norm = 0.05  # small enough that every step clips
    ours, theirs = make_model(), make_model()
    opt = cls(param_groups(ours), **kwargs, max_grad_norm=max_norm, impl=impl)
    train(ours, opt, steps=20, scaler=_scaler() if with_scaler else None)
    ref = TORCH_EQUIVALENT[name](torch_groups(param_groups(theirs)), **kwargs)
    train(theirs, ref, steps=20, scaler=_scaler() if with_scaler else None, clip=max_norm)
    _close(weights(ours), weights(theirs))


@pytest.mark.parametrize("impl", IMPLS)
def test_last_grad_norm_is_the_unscaled_norm_before_clipping(impl):
    model = make_model()
    opt = FusedSGD(model.parameters(), lr=0.1, max_grad_norm=1e-3, impl=impl)
    norms = {}

    def record(step):
        grads = [p.grad / scaler.get_scale() for p in model.parameters()]
        norms[step] = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))

    scaler = _scaler()
    train(model, opt, steps=2, scaler=scaler, before_step=record)
    assert opt.last_grad_norm is not None and opt.last_grad_norm.dim() == 0
    torch.testing.assert_close(opt.last_grad_norm, norms[1])


@pytest.mark.parametrize("impl", IMPLS)
def test_unscale_then_step_does_not_unscale_twice(impl):
    """scaler.unscale_(opt) before scaler.step(opt): GradScaler then passes no scale to the step."""
    ours, theirs = make_model(), make_model()
    opt = FusedSGD(ours.parameters(), lr=0.1, momentum=0.9, impl=impl)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    for model, o in ((ours, opt), (theirs, ref)):
        scaler = _scaler()

        def unscale_early(step, o=o, scaler=scaler):
            scaler.unscale_(o)

        train(model, o, steps=5, scaler=scaler, before_step=unscale_early)
    _close(weights(ours), weights(theirs))


@pytest.mark.parametrize("impl", IMPLS)
def test_explicit_grad_scale_and_found_inf_arguments(impl):
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = FusedSGD([p], lr=0.5, impl=impl)
    p.grad = torch.tensor([8.0, -4.0])
    opt.step(grad_scale=torch.tensor([4.0]), found_inf=torch.tensor([0.0]))
    torch.testing.assert_close(p.detach(), torch.tensor([0.0, 2.5]))
    opt.step(grad_scale=torch.tensor([4.0]), found_inf=torch.tensor([1.0]))
    torch.testing.assert_close(p.detach(), torch.tensor([0.0, 2.5]))
    assert opt.state[p]["step"].item() == 1
