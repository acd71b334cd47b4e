"""Config sections of the training-recipe features: Mixup/CutMix, random erasing, model EMA, precise BN, fine-tuning,
model export and prediction files.

They are fields of ``classy_fast.config.TrainConfig`` (``mixup``, ``random_erasing``, ``ema``, ``precise_bn``,
``finetune``) and ``HooksConfig`` (``export``, ``predictions``), loaded with the same strict rules;
they live here so the recipe code and its settings stay together. This module imports nothing from
classy_fast (config.py imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple


@dataclass
class MixupConfig:
    mixup_alpha: float = 0.0
    """Mixup: λ ~ Beta(α, α) and images are blended as λ·x + (1-λ)·x_partner; 0 turns Mixup off."""
    cutmix_alpha: float = 0.0
    """CutMix: a box of area (1-λ)·H·W with λ ~ Beta(α, α) is pasted from the partner; 0 turns CutMix off."""
    cutmix_minmax: Optional[Tuple[float, float]] = None
    """CutMix box sides as fractions (min, max) of the image side, drawn uniformly instead of from cutmix_alpha
    (turns CutMix on by itself)."""
    prob: float = 1.0
    """Probability that a batch (a pair, a sample, depending on mode) is mixed at all."""
    switch_prob: float = 0.5
    """With both Mixup and CutMix on: probability of CutMix instead of Mixup."""
    mode: Literal["batch", "pair", "elem"] = "batch"
    """'batch': one λ (and box) per batch; 'pair': one per mirrored pair (i, B-1-i); 'elem': one per sample.
    'pair'/'elem' give a per-sample λ, so the loss builds B×C soft targets instead of the fused mixup kernel."""


@dataclass
class RandomErasingConfig:
    prob: float = 0.0
    """Probability that a training image gets a random rectangle erased (Zhong et al. 2017), on the device
    after normalization and before Mixup/CutMix; 0 turns it off (timm's reprob, 0.25 in its ImageNet recipes)."""
    scale: Tuple[float, float] = (0.02, 1 / 3)
    """Range of the erased area, as fractions of the image area."""
    ratio: Tuple[float, float] = (0.3, 1 / 0.3)
    """Range of the erased box's aspect ratio (height / width), drawn log-uniformly."""
    value: Literal["zero", "random"] = "zero"
    """Fill: 'zero' (the normalized mean colour) or 'random' (per-pixel N(0, 1) noise, timm's 'pixel' mode)."""


@dataclass
class EMAConfig:
    enabled: bool = False
    """Keep an exponential moving average of the weights, evaluate it in test phases, save it in checkpoints."""
    decay: float = 0.999
    """EMA decay per EMA update: ema = decay·ema + (1-decay)·weights."""
    warmup: bool = True
    """Ramp the decay as min(decay, (1+n)/(10+n)) at the n-th EMA update, so the random init fades out fast."""
    every_n_updates: int = 1
    """Update the EMA every N optimizer updates (the decay applies per EMA update)."""
    include_buffers: bool = True
    """Average floating-point buffers (BatchNorm running statistics) too; false copies them from the model."""
    evaluate: bool = True
    """Evaluate the EMA weights in every test phase too: top1_ema, top5_ema, loss_ema in the test metrics."""
    precise_bn: bool = True
    """With precise_bn.enabled: recompute the EMA model's BatchNorm statistics through the EMA weights at each
    train phase end (the live model's statistics, averaged or copied, belong to other weights)."""


@dataclass
class PreciseBNConfig:
    enabled: bool = False
    """Recompute BatchNorm running statistics at the end of every train phase (precise BN)."""
    num_samples: int = 8192
    """Training samples (whole batches, rounded up) the statistics are averaged over."""


@dataclass
class FinetuneConfig:
    pretrained: Optional[str] = None
    """Checkpoint to start from: a classy_fast checkpoint or a plain (torchvision) state dict. None: no fine-tuning."""
    head: str = "auto"
    """Dotted name of the classifier module ('fc', 'classifier.1', 'heads.head'); 'auto': the last nn.Linear."""
    reset_head: bool = False
    """Re-initialize the head even when its shape matches the checkpoint's (it is always new when the class
    count differs)."""
    freeze_trunk: bool = False
    """Train only the head: the trunk's parameters get no gradient and its modules stay in eval mode."""
    head_lr: Optional[float] = None
    """Peak learning rate of the head (None: optimizer.lr)."""
    trunk_lr: Optional[float] = None
    """Peak learning rate of the trunk when it is not frozen (None: optimizer.lr)."""


@dataclass
class ExportConfig:
    enabled: bool = False
    """Export the trained model at the end of the run into OUTPUT/export/."""
    format: Literal["export", "torchscript"] = "export"
    """'export': torch.export → model.pt2 (torch.export.load(path).module()), with a dynamic batch dimension;
    'torchscript': torch.jit.trace → model.ts (torch.jit.load; deprecated by PyTorch, for older runtimes)."""
    use_ema: bool = False
    """Export the EMA weights instead of the trained ones (needs ema.enabled)."""


@dataclass
class PredictionsConfig:
    enabled: bool = False
    """Write one CSV row per test sample (id, predicted, target) after the last test phase."""
    path: Optional[str] = None
    """Output file (None: OUTPUT/predictions.csv)."""


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    """Stop training when a test metric has not improved for `patience` test phases in a row."""
    metric: str = "top1"
    """Test metric to watch ('top1', 'loss', 'top1_ema', ...)."""
    mode: Literal["auto", "max", "min"] = "auto"
    """'max' or 'min' (is higher better?); 'auto': 'min' for metrics named loss*, else 'max'."""
    patience: int = 5
    """Test phases without an improvement before the run stops."""
    min_delta: float = 0.0
    """Smallest change of the metric that counts as an improvement."""
