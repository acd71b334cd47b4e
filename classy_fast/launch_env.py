"""Where this process sits in a multi-process job: read from torchrun's or SLURM's environment.

Two launchers are understood, torchrun first:

* torchrun (and anything else that follows its convention) sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
* ``srun`` sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and ``SLURM_NODELIST``;
  the rendezvous host is the first node of the list (``scontrol show hostnames`` when it is
  installed, else our own parser of the compressed ``node[01-04,07]`` syntax) and the port is
  ``MASTER_PORT`` if set, else derived from the job id so concurrent jobs on one node differ.
  Only a job *step* counts (``SLURM_STEP_ID`` set): a bare ``python`` in an ``sbatch`` script has
  ``SLURM_NTASKS`` of the allocation but is one process, and must not wait for peers that never come.

Anything else is a single process. Nothing here touches torch.distributed: ``classy_fast.distributed``
turns a ``LaunchEnv`` into a process group.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Mapping, Optional

DEFAULT_MASTER_PORT = 29500
SLURM_PORT_BASE, SLURM_PORT_SPAN = 20000, 20000


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str
    """'torchrun', 'env' (RANK/WORLD_SIZE/MASTER_* set by hand or another launcher), 'slurm' or 'single'."""

    @property
    def store_host(self) -> str:
        """Who serves the TCPStore at MASTER_ADDR:MASTER_PORT: torchrun's agent, or rank 0 (env:// init)."""
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
            return "the torchrun agent"
        return "rank 0"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def export(self, environ: Optional[dict] = None) -> None:
        """Write the torchrun-style variables that ``init_process_group(init_method='env://')`` reads."""
        env = os.environ if environ is None else environ
        env.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(self.local_rank),
                   MASTER_ADDR=self.master_addr, MASTER_PORT=str(self.master_port))


SINGLE_PROCESS = LaunchEnv(0, 1, 0, "127.0.0.1", DEFAULT_MASTER_PORT, "single")


def _int(environ: Mapping[str, str], key: str, default: Optional[int] = None) -> int:
    raw = environ.get(key)
    if raw is None or raw == "":
        if default is None:
            raise ValueError(f"environment variable {key} is required by this launcher but not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {key}={raw!r} is not an integer") from None


def _check(rank: int, world_size: int, local_rank: int, source: str) -> None:
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"{source}: inconsistent rank {rank} / world size {world_size} / local rank {local_rank}")


# ----------------------------------------------------------------------------- SLURM node lists


def _split_top_level(text: str) -> List[str]:
    """Split on commas that are not inside [...] ('a[1-2],b' → ['a[1-2]', 'b'])."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_range(spec: str) -> List[str]:
    """'01-03,7' → ['01', '02', '03', '7'] (zero padding kept, as SLURM does)."""
    out = []
    for item in spec.split(","):
        if "-" in item:
            lo, hi = item.split("-", 1)
            out.extend(str(v).zfill(len(lo)) for v in range(int(lo), int(hi) + 1))
        else:
            out.append(item)
    return out


def expand_slurm_nodelist(nodelist: str) -> List[str]:
    """Expand SLURM's compressed host list: 'gpu[01-02,05],cpu-a[3-4]x' → ['gpu01', 'gpu02', 'gpu05', 'cpu-a3x', 'cpu-a4x']."""
    hosts: List[str] = []
    for group in _split_top_level(nodelist.strip()):
        m = re.match(r"^([^\[]*)\[([^\]]+)\](.*)$", group)
        if not m:
            hosts.append(group)
            continue
        prefix, spec, rest = m.groups()
        # The remainder may hold another bracket ('a[1-2]b[3-4]'): expand it recursively.
        suffixes = expand_slurm_nodelist(rest) if "[" in rest else [rest]
        hosts.extend(prefix + n + s for n in _expand_range(spec) for s in suffixes)
    return hosts


def first_slurm_host(nodelist: str) -> str:
    """The first host of ``nodelist``: ``scontrol show hostnames`` when available (it knows every syntax), else our parser."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass  # fall back to parsing below
    hosts = expand_slurm_nodelist(nodelist)
    if not hosts:
        raise ValueError(f"SLURM_NODELIST={nodelist!r} names no host")
    return hosts[0]


# ----------------------------------------------------------------------------- detection


def detect_launch_env(environ: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    """This process's place in the job, from torchrun's variables, else SLURM's (inside an srun step), else single."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        world, rank = _int(env, "WORLD_SIZE"), _int(env, "RANK")
        local = _int(env, "LOCAL_RANK", rank if world == 1 else None)
        _check(rank, world, local, "torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK)")
        if world == 1:
            return SINGLE_PROCESS
        if "MASTER_ADDR" not in env:
            raise ValueError("WORLD_SIZE > 1 but MASTER_ADDR is not set: launch with torchrun, or set MASTER_ADDR/MASTER_PORT")
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env"
        return LaunchEnv(rank, world, local, env["MASTER_ADDR"], _int(env, "MASTER_PORT", DEFAULT_MASTER_PORT), launcher)
    in_srun_step = "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env)
    if in_srun_step:
        world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        if world == 1:
            return SINGLE_PROCESS
        rank, local = _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID", 0)
        _check(rank, world, local, "SLURM environment (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if env.get("MASTER_ADDR"):
            addr = env["MASTER_ADDR"]
        elif nodelist:
            addr = first_slurm_host(nodelist)
        else:
            raise ValueError("SLURM step with several tasks but no SLURM_NODELIST: set MASTER_ADDR")
        default_port = SLURM_PORT_BASE + _int(env, "SLURM_JOB_ID", 0) % SLURM_PORT_SPAN
        return LaunchEnv(rank, world, local, addr, _int(env, "MASTER_PORT", default_port), "slurm")
    return SINGLE_PROCESS
