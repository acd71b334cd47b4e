"""Fine-tuning: start from pretrained weights, give the model a new head, optionally freeze the trunk.

``prepare_finetune`` loads ``finetune.pretrained`` into the freshly built model (unless a checkpoint
of the run is about to be loaded: resuming or evaluating a fine-tuned run does not read it): a classy_fast
checkpoint (its ``model`` entry) or a plain state dict (torchvision's ``*.pth``, or one nested
under ``state_dict``/``model``). The head keeps its fresh initialization when its shape differs
from the checkpoint's (a new class count) or when ``reset_head`` is set; every other tensor must
load, except that RGB first-layer filters are summed over colour for grayscale data (as
``models.adapt_input_channels`` does). With ``freeze_trunk`` the trunk's parameters stop
requiring gradients and ``set_train_mode`` keeps its modules in eval mode (BatchNorm statistics
and dropout frozen too) while the head trains.

``finetune_param_groups`` gives the head and the trunk their own peak learning rate
(``head_lr``/``trunk_lr``; ``base_lr`` of the group, which the lr schedule scales), each split
into the usual weight-decay / no-decay groups.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
from torch import nn

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError
from .config import ConfigError, OptimizerConfig
from .optimizers import split_decay_parameters
from .recipe_config import FinetuneConfig

log = logging.getLogger("classy_fast")


def find_head(model: nn.Module, name: str = "auto") -> str:
    """The dotted name of the classifier module: ``name`` itself, or the last nn.Linear for 'auto'."""
    modules = dict(model.named_modules())
    if name != "auto":
        if name not in modules:
            raise ConfigError(f"finetune.head: {type(model).__name__} has no module '{name}'")
        return name
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"finetune.head='auto': {type(model).__name__} has no nn.Linear; name the head module")
    return linears[-1]


def read_pretrained_state(path: str) -> Dict[str, torch.Tensor]:
    """The model state dict in ``path`` (classy_fast checkpoint or plain state dict), loaded weights-only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"finetune.pretrained: checkpoint not found: {path}") from None
    except Exception as e:  # corrupt or foreign files raise several types
        raise CheckpointError(f"finetune.pretrained: {path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state["model"]
    elif isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"finetune.pretrained: {path}: no model state dict found")
    # DDP / torch.compile prefixes from other trainers.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _adapt_tensor(name: str, value: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
    """``value`` reshaped for ``target`` where a known adaptation applies (RGB → grayscale filters), else None."""
    if value.shape == target.shape:
        return value
    if value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1 \
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
        return value.sum(dim=1, keepdim=True)  # a gray image x gives the response of RGB (x, x, x)
    return None


def load_pretrained(model: nn.Module, state: Dict[str, torch.Tensor], head: str, reset_head: bool) -> List[str]:
    """Load ``state`` into ``model`` except the head when it is reset or mismatched; returns the keys left as built."""
    own = model.state_dict()
    head_prefix = head + "."
    head_keys = [k for k in own if k.startswith(head_prefix)]
    keep_head = not reset_head and all(k in state and state[k].shape == own[k].shape for k in head_keys)
    loaded, problems = {}, []
    for key, target in own.items():
        if key.startswith(head_prefix) and not keep_head:
            continue
        if key not in state:
            problems.append(f"missing '{key}'")
            continue
        value = _adapt_tensor(key, state[key], target)
        if value is None:
            problems.append(f"'{key}' has shape {tuple(state[key].shape)}, the model needs {tuple(target.shape)}")
            continue
        loaded[key] = value
    unexpected = [k for k in state if k not in own and not k.startswith(head_prefix)]
    problems += [f"unexpected '{k}'" for k in unexpected]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems)" if len(problems) > 5 else "")
        raise CheckpointError(f"finetune.pretrained does not fit {type(model).__name__}: {shown}")
    model.load_state_dict(loaded, strict=False)
    return [] if keep_head else head_keys


