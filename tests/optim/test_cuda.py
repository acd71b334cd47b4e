"""CUDA variants of the optimizer tests: trajectories, GradScaler skip, launch splitting over
many/large/misaligned tensors, one launch for ResNet-50's parameter set, and CUDA-graph replay
identical to eager. Skipped without a CUDA device (benchmarks/gpu_check.sh runs them)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from classy_fast.ops import ema_update_
from classy_fast.performance import set_tf32, tf32_enabled
from classy_fast.optim import FusedAdamW, FusedLAMB, FusedLARS, FusedSGD, _backend, reference
from tests.optim._helpers import (assert_weights_close, make_model, needs_cuda, param_groups, snapshot, torch_groups,
                                  train, weights)
from tests.optim.test_lars_lamb import PaperLAMB, PaperLARS

pytestmark = needs_cuda

needs_cuda_kernels = pytest.mark.skipif(
    not torch.cuda.is_available() or not _backend.kernels_compiled_for(torch.device("cuda")),
    reason="classy_fast._C was built without the CUDA optimizer kernels")
CUDA_IMPLS = [pytest.param("fused", marks=needs_cuda_kernels), "reference"]

OPTIMIZERS = {
    "sgd": (FusedSGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    "adamw": (FusedAdamW, dict(lr=1e-2, weight_decay=0.05)),
    "lars": (FusedLARS, dict(lr=0.5, momentum=0.9, trust_coefficient=0.02)),
    "lamb": (FusedLAMB, dict(lr=1e-2, trust_clamp=2.0)),
}


@pytest.fixture(autouse=True)
def _exact_fp32_matmul():
    # TF32 matmuls would make the CUDA model's grads differ from the CPU reference's by ~1e-3.
    old = tf32_enabled()
    set_tf32(False)
    yield
    set_tf32(old)


@pytest.mark.parametrize("impl", CUDA_IMPLS)
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_matches_torch_on_cuda(name, impl):
    cls, kwargs = OPTIMIZERS[name]
    torch_cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    ours = make_model(device="cuda")
    opt = cls(param_groups(ours), **kwargs, impl=impl)
    train(ours, opt)
    theirs = make_model(device="cuda")
    ref = torch_cls(torch_groups(param_groups(theirs)), **kwargs)
    train(theirs, ref)
    assert_weights_close(weights(ours, opt), weights(theirs), torch.float32)


@pytest.mark.parametrize("impl", CUDA_IMPLS)
@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_matches_paper_on_cuda(name, impl):
    cls, kwargs = OPTIMIZERS[name]
    paper_cls = {"lars": PaperLARS, "lamb": PaperLAMB}[name]
    ours = make_model(device="cuda")
    opt = cls(param_groups(ours, weight_decay=0.05), **kwargs, impl=impl)
    train(ours, opt)
    theirs = make_model(torch.float64)
    paper = paper_cls(param_groups(theirs, weight_decay=0.05),
                      **dict(kwargs, lr=float(torch.tensor(kwargs["lr"], dtype=torch.float32))))
    train(theirs, paper)
    assert_weights_close(weights(ours, opt), weights(theirs), torch.float32)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16_master"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cuda_kernels_match_cpu_kernels(name, dtype):
    """Same math on both devices: the CPU kernels are the executable reference of the CUDA ones."""
    cls, kwargs = OPTIMIZERS[name]
    master = dtype == torch.bfloat16
    runs = []
    for device in ("cpu", "cuda"):
        model = make_model(dtype, device=device)
        opt = cls(param_groups(model), **kwargs, impl="fused", master_weights=master, max_grad_norm=0.5)
        train(model, opt, steps=20)
        runs.append(weights(model, opt))
    assert_weights_close(runs[1], runs[0], dtype)


@pytest.mark.parametrize("impl", CUDA_IMPLS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_grad_scaler_inf_skips_on_cuda(name, impl):
    cls, kwargs = OPTIMIZERS[name]
    model = make_model(device="cuda")
    opt = cls(param_groups(model), **kwargs, impl=impl)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 12)
    seen = {}

    def inject(step):
        if step == 3:
            next(model.parameters()).grad[0, 0] = float("nan")
            seen["before"] = snapshot(model, opt)

    train(model, opt, steps=4, scaler=scaler, before_step=inject)
    for a, b in zip(snapshot(model, opt), seen["before"]):
        assert torch.equal(a, b)


def _big_lists(dtype, master):
    """> one launch's tensor slots, one tensor spanning > one launch's blocks, odd sizes, and views at
    odd offsets (not 16-byte aligned: the scalar path)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    sizes = [1300 * 65536 + 123] + [((i * 7919) % 5000) + 1 for i in range(900)] + [65536, 65537, 3]
    params, grads = [], []
    for i, n in enumerate(sizes):
        offset = 1 if i % 3 == 0 else 0
        base = torch.randn(n + offset, device="cuda", generator=gen).to(dtype)
        gbase = torch.randn(n + offset, device="cuda", generator=gen).to(dtype)
        params.append(base[offset:])
        grads.append(gbase[offset:])
    masters = [p.float() for p in params] if master else []
    state_dtype = torch.float32 if master else dtype
    return params, grads, masters, state_dtype


