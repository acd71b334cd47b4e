"""``python -m classy_fast.bench``: training throughput, classy_fast against a hand-written loop.

In one process, on one device, one after another, on the same device-resident synthetic batches:

1. ``baseline``: what a careful user writes by hand: a torchvision model, ``torch.optim.SGD``
   (``fused=True``, on CUDA and CPU alike), ``F.cross_entropy(label_smoothing=0.1)``, autocast,
   channels_last, a plain Python loop;
2. ``eager``: classy_fast's task step (fused loss and optimizer where built, device meters, device lr);
3. ``graphs``: the same with the whole step captured as a CUDA graph (CUDA only);
4. ``compile`` (with ``--compile``): the task step with the forward and loss compiled as one
   ``torch.compile`` graph (the trainer's ``compile: true``; inductor fuses BatchNorm, ReLU and the
   residual adds, forward and backward, which is where a conv net's non-conv time goes);
5. ``compile_graphs`` (with ``--compile``, CUDA only): both: the compiled forward/backward inside
   the whole-step CUDA graph.

Each mode runs ``--warmup`` steps, then ``--windows`` windows of ``--steps`` steps timed with CUDA
events (host clock on CPU); the figure is the median window's images/s, and the ratio is to the
baseline of the same run. A JSON record (device, torch version, config, figures) is written with
``--json``. On CPU use a small model (``--model small_resnet --image-size 32``) — CI smoke-tests it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

log = logging.getLogger("classy_fast")


MODES = ("baseline", "eager", "graphs", "compile", "compile_graphs")


def make_batches(n: int, batch_size: int, channels: int, size: int, num_classes: int, device: torch.device):
    g = torch.Generator(device="cpu").manual_seed(0)
    return [(torch.randn(batch_size, channels, size, size, generator=g).to(device),
             torch.randint(0, num_classes, (batch_size,), generator=g).to(device)) for _ in range(n)]


def time_mode(step: Callable, batches, warmup: int, steps: int, windows: int,
              device: torch.device) -> Tuple[List[float], float]:
    """Images/s of each timed window, and the seconds the warm-up took (compilation and graph
    capture happen there: one-time costs, reported apart from the throughput)."""
    bs = batches[0][0].shape[0]
    t0 = time.perf_counter()
    for i in range(warmup):
        step(*batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    rates = []
    for _ in range(windows):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(steps):
                step(*batches[i % len(batches)])
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for i in range(steps):
                step(*batches[i % len(batches)])
            seconds = time.perf_counter() - t0
        rates.append(steps * bs / seconds)
    return rates, warmup_s


def baseline_step(args, device: torch.device, num_classes: int) -> Callable:
    from .config import ModelConfig
    from .models import build_model

    model = build_model(ModelConfig(name=args.model), num_classes, 3).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused=True on CPU too: torch has a fused CPU SGD, and the baseline is the fastest stock optimizer.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5, fused=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None

    def step(x, y):
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return step


def classy_task(args, device: torch.device, num_classes: int, cuda_graphs: bool, compile_model: bool):
    """The task a `python -m classy_fast.train` run with these settings would build."""
    from .config import config_from_dict
    from .task import ClassificationTask

    cfg = config_from_dict({
        "device": device.type, "amp": args.amp, "channels_last": args.channels_last, "cuda_graphs": cuda_graphs,
        "compile": compile_model,
        "epochs": 1000,  # the lr schedule only needs a long horizon here
        "model": {"name": args.model},
        "data": {"name": "synthetic", "image_size": args.image_size, "num_classes": num_classes, "channels": 3,
                 "batch_size": args.batch_size, "test_batch_size": args.batch_size,
                 "synthetic_train_size": args.batch_size, "synthetic_test_size": args.batch_size},
        "loss": {"label_smoothing": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 5e-5},
        "hooks": {"progress_bar": False, "log_interval": 0, "metrics_files": False, "model_complexity": False,
                  "checkpoint": {"enabled": False}},
    }, "bench")
    task = ClassificationTask(cfg)
    task.phase = task.phases[0]
    task.model.train()
    return task


def resolve_device(args) -> torch.device:
    """``--device``: 'auto' is CUDA when a GPU is visible, else CPU."""
    return torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def select_modes(args, device: torch.device) -> List[str]:
    """The modes to time: ``--modes`` when given, else every mode the device and ``--compile`` allow."""
    requested = [m for m in (args.modes or "").split(",") if m]
    if requested:
        return requested
    cuda = device.type == "cuda"
    return (["baseline", "eager"] + (["graphs"] if cuda else []) + (["compile"] if args.compile else [])
            + (["compile_graphs"] if args.compile and cuda else []))


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _check_json_path(path: str) -> Optional[str]:
    """Why ``--json PATH`` cannot be written, or None: checked before any timing, so a bad path
    does not cost a run (the record is written after every mode)."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return f"{path} is a directory"
    if not os.path.isdir(folder):
        return f"directory {folder} does not exist"
    tmp = f"{target}.tmp"
    try:
        with open(tmp, "w"):
            pass
        os.remove(tmp)
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror or exc}"
    return None


