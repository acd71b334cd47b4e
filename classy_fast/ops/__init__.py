"""Fused ops of classy_fast (C++/CUDA kernels behind the torch dispatcher) and their references.

    from classy_fast.ops import cross_entropy, mixup_cross_entropy
    loss = cross_entropy(logits, target, label_smoothing=0.1)

Each fused op has a plain-PyTorch reference next to it (classy_fast.ops.reference) and an
``impl`` argument: "auto" (fused when built), "fused" (error if not built), "reference".
``extension_info()`` says what was built; ``python -m classy_fast.info`` prints it.
"""

from classy_fast.ops._extension import BUILD_HINT, build_info as extension_info, has_kernel
from classy_fast.ops.cross_entropy import cross_entropy, mixup_cross_entropy
from classy_fast.ops.crop_resize import crop_resize_normalize, crop_resize_normalize_reference
from classy_fast.ops.ema import ema_update_, ema_update_reference
from classy_fast.ops.reference import cross_entropy_reference, mixup_cross_entropy_reference


def extension_available() -> bool:
    """Whether classy_fast._C was imported (its ops are registered under torch.ops.classy_fast)."""
    from classy_fast.ops import _extension

    return _extension.EXTENSION_AVAILABLE


def cuda_kernels_available() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    from classy_fast.ops import _extension

    return _extension.CUDA_KERNELS_AVAILABLE


__all__ = [
    "BUILD_HINT",
    "cross_entropy",
    "cross_entropy_reference",
    "cuda_kernels_available",
    "extension_available",
    "extension_info",
    "has_kernel",
    "mixup_cross_entropy",
    "mixup_cross_entropy_reference",
]
