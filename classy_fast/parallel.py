"""Data-parallel training for the task: SyncBatchNorm, the DDP wrapper, ZeRO, and their checkpoint state.

``ParallelTraining`` is everything the task does differently under torch.distributed, and nothing
on one process (every method then returns its input or a null context):

* ``convert_batchnorm`` turns BatchNorm layers into synchronized ones (``distributed.sync_batchnorm``);
* ``wrap`` returns the module the train step calls: ``DistributedDataParallel`` over the task's
  model with ``gradient_as_bucket_view`` (gradients live in the all-reduce buckets: no copy),
  ``static_graph``, ``bucket_cap_mb``, buffer broadcasting only in ``'forward'`` mode, and a
  bf16/fp16 compression hook when asked. ``task.model`` stays the plain module: evaluation,
  checkpoints (state-dict keys without ``module.``), FLOP counting and EMA use it directly;
* ``no_sync(is_update_step)`` skips the all-reduce on gradient-accumulation micro-steps;
* ``before_eval`` broadcasts rank 0's buffers (BN running statistics) so every rank evaluates the
  same model (skipped with ``broadcast_buffers: off``);
* ``build_optimizer`` wraps the configured optimizer in torch's ``ZeroRedundancyOptimizer`` when
  ``zero_optimizer`` is on: each rank keeps and updates the state of its share of the parameters;
  ``optimizer_state_dict`` gathers the full state on rank 0 for the checkpoint (a collective);
* ``state_dict`` / ``load_state_dict``: the world size and global batch of the run, and every
  rank's RNG state (they differ: each rank reseeds after model construction), so a resumed run
  continues identically on the same world size. On another world size M: ranks below the old world
  size restore theirs, the others reseed from (seed, rank, update); the global batch must be the same
  (``data.batch_size`` × M) for the data order and lr schedule to continue (refused mid-epoch,
  warned at an epoch boundary, where the update count is recomputed for the new steps per epoch); so is
  another number of updates per epoch (simulated_global_batch_size or the training set changed).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, ContextManager, Dict, List, Optional

import torch
from torch import nn

from . import distributed
from .checkpoint import rng_state, set_rng_state
from .config import DistributedConfig, OptimizerConfig
from .data.memory import _mix_seed
from .optimizers import build_optimizer
from .registry import OPTIMIZERS
from .sync_batchnorm import convert_sync_batchnorm

log = logging.getLogger("classy_fast")

_DDP_PARAMETERS = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters


def reseed_global_generators(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ParallelTraining:
    def __init__(self, cfg: DistributedConfig, device: torch.device, seed: int):
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.active = distributed.is_distributed()  # a process group exists (world size 1 with single_process_ddp)
        self.ddp: Optional[nn.parallel.DistributedDataParallel] = None

    # ------------------------------------------------------------------ model
    def convert_batchnorm(self, model: nn.Module) -> nn.Module:
        if self.active and self.cfg.sync_batchnorm:
            return convert_sync_batchnorm(model, self.device)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the train step calls: DDP over ``model`` (which it broadcasts from rank 0), or ``model``."""
        if not self.active:
            return model
        cfg = self.cfg
        on_cuda = self.device.type == "cuda"
        sync_each_forward = cfg.broadcast_buffers == "forward"
        # torch ≥ 2.13 renamed broadcast_buffers to forward_sync_buffers (buffers are still synced at init).
        buffers_kw = ({"forward_sync_buffers": sync_each_forward} if "forward_sync_buffers" in _DDP_PARAMETERS
                      else {"broadcast_buffers": sync_each_forward})
        ddp = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[self.device.index] if on_cuda else None,
            output_device=self.device.index if on_cuda else None,
            bucket_cap_mb=cfg.bucket_cap_mb,
            find_unused_parameters=cfg.find_unused_parameters,
            gradient_as_bucket_view=True,
            static_graph=cfg.static_graph,
            **buffers_kw,
        )
        if cfg.grad_compression != "none":
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            hook = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}
            ddp.register_comm_hook(state=None, hook=hook[cfg.grad_compression])
        self.ddp = ddp
        # Model initialization used the shared seed (identical weights everywhere); from here on,
        # dropout and other random ops should differ per rank. Rank 0 keeps the single-process stream.
        if self.rank > 0:
            reseed_global_generators(_mix_seed(self.seed, self.rank))
        if self.rank == 0:
            log.info("DDP over %d ranks: static_graph=%s, bucket %.0f MiB, broadcast_buffers=%s, compression=%s, "
                     "sync_batchnorm=%s, zero_optimizer=%s", self.world_size, cfg.static_graph, cfg.bucket_cap_mb,
                     cfg.broadcast_buffers, cfg.grad_compression, cfg.sync_batchnorm, cfg.zero_optimizer)
        return ddp

    def no_sync(self, is_update_step: bool) -> ContextManager:
        """Within it, backward accumulates local gradients without all-reducing them (non-update micro-steps)."""
        if self.ddp is None or is_update_step:
            return contextlib.nullcontext()
        return self.ddp.no_sync()

    def before_eval(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BN running stats drift apart when not broadcast each forward)."""
        if not self.active or self.cfg.broadcast_buffers == "off":
            return
        by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
        for b in model.buffers():
            by_dtype.setdefault(b.dtype, []).append(b)
        for buffers in by_dtype.values():  # one broadcast per dtype instead of one per buffer
            flat = torch.cat([b.reshape(-1) for b in buffers])
            distributed.broadcast_tensors([flat])
            offset = 0
            for b in buffers:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()

    # ------------------------------------------------------------------ optimizer
    def build_optimizer(self, model: nn.Module, cfg: OptimizerConfig, groups: Optional[List[Dict]] = None):
        """The configured optimizer; under ZeRO, one whose state each rank keeps only for its share."""
        if not (self.active and self.cfg.zero_optimizer):
            return build_optimizer(model, cfg, groups)
        from torch.distributed.optim import ZeroRedundancyOptimizer

        # Build the full optimizer once to get our param groups (device lr tensors, no-decay split),
        # then let ZeRO construct the real one per rank over its partition of those groups.
        full = build_optimizer(model, cfg, groups)
        param_groups = [dict(g) for g in full.param_groups]
        del full

        def local_optimizer(params, **_unused):
            # This rank's share of those groups (lr tensors included; a group may be empty here).
            return OPTIMIZERS.get(cfg.name)(list(params), cfg)

        zero = ZeroRedundancyOptimizer(param_groups, optimizer_class=local_optimizer)
        if self.rank == 0:
            log.info("ZeroRedundancyOptimizer over %d ranks (%s on each rank's share)", self.world_size,
                     type(zero.optim).__name__)
        return zero

    def optimizer_state_dict(self, optimizer) -> Dict[str, Any]:
        """The full optimizer state for a checkpoint; under ZeRO gathered on rank 0 (all ranks must call this)."""
        if type(optimizer).__name__ == "ZeroRedundancyOptimizer":
            optimizer.consolidate_state_dict(to=0)
            return optimizer.state_dict() if self.rank == 0 else {}
        return optimizer.state_dict()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self, global_batch: int) -> Dict[str, Any]:
        """Checkpoint entry 'distributed': world size, global batch, every rank's RNG state (a gather on rank 0)."""
        rngs = distributed.gather_object(rng_state()) if self.active else [rng_state()]
        return {"world_size": self.world_size, "global_batch": global_batch, "rng_per_rank": rngs or []}

    def load_state_dict(self, state: Optional[Dict[str, Any]], task) -> None:
        """Check the resume is consistent with this world size and restore this rank's RNG state."""
        old_batch = state["global_batch"] if state else task.cfg.data.batch_size
        old_world = state["world_size"] if state else 1
        new_batch = task.cfg.data.batch_size * self.world_size
        if old_batch != new_batch and task.train_data is not None:
            hint = (f"the checkpoint was written by {old_world} process(es) with a global batch of {old_batch}; "
                    f"this run has {self.world_size} × {task.cfg.data.batch_size} = {new_batch}")
            if task.step_in_phase > 0:
                fix = (f"set data.batch_size to {old_batch // self.world_size} to keep the global batch"
                       if old_batch % self.world_size == 0 else f"use a world size that divides {old_batch}")
                raise ValueError(f"cannot resume mid-epoch with another global batch: {hint}; {fix}")
            log.warning("resuming with another global batch (%s): the data order and steps per epoch change; the "
                        "lr schedule continues from epoch %d", hint, task.train_phases_done)
            task.num_updates = task.train_phases_done * task.updates_per_epoch
        source = getattr(task.train_data, "source", task.train_data)  # under a Mixup wrapper
        if (task.step_in_phase > 0 and old_world != self.world_size and task.train_data is not None
                and not getattr(source, "batches_independent_of_world_size", True)):
            raise ValueError(
                f"cannot resume mid-epoch on {self.world_size} process(es) from a checkpoint of {old_world}: with "
                f"image files each rank reads its own contiguous share of the epoch, so the rest of the epoch "
                f"would repeat some files and skip others. Resume on {old_world} process(es), or from a phase-end "
                f"checkpoint (any world size).")
        # Updates per epoch also change with the accumulation steps (simulated_global_batch_size) or the
        # training set: the lr schedule counts updates, so the saved count must be this run's for the same point.
        # (A checkpoint inside a test phase, written on preemption, counts test steps in step_in_phase.)
        mid_train = task.step_in_phase if task.in_train_phase else 0
        expected = task.train_phases_done * task.updates_per_epoch + mid_train // task.accumulation.steps
        if task.train_data is not None and task.num_updates != expected:
            hint = (f"the checkpoint made {task.num_updates} optimizer updates by epoch {task.train_phases_done + 1}, "
                    f"step {mid_train}; this run ({task.updates_per_epoch} updates per epoch, "
                    f"{task.accumulation.steps} micro-steps each) makes {expected} by then")
            if mid_train > 0:
                raise ValueError(f"cannot resume mid-epoch with another number of updates per epoch: {hint}; "
                                 f"resume with the checkpoint's simulated_global_batch_size and training set, or "
                                 f"from a phase-end checkpoint")
            log.warning("resuming with another number of updates per epoch (%s): the lr schedule continues from "
                        "epoch %d", hint, task.train_phases_done)
            task.num_updates = expected
        rngs = state["rng_per_rank"] if state else []
        if self.rank < len(rngs):
            set_rng_state(rngs[self.rank])
        elif self.rank > 0:
            reseed_global_generators(_mix_seed(self.seed, self.rank, task.num_updates))
