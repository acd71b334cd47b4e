"""Model EMA: an exponential moving average of the weights, evaluated next to them and checkpointed.

After every ``every_n_updates``-th optimizer update the average moves towards the weights:
``ema ← d·ema + (1-d)·w`` with ``d = min(decay, (1+n)/(10+n))`` at the n-th EMA update when
``warmup`` is on (the TensorFlow ExponentialMovingAverage ramp: early on the average is close to a
plain mean of the weights seen so far instead of being dominated by the random init). The update
runs as one multi-tensor op, ``classy_fast.ops.ema_update_`` where it exists, else
``torch._foreach_lerp_``; d lives in a device tensor filled from the host-side count, so nothing is
read back. BatchNorm running statistics are averaged the same way (``include_buffers``) or copied
from the model; integer buffers (num_batches_tracked) are always copied.

In every test phase the hook also evaluates the EMA weights over the test set and adds
``loss_ema``, ``top1_ema``, ``top5_ema`` (one key per meter value, suffixed) to the phase metrics;
it runs before the loggers and metrics files so they record them. Its state (the EMA weights and
update count) goes into checkpoints with the hooks' states; a test-only run
(``--eval-only --resume CKPT --set ema.enabled=true``) loads it and reports the ``_ema`` metrics too.

With precise BN enabled (and ``ema.precise_bn``, the default), the EMA model's BatchNorm statistics
are recomputed at each train phase end through the EMA weights, on the same batches as the model's:
running statistics averaged over the training run (or copied from the live model) describe the
activations of other weights.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .. import distributed
from ..meters import LossMeter, build_meters
from ..models import unwrap_model
from ..recipe_config import EMAConfig
from .base import ClassyHook
from .precise_bn import bn_layers_in_training, recompute_bn_stats

log = logging.getLogger("classy_fast")


def _fused_ema_update():
    """``classy_fast.ops.ema_update_(ema_params, params, decay)`` when the ops package provides it, else None."""
    try:
        from .. import ops
    except ImportError:
        return None
    return getattr(ops, "ema_update_", None)


class ModelEMA:
    """The averaged copy of a model (``self.module``, in eval mode, without gradients) and its update."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True, include_buffers: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema.decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.include_buffers = decay, warmup, include_buffers
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0
        self._bind(model)

    def _bind(self, model: nn.Module) -> None:
        """Pair the EMA's tensors with the model's by name (parameters the model freezes never change: skipped)."""
        ema_params = dict(self.module.named_parameters())
        pairs = [(ema_params[name], p) for name, p in model.named_parameters() if p.requires_grad]
        self._ema_params: List[torch.Tensor] = [e for e, _ in pairs]
        self._params: List[torch.Tensor] = [p.detach() for _, p in pairs]
        ema_buffers = dict(self.module.named_buffers())
        self._float_buffers, self._copied_buffers = [], []
        for name, b in model.named_buffers():
            if name not in ema_buffers:
                continue
            floating = b.is_floating_point() and self.include_buffers
            (self._float_buffers if floating else self._copied_buffers).append((ema_buffers[name], b))
        device = self._params[0].device if self._params else torch.device("cpu")
        # 1 - d, the lerp weight, as a device tensor filled in place: no host→device copy per update.
        self._weight = torch.zeros((), dtype=torch.float32, device=device)
        self._decay_tensor = torch.zeros((), dtype=torch.float32, device=device)
        self._fused = _fused_ema_update()

    def decay_at(self, n: int) -> float:
        """The decay used by the n-th EMA update (0-based)."""
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step towards the model's current weights (device ops only)."""
        d = self.decay_at(self.updates)
        self.updates += 1
        self._weight.fill_(1.0 - d)
        if self._ema_params:
            if self._fused is not None:
                self._decay_tensor.fill_(d)
                self._fused(self._ema_params, self._params, self._decay_tensor)
            else:
                torch._foreach_lerp_(self._ema_params, self._params, self._weight)
        if self._float_buffers:
            torch._foreach_lerp_([e for e, _ in self._float_buffers], [b for _, b in self._float_buffers], self._weight)
        self.copy_buffers(float_ones=False)

    @torch.no_grad()
    def copy_buffers(self, float_ones: bool = True) -> None:
        """Copy the buffers that are not averaged (and, with ``float_ones``, overwrite the averaged ones too)."""
        pairs = self._copied_buffers + (self._float_buffers if float_ones else [])
        for e, b in pairs:
            e.copy_(b)

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


