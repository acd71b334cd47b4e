"""Multi-tensor exponential moving average: ema = decay * ema + (1 - decay) * param, in place.

One kernel launch updates every tensor of the model (csrc/ema_update.cpp, csrc/cuda/ema_update.cu);
``decay`` may be a float or a one-element float32 device tensor (read in the kernel: a decay warmup
can change it in place without a host sync, also inside a CUDA graph). An fp32 EMA of bf16/fp16
weights is allowed. Floating tensors only: keep integer buffers (BatchNorm's num_batches_tracked)
out, or copy them.
"""

from __future__ import annotations

from typing import List, Sequence, Union

import torch
from torch import Tensor


__all__ = ["ema_update_", "ema_update_reference"]


def ema_update_reference(ema_params: Sequence[Tensor], params: Sequence[Tensor], decay: Union[float, Tensor]) -> None:
    """Plain-PyTorch reference (fp32 arithmetic, like the kernels; fp64 tensors in fp64)."""
    from classy_fast.optim import reference

    decay_tensor = decay if isinstance(decay, Tensor) else None
    reference.ema_update_(list(ema_params), list(params), decay_tensor, 0.0 if decay_tensor is not None else float(decay))


def ema_update_(ema_params: Sequence[Tensor], params: Sequence[Tensor], decay: Union[float, Tensor],
                impl: str = "auto") -> None:
    """ema <- decay * ema + (1 - decay) * param for every pair; impl: 'auto' | 'fused' | 'reference'."""
    from classy_fast.optim import _backend

    ema_params: List[Tensor] = list(ema_params)
    params = list(params)
    if len(ema_params) != len(params):
        raise ValueError(f"ema_update_: {len(ema_params)} EMA tensors but {len(params)} params")
    if not ema_params:
        return
    if impl not in _backend.IMPLS:
        raise ValueError(f"ema_update_: impl must be one of {_backend.IMPLS}, got {impl!r}")
    dtypes = {t.dtype for t in ema_params} | {t.dtype for t in params}
    ops = _backend.select(impl, ema_params[0].device, dtypes, "classy_fast.ops.ema_update_")
    if isinstance(decay, Tensor):
        decay_tensor = decay if decay.dtype == torch.float32 else decay.float()
        ops.ema_update_(ema_params, params, decay_tensor, 0.0)
    else:
        ops.ema_update_(ema_params, params, None, float(decay))
