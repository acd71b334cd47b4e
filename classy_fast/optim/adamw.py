"""FusedAdamW: torch.optim.AdamW's update (decoupled weight decay, bias correction, maximize) as
one multi-tensor kernel launch per param group, with GradScaler unscaling and gradient clipping
folded in (see classy_fast.optim.base for the shared contract)."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from classy_fast.optim.base import FusedOptimizer


class FusedAdamW(FusedOptimizer):
    """Drop-in for ``torch.optim.AdamW`` (same arguments and defaults, same trajectory; no amsgrad).

    Bias corrections 1 - beta^step are computed in the kernel from each param's device step
    counter, so nothing about the step lives on the host. Extra keyword arguments as FusedSGD.
    State per param: ``step``, ``exp_avg``, ``exp_avg_sq``, and ``master_param`` with master weights.
    """

    def __init__(self, params: Iterable, lr=1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, master_weights: bool = False, impl: str = "auto"):
        if amsgrad:
            raise ValueError("FusedAdamW does not implement amsgrad")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=False, maximize=maximize)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm, master_weights=master_weights, impl=impl)

    def _buffer_keys(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, ops, batches, grad_scale, found_inf):
        grad_norm = self._clip_norm(ops, batches, grad_scale)
        for b in batches:
            g = b.group
            beta1, beta2 = g["betas"]
            ops.fused_adamw_(b.params, b.grads, b.buffers("exp_avg"), b.buffers("exp_avg_sq"), b.masters, b.steps,
                             g["lr"], float(beta1), float(beta2), float(g["weight_decay"]), float(g["eps"]),
                             bool(g["maximize"]), grad_scale, found_inf, grad_norm, self._max_norm_arg)