def trunk_modules(model: nn.Module, head: str) -> List[nn.Module]:
    """The modules outside the head, except the head's containers (the root, 'classifier' of 'classifier.1').

    A container's other children are trunk (efficientnet's 'classifier.0' dropout too: name the whole
    'classifier' as the head to train it as one)."""
    head_module = model.get_submodule(head)
    in_head = {id(m) for m in head_module.modules()}
    contains_head = {id(model)}
    parts = head.split(".")
    for i in range(1, len(parts)):
        contains_head.add(id(model.get_submodule(".".join(parts[:i]))))
    return [m for m in model.modules() if id(m) not in in_head and id(m) not in contains_head]


def prepare_finetune(model: nn.Module, cfg: FinetuneConfig, load_weights: bool = True) -> List[nn.Module]:
    """Load the pretrained weights and freeze the trunk as configured; returns the modules to keep in eval mode.

    ``load_weights=False`` when a checkpoint of this fine-tuning run will be loaded next (resume, or an
    evaluation of it): its model replaces every weight, so the pretrained file is not read (it may be gone
    by then); the head is still found and the trunk frozen."""
    if cfg.pretrained is None:
        # Without pretrained weights these would be ignored (head_lr/trunk_lr: no head/trunk groups).
        for key in ("freeze_trunk", "reset_head", "head_lr", "trunk_lr"):
            value = getattr(cfg, key)
            if value is not None and value is not False:
                raise ConfigError(f"finetune.{key} needs finetune.pretrained, got {key}={value!r} without it")
        return []
    head = find_head(model, cfg.head)
    if load_weights:
        fresh = load_pretrained(model, read_pretrained_state(cfg.pretrained), head, cfg.reset_head)
        log.info("fine-tuning from %s: head '%s' %s", cfg.pretrained, head, "newly initialized" if fresh else "loaded")
    else:
        log.info("fine-tuning (head '%s'): weights from the checkpoint, %s not read", head, cfg.pretrained)
    if not cfg.freeze_trunk:
        return []
    for name, p in model.named_parameters():  # including parameters held by the head's containers (ViT's class token)
        if not name.startswith(head + "."):
            p.requires_grad_(False)
    return trunk_modules(model, head)


def set_train_mode(model: nn.Module, train: bool, frozen: List[nn.Module]) -> None:
    """``model.train(train)``, then the frozen trunk back to eval mode."""
    model.train(train)
    for module in frozen:
        module.eval()


def finetune_param_groups(model: nn.Module, cfg: FinetuneConfig, opt: OptimizerConfig) -> Optional[List[Dict]]:
    """Head / trunk parameter groups with their own lr when fine-tuning; None for the default groups."""
    if cfg.pretrained is None or (cfg.head_lr is None and cfg.trunk_lr is None):
        return None
    head_ids = {id(p) for p in model.get_submodule(find_head(model, cfg.head)).parameters()}
    groups = []
    for part, lr in (("head", cfg.head_lr), ("trunk", cfg.trunk_lr)):
        lr = opt.lr if lr is None else lr
        if opt.no_weight_decay_on_norm_and_bias:
            decay, no_decay = split_decay_parameters(model)
        else:
            decay, no_decay = [p for p in model.parameters() if p.requires_grad], []
        pick = (lambda p: id(p) in head_ids) if part == "head" else (lambda p: id(p) not in head_ids)
        groups.append({"params": [p for p in decay if pick(p)], "weight_decay": opt.weight_decay, "lr": lr})
        groups.append({"params": [p for p in no_decay if pick(p)], "weight_decay": 0.0, "lr": lr,
                       "exclude_from_adaptation": True})
    return [g for g in groups if g["params"]]


__all__ = ["find_head", "finetune_param_groups", "load_pretrained", "prepare_finetune", "read_pretrained_state",
           "set_train_mode", "trunk_modules"]
