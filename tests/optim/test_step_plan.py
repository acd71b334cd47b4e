"""The cached step plan (classy_fast.optim.base.StepPlan): reused while it fits, rebuilt when a
param gains or loses its grad, a group is added or the state is replaced, and never stale."""

import copy

import pytest
import torch

from classy_fast.optim import FusedAdamW, FusedSGD
from tests.optim._helpers import IMPLS


def _params(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 5, generator=g)) for _ in range(n)]


def _set_grads(params, seed, skip=()):
    g = torch.Generator().manual_seed(seed)
    for i, p in enumerate(params):
        p.grad = None if i in skip else torch.randn(p.shape, generator=g)


def _count_builds(opt, monkeypatch):
    calls = []
    build = opt._build_plan

    def counting(*args):
        calls.append(1)
        return build(*args)

    monkeypatch.setattr(opt, "_build_plan", counting)
    return calls


@pytest.mark.parametrize("impl", IMPLS)
def test_plan_is_reused_across_steps_with_new_grad_tensors(impl, monkeypatch):
    params = _params()
    opt = FusedSGD(params, lr=0.1, momentum=0.9, impl=impl)
    builds = _count_builds(opt, monkeypatch)
    for step in range(4):
        _set_grads(params, step)  # new grad tensors every step, like zero_grad(set_to_none=True)
        opt.step()
    assert len(builds) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_grad_appearing_and_disappearing_matches_torch(impl):
    """Params without a grad are skipped that step, like torch.optim; the plan follows."""
    ours, theirs = _params(), _params()
    opt = FusedSGD(ours, lr=0.1, momentum=0.9, weight_decay=0.01, impl=impl)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=0.01)
    for step, skip in enumerate([(), (1,), (1,), (), (0, 2), ()]):
        _set_grads(ours, step, skip)
        _set_grads(theirs, step, skip)
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_added_param_group_is_updated(impl):
    params = _params()
    opt = FusedAdamW(params[:2], lr=0.1, impl=impl)
    _set_grads(params, 0)
    opt.step()
    before = params[2].detach().clone()
    opt.add_param_group({"params": [params[2]], "lr": 0.2})
    _set_grads(params, 1)
    opt.step()
    assert not torch.equal(params[2].detach(), before)
    assert "exp_avg" in opt.state[params[2]]


@pytest.mark.parametrize("impl", IMPLS)
def test_replaced_state_is_used_not_the_cached_one(impl):
    """load_state_dict swaps in new state tensors; the next step must update those."""
    params = _params()
    opt = FusedSGD(params, lr=0.1, momentum=0.9, impl=impl)
    _set_grads(params, 0)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    _set_grads(params, 1)
    opt.step()
    opt.load_state_dict(saved)
    buf = opt.state[params[0]]["momentum_buffer"]
    before = buf.clone()
    _set_grads(params, 2)
    opt.step()
    assert opt.state[params[0]]["momentum_buffer"] is buf
    assert not torch.equal(buf, before)


@pytest.mark.parametrize("impl", IMPLS)
def test_cleared_state_is_recreated(impl):
    params = _params()
    opt = FusedSGD(params, lr=0.1, momentum=0.9, impl=impl)
    _set_grads(params, 0)
    opt.step()
    opt.state.clear()
    _set_grads(params, 1)
    opt.step()
    # Step count 1 again: the momentum buffer is this step's grad (torch's first-step rule).
    torch.testing.assert_close(opt.state[params[0]]["momentum_buffer"], params[0].grad)


def test_changing_impl_rebuilds_the_plan(monkeypatch):
    params = _params()
    opt = FusedSGD(params, lr=0.1, impl="reference")
    builds = _count_builds(opt, monkeypatch)
    _set_grads(params, 0)
    opt.step()
    opt.impl = "auto"
    opt.step()
    assert len(builds) == 2


def test_plan_does_not_keep_grads_alive_after_the_step():
    """zero_grad(set_to_none=True) must free the grads: the cached plan holds none between steps."""
    import weakref

    params = _params()
    opt = FusedSGD(params, lr=0.1, momentum=0.9, impl="reference")
    _set_grads(params, 0)
    opt.step()
    refs = [weakref.ref(p.grad) for p in params]
    opt.zero_grad(set_to_none=True)
    assert all(r() is None for r in refs)


@pytest.mark.parametrize("impl", IMPLS)
def test_deep_copy_keeps_the_settings_and_steps_like_the_original(impl):
    """torch's Optimizer copies only defaults, state and groups: our settings must come along."""
    params = _params()
    opt = FusedSGD(params, lr=0.1, momentum=0.9, max_grad_norm=0.5, impl=impl)
    _set_grads(params, 0)
    opt.step()
    twin_params, twin = copy.deepcopy((params, opt))  # one memo: the copy's groups hold the copied params
    assert (twin.max_grad_norm, twin.impl) == (0.5, impl)
    _set_grads(params, 1)
    _set_grads(twin_params, 1)
    opt.step()
    twin.step()
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


