"""Precise BN: recompute BatchNorm running statistics with the final weights of each train phase.

During training the running mean/var are exponential averages of batch statistics taken while the
weights moved, so they lag the weights the test phase uses. At the end of every train phase this
hook resets them and averages the batch statistics of ⌈N / batch_size⌉ training batches through
the current weights (BatchNorm's cumulative mode, ``momentum=None``): running_mean is the mean of
the per-batch means and running_var the mean of the per-batch unbiased variances, as in
fvcore's ``update_bn_stats`` (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

The batches are the first ones of the epoch just finished, from the unmixed source (Mixup/CutMix
change the statistics the test set never has), with the run's augmentation and autocast. Only
BatchNorm layers in training mode are touched (a frozen fine-tuning trunk keeps its statistics).
Under DDP each rank's result is averaged over ranks. Runs before the checkpoint hook, so the saved
model has the recomputed statistics. With an EMA (``ema.precise_bn``, on by default) the EMA hook
then recomputes the EMA model's statistics the same way, through the EMA weights.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, List, Optional

import torch
from torch import nn

from .. import distributed
from ..models import unwrap_model
from ..mixup import MixupBatches
from .base import ClassyHook


def bn_layers_in_training(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor],
                    layers: Optional[List[nn.modules.batchnorm._BatchNorm]] = None) -> int:
    """Reset and recompute the running statistics of ``layers`` (default: ``model``'s training-mode
    BatchNorm layers) over ``batches`` (input tensors). Returns the number of batches seen; the
    statistics are untouched if 0.

    Layers given in eval mode (an EMA copy is all eval) are switched to training mode for the
    recompute and back: only then does BatchNorm use and accumulate batch statistics. The rest of
    the model keeps its mode (dropout stays off in an eval-mode model)."""
    layers = bn_layers_in_training(model) if layers is None else layers
    if not layers:
        return 0
    saved = [(bn.training, bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),
              bn.num_batches_tracked.clone()) for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: running = mean over the batches seen since the reset
        bn.train()
    seen = 0
    for images in batches:
        model(images)
        seen += 1
    for bn, (training, momentum, mean, var, tracked) in zip(layers, saved):
        bn.train(training)
        bn.momentum = momentum
        if seen == 0:
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(tracked)
        else:
            distributed.all_reduce_mean(bn.running_mean)
            distributed.all_reduce_mean(bn.running_var)
    return seen


def recompute_bn_stats(model: nn.Module, task, num_samples: int,
                       layers: Optional[List[nn.modules.batchnorm._BatchNorm]] = None) -> int:
    """Precise BN for ``model`` (any module taking the task's images) over the first
    ⌈num_samples / batch_size⌉ batches of the train phase just finished, unmixed, with the run's
    augmentation and autocast. Every call sees the same batches."""
    # Unmixed batches (random erasing, an augmentation of single images, stays).
    source = task.train_data.source if isinstance(task.train_data, MixupBatches) else task.train_data
    num_batches = math.ceil(num_samples / source.batch_size)
    source.resume_at(task.phase["epoch"], 0)
    batches = (images for images, _ in itertools.islice(iter(source), num_batches))
    with task.precision.autocast():
        return update_bn_stats(model, batches, layers)


class PreciseBNHook(ClassyHook):
    name = "precise_bn"

    def __init__(self, num_samples: int = 8192):
        if num_samples < 1:
            raise ValueError(f"precise_bn.num_samples must be ≥ 1, got {num_samples}")
        self.num_samples = num_samples

    def on_phase_end(self, task) -> None:
        if task.phase["type"] != "train":
            return
        recompute_bn_stats(unwrap_model(task.model), task, self.num_samples)
