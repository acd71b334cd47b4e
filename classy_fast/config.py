"""Typed run configuration: dataclasses with a docstring per field, loaded from YAML/JSON and the command line.

Loading is strict: an unknown key or a value of the wrong type is a ``ConfigError`` that names the
key and where it came from (the file, or ``--set``). The defaults are the embedded default run:
a small ResNet on the bundled Fashion-MNIST subset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple

import yaml

from .recipe_config import (EarlyStoppingConfig, EMAConfig, ExportConfig, FinetuneConfig, MixupConfig,
                            PreciseBNConfig, PredictionsConfig, RandomErasingConfig)


class ConfigError(ValueError):
    """A configuration problem, with the key and source in the message."""


@dataclass
class ModelConfig:
    name: str = "small_resnet"
    """Registered model name: 'small_resnet' or any torchvision classification model ('resnet50', 'vit_b_16', ...)."""
    width: int = 16
    """Channel width of the first stage (small_resnet only)."""
    dropout: float = 0.0
    """Dropout before the classifier (small_resnet only)."""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments passed to the model constructor."""


@dataclass
class DataConfig:
    name: str = "fashion_mnist_embedded"
    """Registered dataset: 'fashion_mnist_embedded' (bundled subset), 'fashion_mnist' (IDX files under root), 'synthetic', 'arrays' (an .npz), 'image_folder' or 'file_list' (image files; docs/data.md)."""
    root: Optional[str] = None
    """Directory of the dataset files (for datasets read from disk)."""
    batch_size: int = 128
    """Training batch size per process; the global batch is batch_size × world size (number of processes)."""
    test_batch_size: int = 512
    """Evaluation batch size per process."""
    augment: bool = True
    """Random crop (with padding) and horizontal flip on training batches."""
    crop_padding: int = 2
    """Padding (pixels) for the random crop augmentation."""
    flip: bool = True
    """Random horizontal flips when augment is on."""
    drop_last: bool = True
    """Drop the last partial training batch (keeps shapes static)."""
    synthetic_train_size: int = 4096
    """Number of training images of the 'synthetic' dataset."""
    synthetic_test_size: int = 1024
    """Number of test images of the 'synthetic' dataset."""
    image_size: int = 32
    """Side of the images of the 'synthetic' dataset."""
    num_classes: int = 10
    """Number of classes of the 'synthetic' dataset (others read it from the data)."""
    channels: int = 3
    """Image channels of the 'synthetic' dataset."""
    limit_train: Optional[int] = None
    """Use only N training samples (quick runs, tests): the first N of an in-memory set, N evenly spaced files (every class keeps a share) of an image folder or file list."""
    limit_test: Optional[int] = None
    """Use only N test samples (chosen as for limit_train)."""
    backend: Literal["auto", "dali", "torchvision", "nvjpeg"] = "auto"
    """Image-file pipeline (image_folder, file_list): 'dali', 'torchvision' (PIL DataLoader), 'nvjpeg' (decode_jpeg on the device + fused crop kernel); 'auto': dali if installed, else nvjpeg on CUDA, else torchvision."""
    num_workers: int = 4
    """Loader worker processes (torchvision, nvjpeg) or DALI CPU threads per process."""
    prefetch: int = 2
    """Batches prepared ahead (DataLoader prefetch_factor per worker, DALI prefetch_queue_depth)."""
    crop_size: int = 224
    """Side of the training crop, and of the evaluation center crop unless test_crop_size is set (image_folder, file_list)."""
    resize_size: int = 256
    """Evaluation: the shorter side is resized to this before the center crop."""
    test_crop_size: Optional[int] = None
    """Evaluation center-crop side (image_folder, file_list); None: crop_size. Low-resolution training evaluates larger (FixRes; torchvision's ResNet-50 recipe: crop_size 176, test_crop_size 224, resize_size 232)."""
    scale: Tuple[float, float] = (0.08, 1.0)
    """Random-resized-crop area range, as fractions of the image area."""
    ratio: Tuple[float, float] = (0.75, 1.3333333333333333)
    """Random-resized-crop aspect-ratio range (width / height)."""
    auto_augment: Literal["none", "trivial_augment", "rand_augment"] = "none"
    """Augmentation policy on each training crop of image files (backends torchvision and dali; data/auto_augment.py): 'trivial_augment' (TrivialAugmentWide, torchvision's ResNet-50 recipe) or 'rand_augment' (auto_augment_ops operations at auto_augment_magnitude)."""
    auto_augment_ops: int = 2
    """RandAugment: operations applied to each image."""
    auto_augment_magnitude: int = 9
    """RandAugment: magnitude bin of every operation, 0-30."""
    repeated_augmentations: int = 1
    """Repeated augmentation (image files): each sample drawn for an epoch appears this many times, differently augmented, its copies on different ranks (torchvision's RASampler, --ra-reps 4 in its recipes); the epoch keeps its length, so it holds 1/N of the distinct samples. 1: off."""
    mean: Optional[List[float]] = None
    """Per-channel mean in [0, 1] for normalization (None: ImageNet's for image files, the training set's for 'arrays')."""
    std: Optional[List[float]] = None
    """Per-channel std in [0, 1] for normalization (None: as for mean)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype of the image batches the data produces."""
    strict: bool = False
    """Stop the run at the first undecodable file or out-of-range label (naming it) instead of skipping and counting it."""


