"""The extension as a build artefact: the CMake library, what gets reported, and the paths
taken when kernels are missing (one fallback warning; impl="fused" errors saying how to build).

The CMake test uses the library at $CLASSY_FAST_CMAKE_LIB when set, else configures and
builds one (CPU only, -j2, ~20 s) in a temporary directory. Anything that loads a second copy
of the ops runs in a subprocess: a namespace has one TORCH_LIBRARY block per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import classy_fast.ops as cf_ops
from classy_fast.ops import _extension as ext

ROOT = Path(__file__).resolve().parents[2]
needs_extension = pytest.mark.skipif(not ext.EXTENSION_AVAILABLE, reason="classy_fast._C is not built")


def _run_python(code: str, env_extra=None, timeout=180) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env
    )


def _tail(proc: subprocess.CompletedProcess, n=3000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


# ---- CMake build ----


@pytest.fixture(scope="module")
def cmake_library(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("CLASSY_FAST_CMAKE_LIB")
    if prebuilt:
        assert Path(prebuilt).is_file(), f"CLASSY_FAST_CMAKE_LIB={prebuilt} does not exist"
        return Path(prebuilt)
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed and CLASSY_FAST_CMAKE_LIB is not set")
    build = tmp_path_factory.mktemp("cmake_build")
    configure = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
         "-DCLASSY_FAST_CUDA=OFF"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert configure.returncode == 0, f"cmake configure failed:\n{_tail(configure)}"
    compiled = subprocess.run(
        ["cmake", "--build", str(build), "-j2"], capture_output=True, text=True, timeout=900
    )
    assert compiled.returncode == 0, f"cmake build failed:\n{_tail(compiled)}"
    lib = build / "libclassy_fast_ops.so"
    assert lib.is_file(), f"no {lib.name} in {sorted(p.name for p in build.iterdir())}"
    return lib


def test_cmake_library_loads_and_runs_the_ops(cmake_library):
    proc = _run_python(
        f"""
        import ctypes
        import torch, torch.nn.functional as F
        lib = {str(cmake_library)!r}
        torch.ops.load_library(lib)
        # a plain library: no Python module entry point
        assert not hasattr(ctypes.CDLL(lib), "PyInit__C")
        ops = torch.ops.classy_fast
        x = torch.randn(9, 1025, dtype=torch.bfloat16)
        t = torch.randint(0, 1025, (9,)); t[0] = -100
        loss, lse = ops.cross_entropy_fwd(x, t, 0.1, -100, False)
        ref = F.cross_entropy(x.float(), t, label_smoothing=0.1, reduction="none")
        torch.testing.assert_close(loss, ref, rtol=2e-5, atol=2e-5)
        grad = ops.cross_entropy_bwd(torch.ones(9), x, t, lse, 0.1, -100)
        xr = x.float().requires_grad_()
        F.cross_entropy(xr, t, label_smoothing=0.1, reduction="sum").backward()
        torch.testing.assert_close(grad.float(), xr.grad, rtol=1.6e-2, atol=1e-6)
        print("CMAKE_LIB_OK")
        """
    )
    assert proc.returncode == 0 and "CMAKE_LIB_OK" in proc.stdout, _tail(proc)


# ---- what was built ----


@needs_extension
def test_build_metadata_and_registered_kernels():
    info = cf_ops.extension_info()
    assert info["extension"] and info["import_error"] is None
    assert info["build_torch_version"] == str(torch.__version__)
    assert ext.has_kernel("cross_entropy_fwd", "CPU") and ext.has_kernel("soft_cross_entropy_bwd_", "CPU")
    assert ext.has_kernel("cross_entropy_fwd", "CUDA") == info["cuda_kernels"]
    if info["cuda_kernels"]:
        assert info["cuda_archs"], "a CUDA build must record its archs"
        assert all(a[0].isdigit() for a in info["cuda_archs"])
    assert not ext.has_kernel("no_such_op", "CPU")


def test_info_cli_reports_the_environment():
    proc = _run_python("from classy_fast.info import main; raise SystemExit(main())", timeout=120)
    assert proc.returncode == 0, _tail(proc)
    out = proc.stdout
    for label in ("torch", "CUDA available", "extension classy_fast._C", "CUDA kernels compiled", "DALI", "Python"):
        assert label in out, f"missing {label!r} in:\n{out}"
    assert ("extension classy_fast._C   yes" in out) == ext.EXTENSION_AVAILABLE


@needs_extension
def test_baseline_isa_rows_match_torch():
    # ATEN_CPU_CAPABILITY=default makes the op pick the non-AVX2 row kernels.
    proc = _run_python(
        """
        import torch, torch.nn.functional as F
        from classy_fast.ops import cross_entropy, mixup_cross_entropy, extension_info
        assert extension_info()["cpu_kernel_isa"] == "default", extension_info()
        torch.manual_seed(0)
        t = torch.randint(0, 1025, (7,)); t[2] = -100
        ta, tb = t.clamp(min=0), t.flip(0).clamp(min=0)
        soft = torch.softmax(torch.randn(7, 1025), 1)
        # Each loss separately: its gradient is one rounding to the logits' dtype on each side
        # (a sum of several low-precision gradients would add roundings the tolerance isn't for).
        cases = [
            (lambda x: cross_entropy(x, t, label_smoothing=0.1), lambda x: F.cross_entropy(x, t, label_smoothing=0.1)),
            (lambda x: cross_entropy(x, soft, label_smoothing=0.1),
             lambda x: F.cross_entropy(x, soft, label_smoothing=0.1)),
            (lambda x: mixup_cross_entropy(x, ta, tb, 0.3),
             lambda x: 0.3 * F.cross_entropy(x, ta) + 0.7 * F.cross_entropy(x, tb)),
        ]
        for dtype, rtol in ((torch.float32, 1e-4), (torch.bfloat16, 1.6e-2), (torch.float16, 2e-3)):
            x0 = (torch.randn(7, 1025) * 3).to(dtype)
            for fused, plain in cases:
                x = x0.clone().requires_grad_()  # x0 itself never requires grad
                xr = x0.float().clone().requires_grad_()
                loss, ref = fused(x), plain(xr)
                loss.backward(); ref.backward()
                torch.testing.assert_close(loss, ref, rtol=2e-5, atol=2e-5)
                torch.testing.assert_close(x.grad.float(), xr.grad.to(dtype).float(), rtol=rtol, atol=1e-6)
        print("DEFAULT_ISA_OK")
        """,
        env_extra={"ATEN_CPU_CAPABILITY": "default"},
    )
    assert proc.returncode == 0 and "DEFAULT_ISA_OK" in proc.stdout, _tail(proc)


# ---- missing kernels: fallback and errors ----


@pytest.fixture
def extension_missing(monkeypatch):
    monkeypatch.setattr(ext, "EXTENSION_AVAILABLE", False)
    monkeypatch.setattr(ext, "CUDA_KERNELS_AVAILABLE", False)
    monkeypatch.setattr(ext, "IMPORT_ERROR", "ImportError: simulated for the test")
    monkeypatch.setattr(ext, "_warned", set())


def _fallback_warnings(records):
    return [r for r in records if "classy_fast._C is not available" in str(r.message)]


def test_missing_extension_falls_back_with_one_warning(extension_missing):
    x = torch.randn(6, 9, requires_grad=True)
    t = torch.randint(0, 9, (6,))
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        first = cf_ops.cross_entropy(x, t, label_smoothing=0.1)
        second = cf_ops.cross_entropy(x, t, label_smoothing=0.1, reduction="none")
        mixed = cf_ops.mixup_cross_entropy(x, t, t.flip(0), 0.25)
    assert len(_fallback_warnings(records)) == 1, [str(r.message) for r in records]
    assert "pip install --no-build-isolation --no-deps -e ." in str(_fallback_warnings(records)[0].message)
    torch.testing.assert_close(first, F.cross_entropy(x, t, label_smoothing=0.1))
    torch.testing.assert_close(second, F.cross_entropy(x, t, label_smoothing=0.1, reduction="none"))
    torch.testing.assert_close(mixed, 0.25 * F.cross_entropy(x, t) + 0.75 * F.cross_entropy(x, t.flip(0)))
    mixed.backward()  # the reference is differentiable too
    assert x.grad is not None


def test_reference_impl_never_warns(extension_missing):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        cf_ops.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), impl="reference")
    assert not _fallback_warnings(records)


def test_fused_request_without_extension_says_how_to_build(extension_missing):
    x, t = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError) as err:
        cf_ops.cross_entropy(x, t, impl="fused")
    message = str(err.value)
    assert "impl='fused'" in message and "simulated for the test" in message
    assert "pip install --no-build-isolation --no-deps -e ." in message
    assert "TORCH_CUDA_ARCH_LIST" in message
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation --no-deps -e ."):
        cf_ops.mixup_cross_entropy(x, t, t, 0.5, impl="fused")


@needs_extension
def test_cuda_input_without_cuda_kernels(monkeypatch):
    # A stand-in for a CUDA tensor: the choice only looks at the device.
    monkeypatch.setattr(ext, "CUDA_KERNELS_AVAILABLE", False)
    monkeypatch.setattr(ext, "_warned", set())
    fake_cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.warns(RuntimeWarning, match="built without CUDA kernels"):
        assert ext.use_fused("auto", fake_cuda, "cross_entropy") is False
    with pytest.raises(RuntimeError, match="built without CUDA kernels.*CLASSY_FAST_CUDA=1"):
        ext.use_fused("fused", fake_cuda, "cross_entropy")
    assert ext.use_fused("auto", torch.zeros(1), "cross_entropy") is True  # CPU still fused


# ---- setup.py: the CPU/CUDA build decision (the functions only; nothing is built) ----


@pytest.fixture
def want_cuda(monkeypatch):
    """setup.py's ``_want_cuda``, loaded without running ``setup()`` (which would build)."""
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text())
    wanted = {"_log", "_nvcc", "_want_cuda"}
    funcs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in wanted]
    assert {f.name for f in funcs} == wanted
    namespace = {"__name__": "setup_under_test"}
    exec(compile("from __future__ import annotations\nimport os, sys\n", "setup.py", "exec"), namespace)
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(ROOT / "setup.py"), "exec"), namespace)
    monkeypatch.delenv("CLASSY_FAST_CUDA", raising=False)
    return namespace["_want_cuda"]


