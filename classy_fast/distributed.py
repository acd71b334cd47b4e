"""torch.distributed: process-group setup from the launcher's environment, and helpers that are
no-ops on a single process.

A plain ``python -m classy_fast.train`` run is world size 1 and never touches torch.distributed:
every helper below returns its input (or the obvious single-process answer). Under ``torchrun`` or
``srun`` (see ``classy_fast.launch_env``) ``init_distributed`` creates the process group: NCCL
when training on CUDA, gloo otherwise, each process on the GPU of its local rank, collectives that
give up after ``distributed.timeout_seconds``. A ``RankWatchdog`` thread (``classy_fast.rank_watchdog``)
then makes sure a rank that dies or hangs ends the whole job, with a message naming it.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import sys
from typing import Any, Callable, List, Optional

import torch
import torch.distributed as dist

from .config import ConfigError
from .launch_env import SINGLE_PROCESS, LaunchEnv, detect_launch_env

log = logging.getLogger("classy_fast")

#: Exit status of a rank that stops because the job failed (this rank's error or a peer's).
EXIT_DISTRIBUTED_FAILURE = 4

_launch_env: LaunchEnv = SINGLE_PROCESS
_watchdog = None  # the RankWatchdog of this process, once initialised


# ----------------------------------------------------------------------------- where am I


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its node (selects its GPU); 0 on one process."""
    if _launch_env.distributed:
        return _launch_env.local_rank
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_primary() -> bool:
    return rank() == 0


def backend() -> Optional[str]:
    return dist.get_backend() if is_distributed() else None


def collective_device() -> torch.device:
    """Where tensors for ad-hoc collectives must live: this rank's GPU under NCCL, else the CPU."""
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------- collectives


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op on one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world_size())
    return tensor


def all_reduce_host_sum(value: float) -> float:
    """Sum a host number over ranks (one tiny collective; for phase-end bookkeeping only)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled: for small values such as paths and flags)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(tensors: List[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor in place with rank ``src``'s copy."""
    if is_distributed():
        for t in tensors:
            dist.broadcast(t, src=src)


def gather(tensor: torch.Tensor) -> List[torch.Tensor]:
    """Every rank's ``tensor`` (same shape on all ranks), in rank order, on every rank."""
    if not is_distributed():
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor)
    return out


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_object(obj: Any, dst: int = 0) -> Optional[List[Any]]:
    """Every rank's ``obj`` in rank order on rank ``dst``; None on the others."""
    if not is_distributed():
        return [obj]
    out: Optional[List[Any]] = [None] * world_size() if rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


# ----------------------------------------------------------------------------- setup and teardown


def resolve_backend(requested: str, device: str) -> str:
    """'auto' → NCCL when this run trains on CUDA, gloo otherwise."""
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if requested == "auto":
        return "nccl" if on_cuda else "gloo"
    if requested == "nccl" and not on_cuda:
        raise ValueError("distributed.backend 'nccl' needs CUDA training (device cuda, or auto with a GPU); use gloo on CPU")
    return requested


def launch_env() -> LaunchEnv:
    return _launch_env


def init_distributed(cfg, device: str = "auto") -> LaunchEnv:
    """Join the job described by the environment (torchrun, else srun); a single process does nothing.

    ``cfg`` is the run's ``DistributedConfig``. Idempotent: a process group created earlier (by
    the caller or a previous call) is kept.
    """
    global _launch_env, _watchdog
    env = detect_launch_env()
    if is_distributed():
        _launch_env = env if env.distributed else _launch_env
        return env
    if not env.distributed:
        if not cfg.single_process_ddp:
            return env
        env = _single_process_group_env()
    if not cfg.timeout_seconds > 0:  # 0 is not 'no timeout': the rendezvous itself would give up at once
        raise ConfigError(f"distributed.timeout_seconds must be > 0 (seconds), got {cfg.timeout_seconds}")
    name = resolve_backend(cfg.backend, device)
    if env.launcher in ("slurm", "single"):
        env.export()  # env:// reads the torchrun-style variables
    elif env.launcher == "env":
        # RANK/WORLD_SIZE/MASTER_ADDR set by hand: MASTER_PORT may be left to its documented default, which
        # env:// only sees once it is in the environment (the user's own value is kept).
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
    device_id = None
    if name == "nccl":
        if torch.cuda.device_count() <= env.local_rank:
            raise ValueError(f"local rank {env.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                             f"start at most one process per GPU (--nproc_per_node / --ntasks-per-node)")
        torch.cuda.set_device(env.local_rank)
        device_id = torch.device("cuda", env.local_rank)
        # A failed or timed-out NCCL collective aborts the communicator and ends the process
        # instead of leaving it spinning on the GPU (the user's own setting wins).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    timeout = datetime.timedelta(seconds=cfg.timeout_seconds)
    kwargs = {"device_id": device_id} if device_id is not None else {}
    dist.init_process_group(name, init_method="env://", rank=env.rank, world_size=env.world_size,
                            timeout=timeout, **kwargs)
    _launch_env = env
    if cfg.watchdog:
        from .rank_watchdog import RankWatchdog

        _watchdog = RankWatchdog(env, timeout_s=cfg.timeout_seconds, exit_code=EXIT_DISTRIBUTED_FAILURE)
        _watchdog.start()
    if env.rank == 0:
        log.info("distributed: %d processes (%s launch), backend %s, timeout %ds", env.world_size, env.launcher,
                 name, cfg.timeout_seconds)
    else:
        log.setLevel(logging.WARNING)  # one console: the primary's (warnings and errors still show everywhere)
    return env


def _single_process_group_env() -> LaunchEnv:
    """World size 1 with a real process group (``single_process_ddp``): torchrun's rendezvous, else a free local port."""
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return LaunchEnv(0, 1, int(os.environ.get("LOCAL_RANK", 0)), os.environ["MASTER_ADDR"],
                         int(os.environ["MASTER_PORT"]), "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "env")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return LaunchEnv(0, 1, 0, "127.0.0.1", port, "single")


def set_progress_source(source: Optional[Callable[[], Any]]) -> None:
    """Tell the watchdog how far this rank has got (a callable returning something comparable, e.g. (phase, step))."""
    if _watchdog is not None:
        _watchdog.progress_source = source


_shut_down = False


def shutdown() -> None:
    """End a successful run: wait for every rank, stop the watchdog, destroy the process group."""
    global _watchdog, _shut_down
    if not is_distributed():
        return
    dist.barrier()
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None
    dist.destroy_process_group()
    _shut_down = True


def exit_process(code: int) -> None:
    """How a command-line entry point ends: after a process group has existed, without the
    interpreter's teardown (objects that still hold the group's transport threads, e.g. the DDP
    wrapper, are then destroyed in no defined order at exit, and a joinable thread destroyed there
    aborts the process with "terminate called without an active exception" after a run that
    succeeded); otherwise a normal exit."""
    if _shut_down:
        exit_now(code)
    sys.exit(code)


def fail(error: BaseException) -> str:
    """Record that this rank failed (peers' watchdogs see it) and return a message naming the rank(s) at fault.

    Called on the error path of ``classy_fast.train`` before the process exits with ``exit_now``.
    """
    me = rank() if is_distributed() else _launch_env.rank
    summary = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}"
    if _watchdog is None:
        return f"rank {me}: {summary}"
    return _watchdog.report_failure(error, summary)


def exit_now(code: int) -> None:
    """Leave without running destructors: a process group whose peer died can abort() in its teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
