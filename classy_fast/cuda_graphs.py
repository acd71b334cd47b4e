"""Whole-step CUDA graphs: capture ``task.device_train_step`` once, then replay it every step.

The recipe (PyTorch docs, "CUDA Graphs"): run a few eager steps on a side stream (lazy
initialisation: cuBLAS/cuDNN handles, optimizer state, autotuning; ≥ 11 under DDP so its
reducer settles), drop the grads, capture forward + loss + backward + optimizer step + meter
updates into one graph, then per step copy the batch into the static input buffers and replay.

What keeps a replay correct: the lr is a device tensor the scheduler fills *before* the replay
(outside the graph); meters and the NaN-locating step counter are device tensors updated in place;
the grads live in the graph's memory pool and are overwritten (not accumulated) by each replay;
shapes are static (the last partial train batch is dropped). Anything random inside the step must
come from a generator registered with the graph.

When a run cannot be captured (CPU, an fp16 GradScaler with an optimizer that would sync, dynamic
shapes) ``unsupported_reason`` says why and the task trains eagerly.

Eval is graphed separately (``GraphedEvalStep``): forward + loss + meter updates, one graph per
batch shape (the last test batch is usually smaller), captured the second time a shape comes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional, Tuple

import torch

from . import distributed
from .device import to_device

log = logging.getLogger("classy_fast")

WARMUP_STEPS = 3
DDP_WARMUP_STEPS = 11  # DDP's reducer must be past its first iterations before capture


def unsupported_reason(task) -> Optional[str]:
    """Why this task's train step cannot be captured, or None if it can."""
    if task.device.type != "cuda":
        return "CUDA graphs need a CUDA device (running on %s)" % task.device.type
    if task.precision.scaler is not None and not getattr(task.optimizer, "_step_supports_amp_scaling", False):
        return ("fp16 GradScaler with %s: its step reads found_inf on the host; use a fused optimizer "
                "(classy_fast.optim or torch fused=True) or bf16" % type(task.optimizer).__name__)
    if task.train_data is not None and not getattr(task.train_data, "drop_last", True):
        return "train batches must have static shapes: set data.drop_last=true"
    if task.accumulation.steps > 1:
        return "gradient accumulation alternates two different steps (accumulate / update)"
    return _own_graphs_reason(task)


def _own_graphs_reason(task) -> Optional[str]:
    if task.cfg.compile and task.cfg.compile_mode in ("reduce-overhead", "max-autotune"):
        return f"torch.compile mode '{task.cfg.compile_mode}' records CUDA graphs of its own"
    return None


def _static_copy(value: Any) -> Any:
    """A graph-owned copy of a batch element; Python numbers would be baked into the graph, so refuse them."""
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_static_copy(v) for v in value)
    raise TypeError(f"a captured train step needs tensor inputs, got {type(value).__name__} "
                    "(e.g. pass mixup's lam as a 0-dim device tensor)")


def _copy_into(static: Any, value: Any) -> None:
    if torch.is_tensor(static):
        if static.shape != value.shape or static.dtype != value.dtype:
            raise RuntimeError(f"CUDA graph replay needs static shapes: captured {tuple(static.shape)} "
                               f"{static.dtype}, got {tuple(value.shape)} {value.dtype}")
        static.copy_(value, non_blocking=True)
    else:
        for s, v in zip(static, value):
            _copy_into(s, v)


