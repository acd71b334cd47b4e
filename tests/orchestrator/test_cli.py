"""The CLI end to end, in a subprocess, on a tiny config."""

import json
import os
import subprocess
import sys

import yaml

from ..conftest import tiny_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "classy_fast.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_trains_and_writes_outputs(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "ignored")))
    out = tmp_path / "out"
    r = run_cli("--config", str(cfg_path), "--epochs", "2", "--lr", "0.05", "--output-dir", str(out),
                "--set", "hooks.log_interval=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"outputs: {out}" in r.stdout
    phases = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(p["phase_type"], p["epoch"]) for p in phases] == [("train", 0), ("test", 0), ("train", 1), ("test", 1)]
    for p in phases:
        assert {"phase_type", "epoch", "loss", "top1", "top5", "lr", "images_per_sec", "seconds"} <= p.keys()
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["epochs"] == 2 and resolved["optimizer"]["lr"] == 0.05 and resolved["hooks"]["log_interval"] == 3
    assert (out / "checkpoints" / "last.pt").exists()
    assert (out / "metrics.csv").read_text().startswith("phase_type,epoch,loss,top1")

    # --eval-only --resume evaluates the checkpoint and reproduces the final test accuracy; in the training
    # run's own directory it writes eval_* files and leaves the run's config.yaml and metrics alone.
    before = {name: (out / name).read_text() for name in ("config.yaml", "metrics.jsonl", "metrics.csv")}
    r2 = run_cli("--config", str(cfg_path), "--eval-only", "--resume", str(out / "checkpoints" / "last.pt"),
                 "--output-dir", str(out), cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert f"outputs: {out}/eval_config.yaml, {out}/eval_metrics.jsonl, {out}/eval_metrics.csv" in r2.stdout
    evaluated = json.loads((out / "eval_metrics.jsonl").read_text())
    assert evaluated["top1"] == phases[-1]["top1"]
    assert yaml.safe_load((out / "eval_config.yaml").read_text())["test_only"] is True
    assert before == {name: (out / name).read_text() for name in before}


def test_cli_config_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer:\n  momentun: 0.9\n")
    r = run_cli("--config", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "bad.yaml" in r.stderr and "optimizer.momentun" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("--set", "model.name=no_such_net", "--output-dir", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "no_such_net" in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_corrupt_checkpoint_and_leaves_it(tmp_path):
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    r = run_cli("--resume", str(ckpt), "--output-dir", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "last.pt" in r.stderr and "not a readable checkpoint" in r.stderr
    assert ckpt.read_bytes() == b"PK\x03\x04 truncated"


def test_cli_mismatched_checkpoint_and_bad_options_are_clear_errors(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "ignored")))
    out = tmp_path / "out"
    assert run_cli("--config", str(cfg_path), "--epochs", "2", "--output-dir", str(out), cwd=tmp_path).returncode == 0
    # Resuming into another model: the file, torch's mismatch and the model it was trained with.
    r = run_cli("--config", str(cfg_path), "--epochs", "3", "--output-dir", str(out), "--resume", "auto",
                "--set", "model.width=8", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: {out}/checkpoints/last.pt: does not fit this run" in r.stderr and "size mismatch" in r.stderr
    assert "'width': 4" in r.stderr
    cases = [
        (["--set", "model.kwargs={depth: 3}"], "model 'small_resnet' with model.kwargs {'depth': 3}"),
        (["--set", "optimizer.kwargs={betas2: 1}"], "optimizer 'sgd' with optimizer.kwargs {'betas2': 1}"),
        (["--set", "hooks.extra=[{name: time_to_accuracy, options: {target: 0.9}}]"],
         "hooks.extra: hook 'time_to_accuracy' with options {'target': 0.9}"),
        (["--set", "hooks.profiler.enabled=true", "--set", "hooks.profiler.active=0"], "active ≥ 1"),
    ]
    for args, message in cases:
        r = run_cli("--config", str(cfg_path), "--output-dir", str(tmp_path / "bad"), *args, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr and message in r.stderr, (args, r.stderr[-1500:])


def test_cli_names_an_unwritable_output_and_a_checkpoint_of_another_version(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "ignored", epochs=1)))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output directory should be")
    r = run_cli("--config", str(cfg_path), "--output-dir", str(blocked / "run"), cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr and str(blocked) in r.stderr and "Traceback" not in r.stderr

    import torch

    out = tmp_path / "out"
    assert run_cli("--config", str(cfg_path), "--output-dir", str(out), cwd=tmp_path).returncode == 0
    last = out / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["lr_controller"]  # as if written by a version without it
    torch.save(state, last)
    r = run_cli("--config", str(cfg_path), "--output-dir", str(out), "--epochs", "2", "--resume", "auto", cwd=tmp_path)
    assert r.returncode == 2 and "has no entry 'lr_controller'" in r.stderr and str(last) in r.stderr


def test_cli_device_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli("--device", "cuda", "--output-dir", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: device 'cuda' requested but torch.cuda.is_available() is False (set device: cpu or auto)")
