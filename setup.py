"""Builds the ``classy_fast._C`` extension (fused ops registered with the torch dispatcher).

Package metadata lives in pyproject.toml; this file only describes the extension, because
its sources, flags and CPU/CUDA choice depend on the torch found at build time.

Install (never in an isolated build: that pulls a different torch and the ABI won't match):

    pip install --no-build-isolation --no-deps -e .

Environment:
    CLASSY_FAST_CUDA=0|1    force a CPU-only or a CUDA build (default: CUDA when torch is a
                            CUDA build and $CUDA_HOME/bin/nvcc exists; torch takes CUDA_HOME
                            from the environment, else from the nvcc on PATH)
    TORCH_CUDA_ARCH_LIST    archs to compile for; defaults to "8.0;9.0" when no GPU is visible
                            (torch would otherwise produce an empty list on a GPU-less builder)
    MAX_JOBS                parallel compile jobs (ninja)
"""

from __future__ import annotations

import glob
import os
import re
import sys

from setuptools import find_namespace_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _log(msg: str) -> None:
    print(f"[classy_fast setup] {msg}", file=sys.stderr)


def _nvcc(cuda_home) -> str | None:
    """``$CUDA_HOME/bin/nvcc`` when it exists and is executable, else None. torch takes a set
    CUDA_HOME as is, so a CUDA_HOME without nvcc must not turn a CPU-only machine's build into
    a failing CUDA one."""
    if not cuda_home:
        return None
    for name in ("nvcc", "nvcc.exe"):
        path = os.path.join(cuda_home, "bin", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _want_cuda(torch_mod, cuda_home) -> bool:
    forced = os.environ.get("CLASSY_FAST_CUDA")
    if forced is not None and forced not in ("0", "1"):
        raise SystemExit(f"CLASSY_FAST_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False
    nvcc = _nvcc(cuda_home)
    possible = torch_mod.version.cuda is not None and nvcc is not None
    if forced == "1":
        if not possible:
            if torch_mod.version.cuda is None:
                why = f"torch {getattr(torch_mod, '__version__', '?')} is not a CUDA build (torch.version.cuda is None)"
            elif cuda_home is None:
                why = "no CUDA toolkit was found (CUDA_HOME is unset and nvcc is not on PATH)"
            else:
                why = f"CUDA_HOME={cuda_home!r} has no executable bin/nvcc"
            raise SystemExit(
                f"CLASSY_FAST_CUDA=1 but a CUDA build is impossible: {why} "
                "(install a CUDA build of torch and set CUDA_HOME to the toolkit holding bin/nvcc)"
            )
        return True
    if torch_mod.version.cuda is not None and cuda_home is not None and nvcc is None:
        _log(f"CUDA_HOME={cuda_home!r} has no bin/nvcc: building CPU-only")
    return possible


def _nvidia_wheel_include_dirs() -> list[str]:
    """Headers shipped by the nvidia-* pip wheels (cusparse.h, cublas_v2.h, ...).

    CUDA 13 wheels put them all in nvidia/cu13/include; CUDA 12 wheels use one folder per
    library (nvidia/cusparse/include, ...). ATen/cuda/CUDAContext.h needs them when the
    toolkit under CUDA_HOME is a minimal one (nvcc + runtime only).
    """
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: list[str] = []
    for base in spec.submodule_search_locations:
        unified = os.path.join(base, "cu13", "include")
        if os.path.isdir(unified):
            dirs.append(unified)
            continue
        dirs.extend(sorted(d for d in glob.glob(os.path.join(base, "*", "include")) if os.path.isdir(d)))
    return dirs


def _extension_modules():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    with_cuda = _want_cuda(torch, CUDA_HOME)
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu"))) if with_cuda else []

    defines = [("CLASSY_FAST_BUILD_PYTHON_MODULE", None)]
    # -Wno-unknown-pragmas: ATen vec headers carry CUDA-style #pragma unroll. -fno-math-errno:
    # sqrt may then compile to one instruction; with errno it keeps a branch per element that
    # stops scalar loops from vectorizing. Nothing here reads errno. -fopenmp: at::parallel_for is
    # header code that splits work over threads only where _OPENMP is defined (torch's CPU build
    # uses OpenMP); without it every parallel_for of the extension runs on one thread. The
    # libgomp.so.1 it links resolves to the one torch has already loaded (same soname), so
    # torch.set_num_threads governs our loops too.
    cxx_flags = ["-O3", "-Wno-unknown-pragmas", "-fno-math-errno", "-fopenmp"]
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        if not archs:  # a GPU is visible: torch derives the list from it; record the same
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            archs = ";".join(f"{a}.{b}" for a, b in sorted(caps))
        # Macro values carry no quotes, ';' or ',' (ninja runs them through a shell, nvcc splits
        # -D values on commas): "8.0_9.0" is one preprocessor token the C++ side stringifies.
        arch_tokens = "_".join(a for a in re.split(r"[;\s,]+", archs) if a)
        defines += [("CLASSY_FAST_WITH_CUDA", "1"), ("CLASSY_FAST_CUDA_ARCHS", arch_tokens)]
        _log(f"CUDA build: archs {archs}, CUDA_HOME {CUDA_HOME}, {len(cuda_sources)} .cu file(s)")
    else:
        _log("CPU-only build (CLASSY_FAST_CUDA=1 forces CUDA; needs a CUDA torch and nvcc)")
    # The torch version the module was compiled against, reported by `python -m classy_fast.info`.
    defines.append(("CLASSY_FAST_BUILD_TORCH_VERSION", str(torch.__version__)))

    ext_cls = CUDAExtension if with_cuda else CppExtension
    kwargs = {"extra_compile_args": {"cxx": cxx_flags, "nvcc": nvcc_flags} if with_cuda else {"cxx": cxx_flags},
              "extra_link_args": ["-fopenmp"]}
    ext = ext_cls(
        name="classy_fast._C",
        sources=cpp_sources + cuda_sources,
        include_dirs=[os.path.join(ROOT, "csrc", "include")],
        define_macros=defines,
        **kwargs,
    )
    if with_cuda:
        # Appended after torch's and CUDA_HOME's include dirs so the toolkit's own runtime
        # headers win; the wheels only fill in the libraries the toolkit lacks.
        ext.include_dirs.extend(_nvidia_wheel_include_dirs())
    return [ext]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    # configs/ lives at the repository root (users edit it there) and ships inside the
    # package as classy_fast.configs, so importlib.resources finds it in any install.
    packages=find_namespace_packages(include=["classy_fast", "classy_fast.*"], exclude=["*.__pycache__"])
    + ["classy_fast.configs"],
    package_dir={"classy_fast.configs": "configs"},
    ext_modules=_extension_modules(),
    cmdclass=_cmdclass(),
)
