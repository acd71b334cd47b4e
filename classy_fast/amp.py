"""Mixed precision: which autocast dtype to use, and the GradScaler that fp16 needs."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, device: torch.device) -> str:
    """'auto' → bf16 on CUDA, none on CPU; fp16 on CPU is refused (CPU autocast has no fp16 scaler path)."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp 'fp16' needs a CUDA device; use 'bf16' or 'none' on CPU")
    return amp


class Precision:
    """The autocast context and (for fp16) a GradScaler, built once per run."""

    def __init__(self, amp: str, device: torch.device):
        self.mode = resolve_amp(amp, device)
        self.device = device
        self.dtype: Optional[torch.dtype] = _DTYPES.get(self.mode)
        self.scaler: Optional[torch.amp.GradScaler] = (
            torch.amp.GradScaler(device.type) if self.mode == "fp16" else None
        )

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
