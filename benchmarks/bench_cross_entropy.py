"""Fused cross-entropy vs F.cross_entropy(label_smoothing=0.1), forward + backward.

Hardware: 2-core AMD EPYC VM (AVX-512; the fused CPU rows use AVX2), torch 2.14.1, shared with
other jobs while measured. Time: about 10 s for the default CPU cases.
Result (CPU, fp32, fwd+bwd, 1 thread, best of 3 runs per side; `--device cpu --threads 1`):
fused vs torch B=8 C=10 (the host floor) 0.018 vs 0.051 ms (2.8x); B=256 C=1000 0.19 vs 0.26 ms
(1.4x); B=4096 C=1000 2.8 vs 5.2 ms (1.9x); B=256 C=21843 3.7 vs 7.4 ms (2.0x). With 2 threads on
a loaded VM torch's many small parallel regions stall, so ratios there say little.
H100 figures below predate the loss ops (one dispatcher call, C++ autograd; the host floor was
0.045 ms before them on this CPU):
H100 80GB (2026-11-26, torch 2.11): 1.2-1.4x at C=1000 (host-bound), 3.1-4.2x at B=4096, C>=21843,
up to 2.9 TB/s (fp32, C=128000); full table in benchmarks/RESULTS.md.

Two ways to run:
    pytest benchmarks/bench_cross_entropy.py -s              # pytest-benchmark, CPU (+ CUDA if present)
    python benchmarks/bench_cross_entropy.py --device cuda   # a plain table, for the GPU check

Each case times fused (classy_fast.ops.cross_entropy, impl="fused") and torch on the same
logits, prints the speedup, and on CUDA the fused op's achieved bandwidth, counting the bytes
it must move: the logits read twice (forward, backward) and the gradient written once. On CUDA
both sides are also timed as a replayed CUDA graph of fwd+bwd ("f.graph", "t.graph", "g.GB/s"):
the device time without the host path. The KEY line's bandwidth (the >= 80%-of-HBM target at
C >= 21843) uses the graphed time; its speedup (the >= 2x target at C = 1000) the eager one.
The large CPU cases (4096 x 21843, 256/4096 x 128000) run only with CLASSY_FAST_BENCH_LARGE=1 /
--large: they take minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from classy_fast.ops import cross_entropy, cuda_kernels_available, extension_available
from device_time import capture, peak_gbps

BATCHES = (256, 4096)
CLASSES = (1000, 21843, 128000)
# Logits so small that both sides time only their host path (Python, dispatch, autograd,
# launches): the floor that decides C = 1000 on a GPU, measurable on any machine.
HOST_FLOOR_CASE = (8, 10)
LABEL_SMOOTHING = 0.1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_cases(large: bool):
    """(B, C) pairs cheap enough for 2 CPU cores unless `large`."""
    return [HOST_FLOOR_CASE] + [(b, c) for b in BATCHES for c in CLASSES if large or b * c <= 256 * 21843]


def cuda_cases():
    return [HOST_FLOOR_CASE] + [(b, c) for b in BATCHES for c in CLASSES]


@dataclass
class Result:
    device: str
    dtype: str
    batch: int
    classes: int
    fused_ms: float
    torch_ms: float
    torch_fp32_ms: Optional[float]  # F.cross_entropy(x.float()): what autocast runs for bf16/fp16
    speedup: float
    fused_gbps: Optional[float]
    # CUDA only: fwd+bwd replayed as a CUDA graph, the device time without the host path.
    fused_graph_ms: Optional[float] = None
    torch_graph_ms: Optional[float] = None
    graph_gbps: Optional[float] = None

    def row(self) -> str:
        def col(v: Optional[float], width: int, fmt: str) -> str:
            return f"{v:{width}{fmt}}" if v is not None else f"{'-':>{width}}"

        return (
            f"{self.device:>6} {self.dtype:>5} {self.batch:>6} {self.classes:>7} {self.fused_ms:9.3f} "
            f"{self.torch_ms:9.3f} {col(self.torch_fp32_ms, 9, '.3f')} {self.speedup:8.2f}x "
            f"{col(self.fused_gbps, 8, '.0f')} {col(self.fused_graph_ms, 9, '.3f')} "
            f"{col(self.torch_graph_ms, 9, '.3f')} {col(self.graph_gbps, 8, '.0f')}"
        )


HEADER = (
    f"{'device':>6} {'dtype':>5} {'B':>6} {'C':>7} {'fused ms':>9} {'torch ms':>9} {'t.fp32 ms':>9} "
    f"{'speedup':>9} {'GB/s':>8} {'f.graph':>9} {'t.graph':>9} {'g.GB/s':>8}"
)


def make_steps(batch: int, classes: int, dtype: torch.dtype, device: str):
    g = torch.Generator(device="cpu").manual_seed(batch + classes)
    x = (torch.randn(batch, classes, generator=g) * 2).to(device=device, dtype=dtype).requires_grad_()
    t = torch.randint(0, classes, (batch,), generator=g).to(device)

    def fused():
        x.grad = None
        cross_entropy(x, t, label_smoothing=LABEL_SMOOTHING, impl="fused").backward()

    def plain():
        x.grad = None
        F.cross_entropy(x, t, label_smoothing=LABEL_SMOOTHING).backward()

    def plain_fp32():
        x.grad = None
        F.cross_entropy(x.float(), t, label_smoothing=LABEL_SMOOTHING).backward()

    return fused, plain, plain_fp32


def time_ms(fn: Callable[[], None], device: str, batch_time_s: float = 0.08, batches: int = 5) -> float:
    """Best mean ms per call over `batches` batches of calls (CUDA events on GPU, wall time on
    CPU). The best batch, not the mean, so a shared machine's noise doesn't decide a ratio."""
    fn()  # warm-up (allocator, lazy init)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    once = max(time.perf_counter() - t0, 1e-6)
    iters = int(max(2, min(100, batch_time_s / once)))
    best = float("inf")
    for _ in range(batches):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end) / iters
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            ms = (time.perf_counter() - t0) * 1e3 / iters
        best = min(best, ms)
    return best


def run_case(batch: int, classes: int, dtype_name: str, device: str) -> Result:
    dtype = DTYPES[dtype_name]
    fused, plain, plain_fp32 = make_steps(batch, classes, dtype, device)
    fused_ms = time_ms(fused, device)
    torch_ms = time_ms(plain, device)
    fp32_ms = time_ms(plain_fp32, device) if dtype != torch.float32 else None
    moved = 3 * batch * classes * torch.finfo(dtype).bits // 8  # logits read twice + grad written once
    result = Result(device, dtype_name, batch, classes, fused_ms, torch_ms, fp32_ms, torch_ms / fused_ms,
                    moved / (fused_ms * 1e-3) / 1e9 if device == "cuda" else None)
    if device == "cuda":
        result.fused_graph_ms = graphed_ms(fused)
        result.torch_graph_ms = graphed_ms(plain)
        if result.fused_graph_ms:
            result.graph_gbps = moved / (result.fused_graph_ms * 1e-3) / 1e9
    return result


def graphed_ms(fn: Callable[[], None]) -> Optional[float]:
    graph = capture(fn)
    return time_ms(graph.replay, "cuda") if graph is not None else None


# ---- pytest-benchmark entry points ----

try:
    import pytest
except ImportError:  # script mode without pytest installed
    pytest = None

if pytest is not None:
    _large = os.environ.get("CLASSY_FAST_BENCH_LARGE") == "1"
    _params = [("cpu", "fp32", b, c) for b, c in cpu_cases(_large)]
    _params += [
        pytest.param("cuda", dt, b, c, marks=[pytest.mark.cuda])
        for dt in ("bf16", "fp32")
        for b, c in cuda_cases()
    ]

    @pytest.mark.parametrize("device,dtype_name,batch,classes", _params)
    def test_bench_fused_cross_entropy(benchmark, device, dtype_name, batch, classes):
        if not extension_available():
            pytest.skip("classy_fast._C is not built")
        if device == "cuda" and not (torch.cuda.is_available() and cuda_kernels_available()):
            pytest.skip("needs a CUDA device and the CUDA kernels")
        result = run_case(batch, classes, dtype_name, device)
        fused, _, _ = make_steps(batch, classes, DTYPES[dtype_name], device)

        def fused_synced():
            fused()
            if device == "cuda":
                torch.cuda.synchronize()

        benchmark.group = f"{device} {dtype_name} B={batch} C={classes}"
        benchmark.extra_info.update(asdict(result))
        benchmark.pedantic(fused_synced, rounds=5, iterations=1, warmup_rounds=1)
        print(f"\n{HEADER}\n{result.row()}")
        assert result.fused_ms > 0 and result.torch_ms > 0


# ---- script mode ----


def summarize(results: List[Result], peak: Optional[float] = None) -> str:
    """One line for the GPU check's summary table, per dtype: the speedup at C = 1000 (the
    launch-bound target, >= 2x) and the bandwidth at C >= 21843 (the >= 80%-of-HBM target), as a
    percentage of ``peak`` GB/s when the card's peak is known."""
    parts = []
    for dtype_name in dict.fromkeys(r.dtype for r in results):
        rs = [r for r in results if r.dtype == dtype_name]
        small = [r.speedup for r in rs if r.classes == 1000]
        part = f"{dtype_name} C=1000 {min(small):.2f}-{max(small):.2f}x" if small else dtype_name
        # Bandwidth is a device figure: the graphed time where there is one, else the eager time.
        big = [r.graph_gbps or r.fused_gbps for r in rs if r.classes >= 21843 and (r.graph_gbps or r.fused_gbps)]
        if big:
            part += f", C>=21843 {min(big):.0f}-{max(big):.0f} GB/s"
            if peak:
                part += f" = {100 * min(big) / peak:.0f}-{100 * max(big) / peak:.0f}% of peak"
        parts.append(part)
    return "fused vs torch: " + "; ".join(parts)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", action="append", choices=sorted(DTYPES), help="repeatable; default bf16+fp32 on CUDA, fp32 on CPU")
    ap.add_argument("--large", action="store_true", help="include the CPU cases that take minutes")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not extension_available():
        print("classy_fast._C is not built: pip install --no-build-isolation --no-deps -e .", file=sys.stderr)
        return 2
    if args.device == "cuda" and not (torch.cuda.is_available() and cuda_kernels_available()):
        print("no CUDA device, or the extension has no CUDA kernels", file=sys.stderr)
        return 2
    dtypes = args.dtype or (["bf16", "fp32"] if args.device == "cuda" else ["fp32"])
    cases = cuda_cases() if args.device == "cuda" else cpu_cases(args.large)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"fused cross-entropy vs F.cross_entropy(label_smoothing={LABEL_SMOOTHING}), fwd+bwd, on {name}")
    print(HEADER)
    results = []
    for dtype_name in dtypes:
        for batch, classes in cases:
            r = run_case(batch, classes, dtype_name, args.device)
            results.append(r)
            print(r.row(), flush=True)
    peak = peak_gbps(args.device)
    if peak:
        print(f"HBM peak of this card: {peak:.0f} GB/s (benchmarks/device_time.py)")
    print("KEY: " + summarize(results, peak))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "results": [asdict(r) for r in results]}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
