"""The contract with the orchestrator: build a fused optimizer from an OptimizerConfig.

``classy_fast.optimizers`` calls ``build_fused_optimizer`` for 'sgd' / 'adamw' when
``cfg.fused`` allows it; 'lars' and 'lamb' exist only here and are registered in
``classy_fast.registry.OPTIMIZERS`` when this package is imported.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from classy_fast.config import OptimizerConfig
from classy_fast.optim import _backend
from classy_fast.optim.adamw import FusedAdamW
from classy_fast.optim.lamb import FusedLAMB
from classy_fast.optim.lars import FusedLARS
from classy_fast.optim.sgd import FusedSGD
from classy_fast.registry import OPTIMIZERS

FUSED_OPTIMIZERS = {"sgd": FusedSGD, "adamw": FusedAdamW, "lars": FusedLARS, "lamb": FusedLAMB}
# torch.optim switches a config may carry for the torch path; the fused optimizers are always
# fused and capturable.
_TORCH_ONLY_KWARGS = ("foreach", "fused", "capturable")


def fused_optimizers_available(device: Optional[torch.device] = None) -> bool:
    """Whether the optimizer kernels are compiled for ``device`` (default: CUDA when present, else CPU).

    When False the fused optimizers still work, through the plain-PyTorch reference steps.
    """
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _backend.kernels_compiled_for(torch.device(device))


def _impl(cfg: OptimizerConfig) -> str:
    # 'fused' demands the kernels; 'torch' (only meaningful for lars/lamb, which torch lacks) means
    # plain PyTorch ops: the reference steps.
    return {"fused": "fused", "torch": "reference"}.get(cfg.fused, "auto")


def build_fused_optimizer(name: str, param_groups: List[Dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """FusedSGD / FusedAdamW / FusedLARS / FusedLAMB over ``param_groups`` configured by ``cfg``.

    Group keys understood: 'params', 'lr' (float or 0-dim float32 tensor on the params' device, kept
    by reference), 'weight_decay', 'exclude_from_adaptation' (LARS/LAMB: no trust ratio, no weight
    decay); other keys are kept in the group. ``cfg.kwargs`` go to the constructor (e.g.
    ``master_weights=True``).
    """
    key = name.lower()
    if key not in FUSED_OPTIMIZERS:
        raise KeyError(f"no fused optimizer '{name}'; available: {', '.join(sorted(FUSED_OPTIMIZERS))}")
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, maximize=cfg.maximize,
                  max_grad_norm=cfg.max_grad_norm, impl=_impl(cfg))
    if key == "sgd":
        specific = dict(momentum=cfg.momentum, dampening=cfg.dampening, nesterov=cfg.nesterov)
    elif key == "adamw":
        specific = dict(betas=tuple(cfg.betas), eps=cfg.eps)
    elif key == "lars":
        specific = dict(momentum=cfg.momentum, nesterov=cfg.nesterov, trust_coefficient=cfg.trust_coefficient,
                        eps=cfg.eps)
    else:
        specific = dict(betas=tuple(cfg.betas), eps=cfg.eps, trust_clamp=cfg.trust_clamp)
    kwargs = {**common, **specific, **cfg.kwargs}
    for torch_only in _TORCH_ONLY_KWARGS:  # meant for the torch.optim fallback; ours is always both
        kwargs.pop(torch_only, None)
    return FUSED_OPTIMIZERS[key](param_groups, **kwargs)


def _register() -> None:
    for name in ("lars", "lamb"):
        if name not in OPTIMIZERS:
            OPTIMIZERS.register(name, lambda groups, cfg, _name=name: build_fused_optimizer(_name, groups, cfg))


_register()
