"""Shared machinery of the fused optimizers: device lr tensors, lazy state, the GradScaler
protocol, fused clipping, master weights and state_dict handling.

A subclass declares its per-param buffers (``_buffer_keys``) and implements ``_update`` with the
ops namespace chosen for the step (compiled kernels or the references, see ``_backend``).

Capturable by construction: every value a step reads that can change between steps lives on the
params' device (each group's ``lr`` tensor, per-param ``step`` counters, the GradScaler's scale and
found_inf) and is read inside the kernels, so a step never syncs with the host and replays
correctly inside a CUDA graph. Schedulers must write the lr in place: ``group["lr"].fill_(x)``.
"""

from __future__ import annotations

import itertools
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from classy_fast.optim import _backend

LOW_PRECISION = (torch.float16, torch.bfloat16)
_GRAD = operator.attrgetter("grad")


def _lr_tensor(lr: Any, device: Optional[torch.device], owner: str) -> Tensor:
    """The group's lr as a 0-dim float32 tensor on ``device`` (a given tensor is kept as is). ``device``
    None: a group without params (ZeroRedundancyOptimizer gives each rank every group, some empty),
    where a tensor lr may live anywhere and a float one goes to the CPU."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{owner}: a tensor lr must have one element, got shape {tuple(lr.shape)}")
        if (device is not None and lr.device != device) or lr.dtype != torch.float32:
            # A copy would silently stop seeing a scheduler's in-place updates of the original.
            raise ValueError(
                f"{owner}: a tensor lr must be float32 on the params' device {device}, got {lr.dtype} on "
                f"{lr.device}; pass a float or such a tensor"
            )
        return lr
    if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or lr < 0:
        raise ValueError(f"{owner}: invalid learning rate {lr!r}")
    return torch.tensor(float(lr), dtype=torch.float32, device=device if device is not None else "cpu")


def _scalar_on(t: Any, device: torch.device) -> Optional[Tensor]:
    if t is None:
        return None
    if not isinstance(t, Tensor):  # a Python number (step(grad_scale=2.0))
        return torch.tensor(float(t), dtype=torch.float32, device=device)
    if t.device == device and t.dtype == torch.float32:
        return t
    return t.to(device=device, dtype=torch.float32, non_blocking=True)


@dataclass
class ParamBatch:
    """Params of one group that have grads and share master-weight use: one op call.

    Built once per step plan; ``grads`` is refilled every step (autograd hands out new grad
    tensors when the grads were set to None)."""

    group: Dict[str, Any]
    params: List[Tensor] = field(default_factory=list)
    grads: List[Tensor] = field(default_factory=list)
    states: List[Dict[str, Any]] = field(default_factory=list)
    has_master: bool = False
    # Position of each param in the optimizer's flat param list (where its grad is found).
    flat_index: List[int] = field(default_factory=list)
    # Positions in this batch of the params with 2+ dims, whose grads may come in another memory
    # layout (channels_last); 0/1-dim dense tensors have one layout only. ``layout_strides``: those
    # params' strides when the plan was built (a param whose layout changed since fails the ops'
    # stride checks with a message, as its state buffers keep the old layout).
    layout_checked: List[int] = field(default_factory=list)
    layout_strides: List[Tuple[int, ...]] = field(default_factory=list)
    # The state keys every param of the batch must hold (step, buffers, master weights), and their
    # tensors per key as this step found them (``refresh``).
    keys: Tuple[str, ...] = ()
    lists: Dict[str, List[Tensor]] = field(default_factory=dict)

    def buffers(self, key: str) -> List[Tensor]:
        return self.lists.get(key, [])

    def refresh(self) -> bool:
        """Collect this step's state tensors; False when a param's state dict lost a buffer
        (``del state[p][k]``, ``state[p][k] = None``): the plan must be rebuilt. (A replaced state dict,
        ``state[p] = {}``, is caught by ``StepPlan.valid_for``.) C-level passes: this runs every step."""
        for key in self.keys:
            try:
                values = list(map(operator.itemgetter(key), self.states))
            except KeyError:
                return False
            if any(map(operator.is_, values, itertools.repeat(None))):
                return False
            self.lists[key] = values
        return True

    @property
    def steps(self) -> List[Tensor]:
        return self.buffers("step")

    @property
    def masters(self) -> List[Tensor]:
        """fp32 master weights, or [] (the ops' 'no master weights')."""
        return self.buffers("master_param") if self.has_master else []

    @property
    def weights(self) -> List[Tensor]:
        """What the update reads as w: the master weights when there are any."""
        return self.masters if self.has_master else self.params

    def take_grads(self, flat_grads: List[Tensor]) -> None:
        grads = list(map(flat_grads.__getitem__, self.flat_index))
        checked = list(map(grads.__getitem__, self.layout_checked))
        if list(map(Tensor.stride, checked)) != self.layout_strides:
            for j, grad, stride in zip(self.layout_checked, checked, self.layout_strides):
                if grad.stride() != stride:
                    # The kernels walk param, grad and state as flat arrays of one layout. Autograd may hand
                    # a channels_last param a contiguous grad (e.g. through an autocast cast): re-lay it out.
                    grads[j] = torch.empty_like(self.params[j], dtype=grad.dtype).copy_(grad)
        self.grads = grads


@dataclass
class StepPlan:
    """What a step does that only changes when a param gains or loses its grad, a group is added,
    replaced or changes what state it needs (momentum set from 0), or state is replaced or loses a
    buffer: the batches (with their state dicts) and the ops namespace. Building it walks every
    param in Python; reusing it makes a step's host cost a few C-level passes over lists, which is
    what lets the kernels, not Python, set the step time on a GPU. ``valid_for`` re-checks, by
    identity, everything a user may change between steps as torch.optim allows it."""

    params: List[Tensor]
    has_grad: List[bool]
    batches: List[ParamBatch]
    ops: Any
    impl: str
    state: Any
    groups: List[Tuple[int, Tuple[str, ...]]]  # (id of the group dict, the state keys it needs)
    # The state's keys and per-param dicts, in the state's order, when the plan was built: comparing
    # them by identity catches a replaced (``state[p] = {}``), removed or added state dict without
    # hashing a tensor (Tensor.__hash__ is a Python function: ~23 µs a step for ResNet-50's 161 params).
    state_keys: List[Any] = field(default_factory=list)
    state_values: List[Any] = field(default_factory=list)

    def snapshot_state(self) -> None:
        self.state_keys, self.state_values = list(self.state.keys()), list(self.state.values())

    def valid_for(self, opt: "FusedOptimizer", params: List[Tensor], has_grad: List[bool]) -> bool:
        """True when the plan fits this step; it then holds this step's state tensors."""
        state = opt.state
        return (self.has_grad == has_grad and self.impl == opt.impl and state is self.state
                and len(state) == len(self.state_values) and len(self.params) == len(params)
                and all(map(operator.is_, self.params, params))
                and all(map(operator.is_, state.values(), self.state_values))
                and all(map(operator.is_, state.keys(), self.state_keys))
                and self.groups == opt._group_signature()
                and all(b.refresh() for b in self.batches))


class FusedOptimizer(torch.optim.Optimizer):
    """Base class: see the module docstring. Not used directly."""

    # GradScaler.step hands such an optimizer its scale and found_inf tensors (as the attributes
    # `grad_scale` / `found_inf`) instead of unscaling the grads and syncing on found_inf.
    _step_supports_amp_scaling = True
    # The trainer should not clip: max_grad_norm is applied inside the step.
    fuses_grad_clipping = True
    _uses_step = True

    def __init__(self, params: Iterable, defaults: Dict[str, Any], *, max_grad_norm: Optional[float] = None,
                 master_weights: bool = False, impl: str = "auto"):
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"{type(self).__name__}: max_grad_norm must be positive or None, got {max_grad_norm}")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.master_weights = bool(master_weights)
        self.impl = impl
        # Global L2 norm of the unscaled grads before clipping, as a device tensor for logging
        # (None until a step computed it: with max_grad_norm set, and for LARS when a group is adapted).
        self.last_grad_norm: Optional[Tensor] = None
        self._plan: Optional[StepPlan] = None
        super().__init__(params, defaults)
        devices = {p.device for g in self.param_groups for p in g["params"]}
        if len(devices) > 1:
            raise ValueError(f"{type(self).__name__}: all params must be on one device, got {sorted(map(str, devices))}")
        _backend.check_impl(impl, next(iter(devices)) if devices else torch.device("cpu"), type(self).__name__)

    # ------------------------------------------------------------------ groups and state

    def _buffer_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        """Per-param state buffers shaped like the param, in the state dtype."""
        return ()

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        self._plan = None
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["lr"] = _lr_tensor(group["lr"], self._group_device(group), type(self).__name__)
        group.setdefault("exclude_from_adaptation", False)

    def _group_device(self, group: Dict[str, Any]) -> Optional[torch.device]:
        """The device of the group's params; of the optimizer's others for an empty group (None: no params)."""
        for g in (group, *self.param_groups):
            if g["params"]:
                return g["params"][0].device
        return None

    def _group_signature(self) -> List[Tuple[int, Tuple[str, ...]]]:
        return [(id(g), self._buffer_keys(g)) for g in self.param_groups]

    def _check_group_lrs(self) -> None:
        """A float written over a group's lr tensor (``group["lr"] = 0.01``, common in hand-written
        schedules) goes back into a device tensor: the kernels read the lr on the device."""
        for g in self.param_groups:
            if not isinstance(g["lr"], Tensor):
                g["lr"] = _lr_tensor(g["lr"], self._group_device(g), type(self).__name__)

    def _uses_master(self, p: Tensor) -> bool:
        return self.master_weights and p.dtype in LOW_PRECISION

    def _state_dtype(self, p: Tensor) -> torch.dtype:
        return torch.float32 if self._uses_master(p) else p.dtype

    def _init_state(self, p: Tensor, group: Dict[str, Any]) -> Dict[str, Any]:
        """The param's state, creating what is missing (first step, a partial state_dict, a buffer the
        user reset with ``state[k] = None`` / ``del state[k]``, or one a hyper-parameter change now needs)."""
        state = self.state[p]
        keys = self._buffer_keys(group)
        missing = [key for key in keys if state.get(key) is None]
        if missing:
            # A param missing a buffer starts afresh: all its buffers from zero (Adam's second moment
            # must not outlive a reset first moment: the restarted bias correction would shrink the
            # updates for thousands of steps) and its step count from 0, so SGD takes torch's first-step
            # rule (momentum buffer = gradient) and Adam's bias correction restarts with its moments.
            missing = list(keys)
        step = state.get("step")
        if self._uses_step and (step is None or missing):
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        elif self._uses_step and (step.device != p.device or step.dtype != torch.float32):
            # ZeroRedundancyOptimizer.load_state_dict moves 0-dim state (the step) to the CPU; the kernels
            # read it on the params' device (a one-off copy when the plan is rebuilt, not per step).
            state["step"] = step.to(device=p.device, dtype=torch.float32).reshape(())
        for key in missing:
            state[key] = torch.zeros_like(p, dtype=self._state_dtype(p), memory_format=torch.preserve_format)
        if self._uses_master(p) and state.get("master_param") is None:
            state["master_param"] = torch.empty_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            state["master_param"].copy_(p.detach())
        return state

    def _build_plan(self, params: List[Tensor], grads: List[Optional[Tensor]], has_grad: List[bool]) -> StepPlan:
        batches: List[ParamBatch] = []
        flat_at = 0
        for group in self.param_groups:
            by_master: Dict[bool, ParamBatch] = {}
            for p in group["params"]:
                i, flat_at = flat_at, flat_at + 1
                grad = grads[i]
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                master = self._uses_master(p)
                batch = by_master.get(master)
                if batch is None:
                    keys = (("step",) if self._uses_step else ()) + self._buffer_keys(group)
                    batch = by_master[master] = ParamBatch(
                        group, has_master=master, keys=keys + (("master_param",) if master else ()))
                if p.dim() >= 2:
                    batch.layout_checked.append(len(batch.params))
                    batch.layout_strides.append(p.stride())
                batch.params.append(p)
                batch.flat_index.append(i)
                batch.states.append(self._init_state(p, group))
            batches.extend(by_master[k] for k in sorted(by_master))
        ops = None
        if batches:
            device = batches[0].params[0].device
            dtypes = {p.dtype for b in batches for p in b.params}
            ops = _backend.select(self.impl, device, dtypes, type(self).__name__)
        plan = StepPlan(params, has_grad, batches, ops, self.impl, self.state, self._group_signature())
        plan.snapshot_state()  # after _init_state above created the states
        return plan

    def _step_plan(self) -> StepPlan:
        """The cached plan with this step's grads filled in (rebuilt when it no longer fits)."""
        self._check_group_lrs()
        params = list(itertools.chain.from_iterable(map(operator.itemgetter("params"), self.param_groups)))
        grads = list(map(_GRAD, params))
        has_grad = list(map(operator.is_not, grads, itertools.repeat(None, len(grads))))
        plan = self._plan
        if plan is None or not plan.valid_for(self, params, has_grad):
            plan = self._plan = self._build_plan(params, grads, has_grad)
            if not all(b.refresh() for b in plan.batches):
                raise RuntimeError(f"{type(self).__name__}: the optimizer state changed while building the step plan")
        for b in plan.batches:
            b.take_grads(grads)
        return plan

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure=None, *, grad_scale: Optional[Tensor] = None, found_inf: Optional[Tensor] = None):
        """One update of every param with a grad.

        grad_scale / found_inf: the GradScaler's current scale and inf flag (device tensors). When
        not passed, the attributes GradScaler.step sets on the optimizer are used. The kernels unscale
        the grads on the fly and skip the whole update, step counts included, when found_inf != 0.
        If the grads were already unscaled (scaler.unscale_ before step), GradScaler passes no scale.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)
        plan = self._step_plan()
        if not plan.batches:
            return loss
        device = plan.batches[0].params[0].device
        try:
            self._update(plan.ops, plan.batches, _scalar_on(grad_scale, device), _scalar_on(found_inf, device))
        finally:
            for b in plan.batches:  # the plan must not keep this step's grads alive past zero_grad()
                b.grads = []
        return loss

    def _update(self, ops, batches: List[ParamBatch], grad_scale: Optional[Tensor],
                found_inf: Optional[Tensor]) -> None:
        raise NotImplementedError

    def _clip_norm(self, ops, batches: List[ParamBatch], grad_scale: Optional[Tensor]) -> Optional[Tensor]:
        """The global norm of the unscaled grads when clipping (one multi-tensor pass), else None."""
        if self.max_grad_norm is None:
            return None
        total, _ = ops.multi_tensor_l2norm([g for b in batches for g in b.grads], grad_scale, False)
        self.last_grad_norm = total
        return total

    @property
    def _max_norm_arg(self) -> float:
        return 0.0 if self.max_grad_norm is None else self.max_grad_norm

    # ------------------------------------------------------------------ copies and checkpoints

    def __getstate__(self) -> Dict[str, Any]:
        # torch's Optimizer pickles / deep-copies only defaults, state and param_groups; keep our
        # settings too. Never the step plan: it is rebuilt on the copy's first step.
        state = super().__getstate__()
        state.update(max_grad_norm=self.max_grad_norm, master_weights=self.master_weights, impl=self.impl,
                     last_grad_norm=self.last_grad_norm)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        self._plan = None

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's load_state_dict, except that (1) each group keeps its own lr tensor and receives
        the saved value in place (schedulers and captured graphs hold references to it), and (2)
        state keeps its dtypes: fp32 moments and master weights of bf16/fp16 params stay fp32
        (torch would cast every state tensor to the param's dtype). States saved by torch.optim.SGD
        / AdamW load too. Hooks registered with ``register_load_state_dict_pre_hook`` /
        ``_post_hook`` run as in torch: the pre-hooks may replace the dict (state included), the
        post-hooks see the restored state."""
        self._plan = None
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        lr_tensors = [g["lr"] for g in self.param_groups]
        saved_groups = state_dict["param_groups"]
        # torch's load below must not run the hooks again (they ran above; the post-hooks run last).
        pre_hooks, post_hooks = self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}
        try:
            super().load_state_dict({**state_dict, "state": {}})
        finally:
            self._optimizer_load_state_dict_pre_hooks = pre_hooks
            self._optimizer_load_state_dict_post_hooks = post_hooks
        self._restore_groups_and_state(state_dict, saved_groups, lr_tensors)
        for post_hook in post_hooks.values():
            post_hook(self)

    def _restore_groups_and_state(self, state_dict: Dict[str, Any], saved_groups: List[Dict[str, Any]],
                                  lr_tensors: List[Any]) -> None:
        with torch.no_grad():
            for group, lr in zip(self.param_groups, lr_tensors):
                saved_lr = group["lr"]
                if not isinstance(lr, Tensor):  # a float written over it since (see _check_group_lrs)
                    lr = _lr_tensor(0.0, self._group_device(group), type(self).__name__)
                if isinstance(saved_lr, Tensor):
                    lr.copy_(saved_lr.reshape(lr.shape))
                else:
                    lr.fill_(float(saved_lr))
                group["lr"] = lr
                group.setdefault("exclude_from_adaptation", False)
            saved_ids = itertools.chain.from_iterable(g["params"] for g in saved_groups)
            params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
            id_to_param = dict(zip(saved_ids, params))
            group_of = {id(p): g for g in self.param_groups for p in g["params"]}
            for key, value in state_dict["state"].items():
                p = id_to_param.get(key)
                if p is not None:
                    self.state[p] = self._restore_state(p, group_of[id(p)], value)

    def _restore_state(self, p: Tensor, group: Dict[str, Any], saved: Dict[str, Any]) -> Dict[str, Any]:
        state: Dict[str, Any] = {}
        buffer_keys = self._buffer_keys(group)
        for key, value in saved.items():
            if key == "step":
                state["step"] = torch.as_tensor(value, dtype=torch.float32).to(p.device).reshape(()).clone()
            elif key == "master_param":
                if self._uses_master(p):
                    state[key] = torch.empty_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    state[key].copy_(value)
            elif key in buffer_keys:
                if value is not None:  # torch.optim.SGD saves momentum_buffer=None without momentum
                    state[key] = torch.empty_like(p, dtype=self._state_dtype(p), memory_format=torch.preserve_format)
                    state[key].copy_(value)
            else:
                state[key] = value
        if self._uses_step and "step" not in state and any(k in state for k in buffer_keys):
            # e.g. torch.optim.SGD's state: the buffers exist, so at least one step was taken.
            state["step"] = torch.ones((), dtype=torch.float32, device=p.device)
        return state