@dataclass
class LossConfig:
    name: str = "cross_entropy"
    """Registered loss: 'cross_entropy' (index targets) or 'soft_target_cross_entropy' (B×C probabilities)."""
    label_smoothing: float = 0.1
    """Label smoothing epsilon."""
    impl: Literal["auto", "fused", "reference"] = "auto"
    """'fused' requires the compiled op; 'auto' uses it when built; 'reference' is plain PyTorch."""


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    """Registered optimizer: 'sgd', 'adamw', 'rmsprop', and the fused ones when built ('lars', 'lamb')."""
    lr: float = 0.2
    """Peak learning rate (schedulers scale it)."""
    momentum: float = 0.9
    """Momentum (SGD, LARS, RMSProp)."""
    dampening: float = 0.0
    """Momentum dampening (SGD)."""
    nesterov: bool = True
    """Nesterov momentum (SGD, LARS)."""
    weight_decay: float = 5e-4
    """Weight decay (decoupled for AdamW/LAMB)."""
    betas: Tuple[float, float] = (0.9, 0.999)
    """Adam-family betas."""
    eps: float = 1e-8
    """Adam-family / RMSProp epsilon."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""
    no_weight_decay_on_norm_and_bias: bool = True
    """Put normalization-layer parameters and biases in a group without weight decay (and without LARS adaptation)."""
    max_grad_norm: Optional[float] = None
    """Clip gradients to this global L2 norm (fused into the step where the optimizer supports it)."""
    trust_coefficient: float = 0.001
    """LARS trust coefficient."""
    trust_clamp: Optional[float] = None
    """Clamp LAMB's trust ratio to at most this value (None: no clamp)."""
    fused: Literal["auto", "fused", "torch"] = "auto"
    """'fused' requires classy_fast's compiled optimizer (sgd, adamw, lars, lamb); 'auto' uses it where built for the parameters' device; 'torch' uses torch.optim (lars, lamb: their plain-PyTorch reference steps)."""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the optimizer constructor."""


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    """'constant', 'step', 'multistep', 'cosine', 'linear', 'polynomial' or 'composite'."""
    update_interval: Literal["step", "epoch"] = "step"
    """Update the learning rate every optimizer step or once per epoch ('epoch': each epoch trains at the schedule's value at its start)."""
    warmup_epochs: Optional[float] = None
    """Linear warmup from warmup_start_factor × lr over this many epochs (≥ 0; 0: none); None: min(1, epochs / 5), so a 1-epoch run still warms up. With update_interval 'epoch' it must be a whole number (a warmup ending inside an epoch would hold that whole epoch at the start factor), and None means 1 epoch from 5 epochs on, else no warmup."""
    warmup_start_factor: float = 0.1
    """Learning-rate factor at the start of the warmup, in [0, 1]; the warmup ramps linearly from it to the schedule's value where the warmup ends."""
    end_factor: float = 0.0
    """Final learning-rate factor (cosine, linear, polynomial), finite and ≥ 0."""
    step_size_epochs: float = 30.0
    """'step': decay every this many epochs (> 0), counted from the start of the run (a warmup does not shift them); in a composite part, from the start of that part."""
    milestones_epochs: List[float] = field(default_factory=lambda: [30.0, 60.0, 90.0])
    """'multistep': decay at these epochs of the run (≥ 0; a warmup does not shift them; one at or past the run's end is warned about); in a composite part, counted from the start of that part."""
    gamma: float = 0.1
    """'step'/'multistep': decay factor, finite and ≥ 0."""
    power: float = 2.0
    """'polynomial': exponent (> 0)."""
    schedules: List[Dict[str, Any]] = field(default_factory=list)
    """'composite': list of {name, length (fraction of the run, > 0; the lengths add up to 1), ...options of that schedule}. The parts are laid out on the whole run, warmup included: a warmup does not shift or shorten them (it ramps up to the composite's value where it ends); each part runs its schedule over its own length (a cosine part decays from 1 to end_factor within it). A part's warmup_epochs defaults to 0; update_interval is the scheduler's."""


@dataclass
class MeterConfig:
    name: str = "accuracy"
    """Registered meter: 'accuracy', 'precision_at_k', 'recall_at_k' (loss and throughput are always tracked)."""
    topk: List[int] = field(default_factory=lambda: [1, 5])
    """k values (accuracy, precision@k, recall@k); a k above the class count counts as the class count (precision@k divides by it)."""


@dataclass
class CheckpointConfig:
    enabled: bool = True
    """Write checkpoints under OUTPUT/checkpoints."""
    every_n_phases: int = 1
    """Write last.pt after every N train phases (and always at the end)."""
    keep_last: int = 2
    """Periodic copies (phase_XXXX.pt) to keep, the newest; 0 keeps them all."""
    save_periodic: bool = False
    """Also keep a periodic copy per checkpoint (phase_XXXX.pt)."""
    every_n_steps: int = 0
    """Also write last.pt every N train steps inside a phase (0: only at phase ends); lets a killed run resume mid-epoch."""
    best_metric: Optional[str] = None
    """Test metric to keep the best checkpoint by ('top1', 'loss', 'top1_ema', ...): OUTPUT/checkpoints/best.pt after each test phase that improves it. None: no best checkpoint."""
    best_mode: str = "auto"
    """'max' or 'min' (is higher better?); 'auto': 'min' for metrics named loss*, else 'max'."""
    on_signal: List[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """Preemption: on these signals, stop after the current step, write last.pt and exit with code 75 (resume with --resume auto); [] keeps the signals' default action."""


@dataclass
class ProfilerConfig:
    enabled: bool = False
    """Record a torch.profiler trace of a few train steps into OUTPUT/profiler."""
    wait: int = 2
    """Steps to skip before warmup."""
    warmup: int = 2
    """Steps of profiler warmup."""
    active: int = 4
    """Steps recorded."""


@dataclass
class HookSpec:
    name: str = ""
    """Registered hook name."""
    options: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for that hook."""


@dataclass
class HooksConfig:
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint writing."""
    log_interval: int = 50
    """Console log line (and non-finite loss check) every N train steps; 0 logs only at phase ends."""
    progress_bar: bool = True
    """tqdm progress bar (automatically off when stderr is not a terminal)."""
    metrics_files: bool = True
    """Write OUTPUT/metrics.jsonl and OUTPUT/metrics.csv."""
    tensorboard: bool = False
    """Write TensorBoard event files (needs the 'tensorboard' package)."""
    model_complexity: bool = True
    """Log parameter count and forward FLOPs at the input size at the start."""
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    """torch.profiler trace."""
    extra: List[HookSpec] = field(default_factory=list)
    """User-registered hooks to add, by name with options."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Export the trained model (torch.export or TorchScript) at the end of the run."""
    predictions: PredictionsConfig = field(default_factory=PredictionsConfig)
    """Per-sample predictions of the last test phase as CSV (id, predicted, target)."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """Stop when a test metric stops improving."""


@dataclass
class DistributedConfig:
    """Multi-process training (torchrun / srun); ignored by a single process. See docs/distributed.md."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend: 'auto' is NCCL when training on CUDA, gloo on the CPU."""
    timeout_seconds: int = 300
    """A collective that waits longer than this fails, and a rank silent this long ends the job (naming it)."""
    watchdog: bool = True
    """Run the heartbeat thread that names a dead or hung rank and stops the survivors."""
    find_unused_parameters: bool = False
    """DDP: allow parameters that get no gradient in some steps (costs a graph traversal per step)."""
    static_graph: bool = True
    """DDP static_graph: the same parameters are used every step (lets DDP skip per-step bookkeeping); turn off for models whose graph changes."""
    bucket_cap_mb: float = 25.0
    """DDP gradient bucket size (MiB): all-reduces start as buckets fill, overlapping the backward pass."""
    broadcast_buffers: Literal["forward", "before_eval", "off"] = "before_eval"
    """Sync buffers (BN running stats) from rank 0: before every forward (torch's default), only before test phases, or never."""
    grad_compression: Literal["none", "bf16", "fp16"] = "none"
    """All-reduce gradients in bf16/fp16 (torch's default_hooks compress hooks): half the traffic, slightly less precise."""
    sync_batchnorm: bool = False
    """Convert BatchNorm layers to SyncBatchNorm: batch statistics over the global batch instead of each rank's share."""
    zero_optimizer: bool = False
    """Shard optimizer state across ranks with torch's ZeroRedundancyOptimizer (saves memory; checkpoints gather it on rank 0)."""
    single_process_ddp: bool = False
    """Set up the process group (NCCL on CUDA) and DDP even for one process: runs the multi-GPU code path on a 1-GPU machine."""


@dataclass
class TrainConfig:
    epochs: int = 8
    """Number of train phases (epochs)."""
    test_phase_period: int = 1
    """Run a test phase after every N train phases (and always after the last)."""
    test_only: bool = False
    """Only evaluate (use with resume to evaluate a checkpoint)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' picks CUDA when available."""
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    """Autocast dtype; 'auto' is bf16 on CUDA and none on CPU. fp16 adds a GradScaler."""
    seed: int = 0
    """Seed of every random generator (torch, CUDA, numpy, python, data order)."""
    output_dir: str = "outputs/default"
    """Where config.yaml, metrics and checkpoints go."""
    resume: Optional[str] = None
    """Checkpoint path, or 'auto' for OUTPUT/checkpoints/last.pt when it exists."""
    channels_last: bool = False
    """Use the channels_last memory format for model and inputs."""
    cuda_graphs: bool = False
    """Capture the whole train step as a CUDA graph after warm-up (falls back to eager, saying why, where it cannot)."""
    num_threads: int = 0
    """torch CPU threads (0: torch's default)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """The datasets and batching."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The training loss."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """The optimizer."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """The learning-rate schedule."""
    meters: List[MeterConfig] = field(default_factory=lambda: [MeterConfig()])
    """Meters updated every step and reported per phase (loss is always tracked)."""
    hooks: HooksConfig = field(default_factory=HooksConfig)
    """Hooks: checkpoints, logging, metrics files, ..."""
    simulated_global_batch_size: Optional[int] = None
    """Accumulate gradients to one optimizer update per this many samples (a multiple of data.batch_size × world size)."""
    compile: bool = False
    """torch.compile the forward pass and the loss (one graph; the fused ops stay in it)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """torch.compile mode when compile is on."""
    tf32: bool = True
    """Allow TensorFloat-32 for float32 matmuls and convolutions on CUDA (Ampere and newer)."""
    cudnn_benchmark: bool = True
    """Let cuDNN autotune its convolution algorithms per input shape."""
    deterministic: bool = False
    """Bit-identical reruns on the same GPU: deterministic algorithms only (torch.use_deterministic_algorithms, warning for ops without one), cuDNN deterministic and not autotuned (overrides cudnn_benchmark), cuBLAS's fixed workspace. Costs speed. classy_fast's fused ops are deterministic either way."""
    mixup: MixupConfig = field(default_factory=MixupConfig)
    """Mixup / CutMix of training batches (off unless an alpha is set)."""
    random_erasing: RandomErasingConfig = field(default_factory=RandomErasingConfig)
    """Random erasing of training images (off unless prob > 0)."""
    ema: EMAConfig = field(default_factory=EMAConfig)
    """Exponential moving average of the weights, evaluated in test phases."""
    precise_bn: PreciseBNConfig = field(default_factory=PreciseBNConfig)
    """Recompute BatchNorm statistics at the end of each train phase."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Start from pretrained weights: new head, frozen trunk, head/trunk learning rates."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Multi-process (DDP) options; data.batch_size is per process, so the global batch is batch_size × world size."""


# ----------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the converted value or raises ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}': expected {expected}, got {value!r} ({type(value).__name__})")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        if isinstance(value, bool) and ("on" if value else "off") in args:
            return "on" if value else "off"  # YAML 1.1 reads a bare on/off (or yes/no) as a bool
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"a mapping of {tp.__name__} fields")
        return _from_dict(tp, value, key, source)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"a list of {len(args)} values")
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise fail("a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    raise ConfigError(f"{source}: key '{key}': unsupported field type {tp}")


def _from_dict(cls: type, data: Dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"{source}: unknown key '{key}'; valid keys here: {', '.join(sorted(names))}")
        kwargs[k] = _coerce(v, hints[k], key, source)
    return cls(**kwargs)


def config_from_dict(data: Dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Build and validate a TrainConfig from a nested dict (missing keys take their defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    return _from_dict(TrainConfig, data, "", source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` entries may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _unique_json_object(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    keys = set()
    for key, _ in pairs:
        if key in keys:
            raise ValueError(f"duplicate key {key!r}")
        keys.add(key)
    return dict(pairs)


def read_config_file(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON file into a dict; errors name the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            data = json.loads(text, object_pairs_hook=_unique_json_object)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
    except (ValueError, yaml.YAMLError) as e:  # ValueError: JSON errors, duplicate keys, a file not in UTF-8
        raise ConfigError(f"{path}: cannot parse: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_override(data: Dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the nested dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}': expected key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set '{assignment}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set '{assignment}': cannot parse value: {e}") from None
    set_key(data, key, value, f"--set '{assignment}'")


def set_key(data: Dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set the dotted ``key`` of the nested dict to ``value`` as is; errors name ``source``."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None,
                values: Optional[List[Tuple[str, Any, str]]] = None) -> TrainConfig:
    """Defaults ← file (YAML/JSON) ← ``values`` ← ``key=value`` overrides, validated once at the end.

    ``values``: (key, value, source) set literally, not parsed as YAML: command-line flags, whose
    strings stay strings (``--output-dir 2024-01-05`` is not a date, ``--resume true`` not a bool).
    Errors from the file's own keys name the file; errors from values name their source (the flag),
    errors from overrides name ``--set``.
    """
    data = read_config_file(path) if path else {}
    source = path or "<defaults>"
    config_from_dict(data, source)  # report the file's own errors against the file
    for key, value, where in values or []:
        set_key(data, key, value, where)
        config_from_dict(data, where)
    for assignment in overrides or []:
        apply_override(data, assignment)
        config_from_dict(data, f"--set {assignment}")
    return config_from_dict(data, source)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def output_name(cfg: TrainConfig, name: str) -> str:
    """A run's file name in OUTPUT: ``eval_<name>`` for a test-only run, which may share OUTPUT with the
    training run it evaluates and must not overwrite its config.yaml or append to its metrics."""
    return f"eval_{name}" if cfg.test_only else name


def save_config(cfg: TrainConfig, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