@needs_cuda_kernels
@pytest.mark.parametrize("dtype,master", [(torch.float32, False), (torch.bfloat16, True)], ids=["fp32", "bf16_master"])
def test_launch_splitting_and_alignment(dtype, master):
    params, grads, masters, sd = _big_lists(dtype, master)
    n = len(params)
    exp_avgs = [torch.full_like(p, 0.01, dtype=sd) for p in params]
    exp_avg_sqs = [torch.full_like(p, 0.02, dtype=sd) for p in params]
    steps = [torch.tensor(4.0, device="cuda") for _ in range(n)]
    lr = torch.tensor(1e-2, device="cuda")
    args = [params, grads, exp_avgs, exp_avg_sqs, masters, steps, lr, 0.9, 0.999, 0.01, 1e-8, False,
            torch.tensor([2.0], device="cuda"), torch.tensor([0.0], device="cuda")]
    ref_args = copy.deepcopy(args)
    total, _ = torch.ops.classy_fast.multi_tensor_l2norm(grads, args[12], False)
    ref_total, _ = reference.multi_tensor_l2norm(grads, args[12], False)
    torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=0)
    args += [total, 1.0]
    ref_args += [ref_total, 1.0]
    torch.ops.classy_fast.fused_adamw_(*args)
    reference.fused_adamw_(*ref_args)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    for rows in ((0, 0), (2, 2), (3, 3), (4, 4), (5, 5)):
        for a, b in zip(args[rows[0]], ref_args[rows[1]]):
            torch.testing.assert_close(a, b, **tol)
    # per-tensor norms across launch boundaries
    _, per = torch.ops.classy_fast.multi_tensor_l2norm(params, None, True)
    _, ref_per = reference.multi_tensor_l2norm(params, None, True)
    torch.testing.assert_close(per, ref_per, rtol=1e-5, atol=1e-6)


@needs_cuda_kernels
def test_resnet50_parameter_set_is_one_update_launch():
    torchvision = pytest.importorskip("torchvision")
    shapes = [p.shape for p in torchvision.models.resnet50().parameters()]
    assert len(shapes) == 161
    params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = FusedSGD(params, lr=0.1, momentum=0.9, impl="fused")
    opt.step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        opt.step()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("fused_sgd_kernel" in n for n in names) == 1, names


def _capture_step(opt, static_grads_fn):
    """Warm up on a side stream, then capture opt.step() into a graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            static_grads_fn()
            opt.step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    return graph


@pytest.mark.parametrize("impl", CUDA_IMPLS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cuda_graph_replay_equals_eager(name, impl):
    """A captured step reads lr, step counts and clipping norms on the device: replays equal eager
    steps, including after an in-place lr change."""
    cls, kwargs = OPTIMIZERS[name]
    gen = torch.Generator(device="cuda").manual_seed(0)
    grad_seq = [[torch.randn(s, device="cuda", generator=gen) for s in ((64, 32), (32,), (7,))] for _ in range(8)]

    def make():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in ((64, 32), (32,), (7,))]
        groups = [{"params": params[:1], "weight_decay": 0.01},
                  {"params": params[1:], "weight_decay": 0.0, "exclude_from_adaptation": True}]
        return params, cls(groups, **kwargs, impl=impl, max_grad_norm=5.0)

    # eager
    e_params, e_opt = make()
    for i, grads in enumerate(grad_seq):
        if i == 6:
            for g in e_opt.param_groups:
                g["lr"].mul_(0.5)
        for p, g in zip(e_params, grads):
            p.grad = g.clone()
        e_opt.step()

    # graphed: 3 warm-up steps eagerly (grads 0..2), then replays for grads 3..7
    g_params, g_opt = make()
    for p in g_params:
        p.grad = torch.zeros_like(p)
    warm = iter(grad_seq[:3])

    def load_next_warmup_grads():
        for p, g in zip(g_params, next(warm)):
            p.grad.copy_(g)

    graph = _capture_step(g_opt, load_next_warmup_grads)
    for i, grads in enumerate(grad_seq[3:], start=3):
        if i == 6:
            for g in g_opt.param_groups:
                g["lr"].mul_(0.5)
        for p, g in zip(g_params, grads):
            p.grad.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(g_params, e_params):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(g_opt.last_grad_norm, e_opt.last_grad_norm, atol=0, rtol=0)


@needs_cuda_kernels
def test_ema_cuda_matches_reference():
    gen = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(n, device="cuda", generator=gen) for n in (70001, 5, 1)]
    emas = [torch.randn_like(p) for p in params]
    ref = [e.clone() for e in emas]
    decay = torch.tensor(0.99, device="cuda")
    ema_update_(emas, params, decay, impl="fused")
    ema_update_(ref, params, decay, impl="reference")
    for a, b in zip(emas, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
