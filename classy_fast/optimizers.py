"""Optimizer construction: parameter groups (no weight decay on norm layers and biases) and the registry.

Every group's learning rate is a 0-dim tensor on the parameters' device, so schedulers update it in
place without a host sync and a captured step reads the current value. The fused optimizers of
``classy_fast.optim`` (when built) are used for 'sgd' and 'adamw' unless ``optimizer.fused='torch'``;
'lars' and 'lamb' exist only there.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

from .config import ConfigError, OptimizerConfig
from .registry import OPTIMIZERS

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def split_decay_parameters(model: nn.Module) -> tuple:
    """(params with weight decay, params without): norm-layer parameters and biases go without."""
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids or name.endswith(".bias") or p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_param_groups(model: nn.Module, cfg: OptimizerConfig) -> List[Dict]:
    if not cfg.no_weight_decay_on_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    decay, no_decay = split_decay_parameters(model)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "exclude_from_adaptation": True})
    return [g for g in groups if g["params"]]


def _with_device_lr(groups: List[Dict], cfg: OptimizerConfig) -> List[Dict]:
    out = []
    for g in groups:
        g = dict(g)
        base = float(g.get("lr", cfg.lr))
        g["lr"] = torch.tensor(base, dtype=torch.float32, device=g["params"][0].device)
        g.setdefault("base_lr", base)
        out.append(g)
    return out


def _params_device(groups: List[Dict]) -> torch.device:
    # The first group may be empty: ZeroRedundancyOptimizer hands each rank its share of every group.
    return next((p.device for g in groups for p in g["params"]), torch.device("cpu"))


def _fused(name: str, groups: List[Dict], cfg: OptimizerConfig):
    """The fused optimizer when the config allows it and it is built; None to use torch's."""
    if cfg.fused == "torch":
        return None
    try:
        from . import optim as fused_optim
    except ImportError as e:
        if cfg.fused == "fused":
            raise ConfigError(f"optimizer.fused='fused' but classy_fast.optim cannot be imported: {e}") from None
        return None
    if cfg.fused == "fused" or fused_optim.fused_optimizers_available(_params_device(groups)):
        return fused_optim.build_fused_optimizer(name, groups, cfg)
    return None


def _plain_groups(groups: List[Dict]) -> List[Dict]:
    # torch.optim rejects unknown group keys only on load; drop ours so state_dicts stay torch-compatible.
    return [{k: v for k, v in g.items() if k != "exclude_from_adaptation"} for g in groups]


@OPTIMIZERS.register("sgd")
def sgd(groups: List[Dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    fused = _fused("sgd", groups, cfg)
    if fused is not None:
        return fused
    # torch's fused CUDA SGD: one launch per dtype/device group, tensor lr, GradScaler without a host sync.
    kwargs = {"fused": True} if _params_device(groups).type == "cuda" else {}
    kwargs.update(cfg.kwargs)
    return torch.optim.SGD(_plain_groups(groups), lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, maximize=cfg.maximize, **kwargs)


@OPTIMIZERS.register("adamw")
def adamw(groups: List[Dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    fused = _fused("adamw", groups, cfg)
    if fused is not None:
        return fused
    on_cuda = _params_device(groups).type == "cuda"
    # A tensor lr needs torch's fused (CUDA) or single-tensor path; foreach rejects it unless capturable.
    kwargs = {"fused": True} if on_cuda else {"foreach": False}
    kwargs.update(cfg.kwargs)
    return torch.optim.AdamW(_plain_groups(groups), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, maximize=cfg.maximize, **kwargs)


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups: List[Dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if cfg.fused == "fused":
        raise ConfigError("optimizer.fused='fused': classy_fast has no fused 'rmsprop' (fused: sgd, adamw, lars, lamb); "
                          "use optimizer.fused='auto' or 'torch'")
    return torch.optim.RMSprop(_plain_groups(groups), lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps,
                               weight_decay=cfg.weight_decay, maximize=cfg.maximize, **cfg.kwargs)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, groups: List[Dict] = None) -> torch.optim.Optimizer:
    """The configured optimizer over ``groups`` (default: decay / no-decay groups of ``model``)."""
    if not (math.isfinite(cfg.lr) and cfg.lr >= 0):
        raise ConfigError(f"optimizer.lr must be a finite number ≥ 0, got {cfg.lr}")
    try:
        from . import optim  # noqa: F401  (registers 'lars' and 'lamb' when present)
    except ImportError:
        pass
    groups = _with_device_lr(groups if groups is not None else build_param_groups(model, cfg), cfg)
    try:
        return OPTIMIZERS.get(cfg.name)(groups, cfg)
    except TypeError as e:  # an option the optimizer does not take, most often from optimizer.kwargs
        raise ConfigError(f"optimizer {cfg.name!r} with optimizer.kwargs {cfg.kwargs}: {e}") from None
