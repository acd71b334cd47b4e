"""Shared pieces of the optimizer tests: a tiny model with two param groups, a fixed batch, a
training loop, and the tolerance table."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classy_fast.optim import _backend

STEPS = 50

# Both implementations of the ops are exercised on CPU: the compiled kernels ('fused', skipped when
# the extension is not built) and the plain-PyTorch references.
needs_cpu_kernels = pytest.mark.skipif(not _backend.kernels_compiled_for(torch.device("cpu")),
                                       reason="classy_fast._C optimizer kernels are not built")
IMPLS = [pytest.param("fused", marks=needs_cpu_kernels), "reference"]

needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# (atol, rtol) on the final weights after STEPS steps against the reference trajectory.
# float32/float64: same math, only rounding differs. bf16/fp16 (master weights, compared with an
# fp32 run of the same model): the forward/backward runs in low precision, so the grads differ by
# ~1e-2 relative each step; the check is that master weights track the fp32 run, not bits.
TOLERANCES: Dict[torch.dtype, tuple] = {
    torch.float32: (2e-5, 1e-4),
    torch.float64: (1e-12, 1e-10),
    torch.bfloat16: (3e-2, 0.0),
    torch.float16: (5e-3, 0.0),
}


def make_model(dtype=torch.float32, device="cpu", seed: int = 0) -> nn.Module:
    # LayerNorm rather than BatchNorm: a bias feeding a BatchNorm has a gradient that is zero up to
    # rounding noise, which Adam-type updates amplify to +-lr and no two implementations agree on.
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4))
    return model.to(device=device, dtype=dtype)


def param_groups(model: nn.Module, weight_decay: float = 0.05, lr=None) -> List[dict]:
    """Matrices with weight decay; norm-layer params and biases without, excluded from adaptation."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0, "exclude_from_adaptation": True}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr() if callable(lr) else lr
    return groups


def torch_groups(groups: List[dict]) -> List[dict]:
    return [{k: v for k, v in g.items() if k != "exclude_from_adaptation"} for g in groups]


def batch(dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    return x.to(device=device, dtype=dtype), y.to(device)


def loss_of(model: nn.Module, x, y) -> torch.Tensor:
    return F.cross_entropy(model(x).float(), y)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = STEPS, *, scaler=None,
          clip: Optional[float] = None, before_step: Optional[Callable[[int], None]] = None) -> None:
    """Full-batch steps; `clip` clips with torch.nn.utils.clip_grad_norm_ (the unfused way)."""
    p0 = next(model.parameters())
    x, y = batch(p0.dtype, p0.device)
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, x, y)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if before_step is not None:
            before_step(i)
        if clip is not None:
            if scaler is not None:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()


def weights(model: nn.Module, opt: Optional[torch.optim.Optimizer] = None) -> List[torch.Tensor]:
    """The model's weights in float64; the fp32 master weights where the optimizer keeps them."""
    out = []
    for p in model.parameters():
        state = opt.state.get(p, {}) if opt is not None else {}
        out.append(state.get("master_param", p).detach().double().cpu())
    return out


def assert_weights_close(actual: List[torch.Tensor], expected: List[torch.Tensor], dtype: torch.dtype) -> None:
    atol, rtol = TOLERANCES[dtype]
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e.double(), atol=atol, rtol=rtol, msg=lambda m: f"param {i}: {m}")


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> List[torch.Tensor]:
    """Copies of every param and every state tensor, to check that a step changed nothing."""
    out = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        for v in opt.state.get(p, {}).values():
            if isinstance(v, torch.Tensor):
                out.append(v.detach().clone())
    return out
