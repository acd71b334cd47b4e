import os
import random

import numpy as np
import pytest
import torch

from classy_fast import checkpoint as ckpt
from classy_fast.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_atomic


def good_state(value=1.0):
    return {"format": CHECKPOINT_FORMAT, "model": {"w": torch.full((3,), value)}, "progress": {"step": 1}}


def test_save_then_load_round_trip(tmp_path):
    path = str(tmp_path / "c" / "last.pt")
    save_atomic(good_state(2.0), path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3,), 2.0))
    assert os.listdir(tmp_path / "c") == ["last.pt"]


def test_crash_during_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_atomic(good_state(1.0), path)
    before = open(path, "rb").read()

    def dying_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last.pt: OSError: disk full"):
        save_atomic(good_state(5.0), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = str(tmp_path / "last.pt")
    save_atomic(good_state(), path)
    data = open(path, "rb").read()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt.*not a readable checkpoint"):
        load_checkpoint(str(trunc))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a classy_fast checkpoint"):
        load_checkpoint(str(foreign))
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    path = tmp_path / "evil.pt"  # an arbitrary pickled object: weights_only must refuse to build it
    torch.save({"format": CHECKPOINT_FORMAT, "obj": argparse.Namespace(x=1)}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(str(path))


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = ckpt.rng_state()
    save_atomic({"format": CHECKPOINT_FORMAT, "rng": state}, str(tmp_path / "r.pt"))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(load_checkpoint(str(tmp_path / "r.pt"))["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_resume_auto(tmp_path):
    assert ckpt.find_resume_checkpoint("auto", str(tmp_path)) is None
    save_atomic(good_state(), str(tmp_path / "checkpoints" / "last.pt"))
    assert ckpt.find_resume_checkpoint("auto", str(tmp_path)).endswith("last.pt")
    with pytest.raises(CheckpointError, match="nothere.pt"):
        ckpt.find_resume_checkpoint(str(tmp_path / "nothere.pt"), str(tmp_path))


def test_unreadable_versions_and_unwritable_places_are_named(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: not a readable checkpoint"):
        load_checkpoint(str(empty))
    other = str(tmp_path / "v2.pt")
    torch.save({"format": "classy_fast.checkpoint.v2"}, other)
    with pytest.raises(CheckpointError, match=f"format 'classy_fast.checkpoint.v2', this classy_fast reads '{CHECKPOINT_FORMAT}'"):
        load_checkpoint(other)
    (tmp_path / "checkpoints").write_text("a file where the directory should be")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_atomic(good_state(1.0), str(tmp_path / "checkpoints" / "last.pt"))
    path = str(tmp_path / "mode.pt")
    save_atomic(good_state(1.0), path)
    assert os.stat(path).st_mode & 0o777 == 0o644  # like every other output, not mkstemp's 0600
