"""data.repeated_augmentations (torchvision's RASampler) on the image-file sources: every drawn sample
appears N times per epoch with its copies on different ranks, the epoch keeps its length, the copies
are augmented differently, and pipelines without it refuse the setting by name."""

import pytest
import torch

from classy_fast.config import DataConfig
from classy_fast.data import build_data
from classy_fast.data.dali_pipeline import dali_import_error
from classy_fast.data.file_source import repeated_augmentation_order

from .conftest import NUM_TRAIN_PER_CLASS

DALI_MISSING = dali_import_error()
BACKENDS = ["torchvision", pytest.param("dali", marks=pytest.mark.skipif(
    DALI_MISSING is not None, reason=f"DALI not importable ({DALI_MISSING})"))]


def build(root, backend="torchvision", rank=0, world=1, **kw):
    base = dict(name="image_folder", root=root, backend=backend, batch_size=4, crop_size=16, resize_size=20,
                num_workers=0, repeated_augmentations=2)
    base.update(kw)
    data = build_data(DataConfig(**base), "train", device=torch.device("cpu"), seed=3)
    if world > 1:
        data.set_shard(rank, world)
    return data


@pytest.mark.parametrize("repeats,world", [(2, 2), (3, 4), (4, 4), (2, 1)])
def test_copies_are_dealt_to_different_ranks(repeats, world):
    n, length = 24, 24
    order = repeated_augmentation_order(torch.randperm(n), repeats, world, length)
    assert len(order) == length
    shares = order.view(world, -1)  # rank r reads the r-th contiguous share
    drawn = torch.bincount(order, minlength=n)
    drawn = drawn[drawn > 0]
    assert len(drawn) == -(-length // repeats)  # length / repeats distinct samples
    assert drawn.max() == repeats and int((drawn != repeats).sum()) <= 1  # only the last one may be cut short
    for sample in order.unique():
        ranks = (shares == sample).nonzero()[:, 0]
        if world >= repeats:
            assert len(ranks.unique()) == len(ranks)  # never two copies on one rank
    if world == 1:  # one process: the copies follow each other
        assert torch.equal(order[0::repeats], order[1::repeats])


def test_ranks_see_the_same_samples_augmented_differently(image_folder):
    ranks = [build(image_folder, rank=r, world=2) for r in range(2)]
    orders = [d.rank_order(0) for d in ranks]
    assert len(orders[0]) == len(orders[1]) == (3 * NUM_TRAIN_PER_CLASS) // 2  # the epoch keeps its length
    assert torch.equal(orders[0], orders[1])  # 2 copies over 2 ranks: each rank has one of every drawn sample
    (x0, y0), (x1, y1) = next(iter(ranks[0])), next(iter(ranks[1]))
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)  # same images, their own crops


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_process_reads_consecutive_copies(image_folder, backend):
    data = build(image_folder, backend=backend)
    x, y = next(iter(data))
    assert torch.equal(y[0::2], y[1::2])
    assert not torch.equal(x[0], x[1])  # the two copies of a sample are augmented differently
    resumed = build(image_folder, backend=backend)
    resumed.resume_at(0, 1)
    full = list(build(image_folder, backend=backend))
    assert torch.equal(next(iter(resumed))[1], full[1][1])


def test_settings_are_checked(image_folder):
    with pytest.raises(ValueError, match="data.repeated_augmentations must be ≥ 1"):
        build(image_folder, repeated_augmentations=0)
    with pytest.raises(ValueError, match="applies to image files"):
        build_data(DataConfig(name="synthetic", repeated_augmentations=2), "train", device=torch.device("cpu"), seed=0)
    # Evaluation and unaugmented training read each sample once.
    test = build_data(DataConfig(name="image_folder", root=image_folder, num_workers=0, crop_size=16, resize_size=20,
                                 repeated_augmentations=3), "test", device=torch.device("cpu"), seed=0)
    assert test.repeated_augmentations == 1
