"""Device choice and placement of batches (tensors or nested tuples such as mixup targets)."""

from __future__ import annotations

import os
from typing import Any

import torch

from . import distributed
from .config import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available; under torch.distributed, CUDA means this process's LOCAL_RANK device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        # The user's setting, not a crash: the CLI prints a ConfigError as one line and exits 2.
        raise ConfigError("device 'cuda' requested but torch.cuda.is_available() is False (set device: cpu or auto)")
    if name == "cuda" and distributed.is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def to_device(value: Any, device: torch.device) -> Any:
    """Move a tensor, or each tensor of a tuple/list, to ``device`` without blocking the host."""
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value.to(device, non_blocking=True) if torch.is_tensor(value) else value
