"""Device-time figures for the op benchmarks: a step captured as a CUDA graph (its replay times
the kernels without the host path: Python, dispatch, launches) and the card's HBM peak for
"% of peak".

Peaks are matched on ``torch.cuda.get_device_name()`` in order, most specific first: "NVIDIA H100
PCIe" (HBM2e) and "NVIDIA H100 NVL" have other peaks than the SXM card ("NVIDIA H100 80GB HBM3").
An unlisted card gets no "% of peak" rather than a wrong one.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

import torch

# (substring of the device name, GB/s), first match wins.
PEAK_GBPS = (
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100 80GB HBM3", 3350.0),  # SXM5
    ("H200", 4800.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100-PCIE-40GB", 1555.0),
)


def peak_gbps_for(name: str) -> Optional[float]:
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def peak_gbps(device: str) -> Optional[float]:
    """The current CUDA card's peak, or None (CPU, or a card not in the table)."""
    if device != "cuda" or not torch.cuda.is_available():
        return None
    return peak_gbps_for(torch.cuda.get_device_name(0))


def capture(fn: Callable[[], object]) -> Optional[torch.cuda.CUDAGraph]:
    """``fn`` captured as a CUDA graph (after warm-up runs on a side stream, as torch's graph docs
    require), or None with the reason printed when it cannot be captured."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph
    except Exception as exc:  # noqa: BLE001 - report and go on: one implementation's limitation
        print(f"  (capture failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]})", file=sys.stderr)
        return None