@torch.inference_mode()
def evaluate(model: nn.Module, data, task) -> Dict[str, float]:
    """Loss and the configured meters of ``model`` over ``data`` (a fresh meter set; reads them once at the end)."""
    meters = build_meters(task.cfg.meters, task.num_classes, task.device)
    loss_meter = LossMeter(task.device)
    step = torch.zeros((), dtype=torch.int64, device=task.device)
    for images, target in data:
        with task.precision.autocast():
            logits = model(images)
            loss = task.loss(logits, target)
        logits = logits.float()
        for meter in meters:
            meter.update(logits, target)
        loss_meter.update_loss(loss, images.shape[0], step)
    out: Dict[str, float] = {}
    for meter in (loss_meter, *meters):
        meter.sync()
        out.update(meter.value())
    return out


class EMAHook(ClassyHook):
    name = "ema"
    restore_in_test_only = True  # --eval-only --resume CKPT --set ema.enabled=true evaluates the EMA weights too

    def __init__(self, cfg: EMAConfig):
        if cfg.every_n_updates < 1:
            raise ValueError(f"ema.every_n_updates must be ≥ 1, got {cfg.every_n_updates}")
        self.cfg = cfg
        self.ema: Optional[ModelEMA] = None
        self._pending_state: Optional[Dict[str, Any]] = None
        self._seen_updates = 0

    def on_start(self, task) -> None:
        if task.cfg.test_only and self._pending_state is None:
            log.warning("ema.enabled in a test-only run, but no EMA state was loaded (pass --resume with a "
                        "checkpoint of a run that kept an EMA): only the model is evaluated")
            return
        self.ema = ModelEMA(unwrap_model(task.model), self.cfg.decay, self.cfg.warmup, self.cfg.include_buffers)
        if self._pending_state is not None:  # loaded from a checkpoint before the model existed here
            self.ema.load_state_dict(self._pending_state)
            self._pending_state = None
        self._seen_updates = task.num_updates

    def on_step(self, task) -> None:
        # Host-side counters only: update after each new optimizer update (not after accumulation micro-steps).
        if self.ema is None or not task.in_train_phase or task.num_updates == self._seen_updates:
            return
        self._seen_updates = task.num_updates
        if task.num_updates % self.cfg.every_n_updates == 0:
            self.ema.update()

    def on_phase_end(self, task) -> None:
        if self.ema is None:
            return
        if task.phase["type"] == "train":
            if not self.cfg.include_buffers:  # e.g. after precise BN recomputed the model's statistics
                self.ema.copy_buffers()
            if self.cfg.precise_bn and task.cfg.precise_bn.enabled:
                self._precise_bn(task)
            return
        if self.cfg.evaluate:
            metrics = evaluate(self.ema.module, task.test_data, task)
            task.last_phase_metrics.update({f"{k}_ema": v for k, v in metrics.items()})
            if distributed.is_primary():
                log.info("test epoch %d EMA weights: %s", task.phase["epoch"] + 1,
                         " ".join(f"{k}_ema={v:.4f}" for k, v in metrics.items()))

    def _precise_bn(self, task) -> None:
        """Recompute the EMA model's statistics through the EMA weights, on the batches the precise BN
        hook used for the model's, for the BatchNorm layers the model trains (a frozen trunk's stay)."""
        model = unwrap_model(task.model)
        trained = {id(m) for m in bn_layers_in_training(model)}
        ema_modules = dict(self.ema.module.named_modules())
        layers = [ema_modules[name] for name, m in model.named_modules() if id(m) in trained]
        recompute_bn_stats(self.ema.module, task, task.cfg.precise_bn.num_samples, layers)

    def state_dict(self) -> Dict[str, Any]:
        if self.ema is not None:
            return self.ema.state_dict()
        return self._pending_state or {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not state:
            return
        if self.ema is not None:
            self.ema.load_state_dict(state)
        else:
            self._pending_state = state
