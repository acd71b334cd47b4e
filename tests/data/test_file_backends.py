"""The image-file backends (torchvision, nvjpeg, DALI) on generated JPEG folders: shapes, dtypes,
labels that travel with their images, rank shards, resume, and bad files."""

import os
from collections import Counter

import numpy as np
import pytest
import torch

from classy_fast.config import DataConfig
from classy_fast.data import BadImageError, build_data
from classy_fast.data.dali_pipeline import dali_import_error

from .conftest import NUM_TRAIN_PER_CLASS, NUM_VAL_PER_CLASS, class_of

DALI_MISSING = dali_import_error()
BACKENDS = ["torchvision", "nvjpeg", pytest.param("dali", marks=pytest.mark.skipif(
    DALI_MISSING is not None, reason=f"DALI not importable ({DALI_MISSING}); pip install nvidia-dali-cuda130"))]


def config(root, backend, **kw):
    base = dict(name="image_folder", root=root, backend=backend, batch_size=5, test_batch_size=4, crop_size=24,
                resize_size=28, num_workers=0, prefetch=2)
    base.update(kw)
    return DataConfig(**base)


def build(root, backend, split, device="cpu", seed=3, rank=0, world=1, channels_last=False, **kw):
    data = build_data(config(root, backend, **kw), split, device=torch.device(device), seed=seed,
                      channels_last=channels_last)
    if world > 1:
        data.set_shard(rank, world)
    return data


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_shapes_dtypes_and_labels(image_folder, backend):
    train = build(image_folder, backend, "train")
    n = 3 * NUM_TRAIN_PER_CLASS
    assert train.num_samples == n and train.num_classes == 3 and train.in_channels == 3
    assert train.image_size == (24, 24) and len(train) == n // 5
    batches = list(train)
    assert len(batches) == len(train)
    for x, y in batches:
        assert x.shape == (5, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert class_of(x) == y.tolist()  # each label came with its own image
    test = build(image_folder, backend, "test")
    seen = torch.cat([y for _, y in test])
    assert len(test) == -(-3 * NUM_VAL_PER_CLASS // 4) and seen.tolist() == sorted(seen.tolist())
    assert Counter(seen.tolist()) == {c: NUM_VAL_PER_CLASS for c in range(3)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtype_layout_and_filled_last_batch(image_folder, backend):
    data = build(image_folder, backend, "train", channels_last=True, dtype="float16", drop_last=False, batch_size=7)
    batches = list(data)
    assert len(data) == len(batches) == -(-3 * NUM_TRAIN_PER_CLASS // 7)
    for x, y in batches:  # training batches keep their shape: the last one is filled
        assert x.shape == (7, 3, 24, 24) and x.dtype == torch.float16
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert class_of(x) == y.tolist()
    x, _ = next(iter(build(image_folder, backend, "test", dtype="bfloat16")))
    assert x.dtype == torch.bfloat16


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_crop_can_differ_from_the_training_crop(image_folder, backend):
    # FixRes-style: train at 16 px, evaluate a 24 px center crop of the image resized to 28.
    train = build(image_folder, backend, "train", crop_size=16, test_crop_size=24)
    test = build(image_folder, backend, "test", crop_size=16, test_crop_size=24)
    assert train.image_size == (16, 16) and test.image_size == (24, 24)
    assert next(iter(train))[0].shape[-2:] == (16, 16)
    x, y = next(iter(test))
    assert x.shape[-2:] == (24, 24) and class_of(x) == y.tolist()
    with pytest.raises(ValueError, match="data.test_crop_size"):
        build(image_folder, backend, "test", test_crop_size=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_shards_partition_eval_and_equalize_train(image_folder, backend):
    per_class = Counter()
    for rank in range(2):
        test = build(image_folder, backend, "test", rank=rank, world=2, test_batch_size=4)
        labels = [y for _, y in test]
        assert len(labels) == len(test)
        per_class.update(torch.cat(labels).tolist())
    assert per_class == {c: NUM_VAL_PER_CLASS for c in range(3)}  # 15 samples over 2 ranks: none twice, none lost
    lengths = []
    for rank in range(2):
        train = build(image_folder, backend, "train", rank=rank, world=2, batch_size=4)
        lengths.append((len(train), len(list(train))))
    assert lengths[0] == lengths[1] == (3, 3)  # 24 samples → 12 per rank → 3 batches each


@pytest.mark.parametrize("backend", ["torchvision", "nvjpeg"])
def test_resume_starts_at_the_batch_without_replaying(image_folder, backend):
    a = build(image_folder, backend, "train")
    a.set_epoch(2)
    full = list(a)
    b = build(image_folder, backend, "train")
    b.resume_at(2, 2)
    resumed = list(b)
    assert len(resumed) == len(full) - 2
    for (x1, y1), (x2, y2) in zip(full[2:], resumed):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)
    a.set_epoch(3)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in full]))  # reshuffled


@pytest.mark.skipif(DALI_MISSING is not None, reason=f"DALI not importable ({DALI_MISSING})")
def test_dali_resume_reads_the_same_files_in_the_same_order(image_folder):
    a = build(image_folder, "dali", "train", batch_size=4)
    a.set_epoch(1)
    full = [y for _, y in a]
    b = build(image_folder, "dali", "train", batch_size=4)
    b.resume_at(1, 3)
    resumed = [y for _, y in b]
    assert [y.tolist() for y in resumed] == [y.tolist() for y in full[3:]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_are_skipped_and_counted_odd_formats_converted(bad_image_folder, backend):
    train = build(bad_image_folder, backend, "train", batch_size=4)
    batches = list(train)
    assert train.skipped_files == 2 and all(x.shape[0] == 4 for x, _ in batches)
    test = build(bad_image_folder, backend, "test")
    seen = torch.cat([y for _, y in test])
    # 3 classes × 3 images + 5 extra files in class_0, of which 2 are undecodable
    assert test.skipped_files == 2 and len(seen) == 3 * 3 + 3
    assert Counter(seen.tolist())[0] == 3 + 3  # grayscale, CMYK and RGBA PNG decoded as class 0 samples


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_of_only_bad_files_is_stood_in_for_so_ranks_keep_their_step_count(bad_image_folder, backend):
    """batch_size=1 makes each bad file a batch of bad files: training repeats the last good sample
    there instead of dropping the batch (a rank one step short would hang DDP)."""
    for rank in range(2):
        train = build(bad_image_folder, backend, "train", batch_size=1, rank=rank, world=2)
        list(train)  # the first epoch reads a good sample (it may drop a batch only before reading one)
        train.set_epoch(1)
        batches = list(train)
        assert len(batches) == len(train)
        for x, y in batches:
            assert x.shape[0] == 1 and class_of(x) == y.tolist()  # a stand-in is a real sample with its label
    assert train.skipped_files >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_fewer_files_than_ranks_still_give_every_rank_a_full_share(image_folder, backend):
    """Padding repeats the epoch order as often as needed: 2 files over 5 ranks, one sample each."""
    for rank in range(5):
        train = build(image_folder, backend, "train", batch_size=1, rank=rank, world=5, drop_last=False,
                      limit_train=2)
        batches = list(train)
        assert len(batches) == len(train) == 1 and batches[0][0].shape[0] == 1
        assert class_of(batches[0][0]) == batches[0][1].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_strict_stops_naming_the_file(bad_image_folder, backend):
    test = build(bad_image_folder, backend, "test", strict=True)
    with pytest.raises(BadImageError) as info:
        list(test)
    assert os.path.basename(info.value.path) in {"truncated.jpg", "not_an_image.jpg"}
    assert info.value.path in str(info.value) and "data.strict" in str(info.value)


def test_unknown_backend_and_missing_dali_are_clear(image_folder, monkeypatch):
    with pytest.raises(Exception, match="backend"):
        build_data(config(image_folder, "pil"), "train", device="cpu", seed=0)
    import classy_fast.data.image_datasets as image_datasets

    monkeypatch.setattr(image_datasets, "dali_import_error", lambda: "ImportError: No module named 'nvidia.dali'")
    with pytest.raises(ImportError, match="pip install nvidia-dali-cuda130"):
        build_data(config(image_folder, "dali"), "train", device="cpu", seed=0)
    auto = build_data(config(image_folder, "auto"), "train", device="cpu", seed=0)
    assert auto.backend == "torchvision"


def test_worker_processes_give_the_same_batches(image_folder):
    a = build(image_folder, "torchvision", "train", num_workers=2)
    b = build(image_folder, "torchvision", "train", num_workers=0)
    for (x1, y1), (x2, y2) in zip(a, b):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert len(list(a)) == len(a)  # a second epoch on the persistent workers


# ---- CUDA ----

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_batches_arrive_on_the_device(image_folder, backend):
    data = build(image_folder, backend, "train", device="cuda", channels_last=True, dtype="bfloat16")
    for x, y in data:
        assert x.is_cuda and y.is_cuda and x.dtype == torch.bfloat16 and x.shape == (5, 3, 24, 24)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert class_of(x) == y.tolist()
    test = build(image_folder, backend, "test", device="cuda")
    assert Counter(torch.cat([y for _, y in test]).tolist()) == {c: NUM_VAL_PER_CLASS for c in range(3)}


@pytest.mark.cuda
@cuda_only
def test_cuda_nvjpeg_matches_the_cpu_path(image_folder):
    cpu = build(image_folder, "nvjpeg", "train", device="cpu")
    gpu = build(image_folder, "nvjpeg", "train", device="cuda")
    for (x1, y1), (x2, y2) in zip(cpu, gpu):
        assert torch.equal(y1, y2.cpu())
        # same boxes and flips; nvJPEG's IDCT may differ from libjpeg-turbo's by a few levels
        assert (x1 - x2.cpu()).abs().mean() < 0.05


@pytest.mark.cuda
@cuda_only
def test_cuda_nvjpeg_bad_files(bad_image_folder):
    data = build(bad_image_folder, "nvjpeg", "test", device="cuda")
    seen = torch.cat([y for _, y in data])
    assert data.skipped_files == 2 and len(seen) == 3 * 3 + 3


def test_truncated_jpegs_never_reach_the_device_decoder(bad_image_folder):
    from classy_fast.data.nvjpeg_loader import is_whole_jpeg

    d = os.path.join(bad_image_folder, "val", "class_0")
    read = lambda name: torch.from_numpy(np.fromfile(os.path.join(d, name), dtype=np.uint8))  # noqa: E731
    assert is_whole_jpeg(read("img_00.jpg")) and is_whole_jpeg(read("cmyk.jpg"))
    assert not is_whole_jpeg(read("truncated.jpg")) and not is_whole_jpeg(read("rgba.png"))
    assert is_whole_jpeg(torch.cat([read("img_00.jpg"), torch.zeros(10, dtype=torch.uint8)]))  # trailing junk


def test_a_dropped_torchvision_source_stops_its_workers_without_a_collection(image_folder):
    """No reference cycle keeps a source (and its persistent worker processes) alive once dropped."""
    import gc
    import multiprocessing
    import time

    # A first loader imports modules lazily, and a frame an imported module keeps can hold that first
    # source alive: warm up the imports, then test a second source.
    warmup = build(image_folder, "torchvision", "train", num_workers=1)
    next(iter(warmup))
    warmup.close()
    del warmup
    gc.collect()
    gc.disable()  # the point: released by reference counting, not by a garbage collection
    try:
        data = build(image_folder, "torchvision", "train", num_workers=2)
        next(iter(data))
        assert len(multiprocessing.active_children()) >= 2
        del data
        deadline = time.monotonic() + 10
        while multiprocessing.active_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert multiprocessing.active_children() == []
    finally:
        gc.enable()


def test_garbage_is_collected_in_the_parent_before_workers_fork(image_folder, tmp_path):
    """A finalizer of pending garbage (a DALI pipeline's, which joins threads) must run in the parent: run
    in a freshly forked worker, where those threads do not exist, it deadlocked the loader."""
    log = tmp_path / "finalized"

    class Owner:
        def __init__(self):
            self.me = self  # a reference cycle: only a garbage collection frees it

        def __del__(self):
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")

    import gc

    gc.collect()
    gc.disable()  # only an explicit collection frees the cycle (forked workers inherit this too)
    try:
        Owner()  # garbage now, collected by nobody yet
        data = build(image_folder, "torchvision", "train", num_workers=2)
        next(iter(data))
        assert log.exists() and log.read_text().split() == [str(os.getpid())]
    finally:
        gc.enable()


def test_evaluation_crop_larger_than_the_resize_is_refused(image_folder):
    with pytest.raises(ValueError, match=r"data.test_crop_size=32\) is larger than data.resize_size=28"):
        build(image_folder, "torchvision", "test", test_crop_size=32)
    with pytest.raises(ValueError, match=r"data.crop_size=30\) is larger than data.resize_size=28"):
        build(image_folder, "torchvision", "test", crop_size=30)
    build(image_folder, "torchvision", "train", crop_size=30)  # the training crop is cut from the image itself
