"""FusedSGD: torch.optim.SGD's update (momentum, dampening, Nesterov, weight decay, maximize) as
one multi-tensor kernel launch per param group, with GradScaler unscaling and gradient clipping
folded in (see classy_fast.optim.base for the shared contract)."""

from __future__ import annotations

from typing import Iterable, Optional

from classy_fast.optim.base import FusedOptimizer


class FusedSGD(FusedOptimizer):
    """Drop-in for ``torch.optim.SGD`` (same arguments and defaults, same trajectory).

    Extra keyword arguments: ``max_grad_norm`` (clip the global grad norm inside the step),
    ``master_weights`` (fp32 master copies and fp32 momentum for bf16/fp16 params), ``impl``
    ('auto' | 'fused' | 'reference'). State per param: ``momentum_buffer`` (when momentum != 0),
    ``step`` (a device counter; step 1 initialises the buffer to the gradient like torch), and
    ``master_param`` with master weights.
    """

    def __init__(self, params: Iterable, lr=1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, master_weights: bool = False, impl: str = "auto"):
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm, master_weights=master_weights, impl=impl)

    def _buffer_keys(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _update(self, ops, batches, grad_scale, found_inf):
        grad_norm = self._clip_norm(ops, batches, grad_scale)
        for b in batches:
            g = b.group
            ops.fused_sgd_(b.params, b.grads, b.buffers("momentum_buffer"), b.masters, b.steps, g["lr"],
                           float(g["weight_decay"]), float(g["momentum"]), float(g["dampening"]), bool(g["nesterov"]),
                           bool(g["maximize"]), grad_scale, found_inf, grad_norm, self._max_norm_arg)
