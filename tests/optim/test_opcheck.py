"""torch.library.opcheck on the compiled CPU ops (schema mutation annotations, fake kernels,
AOT dispatch), plus the compiled ops against the reference functions on identical inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.library import opcheck

from classy_fast.optim import reference
from tests.optim._helpers import needs_cpu_kernels

pytestmark = needs_cpu_kernels

# Sizes straddle the kernels' chunking: a 0-element tensor, odd sizes, and one above 65536.
SHAPES = [(5, 3), (0,), (70001,), (1,), (4, 2, 3)]


def _lists(dtype=torch.float32, master=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    state_dtype = torch.float32 if master else dtype

    def rand(s, dt, positive=False):
        x = torch.randn(s, generator=gen)
        return (x.abs() if positive else x).to(dt)

    return dict(
        params=[rand(s, dtype) for s in SHAPES],
        grads=[rand(s, dtype) for s in SHAPES],
        buf1=[rand(s, state_dtype) for s in SHAPES],
        buf2=[rand(s, state_dtype, positive=True) for s in SHAPES],
        steps=[torch.tensor(float(i + 1)) for i in range(len(SHAPES))],
    )


def _with_master(d, master):
    d["master"] = [p.float() + 1e-3 for p in d["params"]] if master else []
    return d


ops = torch.ops.classy_fast
LR = torch.tensor(0.05)
SCALE = torch.tensor([8.0])
NO_INF = torch.tensor([0.0])
NORM = torch.tensor(3.0)


def _cases(dtype, master):
    d = _with_master(_lists(dtype, master), master)
    n = len(SHAPES)
    norms = torch.rand(n) + 0.5
    w = d["master"] or d["params"]
    return {
        "multi_tensor_l2norm": (d["grads"], SCALE, True),
        "fused_sgd_": (d["params"], d["grads"], d["buf1"], d["master"], d["steps"], LR, 0.01, 0.9, 0.1, False, False,
                       SCALE, NO_INF, NORM, 1.0),
        "fused_adamw_": (d["params"], d["grads"], d["buf1"], d["buf2"], d["master"], d["steps"], LR, 0.9, 0.999,
                         0.01, 1e-8, True, SCALE, NO_INF, None, 0.0),
        "fused_lars_": (d["params"], d["grads"], d["buf1"], d["master"], LR, norms, norms.flip(0), 0.01, 0.9, 0.02,
                        1e-9, True, False, SCALE, NO_INF, NORM, 1.0),
        "fused_lamb_moments_": (d["grads"], d["buf1"], d["buf2"], w, d["steps"], 0.9, 0.999, 0.01, 1e-6, False,
                                SCALE, NO_INF, NORM, 1.0),
        "fused_lamb_apply_": (d["params"], d["buf1"], d["buf2"], d["master"], d["steps"], LR, norms, norms.flip(0),
                              0.9, 0.999, 0.01, 1e-6, 1.5, NO_INF),
        "ema_update_": (d["buf1"], w, torch.tensor(0.9), 0.0),
    }


@pytest.mark.parametrize("dtype,master", [(torch.float32, False), (torch.bfloat16, True)], ids=["fp32", "bf16_master"])
@pytest.mark.parametrize("op", sorted(_cases(torch.float32, False)))
def test_opcheck(op, dtype, master):
    opcheck(getattr(ops, op).default, _cases(dtype, master)[op])


@pytest.mark.parametrize("dtype,master", [(torch.float32, False), (torch.bfloat16, True), (torch.float16, False)],
                         ids=["fp32", "bf16_master", "fp16"])
@pytest.mark.parametrize("op", sorted(_cases(torch.float32, False)))
def test_compiled_op_matches_reference(op, dtype, master):
    args = _cases(dtype, master)[op]
    compiled_args, reference_args = copy.deepcopy(args), copy.deepcopy(args)
    out = getattr(ops, op)(*compiled_args)
    ref_out = getattr(reference, op)(*reference_args)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    for a, b in zip(compiled_args, reference_args):  # in-place effects
        if isinstance(a, list):
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, **tol)
    if out is not None:
        for x, y in zip(out, ref_out):
            torch.testing.assert_close(x, y.float(), atol=1e-4, rtol=1e-5)


def test_found_inf_skips_every_op():
    args = _cases(torch.float32, False)
    inf = torch.tensor([1.0])
    for op in ("fused_sgd_", "fused_adamw_", "fused_lars_", "fused_lamb_moments_"):
        a = list(copy.deepcopy(args[op]))
        before = copy.deepcopy(a)
        idx = 12 if op == "fused_sgd_" else (13 if op in ("fused_adamw_", "fused_lamb_moments_") else 14)
        if op == "fused_lamb_moments_":
            idx = 11
        a[idx] = inf
        getattr(ops, op)(*a)
        for x, y in zip(a, before):
            if isinstance(x, list):
                for s, t in zip(x, y):
                    assert torch.equal(s, t), op


def test_rejects_mismatched_layouts():
    p = torch.zeros(4, 4)
    g = torch.zeros(4, 4).t()  # same shape, other strides
    with pytest.raises(RuntimeError, match="strides"):
        ops.fused_sgd_([p], [g], [], [], [torch.tensor(0.0)], LR, 0.0, 0.0, 0.0, False, False, None, None, None, 0.0)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.fused_sgd_([p], [p.double()], [], [], [torch.tensor(0.0)], LR, 0.0, 0.0, 0.0, False, False, None, None,
                       None, 0.0)