def _fake_torch(cuda_version="13.0"):
    return types.SimpleNamespace(version=types.SimpleNamespace(cuda=cuda_version), __version__="2.x")


def _toolkit(root: Path, with_nvcc: bool) -> Path:
    (root / "bin").mkdir(parents=True)
    if with_nvcc:
        nvcc = root / "bin" / "nvcc"
        nvcc.write_text("#!/bin/sh\n")
        nvcc.chmod(0o755)
    return root


def test_setup_builds_cuda_only_where_cuda_home_holds_nvcc(want_cuda, tmp_path, capsys):
    with_nvcc = str(_toolkit(tmp_path / "cuda", with_nvcc=True))
    without_nvcc = str(_toolkit(tmp_path / "empty", with_nvcc=False))
    assert want_cuda(_fake_torch(), with_nvcc) is True
    assert want_cuda(_fake_torch(None), with_nvcc) is False  # a CPU build of torch
    assert want_cuda(_fake_torch(), None) is False
    # A CUDA_HOME that is set but holds no nvcc (or does not exist): CPU-only, saying why.
    assert want_cuda(_fake_torch(), without_nvcc) is False
    assert "has no bin/nvcc" in capsys.readouterr().err
    assert want_cuda(_fake_torch(), str(tmp_path / "missing")) is False


