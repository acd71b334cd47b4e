"""Loading the compiled extension (``classy_fast._C``) and choosing fused vs reference ops.

Importing ``classy_fast._C`` runs the library's static initialisers, which register every op
under ``torch.ops.classy_fast``. When it is missing (not built, or built against another
torch), the ops fall back to their plain-PyTorch references with one warning per process;
asking for a fused op explicitly (``impl="fused"``) is an error that says how to build it.

Tests monkeypatch ``EXTENSION_AVAILABLE`` / ``CUDA_KERNELS_AVAILABLE`` to exercise both paths.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

BUILD_HINT = (
    "build it from the repository root with `pip install --no-build-isolation --no-deps -e .` "
    "(for the CUDA kernels nvcc and a CUDA build of torch are needed; on a builder without a GPU "
    "also set TORCH_CUDA_ARCH_LIST, e.g. TORCH_CUDA_ARCH_LIST='8.0;9.0')"
)

IMPLS = ("auto", "fused", "reference")

_C = None
IMPORT_ERROR: Optional[str] = None
try:
    from classy_fast import _C  # noqa: F401  (registers torch.ops.classy_fast.*)
except (ImportError, OSError) as exc:  # OSError: undefined symbols from a stale build
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

EXTENSION_AVAILABLE: bool = _C is not None
CUDA_KERNELS_AVAILABLE: bool = bool(_C is not None and getattr(_C, "cuda_compiled", 0))

_warned: set = set()


def _warn_once(key: str, message: str) -> None:
    # Skipped while torch.compile traces: warnings and set mutation would break the graph;
    # the eager first call (or `python -m classy_fast.info`) reports the same thing.
    if key in _warned or torch.compiler.is_compiling():
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def use_fused(impl: str, logits: torch.Tensor, op_name: str) -> bool:
    """Whether ``op_name`` should run its fused kernel for ``logits`` (else the reference).

    impl="reference" never fuses; impl="fused" fuses or raises RuntimeError; impl="auto" fuses
    when a kernel for the tensor's device was built and otherwise warns once and falls back.
    """
    if impl not in IMPLS:
        raise ValueError(f"classy_fast.ops.{op_name}: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "reference":
        return False
    device = logits.device.type
    if not EXTENSION_AVAILABLE:
        reason = IMPORT_ERROR or "classy_fast._C is not importable"
        if impl == "fused":
            raise RuntimeError(
                f"classy_fast.ops.{op_name}(impl='fused'): the compiled extension classy_fast._C is not "
                f"available ({reason}); {BUILD_HINT}"
            )
        _warn_once(
            "extension",
            f"classy_fast._C is not available ({reason}); classy_fast.ops use their plain-PyTorch "
            f"reference implementations (slower). To get the fused kernels, {BUILD_HINT}.",
        )
        return False
    if device == "cuda" and not CUDA_KERNELS_AVAILABLE:
        if impl == "fused":
            raise RuntimeError(
                f"classy_fast.ops.{op_name}(impl='fused'): the extension was built without CUDA kernels, "
                f"but the input is on {logits.device}; rebuild with CLASSY_FAST_CUDA=1: {BUILD_HINT}"
            )
        _warn_once(
            "cuda",
            "classy_fast._C was built without CUDA kernels; CUDA inputs use the reference "
            f"implementations. To compile them, {BUILD_HINT}.",
        )
        return False
    if device not in ("cpu", "cuda", "meta"):
        if impl == "fused":
            raise RuntimeError(f"classy_fast.ops.{op_name}(impl='fused'): no fused kernel for device {device}")
        return False
    return True


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``classy_fast::<op>`` has a kernel registered for ``dispatch_key`` (CPU, CUDA)."""
    if not EXTENSION_AVAILABLE:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"classy_fast::{op}", dispatch_key))
    except RuntimeError:  # op not registered at all
        return False


def build_info() -> dict:
    """What was built: for `python -m classy_fast.info` and bug reports."""
    archs = getattr(_C, "cuda_archs_raw", "") if _C is not None else ""
    return {
        "extension": EXTENSION_AVAILABLE,
        "extension_path": getattr(_C, "__file__", None),
        "import_error": IMPORT_ERROR,
        "cuda_kernels": CUDA_KERNELS_AVAILABLE,
        # setup.py joins the archs with '_' (one preprocessor token), e.g. "8.0_9.0".
        "cuda_archs": [a for a in archs.split("_") if a],
        "build_torch_version": getattr(_C, "build_torch_version", None),
        "build_compiler": getattr(_C, "build_compiler", None),
        "cpu_kernel_isa": _cpu_kernel_isa(),
        "optim_cpu_kernel_isa": _optim_cpu_kernel_isa(),
    }


def _cpu_kernel_isa() -> Optional[str]:
    # Mirrors the choice in csrc/cross_entropy.cpp: AVX2 rows on AVX2/AVX512 CPUs.
    if not EXTENSION_AVAILABLE:
        return None
    cap = torch.backends.cpu.get_cpu_capability()
    return "avx2" if cap in ("AVX2", "AVX512") else "default"


def _optim_cpu_kernel_isa() -> Optional[str]:
    # Mirrors csrc/optim_cpu_default.cpp: the optimizer loops also have an AVX-512 build.
    if not EXTENSION_AVAILABLE:
        return None
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(torch.backends.cpu.get_cpu_capability(), "default")
