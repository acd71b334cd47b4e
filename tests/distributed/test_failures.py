"""A rank that dies, hangs or fails ends the whole 2-rank job within the timeout, and the error names it;
a preemption signal to one rank stops both at the same step with a checkpoint."""

import os
import re

import pytest

from classy_fast.checkpoint import load_checkpoint
from classy_fast.preemption import EXIT_PREEMPTED

from .launch import run_ranks, tiny_config, write_config

TIMEOUT_S = 10  # distributed.timeout_seconds for these runs


def run_with_fault(tmp_path, mode, rank, at_update=3):
    hooks = {**tiny_config("x")["hooks"], "extra": [{"name": "fault", "options": {"rank": rank, "at_update": at_update,
                                                                                  "mode": mode}}]}
    cfg = tiny_config(tmp_path / mode, hooks=hooks, epochs=3, data={"batch_size": 8},
                      distributed={"timeout_seconds": TIMEOUT_S})
    results = run_ranks(2, ["--config", write_config(tmp_path / f"{mode}.yaml", cfg)], timeout=60)
    fault = [r for r in results if "fault: rank" in r.output]
    assert fault, "the fault never fired:\n" + "\n".join(r.output[-2000:] for r in results)
    fired_at = float(re.search(r"fault: rank \d \w+ at update \d+ t=([\d.]+)", fault[0].output).group(1))
    return results, fired_at


def error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines, f"rank {result.rank} printed no error line:\n{result.output[-3000:]}"
    return lines[-1]


def test_killed_rank_ends_the_job_naming_it(tmp_path):
    (r0, r1), fired_at = run_with_fault(tmp_path, "kill", rank=1)
    assert r1.returncode == -9
    assert r0.returncode == 4, r0.output[-3000:]
    assert re.search(r"rank 1 stopped responding", error_line(r0)), error_line(r0)
    assert r0.ended_at - fired_at < TIMEOUT_S


def test_hung_rank_ends_the_job_naming_it(tmp_path):
    (r0, r1), fired_at = run_with_fault(tmp_path, "hang", rank=1)
    assert r0.returncode == 4 and r1.returncode == 4, (r0.output[-3000:], r1.output[-3000:])
    assert re.search(r"rank 1 is not in a collective", error_line(r0)), error_line(r0)
    assert "rank_driver.py" in error_line(r0)  # where rank 1's main thread is stuck
    assert max(r0.ended_at, r1.ended_at) - fired_at < TIMEOUT_S + 8  # the collective timeout, then the teardown


def test_failing_rank_is_named_by_the_others(tmp_path):
    (r0, r1), _ = run_with_fault(tmp_path, "raise", rank=1)
    assert r1.returncode == 2 and "error: rank 1: ValueError: injected failure on rank 1" in r1.output
    assert r0.returncode == 4 and "rank 1 failed: ValueError: injected failure" in error_line(r0), r0.output[-3000:]


def test_killed_rank_0_store_host_is_named(tmp_path):
    (r0, r1), fired_at = run_with_fault(tmp_path, "kill", rank=0)
    assert r0.returncode == -9
    assert r1.returncode == 4, r1.output[-3000:]
    assert "rank 0, which hosts it, has died" in error_line(r1), error_line(r1)
    assert r1.ended_at - fired_at < TIMEOUT_S


def test_sigterm_to_one_rank_stops_both_at_the_same_step_with_a_checkpoint(tmp_path):
    """Rank 1 alone is signalled at update 3; the ranks agree at the next log interval (step 4),
    rank 0 writes that step's checkpoint, and both exit 75."""
    (r0, r1), _ = run_with_fault(tmp_path, "sigterm", rank=1)
    assert r0.returncode == EXIT_PREEMPTED and r1.returncode == EXIT_PREEMPTED, (r0.output[-3000:], r1.output[-3000:])
    assert "preempted (another rank's signal) at epoch 1, step 4" in r0.output, r0.output[-3000:]
    state = load_checkpoint(os.path.join(tmp_path, "sigterm", "checkpoints", "last.pt"))
    assert state["progress"]["step_in_phase"] == 4 and state["progress"]["num_updates"] == 4
