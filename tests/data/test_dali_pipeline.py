"""DALI specifics, CPU-only (device_id=None): the pipeline itself, shard lists for resume, the
padding-only eval batch, and failures that name files. Skipped when DALI isn't importable."""

import glob
import os

import pytest
import torch

from classy_fast.config import DataConfig
from classy_fast.data import build_data
from classy_fast.data.dali_pipeline import dali_import_error

DALI_MISSING = dali_import_error()
pytestmark = pytest.mark.skipif(DALI_MISSING is not None,
                                reason=f"DALI not importable ({DALI_MISSING}); pip install nvidia-dali-cuda130")


def dali_data(root, split, **kw):
    cfg = dict(name="image_folder", root=root, backend="dali", batch_size=4, test_batch_size=4, crop_size=24,
               resize_size=28, num_workers=2)
    cfg.update(kw)
    return build_data(DataConfig(**cfg), split, device=torch.device("cpu"), seed=1)


def test_cpu_only_pipeline_outputs(image_folder):
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    from classy_fast.data.dali_pipeline import READER, build_image_pipeline

    files = sorted(glob.glob(os.path.join(image_folder, "train", "*", "*.jpg")))[:6]
    pipe = build_image_pipeline(files, list(range(6)), train=True, augment=True, use_gpu=False, batch_size=3,
                                num_threads=1, device_id=None, seed=7, shard_id=0, num_shards=1, crop_size=16,
                                resize_size=20, scale=(0.08, 1.0), ratio=(0.75, 4 / 3), mean=(0.5,) * 3,
                                std=(0.25,) * 3, flip=True, fp16=True, channels_last=True, prefetch=1)
    pipe.build()
    batches = list(DALIGenericIterator([pipe], ["x", "y"], reader_name=READER))
    assert len(batches) == 2
    x, y = batches[0][0]["x"], batches[0][0]["y"]
    assert x.device.type == "cpu" and x.dtype == torch.float16 and x.shape == (3, 16, 16, 3)  # HWC
    assert y.dtype == torch.int32 and y.view(-1).tolist() == [0, 1, 2]


def test_resume_list_gives_every_rank_the_rest_of_its_share(image_folder):
    for world, train in ((3, False), (3, True), (2, True)):
        for rank in range(world):
            data = dali_data(image_folder, "train" if train else "test", limit_test=14)
            data.set_shard(rank, world)
            order = data.epoch_order(5).tolist()
            lo, hi = data.share_bounds()
            for cut in (0, 1, 2):
                indices, _ = data._epoch_list(5, cut)
                n = len(indices)
                mine = indices[n * rank // world: n * (rank + 1) // world]  # DALI's reader split
                assert mine == order[lo:hi][cut * 4:]


def test_shorter_eval_shard_skips_its_padding_only_batch(image_folder):
    seen = []
    for rank in range(2):  # 9 samples: 4 + 5, so rank 0 has one batch and rank 1 two
        data = dali_data(image_folder, "test", limit_test=9)
        data.set_shard(rank, 2)
        batches = [y for _, y in data]
        assert len(batches) == len(data) == (1 if rank == 0 else 2)
        seen += torch.cat(batches).tolist()
    assert len(seen) == 9


def test_unexplained_failure_names_the_candidate_files(bad_image_folder, monkeypatch):
    import classy_fast.data.image_files as image_files

    monkeypatch.setattr(image_files, "load_rgb", lambda path: None)  # PIL "decodes" everything
    data = dali_data(bad_image_folder, "test")
    with pytest.raises(RuntimeError, match=r"DALI pipeline failed in batch \d+ .*no file of that batch fails "
                                           r"to decode with PIL \(its first files: \[.*\.(jpg|png)"):
        list(data)
