"""Model registry: the small ResNet for 28–32 px images and every torchvision classification model."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..registry import MODELS
from .small_resnet import SmallResNet

__all__ = ["SmallResNet", "build_model", "adapt_input_channels", "unwrap_model"]


@MODELS.register("small_resnet")
def _build_small_resnet(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module:
    if cfg.width < 1:
        raise ConfigError(f"model.width must be ≥ 1, got {cfg.width}")
    if not 0.0 <= cfg.dropout <= 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1], got {cfg.dropout}")
    return SmallResNet(num_classes=num_classes, in_channels=in_channels, width=cfg.width, dropout=cfg.dropout, **cfg.kwargs)


def adapt_input_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first Conv2d so the model takes ``in_channels`` (e.g. 1 for grayscale data).

    Pretrained RGB filters, if any, are averaged over the colour channels so a grayscale image
    sees the same response as its RGB copy.
    """
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return model
                new = nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups, child.bias is not None, child.padding_mode,
                )
                with torch.no_grad():
                    mean_filter = child.weight.mean(dim=1, keepdim=True)
                    new.weight.copy_(mean_filter.expand(-1, in_channels, -1, -1) * (3.0 / in_channels if child.in_channels == 3 else 1.0))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, name, new)
                return model
    raise ValueError(f"{type(model).__name__}: no Conv2d found to adapt to {in_channels} input channels")


# Models whose training-mode forward returns auxiliary classifier outputs (a namedtuple) by default; the
# task's loss and meters take one logits tensor, so they are built without them unless model.kwargs asks.
AUX_LOGIT_MODELS = ("googlenet", "inception_v3")


def _torchvision_builder(name: str):
    def build(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module:
        import torchvision

        kwargs = dict(cfg.kwargs)
        if name in AUX_LOGIT_MODELS:
            if kwargs.get("aux_logits"):
                raise ConfigError(f"model {name!r} with aux_logits: the trainer's loss takes one logits tensor; "
                                  "leave model.kwargs.aux_logits unset (false)")
            kwargs["aux_logits"] = False
            kwargs.setdefault("init_weights", True)  # torchvision warns when it is left unset
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return adapt_input_channels(model, in_channels) if in_channels != 3 else model

    return build


def _register_torchvision_models() -> None:
    try:
        import torchvision
    except ImportError:  # torchvision is a dependency, but keep the small model usable without it
        return
    for name in torchvision.models.list_models(module=torchvision.models):
        if name not in MODELS:
            MODELS.register(name, _torchvision_builder(name))


_register_torchvision_models()


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module:
    try:
        return MODELS.get(cfg.name)(cfg, num_classes, in_channels)
    except TypeError as e:  # a constructor argument the model does not take, most often from model.kwargs
        raise ConfigError(f"model {cfg.name!r} with model.kwargs {cfg.kwargs}: {e}") from None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel) or type(model).__name__ == "DistributedDataParallel":
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
