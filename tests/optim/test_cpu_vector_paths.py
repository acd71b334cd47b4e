"""The CPU kernels' element loops (csrc/cpu/optim_kernels_impl.h): the vector body and the scalar
tail round identically, the baseline, AVX2 and AVX-512 builds give identical bits, and the norms do
not depend on the thread count.

Body vs tail: every op runs once on one tensor of N elements (vector blocks plus a short tail) and
once on the same values as N one-element tensors (scalar code only); params, state and master
weights must match bit for bit. The ISA check reruns the same ops in a subprocess with
ATEN_CPU_CAPABILITY=default / avx2 (which select those tables) and compares every output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from tests.optim._helpers import needs_cpu_kernels

pytestmark = needs_cpu_kernels

ROOT = Path(__file__).resolve().parents[2]
N = 1000  # 62 blocks of 16 elements (two 8-lane vectors) and a tail of 8
ops = torch.ops.classy_fast
LR = torch.tensor(0.05)
SCALE = torch.tensor([4.0])
NO_INF = torch.tensor([0.0])
NORM = torch.tensor(3.0)

# (param dtype, fp32 master weights)
DTYPES = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False), "bf16_master": (torch.bfloat16, True),
          "fp16": (torch.float16, False), "fp16_master": (torch.float16, True)}


def _uniform(size: int, gen: torch.Generator) -> torch.Tensor:
    # Uniform in [-2, 2) from integers: torch.randn's CPU kernel rounds differently per ISA, and the
    # baseline-ISA subprocess must see the same inputs.
    return torch.randint(-(2**22), 2**22, (size,), generator=gen).float() / 2**21


def _data(dtype: torch.dtype, master: bool) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = torch.float32 if master else dtype

    def rand(dt, positive=False, scale=1.0):
        x = _uniform(N, gen) * scale
        return (x.abs() if positive else x).to(dt)

    data = dict(params=rand(dtype), grads=rand(dtype, scale=0.1), buf1=rand(state, scale=0.1),
                buf2=rand(state, positive=True, scale=0.01))
    if master:
        data["master"] = data["params"].float() + 1e-3
    return data


def _layout(data: Dict[str, torch.Tensor], split: bool):
    """Fresh copies of the data: as one tensor per key, or as N one-element views of it."""
    flat = {k: v.clone() for k, v in data.items()}
    lists = {k: (list(v.unbind()) if split else [v]) for k, v in flat.items()}
    count = N if split else 1
    lists.setdefault("master", [])
    lists["steps"] = [torch.tensor(0.0) for _ in range(count)]
    lists["norms"] = lambda value: torch.full((count,), value)  # one per-tensor norm per tensor
    return flat, lists


def _sgd(momentum, dampening, nesterov, weight_decay, maximize, clip):
    def run(d):
        for _ in range(2):  # the first step initialises the buffer; the second uses it
            ops.fused_sgd_(d["params"], d["grads"], d["buf1"], d["master"], d["steps"], LR, weight_decay, momentum,
                           dampening, nesterov, maximize, SCALE if clip else None, NO_INF, NORM if clip else None,
                           1.0)
    return run


def _adamw(d):
    for _ in range(2):
        ops.fused_adamw_(d["params"], d["grads"], d["buf1"], d["buf2"], d["master"], d["steps"], LR, 0.9, 0.999, 0.01,
                         1e-8, True, SCALE, NO_INF, NORM, 1.0)


def _lars(nesterov, adapted):
    def run(d):
        norms = (d["norms"](2.0), d["norms"](0.5)) if adapted else (None, None)
        ops.fused_lars_(d["params"], d["grads"], d["buf1"], d["master"], LR, *norms, 0.01, 0.9, 0.02, 1e-9, nesterov,
                        False, SCALE, NO_INF, NORM, 1.0)
    return run


def _lamb(d):
    weights = d["master"] or d["params"]
    ops.fused_lamb_moments_(d["grads"], d["buf1"], d["buf2"], weights, d["steps"], 0.9, 0.999, 0.01, 1e-6, False,
                            SCALE, NO_INF, NORM, 1.0)
    ops.fused_lamb_apply_(d["params"], d["buf1"], d["buf2"], d["master"], d["steps"], LR, d["norms"](2.0),
                          d["norms"](3.0), 0.9, 0.999, 0.01, 1e-6, 1.5, NO_INF)


def _ema(d):
    ops.ema_update_(d["master"] or d["buf1"], d["params"], torch.tensor(0.9), 0.0)


CASES = {
    "sgd_plain": _sgd(0.0, 0.0, False, 0.0, False, False),
    "sgd_momentum_dampening_wd_maximize": _sgd(0.9, 0.1, False, 0.01, True, True),
    "sgd_nesterov_wd": _sgd(0.9, 0.0, True, 0.01, False, False),
    "adamw": _adamw,
    "lars_nesterov": _lars(True, True),
    "lars_excluded": _lars(False, False),
    "lamb": _lamb,
    "ema": _ema,
}


def _outputs(case: str, dtype_name: str, split: bool) -> Dict[str, torch.Tensor]:
    flat, lists = _layout(_data(*DTYPES[dtype_name]), split)
    CASES[case](lists)
    return flat


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_vector_body_and_scalar_tail_round_identically(case, dtype_name):
    whole = _outputs(case, dtype_name, split=False)
    scalar = _outputs(case, dtype_name, split=True)
    for key in whole:
        assert torch.equal(whole[key], scalar[key]), f"{case} {dtype_name}: {key} differs"


def _norm_lists() -> List[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    # Over two threads' worth of work, with tensors of odd sizes and chunk-straddling lengths.
    sizes = [70001, 5, 1, 131072, 65537, 33]
    return [_uniform(s, gen).to(dt) for s in sizes for dt in (torch.float32, torch.bfloat16)]


def all_outputs() -> Dict[str, torch.Tensor]:
    """Every op's outputs on fixed inputs (also run by the baseline-ISA subprocess)."""
    out = {}
    for case in CASES:
        for dtype_name in DTYPES:
            for key, value in _outputs(case, dtype_name, split=False).items():
                out[f"{case}/{dtype_name}/{key}"] = value
    tensors = _norm_lists()
    total, per_tensor = ops.multi_tensor_l2norm(tensors, SCALE, True)
    out["l2norm/total"], out["l2norm/per_tensor"] = total, per_tensor
    fp32 = tensors[::2]
    moments = [torch.zeros_like(t) for t in fp32], [torch.zeros_like(t) for t in fp32]
    steps = [torch.tensor(0.0) for _ in fp32]
    w_norms, u_norms = ops.fused_lamb_moments_(fp32, *moments, [t.flip(0) for t in fp32], steps, 0.9, 0.999, 0.01,
                                               1e-6, False, None, None, None, 0.0)
    out["lamb_norms/w"], out["lamb_norms/u"] = w_norms, u_norms
    return out


def test_norms_do_not_depend_on_the_thread_count():
    old = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append({k: v for k, v in all_outputs().items() if "norm" in k})
    finally:
        torch.set_num_threads(old)
    for other in results[1:]:
        for key, value in results[0].items():
            assert torch.equal(value, other[key]), key


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_every_isa_build_gives_the_same_bits(capability, tmp_path):
    # In this process the table ATen's capability picks (AVX512 / AVX2 / default); in the
    # subprocess the one ATEN_CPU_CAPABILITY forces (a CPU without that ISA just repeats ours).
    ours = all_outputs()
    path = tmp_path / "outputs.pt"
    code = textwrap.dedent(f"""
        import torch
        import classy_fast.optim  # loads the extension
        from tests.optim.test_cpu_vector_paths import all_outputs
        torch.save(all_outputs(), {str(path)!r})
    """)
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    theirs = torch.load(path)
    assert theirs.keys() == ours.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
