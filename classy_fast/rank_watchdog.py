"""RankWatchdog: a thread per rank that makes a dead or hung rank end the whole job, naming it.

torch's collective timeouts already turn a hang into an error (gloo raises, NCCL aborts), and a
process that dies closes its sockets, so its peers' next collective fails. What neither does is
say *which* rank was at fault: gloo reports an address, NCCL a sequence number. And a rank that
is not inside a collective (e.g. the one that hangs) never learns that the job is over.

So each rank's watchdog talks to the rendezvous store (the TCPStore behind MASTER_ADDR:MASTER_PORT,
hosted by rank 0 or by torchrun's agent) on its own connection, every ``interval`` seconds:

* it writes a heartbeat ``hb/<rank>`` = beat counter, progress (phase, step) of the task, where
  the main thread is (file:line of its innermost Python frame), host and pid;
* it watches its two ring neighbours: a heartbeat that has not changed for ``timeout`` seconds
  means that rank was killed, crashed or froze; it then sets ``abort`` with the reason;
* it reads ``abort``: when any rank has set it, this rank logs the reason and exits (after a
  short grace so that a main thread already failing can print its own message first);
* when its own progress stalls for nearly ``timeout`` it logs who is where, so the error that
  the collective timeout is about to raise comes with a diagnosis;
* if the store itself is gone for several intervals (rank 0, or the launcher, died) it exits.

On the error path, ``report_failure`` marks this rank failed (``failed/<rank>``: the error, and
whether it was a communication error: then this rank is a victim, not the origin) and names the
rank(s) at fault: an origin that marked itself, else ranks whose heartbeat stopped, else ranks
whose main thread is outside torch's collective code while the others wait.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch.distributed as dist

from .launch_env import LaunchEnv

log = logging.getLogger("classy_fast")

_TORCH_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(dist.__file__)))
# A main thread whose innermost Python frame is in these directories is waiting on (or running) a
# collective: inside backward (DDP's all-reduce), torch.distributed, or the DDP wrapper.
_WAITING_DIRS = tuple(os.path.join(_TORCH_ROOT, d) + os.sep for d in ("distributed", "autograd", os.path.join("nn", "parallel")))
_COMM_ERROR_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe",
                     "distbackenderror", "watchdog", "store")


def main_thread_location() -> Tuple[str, bool]:
    """('dir/file.py:line in func', waiting_in_torch_collective) for the main thread's innermost Python frame."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    if frame is None:
        return "(exited)", False
    path = os.path.abspath(frame.f_code.co_filename)
    short = os.sep.join(path.split(os.sep)[-2:])
    return f"{short}:{frame.f_lineno} in {frame.f_code.co_name}", path.startswith(_WAITING_DIRS)