# ---- what torch.optim lets a user change between steps: the plan must follow, never go stale ----


def _twins(impl, **kw):
    ours, theirs = _params(), _params()
    return ours, theirs, FusedSGD(ours, impl=impl, **kw), torch.optim.SGD(theirs, **kw)


def _step_both(ours, theirs, opt, ref, seed):
    _set_grads(ours, seed)
    _set_grads(theirs, seed)
    opt.step()
    ref.step()


def _assert_same(ours, theirs):
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)


RESETS = {
    "state_dict_replaced": lambda opt, p: opt.state.__setitem__(p, {}),
    "buffer_set_to_none": lambda opt, p: opt.state[p].__setitem__("momentum_buffer", None),
    "buffer_deleted": lambda opt, p: opt.state[p].pop("momentum_buffer"),
    # The plan compares the state's keys and dicts by identity and order, without hashing params.
    "state_removed": lambda opt, p: opt.state.pop(p),
    "state_removed_and_another_added": lambda opt, p: (opt.state.pop(p), opt.state.__setitem__("other", {})),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reset", list(RESETS))
def test_resetting_one_params_state_restarts_its_momentum_like_torch(impl, reset):
    ours, theirs, opt, ref = _twins(impl, lr=0.1, momentum=0.9)
    for step in range(2):
        _step_both(ours, theirs, opt, ref, step)
    for which, o in ((opt, ours[1]), (ref, theirs[1])):
        RESETS[reset](which, o)
    for step in range(2, 5):
        _step_both(ours, theirs, opt, ref, step)
        _assert_same(ours, theirs)
    assert opt.state[ours[1]]["momentum_buffer"] is not None


@pytest.mark.parametrize("impl", IMPLS)
def test_momentum_switched_on_after_steps_starts_its_buffers_like_torch(impl):
    ours, theirs, opt, ref = _twins(impl, lr=0.1, momentum=0.0)
    _step_both(ours, theirs, opt, ref, 0)
    opt.param_groups[0]["momentum"] = ref.param_groups[0]["momentum"] = 0.9
    for step in range(1, 4):
        _step_both(ours, theirs, opt, ref, step)
        _assert_same(ours, theirs)


@pytest.mark.parametrize("impl", IMPLS)
def test_replaced_group_dict_and_float_lr_are_used(impl):
    ours, theirs, opt, ref = _twins(impl, lr=0.1, momentum=0.9)
    _step_both(ours, theirs, opt, ref, 0)
    opt.param_groups[0] = {**opt.param_groups[0], "lr": torch.tensor(0.0)}
    ref.param_groups[0] = {**ref.param_groups[0], "lr": 0.0}
    _step_both(ours, theirs, opt, ref, 1)
    _assert_same(ours, theirs)
    # A hand-written schedule assigning floats (torch allows it; the kernels read a device tensor).
    opt.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.05
    _step_both(ours, theirs, opt, ref, 2)
    _assert_same(ours, theirs)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


def test_empty_group_keeps_a_tensor_lr_on_the_params_device():
    """ZeroRedundancyOptimizer hands every rank every group, some empty: a device lr must be accepted."""
    # The meta device stands for CUDA on a CPU-only machine (only the constructor runs).
    opt = FusedSGD([torch.nn.Parameter(torch.zeros(3, device="meta"))], lr=torch.tensor(0.1, device="meta"),
                   impl="reference")
    lr = torch.tensor(0.2, device="meta")
    opt.add_param_group({"params": [], "lr": lr})
    assert opt.param_groups[-1]["lr"] is lr
    with pytest.raises(ValueError, match="float32 on the params' device meta"):
        opt.add_param_group({"params": [], "lr": torch.tensor(0.2)})


@pytest.mark.parametrize("impl", IMPLS)
def test_numpy_lr_and_float_grad_scale_are_accepted(impl):
    import numpy as np

    ours, theirs = _params(), _params()
    opt = FusedSGD(ours, lr=np.float32(0.1), momentum=0.9, impl=impl)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    _set_grads(ours, 0)
    _set_grads(theirs, 0)
    for p in theirs:
        p.grad /= 2.0
    opt.step(grad_scale=2.0)
    ref.step()
    _assert_same(ours, theirs)


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_grad_norm_clips_to_nan_like_clip_grad_norm(impl):
    """A NaN total norm makes every param NaN, as torch's clip_grad_norm_ does (not an unclipped step)."""
    ours, theirs = _params(), _params()
    opt = FusedSGD(ours, lr=0.1, max_grad_norm=1.0, impl=impl)
    ref = torch.optim.SGD(theirs, lr=0.1)
    _set_grads(ours, 0)
    _set_grads(theirs, 0)
    ours[0].grad[0, 0] = theirs[0].grad[0, 0] = float("nan")
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    opt.step()
    ref.step()
    for a, b in zip(ours, theirs):
        assert torch.isnan(a).all() and torch.isnan(b).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_load_state_dict_hooks_run_as_in_torch(impl):
    params = _params()
    opt = FusedSGD(params, lr=0.1, momentum=0.9, impl=impl)
    _set_grads(params, 0)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    seen = {}

    def pre_hook(optimizer, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for s in state_dict["state"].values():
            s["momentum_buffer"].zero_()
        return state_dict

    opt.register_load_state_dict_pre_hook(pre_hook)
    opt.register_load_state_dict_post_hook(lambda optimizer: seen.update(keys=sorted(optimizer.state[params[0]])))
    opt.load_state_dict(saved)
    assert torch.count_nonzero(opt.state[params[0]]["momentum_buffer"]) == 0  # the pre-hook's dict was loaded
    assert "momentum_buffer" in seen["keys"]  # the post-hook saw the restored state


@pytest.mark.parametrize("impl", IMPLS)
def test_a_reset_moment_restarts_all_of_adams_state(impl):
    """exp_avg reset alone would leave a warm exp_avg_sq under a restarted bias correction."""
    params = _params()
    opt = FusedAdamW(params, lr=0.1, betas=(0.9, 0.99), impl=impl)
    for step in range(3):
        _set_grads(params, step)
        opt.step()
    opt.state[params[0]]["exp_avg"] = None
    _set_grads(params, 3)
    opt.step()
    state = opt.state[params[0]]
    assert float(state["step"]) == 1.0
    torch.testing.assert_close(state["exp_avg_sq"], 0.01 * params[0].grad ** 2)  # (1 - beta2) g²: fresh
    assert float(opt.state[params[1]]["step"]) == 4.0  # the other params go on


def _zero_style_reload(opt):
    """What ZeroRedundancyOptimizer.load_state_dict does to the local optimizer: new state dicts, 0-dim
    tensors (the step) moved to the CPU."""
    for p in list(opt.state):
        opt.state[p] = {k: (v.cpu() if torch.is_tensor(v) and v.dim() == 0 else v.clone())
                        for k, v in opt.state[p].items()}


@pytest.mark.parametrize("impl", IMPLS)
def test_step_counts_moved_off_the_device_are_taken_back(impl):
    params = _params()
    opt = FusedAdamW(params, lr=0.1, impl=impl)
    _set_grads(params, 0)
    opt.step()
    for p in params:  # new state dicts with a float64 step count (the CPU-step case runs on CUDA below)
        opt.state[p] = {**opt.state[p], "step": opt.state[p]["step"].double()}
    _set_grads(params, 1)
    opt.step()
    assert all(opt.state[p]["step"].dtype == torch.float32 and float(opt.state[p]["step"]) == 2.0 for p in params)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_zero_style_reload_on_cuda_continues_like_an_uninterrupted_run():
    ours = [p.detach().cuda().requires_grad_() for p in _params()]
    twin = [p.detach().clone().requires_grad_() for p in ours]
    opt, ref = FusedAdamW(ours, lr=0.1), FusedAdamW(twin, lr=0.1)
    for step in range(4):
        for params, o in ((ours, opt), (twin, ref)):
            _set_grads(params, step)
            for p in params:
                p.grad = p.grad.cuda()
            o.step()
        if step == 1:
            _zero_style_reload(opt)
    for a, b in zip(ours, twin):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_grads_in_another_layout_than_the_plan_saw_are_relaid_out(impl):
    """The plan remembers each param's strides; a grad that comes in another layout (channels_last
    param, contiguous grad through an autocast cast) on a later step is copied into the param's."""
    def conv():
        torch.manual_seed(0)
        return torch.nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    ours, theirs = conv(), conv()
    opt = FusedSGD([ours], lr=0.1, momentum=0.9, impl=impl)
    ref = torch.optim.SGD([theirs], lr=0.1, momentum=0.9)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        grad = torch.randn(4, 3, 2, 2, generator=g)
        ours.grad = grad if step == 1 else grad.contiguous(memory_format=torch.channels_last)
        theirs.grad = grad.clone()
        opt.step()
        ref.step()
        torch.testing.assert_close(ours.detach(), theirs.detach())