def validate(p: argparse.ArgumentParser, args) -> None:
    """Refuse, argparse-style (exit 2), what would fail or mislabel a figure, before anything is timed."""
    unknown = [m for m in args.modes.split(",") if m and m not in MODES]
    if unknown:
        p.error(f"--modes: unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    device = resolve_device(args)
    modes = select_modes(args, device)
    if device.type != "cuda":
        graphed = [m for m in modes if m in ("graphs", "compile_graphs")]
        if graphed:
            p.error(f"--modes {','.join(graphed)}: whole-step CUDA graphs need a CUDA device, and the device is "
                    f"{device.type} (the step would run eagerly under that label); leave them out on CPU")
    if any(m != "baseline" for m in modes):  # the task's precision rules (fp16 needs CUDA)
        from .amp import resolve_amp

        try:
            resolve_amp(args.amp, device)
        except ValueError as exc:
            p.error(f"--amp {args.amp} on {device.type}: {exc}")
    if args.json:
        problem = _check_json_path(args.json)
        if problem:
            p.error(f"--json {args.json}: {problem}")


def run(args, on_mode: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Time every mode; ``on_mode(record)`` is called after each one with the record so far, so a
    run stopped later (a timeout, a crash in a later mode) keeps what it measured. A mode that
    raises is recorded with its error and the others still run."""
    device = resolve_device(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = select_modes(args, device)
    batches = make_batches(args.distinct_batches, args.batch_size, 3, args.image_size, args.num_classes, device)
    if args.channels_last:  # as a channels_last data pipeline would deliver them, for every mode alike
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    record = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "results": {},
    }
    results: Dict[str, Dict] = record["results"]
    for mode in modes:
        torch.manual_seed(0)
        step = task = None
        try:
            if mode == "baseline":
                step = baseline_step(args, device, args.num_classes)
            else:
                task = classy_task(args, device, args.num_classes, cuda_graphs=mode in ("graphs", "compile_graphs"),
                                   compile_model=mode in ("compile", "compile_graphs"))
                step = task._train_step
            rates, warmup_s = time_mode(step, batches, args.warmup, args.steps, args.windows, device)
            results[mode] = {"images_per_sec": statistics.median(rates), "windows": rates, "warmup_s": warmup_s}
        except Exception as exc:  # noqa: BLE001 - one mode's failure must not lose the others' figures
            log.exception("mode %s failed", mode)
            results[mode] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        step = task = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        base = results.get("baseline", {}).get("images_per_sec")
        for r in results.values():
            if "images_per_sec" in r:
                r["ratio_to_baseline"] = r["images_per_sec"] / base if base else None
        if on_mode is not None:
            on_mode(record)
    return record


def print_header(record: Dict) -> None:
    cfg = record["config"]
    print(f"# {cfg['model']} bs={cfg['batch_size']} {cfg['image_size']}px amp={cfg['amp']} "
          f"channels_last={cfg['channels_last']} on {record['device']} (torch {record['torch']})")
    print(f"{'mode':<15} {'img/s':>10} {'vs baseline':>12} {'warm-up s':>10}", flush=True)


def print_row(mode: str, r: Dict) -> None:
    if "error" in r:
        print(f"{mode:<15} failed: {r['error']}", flush=True)
        return
    ratio = f"{r['ratio_to_baseline']:.2f}x" if r["ratio_to_baseline"] else "-"
    print(f"{mode:<15} {r['images_per_sec']:>10.1f} {ratio:>12} {r['warmup_s']:>10.1f}", flush=True)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    p = argparse.ArgumentParser(prog="python -m classy_fast.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    positive, non_negative = _int_at_least(1), _int_at_least(0)
    p.add_argument("--batch-size", type=positive, default=256)
    p.add_argument("--image-size", type=positive, default=224)
    p.add_argument("--num-classes", type=positive, default=1000)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=positive, default=20, help="steps per timed window")
    p.add_argument("--windows", type=positive, default=5, help="timed windows (the median is reported)")
    p.add_argument("--warmup", type=non_negative, default=15, help="untimed steps first (graph capture happens here)")
    p.add_argument("--distinct-batches", type=positive, default=4)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when a GPU is visible, else cpu")
    p.add_argument("--compile", action="store_true", help="also time the task step with torch.compile")
    p.add_argument("--modes", default="", help="comma list to run a subset: baseline,eager,graphs,compile,compile_graphs")
    p.add_argument("--json", help="write the record to this file")
    args = p.parse_args(argv)
    validate(p, args)

    def on_mode(record: Dict) -> None:  # print and save each mode as it finishes
        if len(record["results"]) == 1:
            print_header(record)
        print_row(*list(record["results"].items())[-1])
        if args.json:
            write_json(record, args.json)

    record = run(args, on_mode)
    return 1 if any("error" in r for r in record["results"].values()) else 0


def write_json(record: Dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