def is_communication_error(error: BaseException) -> bool:
    """Whether ``error`` is a failed collective (a symptom of another rank's failure) rather than this rank's own."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = f"{type(error).__name__} {error}".lower()
    return isinstance(error, RuntimeError) and any(w in text for w in _COMM_ERROR_WORDS)


class Heartbeat:
    """One parsed ``hb/<rank>`` value."""

    SEP = "\x1f"

    def __init__(self, raw: str):
        counter, progress, location, waiting, host, pid = raw.split(self.SEP)
        self.counter, self.progress, self.location = int(counter), progress, location
        self.waiting, self.host, self.pid = waiting == "1", host, int(pid)

    @classmethod
    def encode(cls, counter: int, progress: str, location: str, waiting: bool) -> str:
        return cls.SEP.join([str(counter), progress, location, "1" if waiting else "0", socket.gethostname(),
                             str(os.getpid())])

    def where(self) -> str:
        return f"host {self.host}, pid {self.pid}, at {self.progress}, main thread {self.location}"


class RankWatchdog(threading.Thread):
    def __init__(self, env: LaunchEnv, timeout_s: float, interval_s: Optional[float] = None,
                 exit_code: int = 4, namespace: Optional[str] = None):
        super().__init__(name="classy_fast-rank-watchdog", daemon=True)
        self.env = env
        self.rank, self.world = env.rank, env.world_size
        self.timeout_s = float(timeout_s)
        # ~20 beats per timeout, within [0.5, 5] s: a dead rank is named within a few seconds of
        # its peers' failed collective, and a 1000-rank job costs its store ~200-2000 small writes/s.
        self.interval_s = interval_s or min(5.0, max(0.5, self.timeout_s / 20))
        self.exit_code = exit_code
        self.progress_source: Optional[Callable[[], Any]] = None
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = namespace or f"classy_fast/watchdog/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{restart}/"
        self._stop_event = threading.Event()
        self._lock = threading.Lock()  # one store connection, used by this thread and report_failure
        self._store = dist.TCPStore(env.master_addr, env.master_port, is_master=False,
                                    timeout=datetime.timedelta(seconds=max(2.0, 2 * self.interval_s)),
                                    wait_for_workers=False)
        self._beats = 0
        self._seen: Dict[int, Tuple[int, float]] = {}  # peer → (last counter, local time it last changed)
        self._progress_seen: Tuple[str, float] = ("", time.monotonic())
        self._store_lost_since: Optional[float] = None
        self._stall_reported = False
        self._abort_seen_at: Optional[float] = None
        self.neighbours = sorted({(self.rank + 1) % self.world, (self.rank - 1) % self.world} - {self.rank})

    # ------------------------------------------------------------------ store access
    def _key(self, name: str) -> str:
        return self.prefix + name

    def _get(self, name: str) -> Optional[str]:
        with self._lock:
            key = self._key(name)
            if not self._store.check([key]):
                return None
            return self._store.get(key).decode()

    def _set(self, name: str, value: str) -> None:
        with self._lock:
            self._store.set(self._key(name), value)

    def heartbeat_of(self, peer: int) -> Optional[Heartbeat]:
        raw = self._get(f"hb/{peer}")
        return Heartbeat(raw) if raw else None

    # ------------------------------------------------------------------ the thread
    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2 * self.interval_s + 5)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._tick()
                self._store_lost_since = None
            except Exception as e:  # the store is unreachable (or answered garbage)
                now = time.monotonic()
                self._store_lost_since = self._store_lost_since or now
                if now - self._store_lost_since >= max(3 * self.interval_s, 3.0) and not self._stop_event.is_set():
                    host = self.env.store_host
                    self._die(f"lost the rendezvous store at {self.env.master_addr}:{self.env.master_port} for "
                              f"{now - self._store_lost_since:.0f}s ({type(e).__name__}): {host}, which hosts it, "
                              f"has died")
            self._stop_event.wait(self.interval_s)

    def _progress(self) -> str:
        try:
            progress = self.progress_source() if self.progress_source else "setup"
        except Exception:  # the task is mid-update; report it next beat
            return "busy"
        if isinstance(progress, tuple) and len(progress) == 2:
            return f"phase {progress[0]} step {progress[1]}"
        return str(progress)

    def _tick(self) -> None:
        now = time.monotonic()
        progress = self._progress()
        location, waiting = main_thread_location()
        self._beats += 1
        self._set(f"hb/{self.rank}", Heartbeat.encode(self._beats, progress, location, waiting))

        abort = self._get("abort")
        if abort is not None:
            self._abort_seen_at = self._abort_seen_at or now
            if now - self._abort_seen_at >= 2 * self.interval_s:  # grace: let a failing main thread speak first
                self._die(abort)
            return

        for peer in self.neighbours:
            hb = self.heartbeat_of(peer)
            counter = hb.counter if hb else -1
            last = self._seen.get(peer)
            if last is None or last[0] != counter:
                self._seen[peer] = (counter, now)
            elif now - last[1] >= self.timeout_s:
                what = "never sent a heartbeat" if hb is None else f"last seen {hb.where()}"
                reason = (f"rank {peer} stopped responding: no heartbeat for {now - last[1]:.0f}s "
                          f"(killed, crashed or frozen); {what}")
                self._set("abort", reason)
                self._die(reason)

        if progress != self._progress_seen[0]:
            self._progress_seen = (progress, now)
            self._stall_reported = False
        elif not self._stall_reported and now - self._progress_seen[1] >= max(self.timeout_s - 2 * self.interval_s,
                                                                                 0.8 * self.timeout_s):
            self._stall_reported = True
            log.error("rank %d: no progress for %.0fs (at %s; timeout %.0fs): %s", self.rank,
                      now - self._progress_seen[1], progress, self.timeout_s, self.diagnose(wait_s=0.0))

    def _die(self, reason: str) -> None:
        from .distributed import exit_now

        print(f"error: rank {self.rank}: ending the job: {reason}", file=sys.stderr, flush=True)
        exit_now(self.exit_code)

    # ------------------------------------------------------------------ diagnosis
    def _all_heartbeats(self) -> Dict[int, Optional[Heartbeat]]:
        return {r: self.heartbeat_of(r) for r in range(self.world)}

    def diagnose(self, wait_s: float) -> str:
        """Name the rank(s) at fault: origins that marked themselves failed, else silent ranks, else non-waiting ones."""
        try:
            failed = {r: self._get(f"failed/{r}") for r in range(self.world) if r != self.rank}
            origins = {r: v[2:] for r, v in failed.items() if v and v.startswith("o:")}
            if origins:
                return "; ".join(f"rank {r} failed: {v}" for r, v in sorted(origins.items()))
            before = self._all_heartbeats()
            deadline = time.monotonic() + wait_s
            silent: List[int] = []
            while True:
                after = self._all_heartbeats()
                silent = [r for r in range(self.world) if r != self.rank and failed.get(r) is None
                          and (after[r] is None or (before[r] is not None and after[r].counter == before[r].counter))]
                if time.monotonic() >= deadline or not silent:
                    break
                time.sleep(min(self.interval_s / 2, max(0.0, deadline - time.monotonic())))
            if silent and wait_s > 0:
                return "; ".join(f"rank {r} stopped responding (killed or crashed); last seen "
                                 f"{after[r].where() if after[r] else 'never'}" for r in silent)
            busy = [r for r, hb in after.items() if hb is not None and not hb.waiting and r != self.rank]
            table = "; ".join(f"rank {r}: {hb.where() if hb else 'no heartbeat'}" for r, hb in sorted(after.items()))
            if busy:  # this rank was waiting (its collective failed or stalled): the busy ones kept it waiting
                return (f"rank {', '.join(map(str, busy))} {'is' if len(busy) == 1 else 'are'} not in a collective "
                        f"while the others wait (hung there?): {table}")
            return f"no single rank at fault identified: {table}"
        except Exception as e:  # the store host is gone
            host = self.env.store_host
            return (f"the rendezvous store at {self.env.master_addr}:{self.env.master_port} is unreachable "
                    f"({type(e).__name__}): {host}, which hosts it, has died")

    def report_failure(self, error: BaseException, summary: str) -> str:
        """Mark this rank failed and return 'rank R: <error>; cause: <diagnosis>' (or just the error if it is the origin)."""
        victim = is_communication_error(error)
        try:
            self._set(f"failed/{self.rank}", ("v:" if victim else "o:") + summary)
            if not victim and self._get("abort") is None:
                self._set("abort", f"rank {self.rank} failed: {summary}")
        except Exception:
            pass  # the store is gone; the diagnosis below says so
        if not victim:
            return f"rank {self.rank}: {summary}"
        cause = self.diagnose(wait_s=2.5 * self.interval_s)
        try:
            if self._get("abort") is None:
                self._set("abort", cause)
        except Exception:
            pass
        return f"rank {self.rank}: collective failed ({summary}); cause: {cause}"
