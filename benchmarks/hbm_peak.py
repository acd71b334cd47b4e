"""Vendor HBM peak bandwidth of the cards the GPU check runs on, for the benchmarks' "% of peak".

Matched on ``torch.cuda.get_device_name()`` in order, most specific first: "NVIDIA H100 PCIe"
(HBM2e) and "NVIDIA H100 NVL" have other peaks than the SXM card ("NVIDIA H100 80GB HBM3").
An unlisted card gets no "% of peak" rather than a wrong one.
"""

from __future__ import annotations

from typing import Optional

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
