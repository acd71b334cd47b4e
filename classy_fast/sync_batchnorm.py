"""SyncBatchNorm: batch statistics over the global batch (every rank's share) instead of each rank's.

On CUDA this is torch's ``nn.SyncBatchNorm`` (fused kernels, one all-gather per layer). torch's
refuses CPU tensors, so on the CPU (gloo) ``AllReduceBatchNorm`` does the same arithmetic with
plain ops: each rank all-reduces its per-channel sum, sum of squares and count, normalizes with the
global mean and variance, and autograd's differentiable all-reduce sums the statistics' gradients
over ranks in the backward pass, so each rank's input gradient is the one a single process with
the whole global batch would compute. With DDP averaging parameter gradients over ranks, W ranks ×
batch B then train exactly like one process with batch W·B and plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn.modules.batchnorm import _BatchNorm


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm (any dimensionality ≥ 2) whose training statistics are reduced over all ranks; works on any device."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # Sums in float64: E[x²] − E[x]² loses nothing worth mentioning at these magnitudes.
        x64 = x.to(torch.float64)
        local = torch.cat([x64.sum(dims), (x64 * x64).sum(dims),
                           torch.full((1,), x.numel() // channels, dtype=torch.float64, device=x.device)])
        total = differentiable_all_reduce(local)
        count = total[2 * channels].detach()
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0.0)

        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)

        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x64 - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _convert(module: nn.Module, cls: type) -> nn.Module:
    """Replace every plain BatchNorm in ``module`` by ``cls``, sharing its parameters and buffers."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, AllReduceBatchNorm)):
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, _convert(child, cls))
    return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with synchronized BatchNorm: torch's SyncBatchNorm on CUDA, AllReduceBatchNorm elsewhere.

    Parameters are shared (not copied), so an optimizer built before or after sees the same
    tensors, and state_dict keys are unchanged: checkpoints load into either form.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model, AllReduceBatchNorm)
