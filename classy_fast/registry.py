"""Name → constructor registries, so configs pick components by name and users add their own.

    from classy_fast.registry import MODELS

    @MODELS.register("my_net")
    def build_my_net(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module: ...

Each registry documents the call signature its entries must follow.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional


class Registry:
    """A named table of builders of one kind (models, losses, ...)."""

    def __init__(self, kind: str, signature: str):
        self.kind = kind
        self.signature = signature
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str, obj: Optional[Callable[..., Any]] = None, *, override: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and not override and self._entries[name] is not fn:
                raise ValueError(f"{self.kind} '{name}' is already registered; pass override=True to replace it")
            self._entries[name] = fn
            return fn

        return add if obj is None else add(obj)

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list:
        return sorted(self._entries)


MODELS = Registry("model", "fn(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module")
LOSSES = Registry("loss", "fn(cfg: LossConfig) -> nn.Module called as loss(logits, target)")
OPTIMIZERS = Registry(
    "optimizer", "fn(param_groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer"
)
SCHEDULERS = Registry("scheduler", "fn(cfg: SchedulerConfig) -> ParamScheduler (classy_fast.schedulers)")
DATASETS = Registry(
    "dataset",
    "fn(cfg: DataConfig, split: 'train'|'test', *, device: torch.device, seed: int, channels_last: bool)"
    " -> batch source (see classy_fast.data.memory.InMemoryImageData)",
)
METERS = Registry("meter", "fn(cfg: MeterConfig, num_classes: int, device: torch.device) -> Meter")
HOOKS = Registry("hook", "fn(options: dict, cfg: TrainConfig) -> ClassyHook (hooks.extra: [{name, options}])")
