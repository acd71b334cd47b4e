"""FusedLAMB: layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes", Algorithm 2).

    m = beta1 * m + (1 - beta1) * g          v = beta2 * v + (1 - beta2) * g^2
    u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * w
    w = w - lr * ratio * u,     ratio = ||w|| / ||u||  (1 when either norm is 0; capped at trust_clamp)

Groups flagged ``exclude_from_adaptation`` (norm layers and biases) use ratio 1 and no weight decay
(the TF-Addons LAMB convention, where layer-adaptation exclusion defaults to the weight-decay one).

Per group two kernel passes: the moments pass updates m, v and reduces ||w|| and ||u|| per tensor
on the device; the apply pass recomputes u and moves w. With max_grad_norm, a norm pass over all
grads comes first (apex FusedLAMB's global clipping, here with clip_grad_norm_'s formula).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from classy_fast.optim.base import FusedOptimizer


class FusedLAMB(FusedOptimizer):
    """LAMB with bias correction, decoupled weight decay and an optional trust-ratio cap.

    Extra keyword arguments as FusedSGD, plus ``trust_clamp`` (None: no cap). State per param:
    ``step``, ``exp_avg``, ``exp_avg_sq``, and ``master_param`` with master weights.
    """

    def __init__(self, params: Iterable, lr=1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, trust_clamp: Optional[float] = None, *, maximize: bool = False,
                 max_grad_norm: Optional[float] = None, master_weights: bool = False, impl: str = "auto"):
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if trust_clamp is not None and not trust_clamp > 0:
            raise ValueError(f"trust_clamp must be positive or None, got {trust_clamp}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, trust_clamp=trust_clamp,
                        maximize=maximize)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm, master_weights=master_weights, impl=impl)

    def _buffer_keys(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, ops, batches, grad_scale, found_inf):
        grad_norm = self._clip_norm(ops, batches, grad_scale)
        for b in batches:
            g = b.group
            beta1, beta2 = (float(x) for x in g["betas"])
            adapted = not g["exclude_from_adaptation"]
            weight_decay = float(g["weight_decay"]) if adapted else 0.0
            exp_avgs, exp_avg_sqs = b.buffers("exp_avg"), b.buffers("exp_avg_sq")
            w_norms, u_norms = ops.fused_lamb_moments_(
                b.grads, exp_avgs, exp_avg_sqs, b.weights, b.steps, beta1, beta2, weight_decay, float(g["eps"]),
                bool(g["maximize"]), grad_scale, found_inf, grad_norm, self._max_norm_arg)
            clamp = 0.0 if g["trust_clamp"] is None else float(g["trust_clamp"])
            ops.fused_lamb_apply_(b.params, exp_avgs, exp_avg_sqs, b.masters, b.steps, g["lr"],
                                  w_norms if adapted else None, u_norms if adapted else None, beta1, beta2,
                                  weight_decay, float(g["eps"]), clamp, found_inf)