def test_setup_cuda_env_forcing(want_cuda, tmp_path, monkeypatch):
    with_nvcc = str(_toolkit(tmp_path / "cuda", with_nvcc=True))
    without_nvcc = str(_toolkit(tmp_path / "empty", with_nvcc=False))
    monkeypatch.setenv("CLASSY_FAST_CUDA", "0")
    assert want_cuda(_fake_torch(), with_nvcc) is False
    monkeypatch.setenv("CLASSY_FAST_CUDA", "1")
    assert want_cuda(_fake_torch(), with_nvcc) is True
    with pytest.raises(SystemExit, match=r"CLASSY_FAST_CUDA=1 .*has no executable bin/nvcc"):
        want_cuda(_fake_torch(), without_nvcc)
    with pytest.raises(SystemExit, match=r"CLASSY_FAST_CUDA=1 .*CUDA_HOME is unset"):
        want_cuda(_fake_torch(), None)
    with pytest.raises(SystemExit, match=r"CLASSY_FAST_CUDA=1 .*not a CUDA build"):
        want_cuda(_fake_torch(None), with_nvcc)
    monkeypatch.setenv("CLASSY_FAST_CUDA", "yes")
    with pytest.raises(SystemExit, match="must be 0 or 1"):
        want_cuda(_fake_torch(), with_nvcc)


def test_setup_still_builds_cuda_with_this_machines_toolkit(want_cuda):
    """Where torch finds a toolkit holding nvcc (e.g. /usr/local/cuda), the CUDA kernels are built."""
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None or CUDA_HOME is None or not os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc")):
        pytest.skip("no CUDA build of torch with a toolkit holding nvcc here")
    assert want_cuda(torch, CUDA_HOME) is True
