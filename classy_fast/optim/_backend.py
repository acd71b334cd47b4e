"""Which implementation of the optimizer ops a step runs: the compiled kernels or the references.

The compiled ops (``torch.ops.classy_fast.*``, registered when ``classy_fast._C`` is imported;
see classy_fast.ops._extension, which this module reuses rather than loading anything itself)
and the functions of ``classy_fast.optim.reference`` take the same arguments, so a step picks
one namespace once and calls through it.

``impl``: "auto" uses the kernels when they are compiled for the params' device and dtype (fp32,
bf16, fp16) and otherwise the references, with the ops' one-time warning when the extension is
missing; "fused" requires the kernels; "reference" never uses them.
"""

from __future__ import annotations

import functools
from typing import Iterable

import torch

from classy_fast.ops import _extension
from classy_fast.optim import reference

IMPLS = ("auto", "fused", "reference")
OP_NAMES = (
    "multi_tensor_l2norm",
    "fused_sgd_",
    "fused_adamw_",
    "fused_lars_",
    "fused_lamb_moments_",
    "fused_lamb_apply_",
    "ema_update_",
)
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


@functools.lru_cache(maxsize=None)
def _registered(dispatch_key: str) -> bool:
    return all(_extension.has_kernel(op, dispatch_key) for op in OP_NAMES)


def kernels_compiled_for(device: torch.device) -> bool:
    """Whether every optimizer op has a compiled kernel for ``device``'s type."""
    device = torch.device(device)
    key = _DISPATCH_KEYS.get(device.type)
    if key is None or not _extension.EXTENSION_AVAILABLE:
        return False
    if device.type == "cuda" and not _extension.CUDA_KERNELS_AVAILABLE:
        return False
    return _registered(key)


def _unavailable_reason(device: torch.device) -> str:
    if not _extension.EXTENSION_AVAILABLE:
        return f"the compiled extension classy_fast._C is not available ({_extension.IMPORT_ERROR or 'not importable'})"
    if device.type == "cuda" and not _extension.CUDA_KERNELS_AVAILABLE:
        return "classy_fast._C was built without CUDA kernels"
    return f"classy_fast._C has no optimizer kernels for device type '{device.type}'"


def check_impl(impl: str, device: torch.device, owner: str) -> None:
    """Raises early (at construction) when impl='fused' cannot be honoured."""
    if impl not in IMPLS:
        raise ValueError(f"{owner}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "fused" and not kernels_compiled_for(device):
        raise RuntimeError(f"{owner}(impl='fused'): {_unavailable_reason(torch.device(device))}; {_extension.BUILD_HINT}")


def select(impl: str, device: torch.device, dtypes: Iterable[torch.dtype], owner: str):
    """The namespace whose functions run this step: ``torch.ops.classy_fast`` or ``reference``."""
    if impl == "reference":
        return reference
    device = torch.device(device)
    dtypes = set(dtypes)
    if not kernels_compiled_for(device):
        if impl == "fused":
            raise RuntimeError(f"{owner}(impl='fused'): {_unavailable_reason(device)}; {_extension.BUILD_HINT}")
        key = "extension" if not _extension.EXTENSION_AVAILABLE else f"optim-{device.type}"
        _extension._warn_once(
            key,
            f"{_unavailable_reason(device)}; classy_fast.optim and classy_fast.ops use their plain-PyTorch "
            f"reference implementations (slower). To get the fused kernels, {_extension.BUILD_HINT}.",
        )
        return reference
    unsupported = sorted(str(d) for d in dtypes if d not in KERNEL_DTYPES)
    if unsupported:
        if impl == "fused":
            raise RuntimeError(f"{owner}(impl='fused'): the kernels take float32/bfloat16/float16, got {unsupported}")
        _extension._warn_once(
            "optim-dtype",
            f"{owner}: the fused optimizer kernels take float32/bfloat16/float16 tensors; {unsupported} use the "
            "plain-PyTorch reference step.",
        )
        return reference
    return torch.ops.classy_fast
