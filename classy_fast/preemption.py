"""Preemption: checkpoint mid-epoch and exit when the scheduler says the job is about to die.

SLURM (``--signal``), Kubernetes and torchrun's agent send SIGTERM (or a chosen signal such as
SIGUSR1) some seconds before they kill a job. With ``hooks.checkpoint.on_signal`` (SIGTERM and
SIGUSR1 by default) the handler only records the signal; the task then stops at the next safe
point, writes OUTPUT/checkpoints/last.pt with the exact state there (the mid-epoch checkpoint a
``--resume auto`` continues bit-for-bit on CPU, as after ``every_n_steps``), and the CLI exits
with code 75 (EX_TEMPFAIL: a requeue script resumes). Nothing after the last phase-end
checkpoint is lost, and nothing is exported as if training had finished.

Safe points: after a train step that completed an optimizer update (never between accumulation
micro-steps, whose gradients are not checkpointed) and at phase ends; a test phase runs to its end
(it is short, and resuming halfway through one would count its first batches twice). Alone, the
flag is read after every such step (a host bool: no device sync). Under torch.distributed the
ranks must stop at the same step (the checkpoint's meter states are a collective), so they agree
by an all-reduce of the flag at log intervals (``hooks.log_interval``, where the step syncs
anyway) and at phase ends. A second signal of the same kind gets the previous handler (the
default: immediate termination).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Dict, List, Optional

from . import distributed

log = logging.getLogger("classy_fast")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): try again later, i.e. requeue and --resume auto


class Preempted(Exception):
    """The run stopped at a safe point after a preemption signal; its checkpoint holds that point."""


class PreemptionWatcher:
    """Records the first of ``signals`` while installed (``with watcher:``, main thread only)."""

    def __init__(self, signal_names: List[str]):
        self.signals = [_signal_number(name) for name in signal_names]
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "PreemptionWatcher":
        if self.signals and threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: preemption signals are not handled (no mid-epoch checkpoint)")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        if signum != self.received:  # another kind (SLURM's SIGTERM after its SIGUSR1 notice): the stop is under way
            return
        # A second signal of the same kind: the scheduler (or the user) insists. Hand it to the previous handler.
        previous = self._previous.get(signum, signal.SIG_DFL)
        signal.signal(signum, previous)
        signal.raise_signal(signum)

    def should_stop(self, collective_ok: bool) -> bool:
        """Whether to stop now. Under torch.distributed only where ``collective_ok`` (every rank calls
        it at the same point) and then by agreement of all ranks; alone, whenever a signal came."""
        if not distributed.is_distributed():
            return self.received is not None
        if not collective_ok:
            return False
        return distributed.all_reduce_host_sum(1.0 if self.received is not None else 0.0) > 0

    def describe(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "another rank's signal"


def _signal_number(name: str) -> int:
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"hooks.checkpoint.on_signal: unknown signal {name!r} (e.g. 'SIGTERM', 'SIGUSR1')") from None
