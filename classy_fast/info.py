"""Environment and build report: ``python -m classy_fast.info``.

Prints what a bug report needs: torch and CUDA versions, the GPU, whether the compiled
extension loaded, which kernels it holds (CPU ISA, CUDA archs), and whether DALI is present.
``collect()`` returns the same as a dict.
"""

from __future__ import annotations

import platform
import sys
from typing import Any, Dict


def _dali_version() -> Any:
    try:
        import nvidia.dali as dali  # noqa: F401
    except Exception:  # not installed, or a broken install: either way not usable
        return None
    return getattr(dali, "__version__", "unknown")


def collect() -> Dict[str, Any]:
    import torch

    from classy_fast.ops import _extension

    cuda_ok = torch.cuda.is_available()
    build = _extension.build_info()
    return {
        "python": f"{platform.python_version()} ({sys.executable})",
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda_ok,
        "cuda_device": torch.cuda.get_device_name(0) if cuda_ok else None,
        "cuda_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda_ok else None,
        "cuda_device_count": torch.cuda.device_count() if cuda_ok else 0,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "extension": build["extension"],
        "extension_path": build["extension_path"],
        "extension_import_error": build["import_error"],
        "extension_built_against_torch": build["build_torch_version"],
        "extension_compiler": build["build_compiler"],
        "cpu_kernels_isa": build["cpu_kernel_isa"],
        "optim_cpu_kernels_isa": build["optim_cpu_kernel_isa"],
        "cuda_kernels_compiled": build["cuda_kernels"],
        "cuda_kernel_archs": build["cuda_archs"],
        "cuda_kernels_registered": _extension.has_kernel("cross_entropy_fwd", "CUDA"),
        "dali": _dali_version(),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "-"
    return str(value)


def main() -> int:
    info = collect()
    rows = [
        ("Python", info["python"]),
        ("torch", info["torch"]),
        ("torch built with CUDA", info["torch_cuda_build"]),
        ("CUDA available", info["cuda_available"]),
        ("CUDA device", info["cuda_device"]),
        ("CUDA capability", info["cuda_capability"]),
        ("CUDA device count", info["cuda_device_count"]),
        ("ATen CPU capability", info["cpu_capability"]),
        ("extension classy_fast._C", info["extension"]),
        ("  path", info["extension_path"]),
        ("  import error", info["extension_import_error"]),
        ("  built against torch", info["extension_built_against_torch"]),
        ("  compiler", info["extension_compiler"]),
        ("  CPU kernels ISA", f"loss {info['cpu_kernels_isa']}, optimizers {info['optim_cpu_kernels_isa']}"
         if info["cpu_kernels_isa"] else None),
        ("  CUDA kernels compiled", info["cuda_kernels_compiled"]),
        ("  CUDA kernel archs", info["cuda_kernel_archs"]),
        ("  CUDA kernels registered", info["cuda_kernels_registered"]),
        ("DALI", info["dali"]),
    ]
    width = max(len(name) for name, _ in rows)
    print("classy_fast environment")
    for name, value in rows:
        print(f"  {name:<{width}}  {_fmt(value)}")
    if not info["extension"]:
        from classy_fast.ops import BUILD_HINT

        print(f"\nThe fused ops fall back to PyTorch references; to {BUILD_HINT}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
