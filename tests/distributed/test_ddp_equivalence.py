"""2 gloo ranks × batch 8 train exactly like 1 process × batch 16; meters and eval counts match; N→M resume.

The 2-rank runs are subprocesses (see launch.py); the 1-process references run in this process.
Augmentation is off: it is drawn per rank, so only the un-augmented runs can be identical.
"""

import os

import pytest
import torch

from classy_fast.checkpoint import load_checkpoint
from classy_fast.config import config_from_dict
from classy_fast.hooks import build_hooks
from classy_fast.task import ClassificationTask

from . import rank_driver  # noqa: F401  (registers the BN-free model in this process too)
from .launch import read_metrics, run_ranks, tiny_config, write_config


def run_in_process(cfg_dict, resume=None):
    torch.set_num_threads(1)
    cfg = config_from_dict(cfg_dict, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    if resume:
        task.load_state_dict(load_checkpoint(resume))
    task.run()
    return task


def run_two_ranks(tmp_path, name, **top):
    """2 ranks × batch 8 of ``tiny_config`` (+ overrides); returns (output dir, results)."""
    out = tmp_path / name
    cfg = tiny_config(out, **top)
    cfg["data"]["batch_size"] = 8
    results = run_ranks(2, ["--config", write_config(tmp_path / f"{name}.yaml", cfg)])
    for r in results:
        assert r.returncode == 0, f"rank {r.rank} failed:\n{r.output[-3000:]}"
    return out, results


def assert_weights_close(a, b, rtol=1e-4, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")


def assert_metrics_equal(dist_metrics, ref_metrics):
    assert [(m["phase_type"], m["epoch"]) for m in dist_metrics] == [(m["phase_type"], m["epoch"]) for m in ref_metrics]
    for d, r in zip(dist_metrics, ref_metrics):
        assert d["loss"] == pytest.approx(r["loss"], rel=1e-5), d
        for key in ("top1", "top5"):
            assert d[key] == pytest.approx(r[key], abs=1e-12), (key, d)


@pytest.fixture(scope="module")
def bn_free_runs(tmp_path_factory):
    """One 2×8 run (with a periodic checkpoint per epoch) and its 1×16 reference."""
    tmp = tmp_path_factory.mktemp("ddp")
    hooks = {**tiny_config("x")["hooks"], "checkpoint": {"save_periodic": True, "keep_last": 0}}
    out, results = run_two_ranks(tmp, "two_ranks", hooks=hooks)
    ref = run_in_process(tiny_config(tmp / "one_rank", hooks=hooks))
    return tmp, out, results, ref


def test_two_ranks_batch_8_match_one_rank_batch_16(bn_free_runs):
    _, out, results, ref = bn_free_runs
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert_weights_close(state["model"], ref.model.state_dict())
    assert state["distributed"]["world_size"] == 2 and state["distributed"]["global_batch"] == 16
    assert len(state["distributed"]["rng_per_rank"]) == 2


def test_meters_equal_single_process_and_eval_counts_each_sample_once(bn_free_runs):
    _, out, results, ref = bn_free_runs
    assert_metrics_equal(read_metrics(out), read_metrics(ref.cfg.output_dir))
    # The final checkpoint holds the last (test) phase's all-reduced meters: 41 samples (20 + 21), none twice.
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert int(state["loss_meter"]["count"]) == 41 and int(state["meters"][0]["count"]) == 41


def test_only_primary_writes_and_logs(bn_free_runs):
    _, out, results, _ = bn_free_runs
    assert len(read_metrics(out)) == 4  # train/test × 2 epochs, written once
    assert sorted(os.listdir(out / "checkpoints")) == ["last.pt", "phase_0001.pt", "phase_0002.pt"]
    assert "done: test top1" in results[0].output and "done:" not in results[1].output
    assert "epoch 1 step 2/6" in results[0].output and "step 2/6" not in results[1].output


def test_checkpoint_from_two_ranks_resumes_on_one(bn_free_runs):
    tmp, out, _, ref = bn_free_runs
    epoch1 = str(out / "checkpoints" / "phase_0001.pt")
    resumed = run_in_process(tiny_config(tmp / "resumed_on_one"), resume=epoch1)
    final_two_ranks = load_checkpoint(str(out / "checkpoints" / "last.pt"))["model"]
    assert resumed.train_phases_done == 2
    assert_weights_close(resumed.model.state_dict(), final_two_ranks)


def test_mid_epoch_resume_with_another_global_batch_is_refused(bn_free_runs, tmp_path):
    _, out, _, _ = bn_free_runs
    state = load_checkpoint(str(out / "checkpoints" / "phase_0001.pt"))
    state["progress"]["step_in_phase"] = 3  # as if written mid-epoch by every_n_steps
    cfg = config_from_dict(tiny_config(tmp_path / "bad", data={"batch_size": 8}), "test")  # 1 × 8 ≠ 2 × 8
    task = ClassificationTask(cfg, hooks=[])
    with pytest.raises(ValueError, match="cannot resume mid-epoch with another global batch.*batch_size to 16 to keep"):
        task.load_state_dict(state)


def test_sync_batchnorm_two_ranks_match_plain_batchnorm_one_rank(tmp_path):
    model = {"name": "small_resnet", "width": 4}
    out, _ = run_two_ranks(tmp_path, "syncbn", model=model, distributed={"sync_batchnorm": True})
    ref = run_in_process(tiny_config(tmp_path / "bn", model=model))
    state = load_checkpoint(str(out / "checkpoints" / "last.pt"))
    assert_weights_close(state["model"], ref.model.state_dict())  # weights and running mean/var
    assert_metrics_equal(read_metrics(out), read_metrics(ref.cfg.output_dir))