class GraphedTrainStep:
    """A drop-in for ``task.train_step`` that captures the device work after warm-up and replays it."""

    def __init__(self, task, warmup_steps: Optional[int] = None):
        self.task = task
        self.warmup_steps = warmup_steps if warmup_steps is not None else (
            DDP_WARMUP_STEPS if distributed.world_size() > 1 or _is_ddp(task.train_model) else WARMUP_STEPS)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_inputs: Any = None
        self.eager_steps = 0
        self.capture_seconds = 0.0  # one-time cost, reported apart from training time
        self.side_stream = torch.cuda.Stream(device=task.device)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, images: torch.Tensor, target: Any) -> None:
        task = self.task
        images = images.to(task.device, non_blocking=True)
        target = to_device(target, task.device)
        if self.graph is None and self.eager_steps < self.warmup_steps:
            self._eager_step_on_side_stream(images, target)
        else:
            if self.graph is None:
                self._capture(images, target)
            else:
                _copy_into(self.static_inputs, (images, target))
            self.graph.replay()
        task.after_update(images.shape[0])

    def _eager_step_on_side_stream(self, images: torch.Tensor, target: Any) -> None:
        current = torch.cuda.current_stream(self.task.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            self.task.device_train_step(images, target)
            self.task.optimizer.zero_grad(set_to_none=True)
        current.wait_stream(self.side_stream)
        self.eager_steps += 1

    def _capture(self, images: torch.Tensor, target: Any) -> None:
        """Record the step; capture executes nothing, so the caller's replay performs this step."""
        self.static_inputs = _static_copy((images, target))
        self.task.optimizer.zero_grad(set_to_none=True)  # grads are then allocated inside the graph's pool
        torch.cuda.synchronize(self.task.device)
        t0 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.task.device_train_step(*self.static_inputs)
        self.graph = graph
        self.capture_seconds = time.perf_counter() - t0
        log.info("captured the train step as a CUDA graph after %d eager warm-up steps", self.eager_steps)


def _shape_key(value: Any) -> Tuple:
    if torch.is_tensor(value):
        return (tuple(value.shape), value.dtype)
    return tuple(_shape_key(v) for v in value)


class GraphedEvalStep:
    """A drop-in for ``task.eval_step``: one CUDA graph of ``task.device_eval_step`` per batch shape.

    A shape's first batch runs eagerly (cuDNN autotuning and lazy initialisation cannot happen
    during capture), its second is captured and every later one replays. The graphs read the
    model's parameters and BatchNorm buffers where they live, which training updates in place, so
    a graph captured in one eval phase stays valid in the next. All eval graphs share one memory
    pool: they never run at the same time and keep nothing in it between replays (the meters'
    accumulators live outside).
    """

    def __init__(self, task):
        self.task = task
        self.graphs: Dict[Tuple, Tuple[torch.cuda.CUDAGraph, Any]] = {}
        self.eager_shapes: set = set()
        self.pool = None
        self.capture_seconds = 0.0  # one-time cost, reported apart from training time
        self.side_stream = torch.cuda.Stream(device=task.device)

    def __call__(self, images: torch.Tensor, target: Any) -> None:
        task = self.task
        images = images.to(task.device, non_blocking=True)
        target = to_device(target, task.device)
        key = _shape_key((images, target))
        entry = self.graphs.get(key)
        if entry is not None:
            graph, static_inputs = entry
            _copy_into(static_inputs, (images, target))
            graph.replay()
        elif key not in self.eager_shapes:
            self._eager_on_side_stream(images, target)
            self.eager_shapes.add(key)
        else:
            self._capture(key, images, target).replay()
        task.throughput.update(images.shape[0])

    def _eager_on_side_stream(self, images: torch.Tensor, target: Any) -> None:
        current = torch.cuda.current_stream(self.task.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            self.task.device_eval_step(images, target)
        current.wait_stream(self.side_stream)

    def _capture(self, key: Tuple, images: torch.Tensor, target: Any) -> torch.cuda.CUDAGraph:
        """Record the eval step for this shape; the caller's replay performs this batch."""
        static_inputs = _static_copy((images, target))
        torch.cuda.synchronize(self.task.device)
        t0 = time.perf_counter()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.task.device_eval_step(*static_inputs)
        self.graphs[key] = (graph, static_inputs)
        self.capture_seconds += time.perf_counter() - t0
        log.info("captured the eval step for batch shape %s as a CUDA graph", tuple(images.shape))
        return graph


def build_eval_step(task):
    """The callable the task uses for eval steps: graphed with --cuda-graphs on a CUDA device, else eager."""
    if not task.cfg.cuda_graphs or task.device.type != "cuda" or _own_graphs_reason(task) is not None:
        return task.eval_step  # build_train_step has logged why, where it applies
    return GraphedEvalStep(task)


def _is_ddp(model: torch.nn.Module) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def build_train_step(task):
    """The callable the task uses for train steps: graphed when asked and possible, else eager (with the reason logged)."""
    if not task.cfg.cuda_graphs:
        return task.train_step
    reason = unsupported_reason(task)
    if reason is not None:
        log.warning("--cuda-graphs: %s; training eagerly", reason)
        return task.train_step
    return GraphedTrainStep(task)
