"""The unchanged ``python -m classy_fast.train`` command under torchrun; ZeRO and no_sync accumulation; DDP options."""

import subprocess
import sys

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint

from .launch import ROOT, base_env, read_metrics, run_ranks, tiny_config, write_config
from .test_ddp_equivalence import assert_metrics_equal, assert_weights_close, run_in_process


def test_torchrun_runs_the_plain_cli_with_ddp_options(tmp_path):
    """2 processes via torchrun --standalone, BatchNorm model, bf16 gradient compression, buffers synced every forward."""
    out = tmp_path / "torchrun"
    cfg = tiny_config(out, model={"name": "small_resnet", "width": 4}, epochs=1, data={"batch_size": 8},
                      distributed={"grad_compression": "bf16", "broadcast_buffers": "forward", "static_graph": False,
                               "find_unused_parameters": True})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "classy_fast.train", "--config", write_config(tmp_path / "cfg.yaml", cfg)]
    r = subprocess.run(cmd, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "distributed: 2 processes (torchrun launch), backend gloo" in r.stderr
    assert "compression=bf16" in r.stderr
    assert r.stdout.count("done: test top1=") == 1  # only the primary prints
    metrics = read_metrics(out)
    assert [m["phase_type"] for m in metrics] == ["train", "test"]
    assert all(m["loss"] == m["loss"] and m["loss"] < 10 for m in metrics)  # finite
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert state["distributed"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in state["model"])  # plain keys: loads on any world size


def test_zero_optimizer_with_accumulation_matches_one_process(tmp_path):
    """ZeRO-sharded SGD state, 2 micro-steps per update under no_sync: same weights as 1 process × 16 × 2 micro-steps."""
    common = dict(simulated_global_batch_size=32, optimizer={"lr": 0.05, "fused": "torch", "momentum": 0.9})
    out = tmp_path / "zero"
    cfg = tiny_config(out, data={"batch_size": 8}, distributed={"zero_optimizer": True}, **common)
    results = run_ranks(2, ["--config", write_config(tmp_path / "zero.yaml", cfg)])
    for r in results:
        assert r.returncode == 0, f"rank {r.rank}:\n{r.output[-3000:]}"
    assert "ZeroRedundancyOptimizer over 2 ranks" in results[0].output
    ref = run_in_process(tiny_config(tmp_path / "ref", **common))
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert_weights_close(state["model"], ref.model.state_dict())
    assert_metrics_equal(read_metrics(out), read_metrics(ref.cfg.output_dir))
    # The checkpoint holds the whole optimizer state (gathered from both shards), in the plain optimizer's layout.
    ref_opt = ref.optimizer.state_dict()
    assert sorted(state["optimizer"]["state"]) == sorted(ref_opt["state"])
    for i, s in ref_opt["state"].items():
        torch.testing.assert_close(state["optimizer"]["state"][i]["momentum_buffer"], s["momentum_buffer"],
                                   rtol=1e-4, atol=1e-6)


def test_single_process_ddp_runs_the_distributed_path_on_one_process(tmp_path):
    """distributed.single_process_ddp: plain python, world size 1, yet process group, DDP, SyncBN, ZeRO, compression."""
    out = tmp_path / "single"
    cfg = tiny_config(out, model={"name": "small_resnet", "width": 4}, epochs=1,
                      distributed={"single_process_ddp": True, "sync_batchnorm": True, "zero_optimizer": True,
                                   "grad_compression": "fp16"})
    r = subprocess.run([sys.executable, "-m", "classy_fast.train", "--config", write_config(tmp_path / "c.yaml", cfg)],
                       cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "distributed: 1 processes (single launch), backend gloo" in r.stderr
    assert "DDP over 1 ranks" in r.stderr and "ZeroRedundancyOptimizer over 1 ranks" in r.stderr
    assert [m["phase_type"] for m in read_metrics(out)] == ["train", "test"]


def test_exit_process_is_a_normal_exit_when_no_process_group_was_shut_down():
    """Only after a process group existed does the CLI skip the interpreter's teardown (os._exit)."""
    from classy_fast import distributed

    with pytest.raises(SystemExit) as exc:
        distributed.exit_process(3)
    assert exc.value.code == 3
