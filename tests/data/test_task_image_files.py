"""A training run on image files end to end: the task drives an image_folder source, reports the
skipped files in its metrics, and with data.strict the CLI stops naming the bad file."""

import json
import os

import torch

from classy_fast.config import config_from_dict
from classy_fast.task import ClassificationTask
from classy_fast.train import main

from ..conftest import tiny_config_dict


def image_run(root, out, **data):
    d = tiny_config_dict(out, epochs=1)
    d["model"] = {"name": "small_resnet", "width": 4}
    d["data"] = {"name": "image_folder", "root": root, "backend": "torchvision", "num_workers": 0, "batch_size": 4,
                 "test_batch_size": 8, "crop_size": 24, "resize_size": 28, **data}
    d["hooks"]["checkpoint"] = {"enabled": False}
    return d


def test_task_trains_on_an_image_folder_and_reports_skipped_files(bad_image_folder, tmp_path):
    torch.set_num_threads(1)
    task = ClassificationTask(config_from_dict(image_run(bad_image_folder, tmp_path / "run")))
    assert task.num_classes == 3 and task.input_shape == (3, 24, 24)
    task.run()
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["phase_type"] for r in records] == ["train", "test"]
    assert all(r["skipped_files"] == 2 for r in records)


def test_cli_strict_stops_naming_the_file(bad_image_folder, tmp_path, capsys):
    d = image_run(bad_image_folder, tmp_path / "strict", strict=True)
    path = tmp_path / "strict.json"
    path.write_text(json.dumps(d))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("truncated.jpg" in err or "not_an_image.jpg" in err)
    assert os.path.join(bad_image_folder, "train", "class_0") in err


def test_mid_epoch_resume_on_another_world_size_is_refused_for_image_files(image_folder, tmp_path):
    """Image-file sources give each rank a contiguous share of the epoch: a mid-epoch checkpoint of 2
    processes resumed on 1 (global batch kept) would repeat some files and skip others."""
    import pytest

    d = image_run(image_folder, tmp_path / "run", batch_size=8)
    d["hooks"]["checkpoint"] = {"every_n_steps": 1}
    task = ClassificationTask(config_from_dict(d))
    state = task.state_dict()
    state["progress"]["step_in_phase"] = 1
    state["distributed"] = {"world_size": 2, "global_batch": 8, "rng_per_rank": state["distributed"]["rng_per_rank"]}
    with pytest.raises(ValueError, match=r"cannot resume mid-epoch on 1 process\(es\) from a checkpoint of 2: with "
                                         r"image files"):
        ClassificationTask(config_from_dict(d)).load_state_dict(state)
    state["progress"]["step_in_phase"] = 0  # a phase-end checkpoint resumes on any world size
    ClassificationTask(config_from_dict(d)).load_state_dict(state)



def test_skipped_files_over_ranks_and_epochs_count_each_bad_file_once(bad_image_folder, tmp_path):
    """2 ranks, 4 epochs: each bad training file lands in different ranks' shares over the epochs; the
    phase records count the distinct files (a sum over ranks counted such a file once per rank)."""
    from ..distributed.launch import read_metrics, run_ranks, write_config

    d = image_run(bad_image_folder, tmp_path / "ddp", batch_size=2)
    d.update(epochs=4, device="cpu", num_threads=1, distributed={"timeout_seconds": 60})
    d["hooks"].update(progress_bar=False, model_complexity=False)
    for r in run_ranks(2, ["--config", write_config(tmp_path / "cfg.yaml", d)], timeout=150):
        assert r.returncode == 0, f"rank {r.rank}:\n{r.output[-3000:]}"
    records = read_metrics(tmp_path / "ddp")
    assert len(records) == 8 and all(r["skipped_files"] == 2 for r in records), \
        [(r["phase_type"], r["skipped_files"]) for r in records]
