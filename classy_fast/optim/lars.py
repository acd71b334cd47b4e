"""FusedLARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, "Large Batch Training of
Convolutional Networks"), the optimizer of the MLPerf ResNet-50 results.

Per tensor, local lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps) (1 when
either norm is 0); the momentum buffer accumulates lr-scaled steps:

    v = momentum * v + lr * local_lr * (g + weight_decay * w)
    w = w - v                                   (Nesterov: w - (momentum * v + lr * local_lr * (g + wd * w)))

Groups flagged ``exclude_from_adaptation`` (norm layers and biases; classy_fast's no-decay group)
get local lr 1 and no weight decay: plain momentum SGD.

One step = one multi-tensor norm pass over the grads (per-tensor and global norms at once, which
also serves clipping), one over the adapted weights, and one update launch per group. ||g|| is
the norm of the unscaled, clipped gradient, i.e. the gradient the update uses.
"""

from __future__ import annotations

from typing import Iterable, Optional

from classy_fast.optim.base import FusedOptimizer


class FusedLARS(FusedOptimizer):
    """LARS with momentum, Nesterov, weight decay, trust coefficient and eps; see the module docstring.

    Extra keyword arguments as FusedSGD. State per param: ``momentum_buffer`` (starts at zero, holds
    lr-scaled steps), and ``master_param`` with master weights.
    ``last_grad_norm`` is set by every step that computes per-tensor norms (the global norm comes free
    with them): with max_grad_norm, or when some group is adapted; it stays None otherwise.
    """

    _uses_step = False

    def __init__(self, params: Iterable, lr=1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-9, nesterov: bool = False, *,
                 maximize: bool = False, max_grad_norm: Optional[float] = None, master_weights: bool = False,
                 impl: str = "auto"):
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if trust_coefficient <= 0.0:
            raise ValueError(f"Invalid trust_coefficient value: {trust_coefficient}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm, master_weights=master_weights, impl=impl)

    def _buffer_keys(self, group):
        return ("momentum_buffer",)

    def _update(self, ops, batches, grad_scale, found_inf):
        adapted = [not b.group["exclude_from_adaptation"] for b in batches]
        grad_norms = weight_norms = None
        if any(adapted) or self.max_grad_norm is not None:
            total, grad_norms = ops.multi_tensor_l2norm([g for b in batches for g in b.grads], grad_scale, any(adapted))
            self.last_grad_norm = total
        clip_norm = self.last_grad_norm if self.max_grad_norm is not None else None
        if any(adapted):
            weights = [w for b, a in zip(batches, adapted) if a for w in b.weights]
            _, weight_norms = ops.multi_tensor_l2norm(weights, None, True)
        grad_at = weight_at = 0  # offsets of each batch's tensors in the norm vectors
        for b, a in zip(batches, adapted):
            n = len(b.params)
            g = b.group
            w_norms = weight_norms[weight_at:weight_at + n] if a else None
            g_norms = grad_norms[grad_at:grad_at + n] if a else None
            ops.fused_lars_(b.params, b.grads, b.buffers("momentum_buffer"), b.masters, g["lr"], w_norms, g_norms,
                            float(g["weight_decay"]) if a else 0.0, float(g["momentum"]), float(g["trust_coefficient"]),
                            float(g["eps"]), bool(g["nesterov"]), bool(g["maximize"]), grad_scale, found_inf,
                            clip_norm, self._max_norm_arg)
            grad_at += n
            weight_at += n if a else 0
