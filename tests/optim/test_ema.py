"""classy_fast.ops.ema_update_: ema = decay * ema + (1 - decay) * param over tensor lists."""

from __future__ import annotations

import pytest
import torch

from classy_fast.ops import ema_update_, ema_update_reference
from tests.optim._helpers import IMPLS


def _pairs(dtype=torch.float32, ema_dtype=None):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (70001,), (0,), (1,)]
    params = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    emas = [torch.randn(s, generator=gen).to(ema_dtype or dtype) for s in shapes]
    return emas, params


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("as_tensor", [False, True], ids=["float", "tensor"])
def test_against_hand_computed_average(impl, as_tensor):
    ema = [torch.tensor([0.0, 10.0]), torch.tensor([[1.0], [-1.0]])]
    params = [torch.tensor([1.0, 0.0]), torch.tensor([[3.0], [1.0]])]
    decay = torch.tensor(0.75) if as_tensor else 0.75
    ema_update_(ema, params, decay, impl=impl)
    # 0.75 * 0 + 0.25 * 1 = 0.25; 0.75 * 10 = 7.5; 0.75 * 1 + 0.25 * 3 = 1.5; -0.75 + 0.25 = -0.5
    assert ema[0].tolist() == [0.25, 7.5]
    assert ema[1].tolist() == [[1.5], [-0.5]]
    ema_update_(ema, params, decay, impl=impl)
    assert ema[0].tolist() == [0.75 * 0.25 + 0.25, 0.75 * 7.5]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,ema_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                             (torch.bfloat16, torch.float32), (torch.float16, torch.float32)],
                         ids=["fp32", "bf16", "bf16_fp32_ema", "fp16_fp32_ema"])
def test_matches_reference_over_many_updates(dtype, ema_dtype, impl):
    emas, params = _pairs(dtype, ema_dtype)
    ref = [e.clone() for e in emas]
    decay = torch.tensor(0.9)
    for k in range(5):
        decay.fill_(0.9 + 0.01 * k)  # a decay warmup writes the tensor in place
        ema_update_(emas, params, decay, impl=impl)
        for e, p in zip(ref, params):  # the formula, spelled out in float64
            e.copy_(decay.double() * e.double() + (1 - decay.double()) * p.double())
    tol = dict(atol=1e-6, rtol=1e-5) if (ema_dtype or dtype) == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    for e, r in zip(emas, ref):
        torch.testing.assert_close(e, r, **tol)


def test_reference_function():
    emas, params = _pairs()
    expected = [0.5 * e + 0.5 * p for e, p in zip(emas, params)]
    ema_update_reference(emas, params, 0.5)
    for e, x in zip(emas, expected):
        torch.testing.assert_close(e, x)


def test_errors():
    with pytest.raises(ValueError, match="2 EMA tensors but 1 params"):
        ema_update_([torch.zeros(1), torch.zeros(1)], [torch.zeros(1)], 0.9)
    with pytest.raises(ValueError, match="impl"):
        ema_update_([torch.zeros(1)], [torch.zeros(1)], 0.9, impl="gpu")
    ema_update_([], [], 0.9)  # nothing to do
