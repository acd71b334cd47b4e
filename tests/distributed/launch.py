"""Helpers for the multi-process tests: free ports, a tiny config, and N ranks started as subprocesses.

Each rank is ``python tests/distributed/rank_driver.py <args>`` with torchrun's environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) set by hand: the same code path
as under torchrun, without the agent process (``test_torchrun.py`` covers torchrun itself).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(HERE, "rank_driver.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


def tiny_config(output_dir, **top) -> dict:
    """A BN-free convnet on 96 synthetic 12×12 images (6 steps of 16 per epoch), 41 test images (an odd count)."""
    d = {
        "epochs": 2, "device": "cpu", "amp": "none", "seed": 3, "output_dir": str(output_dir), "num_threads": 1,
        "model": {"name": "convnet_no_norm", "width": 4},
        "data": {"name": "synthetic", "synthetic_train_size": 96, "synthetic_test_size": 41, "image_size": 12,
                 "num_classes": 6, "channels": 1, "batch_size": 16, "test_batch_size": 8, "augment": False},
        "optimizer": {"lr": 0.05, "fused": "torch"},
        "scheduler": {"warmup_epochs": 0.5},
        "hooks": {"progress_bar": False, "log_interval": 2, "model_complexity": False},
        "distributed": {"timeout_seconds": 30},
    }
    for key, value in top.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) and isinstance(d.get(key), dict) else value
    return d


def write_config(path, cfg: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


@dataclass
class RankResult:
    rank: int
    returncode: Optional[int]
    output: str  # stdout and stderr interleaved
    seconds: float  # from launch to this rank's exit
    ended_at: float  # time.time() at its exit (compare with times the ranks print)


def run_ranks(world_size: int, args: List[str], timeout: float = 90) -> List[RankResult]:
    """Start ``world_size`` ranks of the driver with ``args`` and wait for all (killing any left at ``timeout``)."""
    port = free_port()
    env = base_env()
    procs, logs = [], []
    start = time.monotonic()
    for rank in range(world_size):
        rank_env = dict(env, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                        LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        out = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty rank must never block on a full pipe
        logs.append(out)
        procs.append(subprocess.Popen([sys.executable, DRIVER, *args], env=rank_env, cwd=ROOT,
                                      stdout=out, stderr=subprocess.STDOUT, text=True))
    results: List[Optional[RankResult]] = [None] * world_size
    while any(r is None for r in results):
        for rank, p in enumerate(procs):
            if results[rank] is None and p.poll() is not None:
                results[rank] = RankResult(rank, p.returncode, "", time.monotonic() - start, time.time())
        if time.monotonic() - start > timeout:
            for rank, p in enumerate(procs):
                if results[rank] is None:
                    p.kill()
                    p.wait()
                    results[rank] = RankResult(rank, None, "", time.monotonic() - start, time.time())
            break
        time.sleep(0.05)
    for rank, log in enumerate(logs):
        log.seek(0)
        results[rank].output = log.read()
        log.close()
    return results


def read_metrics(output_dir) -> List[dict]:
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
