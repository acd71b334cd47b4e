"""Plain-PyTorch reference implementations of the fused optimizer ops.

Each function here has exactly the signature and in-place effect of the ``classy_fast::`` op of
the same name (schemas in csrc/registration.cpp), and spells out the same per-element formulas
as csrc/include/classy_fast/optim_math.h in torch ops. They serve two purposes:

* the fallback when the extension is not built (or for float64 params, which the kernels do not
  take): ``classy_fast.optim`` then still works, on any device, without host syncs: the found_inf
  skip is a ``torch.where`` and every scalar (lr, grad scale, norms, step counts) stays a tensor;
* an independent statement of the math the kernels are tested against.

Arithmetic is fp32 for fp32/bf16/fp16 storage (like the kernels) and fp64 for fp64 storage.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "ema_update_",
    "fused_adamw_",
    "fused_lamb_apply_",
    "fused_lamb_moments_",
    "fused_lars_",
    "fused_sgd_",
    "multi_tensor_l2norm",
]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _scalar(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if t is None else t.reshape(()).to(dtype)


def _grad_factor(grad_scale, grad_norm, max_grad_norm: float, dtype, device) -> Tensor:
    """1/grad_scale times the clip coefficient of clip_grad_norm_ (a device scalar)."""
    factor = torch.ones((), dtype=dtype, device=device)
    if grad_scale is not None:
        factor = factor / _scalar(grad_scale, dtype)
    if grad_norm is not None:
        factor = factor * (max_grad_norm / (_scalar(grad_norm, dtype) + 1e-6)).clamp(max=1.0)
    return factor


def _skip(found_inf: Optional[Tensor]) -> Optional[Tensor]:
    return None if found_inf is None else found_inf.reshape(()) != 0


def _write(dst: Tensor, value: Tensor, skip: Optional[Tensor]) -> None:
    """dst <- value, or dst unchanged where the step is skipped (no host sync)."""
    if skip is not None:
        value = torch.where(skip, dst.to(value.dtype), value)
    dst.copy_(value)


def _increment_steps(steps: List[Tensor], found_inf: Optional[Tensor]) -> None:
    increment = 1.0 if found_inf is None else 1.0 - (found_inf.reshape(()) != 0).to(torch.float32)
    for s in steps:
        s.add_(increment)


def _norm(x: Tensor) -> Tensor:
    # Accumulated in float64: torch's fp32 vector_norm on CPU sums sequentially and is off by ~1%
    # for a 85 M-element tensor; the kernels use blocked partial sums.
    return torch.linalg.vector_norm(x, dtype=torch.float64)


def _weights(params, master_params, i: int, dtype) -> Tensor:
    return (master_params[i] if master_params else params[i]).to(dtype)


def _store_weight(params, master_params, i: int, w: Tensor, skip) -> None:
    if master_params:
        _write(master_params[i], w, skip)
    _write(params[i], w, skip)


def multi_tensor_l2norm(tensors: List[Tensor], grad_scale: Optional[Tensor], per_tensor: bool) -> Tuple[Tensor, Tensor]:
    dtype = _compute_dtype(*tensors)
    device = tensors[0].device
    inv = torch.ones((), dtype=dtype, device=device) if grad_scale is None else 1.0 / _scalar(grad_scale, dtype)
    norms = torch.stack([_norm(t.to(dtype) * inv) for t in tensors])
    total = torch.linalg.vector_norm(norms).to(dtype)
    norms = norms.to(dtype)
    return total, (norms if per_tensor else norms.new_empty(0))


def fused_sgd_(params, grads, momentum_buffers, master_params, steps, lr, weight_decay, momentum, dampening,
               nesterov, maximize, grad_scale, found_inf, grad_norm, max_grad_norm) -> None:
    if not params:
        return
    dtype = _compute_dtype(*params)
    factor = _grad_factor(grad_scale, grad_norm, max_grad_norm, dtype, params[0].device)
    skip = _skip(found_inf)
    lr = _scalar(lr, dtype)
    _increment_steps(steps, found_inf)
    for i in range(len(params)):
        w = _weights(params, master_params, i, dtype)
        g = grads[i].to(dtype) * factor
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * w
        if momentum != 0:
            buf = momentum_buffers[i].to(dtype)
            buf = torch.where(steps[i] == 1, g, momentum * buf + (1.0 - dampening) * g)
            _write(momentum_buffers[i], buf, skip)
            g = g + momentum * buf if nesterov else buf
        _store_weight(params, master_params, i, w - lr * g, skip)


def fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, master_params, steps, lr, beta1, beta2, weight_decay, eps,
                 maximize, grad_scale, found_inf, grad_norm, max_grad_norm) -> None:
    if not params:
        return
    dtype = _compute_dtype(*params)
    factor = _grad_factor(grad_scale, grad_norm, max_grad_norm, dtype, params[0].device)
    skip = _skip(found_inf)
    lr = _scalar(lr, dtype)
    _increment_steps(steps, found_inf)
    for i in range(len(params)):
        step = steps[i].to(dtype)
        bias_correction1 = 1.0 - torch.pow(beta1, step)
        bias_correction2_sqrt = torch.sqrt(1.0 - torch.pow(beta2, step))
        w = _weights(params, master_params, i, dtype)
        g = grads[i].to(dtype) * factor
        if maximize:
            g = -g
        m = exp_avgs[i].to(dtype)
        v = exp_avg_sqs[i].to(dtype)
        w = w * (1.0 - lr * weight_decay)
        m = m + (1.0 - beta1) * (g - m)
        v = beta2 * v + (1.0 - beta2) * g * g
        denom = torch.sqrt(v) / bias_correction2_sqrt + eps
        w = w - (lr / bias_correction1) * (m / denom)
        _write(exp_avgs[i], m, skip)
        _write(exp_avg_sqs[i], v, skip)
        _store_weight(params, master_params, i, w, skip)


def fused_lars_(params, grads, momentum_buffers, master_params, lr, param_norms, grad_norms, weight_decay, momentum,
                trust_coefficient, eps, nesterov, maximize, grad_scale, found_inf, grad_norm, max_grad_norm) -> None:
    if not params:
        return
    dtype = _compute_dtype(*params)
    factor = _grad_factor(grad_scale, grad_norm, max_grad_norm, dtype, params[0].device)
    clip = _grad_factor(None, grad_norm, max_grad_norm, dtype, params[0].device)
    skip = _skip(found_inf)
    lr = _scalar(lr, dtype)
    for i in range(len(params)):
        scaled_lr = lr
        if param_norms is not None:
            w_norm = param_norms[i].to(dtype)
            g_norm = grad_norms[i].to(dtype) * clip
            trust = torch.where(
                (w_norm > 0) & (g_norm > 0),
                trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps),
                torch.ones_like(w_norm),
            )
            scaled_lr = lr * trust
        w = _weights(params, master_params, i, dtype)
        g = grads[i].to(dtype) * factor
        if maximize:
            g = -g
        step = scaled_lr * (g + weight_decay * w)
        buf = momentum * momentum_buffers[i].to(dtype) + step
        w = w - (momentum * buf + step if nesterov else buf)
        _write(momentum_buffers[i], buf, skip)
        _store_weight(params, master_params, i, w, skip)


def _lamb_bias_corrections(step: Tensor, beta1: float, beta2: float, dtype):
    step = step.to(dtype)
    return 1.0 - torch.pow(beta1, step), 1.0 - torch.pow(beta2, step)


def _lamb_direction(w, m, v, bc1, bc2, eps, weight_decay):
    return (m / bc1) / (torch.sqrt(v / bc2) + eps) + weight_decay * w


def fused_lamb_moments_(grads, exp_avgs, exp_avg_sqs, weights, steps, beta1, beta2, weight_decay, eps, maximize,
                        grad_scale, found_inf, grad_norm, max_grad_norm) -> Tuple[Tensor, Tensor]:
    dtype = _compute_dtype(*weights)
    device = grads[0].device
    factor = _grad_factor(grad_scale, grad_norm, max_grad_norm, dtype, device)
    skip = _skip(found_inf)
    _increment_steps(steps, found_inf)
    w_norms, u_norms = [], []
    for i in range(len(grads)):
        bc1, bc2 = _lamb_bias_corrections(steps[i], beta1, beta2, dtype)
        g = grads[i].to(dtype) * factor
        if maximize:
            g = -g
        m = exp_avgs[i].to(dtype)
        v = exp_avg_sqs[i].to(dtype)
        m = m + (1.0 - beta1) * (g - m)
        v = beta2 * v + (1.0 - beta2) * g * g
        # u from the stored (rounded) moments, as the apply stage recomputes it.
        m = m.to(exp_avgs[i].dtype).to(dtype)
        v = v.to(exp_avg_sqs[i].dtype).to(dtype)
        w = weights[i].to(dtype)
        u = _lamb_direction(w, m, v, bc1, bc2, eps, weight_decay)
        w_norms.append(_norm(w))
        u_norms.append(_norm(u))
        _write(exp_avgs[i], m, skip)
        _write(exp_avg_sqs[i], v, skip)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    zero = torch.zeros((), dtype=out_dtype, device=device)
    w_norms = torch.stack(w_norms).to(out_dtype)
    u_norms = torch.stack(u_norms).to(out_dtype)
    if skip is not None:  # the kernels report zeros for a skipped step
        w_norms, u_norms = torch.where(skip, zero, w_norms), torch.where(skip, zero, u_norms)
    return w_norms, u_norms


def fused_lamb_apply_(params, exp_avgs, exp_avg_sqs, master_params, steps, lr, param_norms, update_norms, beta1,
                      beta2, weight_decay, eps, trust_clamp, found_inf) -> None:
    if not params:
        return
    dtype = _compute_dtype(*params)
    skip = _skip(found_inf)
    lr = _scalar(lr, dtype)
    for i in range(len(params)):
        bc1, bc2 = _lamb_bias_corrections(steps[i], beta1, beta2, dtype)
        scaled_lr = lr
        if param_norms is not None:
            w_norm = param_norms[i].to(dtype)
            u_norm = update_norms[i].to(dtype)
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            if trust_clamp > 0:
                ratio = ratio.clamp(max=trust_clamp)
            scaled_lr = lr * ratio
        w = _weights(params, master_params, i, dtype)
        u = _lamb_direction(w, exp_avgs[i].to(dtype), exp_avg_sqs[i].to(dtype), bc1, bc2, eps, weight_decay)
        _store_weight(params, master_params, i, w - scaled_lr * u, skip)


def ema_update_(ema_params: List[Tensor], params: List[Tensor], decay_tensor: Optional[Tensor], decay: float) -> None:
    if not ema_params:
        return
    dtype = _compute_dtype(*ema_params)
    d = decay if decay_tensor is None else _scalar(decay_tensor, dtype)
    for e, p in zip(ema_params, params):
        e.copy_(d * e.to(dtype) + (1.0 - d) * p.to(dtype))
