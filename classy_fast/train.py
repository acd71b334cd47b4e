"""``python -m classy_fast.train``: train (or evaluate) a classifier from a config.

With no arguments it trains the embedded default (a small ResNet on the bundled Fashion-MNIST
subset) on CUDA when available, else on the CPU, and writes OUTPUT/config.yaml,
OUTPUT/metrics.jsonl (+ .csv) and OUTPUT/checkpoints/last.pt.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import List, Optional

from . import distributed
from .checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint
from .config import ConfigError, TrainConfig, load_config, output_name
from .preemption import EXIT_PREEMPTED, Preempted

log = logging.getLogger("classy_fast")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m classy_fast.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML or JSON config file (defaults: the embedded default run)")
    p.add_argument("--epochs", type=int, help="number of train phases")
    p.add_argument("--batch-size", type=int, help="training batch size per process")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"])
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="where config, metrics and checkpoints go")
    p.add_argument("--resume", help="checkpoint path, or 'auto' for OUTPUT/checkpoints/last.pt if present")
    p.add_argument("--eval-only", action="store_true", help="only run the test phase (with --resume PATH)")
    p.add_argument("--cuda-graphs", action="store_true", help="capture the whole train step as a CUDA graph")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward pass and loss (mode: compile_mode)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optimizer.lr=0.2 --set model.name=resnet18")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    # Flag values go in as argparse typed them, not through --set's YAML parsing: an --output-dir of
    # 2024-01-05 or a --resume of 'true' stay strings, and an error names the flag the user typed.
    flags = [
        ("epochs", args.epochs, "--epochs"), ("data.batch_size", args.batch_size, "--batch-size"),
        ("optimizer.lr", args.lr, "--lr"), ("device", args.device, "--device"), ("amp", args.amp, "--amp"),
        ("seed", args.seed, "--seed"), ("output_dir", args.output_dir, "--output-dir"),
        ("resume", args.resume, "--resume"), ("test_only", args.eval_only or None, "--eval-only"),
        ("cuda_graphs", args.cuda_graphs or None, "--cuda-graphs"), ("compile", args.compile or None, "--compile"),
    ]
    values = [(key, value, flag) for key, value, flag in flags if value is not None]
    return load_config(args.config, list(args.overrides), values)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        # Under torchrun/srun: join the process group (one process per GPU); alone: nothing happens.
        distributed.init_distributed(cfg.distributed, cfg.device)
        from .device import resolve_device
        from .task import ClassificationTask, NonFiniteLossError

        device = resolve_device(cfg.device)
        # Rank 0 decides what 'auto' resumes from; every rank then reads that file itself onto its own device.
        resume_path = distributed.broadcast_object(find_resume_checkpoint(cfg.resume, cfg.output_dir))
        state = load_checkpoint(resume_path, map_location=device) if resume_path else None
        if cfg.test_only and state is None:
            log.warning("evaluating an untrained model: pass --resume PATH to evaluate a checkpoint")
        task = ClassificationTask(cfg, from_checkpoint=state is not None)
        distributed.set_progress_source(lambda: (task.phase_index, task.step_in_phase))  # for hang reports
        if state is not None:
            restore(task, state, resume_path, weights_only=cfg.test_only)
            log.info("resumed from %s (phase %d, step %d)", resume_path, task.phase_index, task.step_in_phase)
        log.info("training on %s, amp=%s; outputs in %s", task.device, task.precision.mode,
                 os.path.abspath(cfg.output_dir))
        metrics = task.run()
        primary = distributed.is_primary()
        distributed.shutdown()
    except (ConfigError, CheckpointError, OSError, ValueError, KeyError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        return _error(2, e, msg)
    except NonFiniteLossError as e:
        return _error(3, e, e)
    except Preempted as e:
        primary = distributed.is_primary()
        distributed.shutdown()
        if primary:
            out = os.path.abspath(cfg.output_dir)
            print(f"{e}: state saved in {out}/checkpoints/last.pt; continue with --resume auto", file=sys.stderr)
        return EXIT_PREEMPTED
    except Exception as e:
        if not distributed.is_distributed():
            raise
        traceback.print_exc()  # unexpected: where it happened matters (this rank's own error or a failed collective)
        return _error(distributed.EXIT_DISTRIBUTED_FAILURE, e, e)
    if not primary:
        return 0
    out = os.path.abspath(cfg.output_dir)
    if metrics:
        print(f"done: test top1={metrics.get('top1', float('nan')):.4f} loss={metrics.get('loss', float('nan')):.4f}")
    else:  # resumed from the checkpoint of a finished (or early-stopped) run: no phase was left
        print("done: nothing left to run (the checkpoint's run had finished); raise --epochs to train on")
    print(f"outputs: {', '.join(_outputs(cfg, out))}")
    return 0


def _outputs(cfg, out: str) -> List[str]:
    """The files this run wrote (those its hooks produce that exist), for the last line of the CLI."""
    names = [output_name(cfg, n) for n in ("config.yaml", "metrics.jsonl", "metrics.csv")]
    if not cfg.hooks.metrics_files:
        names = names[:1]
    if cfg.hooks.predictions.enabled:
        names.append(cfg.hooks.predictions.path or output_name(cfg, "predictions.csv"))
    if not cfg.test_only:
        names += ["export/model.pt2", "export/model.ts"] if cfg.hooks.export.enabled else []
        names += ["checkpoints/last.pt", "checkpoints/best.pt"] if cfg.hooks.checkpoint.enabled else []
    paths = [n if os.path.isabs(n) else f"{out}/{n}" for n in names]
    return [p for p in paths if os.path.exists(p)]


def restore(task, state, path: str, weights_only: bool) -> None:
    """``task.load_state_dict``, with a checkpoint that does not fit this run's model or meters (torch's
    shape / key errors) reported as a CheckpointError naming the file and the model it was trained with."""
    try:
        task.load_state_dict(state, weights_only=weights_only)
    except KeyError as e:  # an entry this version of classy_fast expects is missing
        raise CheckpointError(f"{path}: has no entry {e} that this classy_fast's checkpoints hold; it was written "
                              f"by another version (format '{state.get('format')}')") from None
    except RuntimeError as e:
        if isinstance(e, CheckpointError):  # already says what is wrong (e.g. other meters mid-epoch); name the file
            raise (e if path in str(e) else CheckpointError(f"{path}: {e}")) from None
        trained = (state.get("config") or {}).get("model")
        detail = " ".join(line.strip() for line in str(e).strip().splitlines()[:2])[:300]  # torch's headline + first item
        raise CheckpointError(
            f"{path}: does not fit this run ({detail}). It was written by a run with model {trained}; pass that "
            f"run's config (OUTPUT/config.yaml) with --config.") from None


def _error(code: int, error: BaseException, message) -> int:
    """Print the error; under torch.distributed name this rank (and the one at fault) and exit at once."""
    if not distributed.is_distributed():
        print(f"error: {message}", file=sys.stderr)
        return code
    print(f"error: {distributed.fail(error)}", file=sys.stderr)
    distributed.exit_now(code)  # a process group with a failed peer can abort() in its destructor
    return code


if __name__ == "__main__":
    distributed.exit_process(main())
