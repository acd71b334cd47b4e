"""Preemption: a signal stops the run at the next safe point with a checkpoint that resumes bit-exactly."""

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from classy_fast.checkpoint import load_checkpoint
from classy_fast.hooks import ClassyHook
from classy_fast.preemption import EXIT_PREEMPTED, Preempted, PreemptionWatcher

from ..conftest import tiny_config_dict
from .test_task import assert_bitwise_equal, make_task, weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SignalAt(ClassyHook):
    """Sends ``sig`` to this process after the given train micro-step of the run (1-based), or at the
    end of the first test phase."""

    def __init__(self, sig, step=None, in_test=False):
        self.sig, self.step, self.in_test, self.steps = sig, step, in_test, 0

    def on_step(self, task):
        if task.in_train_phase:
            self.steps += 1
            if self.steps == self.step:
                os.kill(os.getpid(), self.sig)
        elif self.in_test and task.step_in_phase == 1:
            os.kill(os.getpid(), self.sig)
            self.in_test = False


def config(tmp_path, name, checkpoint=None, **top):
    hooks = {"progress_bar": False, "log_interval": 2, "model_complexity": False, "checkpoint": checkpoint or {}}
    return tiny_config_dict(tmp_path / name, hooks=hooks, **top)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_mid_epoch_checkpoints_there_and_resumes_bit_identically(tmp_path, sig):
    torch.set_num_threads(1)
    straight = make_task(config(tmp_path, "a"))
    straight.run()
    task = make_task(config(tmp_path, "b"), [SignalAt(sig, step=9)])  # 6 steps per epoch: epoch 2, step 3
    before = signal.getsignal(sig)
    with pytest.raises(Preempted, match=rf"preempted \({signal.Signals(sig).name}\) at epoch 2, step 3"):
        task.run()
    assert task.preempted and not task.failed
    assert signal.getsignal(sig) is before  # the handler is the run's only
    state = load_checkpoint(str(tmp_path / "b" / "checkpoints" / "last.pt"))
    assert state["progress"]["step_in_phase"] == 3 and state["progress"]["num_updates"] == 9
    resumed = make_task(config(tmp_path, "b"))
    resumed.run()
    assert_bitwise_equal(weights(straight), weights(resumed))


def test_accumulation_stops_only_after_a_whole_update(tmp_path):
    torch.set_num_threads(1)
    d = config(tmp_path, "acc", simulated_global_batch_size=32)  # 2 micro-batches of 16 per update
    task = make_task(d, [SignalAt(signal.SIGUSR1, step=3)])  # micro-step 3: half an update
    with pytest.raises(Preempted):
        task.run()
    state = load_checkpoint(str(tmp_path / "acc" / "checkpoints" / "last.pt"))
    assert state["progress"]["step_in_phase"] == 4 and state["progress"]["num_updates"] == 2


def test_a_test_phase_runs_to_its_end_before_stopping(tmp_path):
    torch.set_num_threads(1)
    task = make_task(config(tmp_path, "t"), [SignalAt(signal.SIGUSR1, in_test=True)])
    with pytest.raises(Preempted, match="at the end of phase 2"):
        task.run()
    state = load_checkpoint(str(tmp_path / "t" / "checkpoints" / "last.pt"))
    assert state["progress"]["phase_index"] == 2 and state["progress"]["step_in_phase"] == 0


def test_no_handler_without_signals_or_checkpoints(tmp_path):
    for d in (config(tmp_path, "off", checkpoint={"on_signal": []}),
              config(tmp_path, "nockpt", checkpoint={"enabled": False})):
        task = make_task(d)
        assert task.preemption.signals == []
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        PreemptionWatcher(["SIGNOPE"])


def test_watcher_records_the_first_signal_and_restores_handlers():
    watcher = PreemptionWatcher(["SIGUSR1"])
    before = signal.getsignal(signal.SIGUSR1)
    with watcher:
        assert not watcher.should_stop(collective_ok=False)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert watcher.should_stop(collective_ok=False) and watcher.describe() == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before



def test_only_a_second_signal_of_the_same_kind_gets_the_previous_handler():
    """SLURM's notice (SIGUSR1) then its SIGTERM at the time limit: the SIGTERM must not kill a run that is
    on its way to the checkpoint (the previous handler is for a signal repeated: 'the user insists')."""
    calls = []
    previous = {sig: signal.signal(sig, lambda signum, frame: calls.append(signum))
                for sig in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        watcher = PreemptionWatcher(["SIGTERM", "SIGUSR1"])
        with watcher:
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)
            assert calls == [] and watcher.describe() == "SIGUSR1"
            os.kill(os.getpid(), signal.SIGUSR1)  # the same kind again: the previous handler
            assert calls == [signal.SIGUSR1]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_cli_exits_75_after_sigterm_and_resume_auto_finishes(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "ignored", epochs=40)))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "classy_fast.train", "--config", str(cfg_path), "--output-dir", str(out)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # the first epoch's log line: training has started
        seen.append(line)
        if "train epoch 1 done" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    output = "".join(seen) + rest
    assert proc.returncode == EXIT_PREEMPTED, output
    assert "preempted (SIGTERM)" in output and "continue with --resume auto" in output
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert 1 <= state["progress"]["train_phases_done"] < 40
    done = subprocess.run(args + ["--resume", "auto", "--epochs", "40"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(str(out / "checkpoints" / "last.pt"))["progress"]["train_phases_done"] == 40
