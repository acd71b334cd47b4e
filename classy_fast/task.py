"""ClassificationTask: the orchestrator that drives a training run through its phases.

It builds the components from a ``TrainConfig`` (model, loss, optimizer, lr schedule, data, meters,
hooks), then runs train phases with a test phase every ``test_phase_period`` of them and after the
last. Everything else (checkpoints, logging, metrics files, profiling, ...) lives in hooks.

The train step never synchronizes with the host: loss sums, counts and top-k hits accumulate in
device tensors (meters), the step counter used to locate a non-finite loss is a device tensor, and
the learning rate is a device tensor the scheduler fills in place. Values are read at log
intervals and phase ends only.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from . import distributed
from .accumulation import GradientAccumulation, accumulation_steps
from .amp import Precision
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, rng_state, set_rng_state
from .config import TrainConfig, config_to_dict, output_name, save_config
from .cuda_graphs import build_eval_step, build_train_step
from .data import build_data
from .device import resolve_device, to_device
from .finetune import finetune_param_groups, prepare_finetune, set_train_mode
from .hooks import CheckpointHook, ClassyHook, build_hooks
from .losses import build_loss
from .meters import LossMeter, ThroughputMeter, build_meters
from .mixup import wrap_with_mixup
from .random_erasing import wrap_with_random_erasing
from .models import build_model
from .parallel import ParallelTraining
from .performance import ForwardLoss, configure_backends
from .preemption import Preempted, PreemptionWatcher
from .schedulers import LearningRateController, build_schedule

log = logging.getLogger("classy_fast")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the message names the first such step."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ClassificationTask:
    def __init__(self, cfg: TrainConfig, hooks: Optional[List[ClassyHook]] = None, from_checkpoint: bool = False):
        """``from_checkpoint``: the caller loads a checkpoint into this task next (``load_state_dict``), so
        initial weights that it replaces are not read (fine-tuning's ``finetune.pretrained``)."""
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        configure_backends(cfg.tf32, cfg.cudnn_benchmark, cfg.deterministic)
        # The data seed is the same on every rank: ranks draw one epoch permutation and take disjoint shares
        # of each global batch (data/global_batch_sharding.py); augmentation streams add the rank to their seed.
        data_kw = dict(device=self.device, seed=cfg.seed, channels_last=cfg.channels_last)
        self.train_data = None if cfg.test_only else build_data(cfg.data, "train", **data_kw)
        # Random erasing, then Mixup/CutMix (when configured), on the device; mixed training batches come as
        # (images, (target_a, target_b, lam)).
        self.train_data = wrap_with_random_erasing(self.train_data, cfg.random_erasing, data_kw["seed"])
        self.train_data = wrap_with_mixup(self.train_data, cfg.mixup, data_kw["seed"])
        self.test_data = build_data(cfg.data, "test", **data_kw)
        self.num_classes = self.test_data.num_classes
        self.input_shape = (self.test_data.in_channels, *self.test_data.image_size)

        self.model = build_model(cfg.model, self.num_classes, self.input_shape[0])
        # Fine-tuning: pretrained weights, new head; a frozen trunk stays in eval mode (set_train_mode).
        self.frozen_modules = prepare_finetune(self.model, cfg.finetune, load_weights=not from_checkpoint)
        self.model = self.model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Gradient accumulation: k micro-steps per optimizer update (classy_fast/accumulation.py).
        self.accumulation = GradientAccumulation(
            accumulation_steps(cfg.simulated_global_batch_size, cfg.data.batch_size, distributed.world_size()))
        self.accumulation.check_step_checkpoints(cfg.hooks.checkpoint.every_n_steps)
        # Data parallelism (nothing on one process): SyncBN, the DDP wrapper the train step calls
        # (``self.model`` stays the plain module for eval, checkpoints, EMA), ZeRO (classy_fast/parallel.py).
        self.parallel = ParallelTraining(self.accumulation.ddp_config(cfg.distributed), self.device, cfg.seed)
        self.model = self.parallel.convert_batchnorm(self.model)
        self.train_model = self.parallel.wrap(self.model)
        self.loss = build_loss(cfg.loss)
        self.precision = Precision(cfg.amp, self.device)
        self.optimizer = self.parallel.build_optimizer(self.model, cfg.optimizer,
                                         finetune_param_groups(self.model, cfg.finetune, cfg.optimizer))
        self.forward_loss = ForwardLoss(self.loss, self.precision, cfg.compile, cfg.compile_mode)
        # Optimizer updates per epoch (the lr schedule counts these): k micro-steps each with accumulation.
        self.updates_per_epoch = len(self.train_data) // self.accumulation.steps if self.train_data is not None else 1
        if self.train_data is not None and self.updates_per_epoch == 0:
            raise ValueError(f"the training set ({self.train_data.num_samples} samples) is smaller than one update's "
                             f"batches ({cfg.data.batch_size} × {self.accumulation.steps} accumulation steps) "
                             f"with drop_last: lower data.batch_size or simulated_global_batch_size")
        self.lr = LearningRateController(self.optimizer, build_schedule(cfg.scheduler, cfg.epochs), cfg.epochs,
                                         self.updates_per_epoch, cfg.scheduler.update_interval)
        self.clip_in_task = cfg.optimizer.max_grad_norm is not None and not getattr(
            self.optimizer, "fuses_grad_clipping", False)
        self.grad_norm: Optional[torch.Tensor] = None

        self.meters = build_meters(cfg.meters, self.num_classes, self.device)
        self.loss_meter = LossMeter(self.device)
        self.throughput = ThroughputMeter()
        self.hooks = build_hooks(cfg) if hooks is None else hooks
        self._train_step = build_train_step(self)  # eager, or a CUDA-graph replay of device_train_step
        self._eval_step = build_eval_step(self)  # eager, or CUDA-graph replays of device_eval_step

        # Progress. ``phase_index`` is the phase to run next (or running); the counters are host ints
        # except ``_step_tensor``, the device-side count of training micro-steps used to locate a bad loss.
        self.phases = self._plan_phases()
        self.phase_index = 0
        self.step_in_phase = 0
        self.train_phases_done = 0
        self.num_updates = 0
        self._step_tensor = torch.zeros((), dtype=torch.int64, device=self.device)
        self.phase: Dict[str, Any] = self.phases[0]
        self.phase_length = 0
        self.last_phase_metrics: Dict[str, Any] = {}
        self.data_wait_seconds = 0.0
        self.failed = False
        self.preempted = False  # stopped at a safe point after a preemption signal (checkpointed, not failed)
        self.stop_reason: Optional[str] = None  # set by request_stop (early stopping): no further phases
        # Preemption signals are handled only where something writes the checkpoint they exist for.
        checkpointing = not cfg.test_only and any(isinstance(h, CheckpointHook) for h in self.hooks)
        self.preemption = PreemptionWatcher(cfg.hooks.checkpoint.on_signal if checkpointing else [])

    # ------------------------------------------------------------------ plan
    def _plan_phases(self) -> List[Dict[str, Any]]:
        if self.cfg.test_only:
            return [{"type": "test", "epoch": 0}]
        if self.cfg.epochs < 1 or self.cfg.test_phase_period < 1:
            raise ValueError("epochs and test_phase_period must be ≥ 1")
        phases = []
        for epoch in range(self.cfg.epochs):
            phases.append({"type": "train", "epoch": epoch})
            if (epoch + 1) % self.cfg.test_phase_period == 0 or epoch + 1 == self.cfg.epochs:
                phases.append({"type": "test", "epoch": epoch})
        return phases

    @property
    def in_train_phase(self) -> bool:
        return self.phase["type"] == "train"

    # ------------------------------------------------------------------ steps
    def train_step(self, images: torch.Tensor, target: Any) -> None:
        """One optimizer update: device work (``device_train_step``) then host bookkeeping. No host sync.

        With gradient accumulation (k > 1) a call is one micro-step and only every k-th (a host-side
        count) updates; the others add the gradient of loss / k, without DDP's all-reduce."""
        images = images.to(self.device, non_blocking=True)
        target = to_device(target, self.device)
        update = self.accumulation.is_update_step(self.step_in_phase)
        with self.parallel.no_sync(update):
            self.device_train_step(images, target, update)
        if update:
            self.optimizer.zero_grad(set_to_none=True)
            self.after_update(images.shape[0])
        else:
            self.throughput.update(images.shape[0])

    def device_train_step(self, images: torch.Tensor, target: Any, update: bool = True) -> None:
        """Forward, loss, backward, (unscale, clip,) optimizer step, meters: device work only.

        Everything here may be captured in a CUDA graph (``classy_fast.cuda_graphs``): no host
        reads, no Python decisions on tensor values, no new host-side state per call.
        """
        logits, loss = self.forward_loss(self.train_model, images, target)
        self._step_tensor += 1  # training (micro-)steps only: the number a NaN report names
        scaler = self.precision.scaler
        scaled = self.accumulation.scale(loss)
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        self._update_meters(logits, target, loss)
        if not update:  # accumulating: the gradients stay in .grad for the next micro-step
            return
        if self.clip_in_task:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optimizer.max_grad_norm,
                                                            foreach=self.device.type == "cuda")
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        if hasattr(self.optimizer, "last_grad_norm"):
            self.grad_norm = self.optimizer.last_grad_norm

    def no_sync_context(self, is_update_step: bool):
        """DDP's ``no_sync`` (gradients stay local) on micro-steps that do not update; a null context otherwise."""
        return self.parallel.no_sync(is_update_step)

    def after_update(self, batch_size: int) -> None:
        """Host bookkeeping after an optimizer update: counters, the next step's lr (a device fill)."""
        self.num_updates += 1
        self.lr.set_for_update(self.num_updates)
        self.throughput.update(batch_size)

    def eval_step(self, images: torch.Tensor, target: Any) -> None:
        images = images.to(self.device, non_blocking=True)
        target = to_device(target, self.device)
        self.device_eval_step(images, target)
        self.throughput.update(images.shape[0])

    @torch.inference_mode()
    def device_eval_step(self, images: torch.Tensor, target: Any) -> None:
        """Forward, loss and meter updates on the device: capturable (``GraphedEvalStep``)."""
        logits, loss = self.forward_loss(self.model, images, target)
        self._update_meters(logits, target, loss)

    def _update_meters(self, logits: torch.Tensor, target: Any, loss: torch.Tensor) -> None:
        logits = logits.detach().float()
        # Mixup targets (a, b, lam): accuracy counts against target_a, the mixing recipe's dominant one.
        dense = target[0] if isinstance(target, (tuple, list)) else target
        for meter in self.meters:
            meter.update(logits, dense)
        self.loss_meter.update_loss(loss, logits.shape[0], self._step_tensor)

    # ------------------------------------------------------------------ phases
    def run(self) -> Dict[str, Any]:
        """Run the remaining phases; returns the last phase's metrics."""
        if distributed.is_primary():
            os.makedirs(self.cfg.output_dir, exist_ok=True)
            save_config(self.cfg, os.path.join(self.cfg.output_dir, output_name(self.cfg, "config.yaml")))
        self._call("on_start")
        try:
            with self.preemption:
                while self.phase_index < len(self.phases) and self.stop_reason is None:
                    self.run_phase()
                    if self.phase_index < len(self.phases):  # after the last phase the run is complete anyway
                        self._stop_if_preempted(collective_ok=True)
        except Preempted:
            self.preempted = True  # on_end writes the checkpoint of this safe point
            raise
        except BaseException:
            self.failed = True
            raise
        finally:
            self._call("on_end")
        return self.last_phase_metrics

    def _stop_if_preempted(self, collective_ok: bool) -> None:
        if self.preemption.should_stop(collective_ok):
            where = (f"epoch {self.phase['epoch'] + 1}, step {self.step_in_phase}" if self.step_in_phase
                     else f"the end of phase {self.phase_index}")
            raise Preempted(f"preempted ({self.preemption.describe()}) at {where}")

    def run_phase(self) -> None:
        self.phase = self.phases[self.phase_index]
        train = self.in_train_phase
        data = self.train_data if train else self.test_data
        resuming_mid_phase = self.step_in_phase > 0
        if train:
            data.resume_at(self.phase["epoch"], self.step_in_phase)
            self.lr.set_for_update(self.num_updates)
        if not resuming_mid_phase:
            for meter in (*self.meters, self.loss_meter):
                meter.reset()
        self.throughput.reset()
        self.data_wait_seconds = 0.0
        # With accumulation the epoch's trailing batches that cannot complete an update are left out.
        self.phase_length = self.updates_per_epoch * self.accumulation.steps if train else len(data)
        set_train_mode(self.model, train, self.frozen_modules)
        if not train:
            self.parallel.before_eval(self.model)  # every rank evaluates rank 0's BN statistics
        self._call("on_phase_start")
        step = self._train_step if train else self._eval_step
        log_interval = self.cfg.hooks.log_interval
        batches = itertools.islice(iter(data), self.phase_length - self.step_in_phase)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            self.data_wait_seconds += time.perf_counter() - t0
            if batch is None:
                break
            step(*batch)
            self.step_in_phase += 1
            at_log = bool(log_interval) and self.step_in_phase % log_interval == 0
            if train and at_log:
                self.check_finite()
            self._call("on_step")
            # A safe point: after an optimizer update (accumulated gradients are not checkpointed).
            if train and self.step_in_phase % self.accumulation.steps == 0 and self.step_in_phase < self.phase_length:
                self._stop_if_preempted(collective_ok=at_log)
        self._end_phase()

    def _end_phase(self) -> None:
        for meter in (*self.meters, self.loss_meter, self.throughput):
            meter.sync()
        if self.in_train_phase:
            self.check_finite()
            self.train_phases_done += 1
        self.last_phase_metrics = {"phase_type": self.phase["type"], "epoch": self.phase["epoch"], **self.metrics()}
        if "skipped_files" in self.last_phase_metrics:  # each rank counted the bad files it met: the union
            data = self.train_data if self.in_train_phase else self.test_data
            paths = distributed.gather_objects(sorted(data.skipped_paths))
            self.last_phase_metrics["skipped_files"] = len(set().union(*paths))
        self.phase_index += 1
        self.step_in_phase = 0
        self._call("on_phase_end")

    # ------------------------------------------------------------------ reading state (syncs)
    def check_finite(self) -> None:
        """Raise NonFiniteLossError if any step's loss so far was NaN/inf (reads one device scalar)."""
        if not self.in_train_phase:
            return
        bad = self.loss_meter.first_nonfinite_step()
        if bad >= 0:
            in_epoch = bad - (int(self._step_tensor) - self.step_in_phase)
            raise NonFiniteLossError(
                f"non-finite training loss at training step {bad} of the run (step {in_epoch} of epoch "
                f"{self.phase['epoch'] + 1}, counting micro-steps from 1); "
                f"the last checkpoint written before it is intact. Lower optimizer.lr, enable "
                f"optimizer.max_grad_norm, or check the data.")

    def metrics(self) -> Dict[str, float]:
        """Current phase metrics as host floats (reads device tensors)."""
        out: Dict[str, float] = dict(self.loss_meter.value())
        for meter in self.meters:
            out.update(meter.value())
        if not self.cfg.test_only:  # an evaluation-only run trains with no lr: it reports none
            # The lr the last update used (the device tensor already holds the next update's).
            out["lr"] = self.lr.lr_of_update(max(self.num_updates - 1, 0))
        out.update(self.throughput.value())
        seconds = out["seconds"]
        out["data_wait_pct"] = 100.0 * self.data_wait_seconds / seconds if seconds > 0 else 0.0
        # Bad files (undecodable, label out of range) the data skipped so far (classy_fast/data/bad_data.py).
        skipped = getattr(self.train_data if self.in_train_phase else self.test_data, "skipped_files", None)
        if skipped is not None:
            out["skipped_files"] = int(skipped)  # this rank's; the phase-end record counts the ranks' union
        if self.grad_norm is not None and self.in_train_phase:
            out["grad_norm"] = float(self.grad_norm)
        return out

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.parallel.optimizer_state_dict(self.optimizer),
            "lr_controller": self.lr.state_dict(),
            "precision": self.precision.state_dict(),
            "meters": [m.state_dict() for m in self.meters],
            "loss_meter": self.loss_meter.state_dict(),
            "hooks": {h.key: h.state_dict() for h in self.hooks},
            "progress": {
                "phase_index": self.phase_index, "step_in_phase": self.step_in_phase,
                # What phase_index points at: a resumed run with another epochs / test_phase_period
                # finds it in its own plan (the index alone would point elsewhere there).
                "next_phase": dict(self.phases[self.phase_index]) if self.phase_index < len(self.phases) else None,
                "train_phases_done": self.train_phases_done, "num_updates": self.num_updates,
                "global_step": int(self._step_tensor),
            },
            "rng": rng_state(),
            "distributed": self.parallel.state_dict(self.cfg.data.batch_size * distributed.world_size()),
        }

    def load_state_dict(self, state: Dict[str, Any], weights_only: bool = False) -> None:
        """Restore a checkpoint. ``weights_only`` (test-only runs) loads the model and the hooks that hold
        weights to evaluate (``restore_in_test_only``: the EMA), not the training progress."""
        self.model.load_state_dict(state["model"])
        if weights_only:
            for hook in self.hooks:
                if hook.restore_in_test_only and hook.key in state.get("hooks", {}):
                    hook.load_state_dict(state["hooks"][hook.key])
            return
        # This run's hyper-parameters win over the checkpoint's (torch's load_state_dict takes the saved
        # groups'): the user set them for this run and its config.yaml records them. Only the optimizer's
        # state (momentum buffers, Adam moments, steps) comes from the checkpoint.
        own_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # torch's message names neither the groups nor what made them differ
            saved = [len(g.get("params", [])) for g in state["optimizer"].get("param_groups", [])]
            own = [len(g["params"]) for g in self.optimizer.param_groups]
            if saved == own:  # another problem: torch's own message
                raise
            raise CheckpointError(
                f"the checkpoint's optimizer has {len(saved)} parameter groups (of {saved} tensors), this run's "
                f"{len(own)} (of {own}): resume with the checkpoint's settings that group the parameters "
                f"(optimizer.no_weight_decay_on_norm_and_bias, finetune.head_lr / trunk_lr / freeze_trunk)") from None
        for group, own in zip(self.optimizer.param_groups, own_groups):
            group.update(own)  # our lr tensor objects too: captured graphs and the scheduler point at them
        self._warn_changed_hyperparameters(state["optimizer"].get("param_groups", []), own_groups)
        self.lr.load_state_dict(state["lr_controller"])
        self.precision.load_state_dict(state["precision"])
        p = state["progress"]
        # Meters are reset when a phase starts: their state matters only to a resume inside a phase.
        if p["step_in_phase"] > 0:
            self._check_meters_match(state)
            for meter, s in zip(self.meters, state["meters"]):
                meter.load_state_dict(s)
            self.loss_meter.load_state_dict(state["loss_meter"])
        for hook in self.hooks:
            if hook.key in state["hooks"]:
                hook.load_state_dict(state["hooks"][hook.key])
        self.phase_index, self.step_in_phase = self._resume_phase_index(p), p["step_in_phase"]
        self.train_phases_done, self.num_updates = p["train_phases_done"], p["num_updates"]
        self._step_tensor.fill_(p["global_step"])
        if self.phase_index < len(self.phases):
            self.phase = self.phases[self.phase_index]
        set_rng_state(state["rng"])
        self.parallel.load_state_dict(state.get("distributed"), self)  # per-rank RNG, world-size checks
        # The next update's lr from this run's base lrs (in place: fill_, the tensors stay the same objects).
        self.lr.set_for_update(self.num_updates)

    def _warn_changed_hyperparameters(self, saved_groups: List[Dict[str, Any]], own_groups: List[Dict[str, Any]]) -> None:
        """One warning line naming the optimizer settings this run changes from the checkpoint's (old → new)."""
        ignore = {"lr", "params", "param_names", "fused", "foreach", "capturable", "differentiable"}  # not settings
        changes: Dict[tuple, List[int]] = {}
        for i, (saved, own) in enumerate(zip(saved_groups, own_groups)):
            for key in sorted(own.keys() - ignore):
                if key in saved and not _same_value(saved[key], own[key]):
                    name = "lr" if key == "base_lr" else key  # base_lr: the peak lr the schedule scales
                    changes.setdefault((name, _show(saved[key]), _show(own[key])), []).append(i)
        if changes and distributed.is_primary():
            n = len(own_groups)
            log.warning("resuming with this run's optimizer settings, not the checkpoint's: %s", "; ".join(
                f"{name} {old} → {new}" + ("" if len(groups) == n else f" (param group{'s' if len(groups) > 1 else ''} "
                                           f"{', '.join(map(str, groups))})")
                for (name, old, new), groups in changes.items()))

    def _check_meters_match(self, state: Dict[str, Any]) -> None:
        """A resume inside a phase continues the saved meters: they must be this run's meters."""
        def describe(meters) -> str:
            return "[" + ", ".join(f"{m.get('name')}(topk={m.get('topk')})" for m in meters) + "]"

        saved_cfg = (state.get("config") or {}).get("meters")
        own_cfg = config_to_dict(self.cfg)["meters"]
        saved_states = state["meters"]
        fits = len(saved_states) == len(self.meters) and all(
            set(s) == set(m.state) and all(torch.as_tensor(s[k]).shape == m.state[k].shape for k in s)
            for s, m in zip(saved_states, self.meters))
        if saved_cfg is not None:
            fits = fits and [(m["name"], sorted(m["topk"])) for m in saved_cfg] == \
                [(m["name"], sorted(m["topk"])) for m in own_cfg]
        if not fits:
            saved = describe(saved_cfg) if saved_cfg is not None else f"{len(saved_states)} meter(s)"
            raise CheckpointError(
                f"the checkpoint was written inside an epoch with meters {saved}, this run has {describe(own_cfg)}: "
                f"resume with the checkpoint's meters (--set meters=...), or from a checkpoint written at the end of "
                f"a phase (its meters do not carry over)")

    def request_stop(self, reason: str) -> None:
        """End the run after the current phase (hooks call it, e.g. early stopping): ``on_end`` still runs."""
        self.stop_reason = reason
        if distributed.is_primary():
            log.info("stopping the run: %s", reason)

    def _resume_phase_index(self, progress: Dict[str, Any]) -> int:
        """Where this run's plan continues a checkpoint's progress. The saved next phase if this plan has
        it; else (a test phase this test_phase_period skips, or the end of a shorter run continued with
        more epochs) the first train phase not done yet; else the end."""
        if "next_phase" not in progress:  # a checkpoint from before next_phase was saved
            return progress["phase_index"]
        saved = progress["next_phase"]
        if saved is not None:
            for i, phase in enumerate(self.phases):
                if (phase["type"], phase["epoch"]) == (saved["type"], saved["epoch"]):
                    return i
        for i, phase in enumerate(self.phases):
            if phase["type"] == "train" and phase["epoch"] == progress["train_phases_done"]:
                return i
        return len(self.phases)

    # ------------------------------------------------------------------ hooks
    def _call(self, event: str) -> None:
        if event != "on_end":
            for hook in self.hooks:
                getattr(hook, event)(self)
            return
        # Every hook's on_end runs even if an earlier one raises (the checkpoint hook is last: its final
        # save must not be lost to an export error); the first error is raised after all have run.
        first_error: Optional[BaseException] = None
        for hook in self.hooks:
            try:
                hook.on_end(self)
            except Exception as e:  # noqa: BLE001 - re-raised below
                if first_error is None:
                    first_error = e
                else:
                    log.error("%s.on_end failed too: %s: %s", type(hook).__name__, type(e).__name__, e)
        if first_error is not None:
            raise first_error


def _same_value(a: Any, b: Any) -> bool:
    """Equal optimizer settings: numbers, bools, tuples / lists (betas come back from a checkpoint as either), tensors."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        a, b = torch.as_tensor(a).cpu(), torch.as_tensor(b).cpu()
        return a.shape == b.shape and bool(torch.equal(a.to(b.dtype), b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    if torch.is_tensor(value):
        value = value.tolist()
    return str(list(value)) if isinstance(value, tuple) else str(value)
