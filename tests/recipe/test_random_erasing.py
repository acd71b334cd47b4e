"""Random erasing on the device: the boxes' distribution (against torchvision's RandomErasing), what is
erased and what is kept, layouts and dtypes, determinism over resume, config errors, and a run."""

import math

import pytest
import torch
from torchvision.transforms import RandomErasing as TorchvisionRandomErasing

from classy_fast.config import config_from_dict
from classy_fast.data.batch_transform import SeededBatchTransform
from classy_fast.data.memory import InMemoryImageData
from classy_fast.mixup import MixupBatches
from classy_fast.random_erasing import RandomErasing, erase_boxes, random_erase, wrap_with_random_erasing
from classy_fast.recipe_config import RandomErasingConfig
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


def boxes(n, h, w, seed=0, **kw):
    cfg = RandomErasingConfig(**{"prob": 1.0, **kw})
    top, bottom, left, right = erase_boxes(n, h, w, cfg, torch.Generator().manual_seed(seed), torch.device("cpu"))
    return top, bottom, left, right


def test_boxes_fit_and_follow_the_configured_ranges():
    top, bottom, left, right = boxes(4000, 64, 48)
    h, w = bottom - top, right - left
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 64).all() and (right <= 48).all()
    erased = h > 0
    assert erased.float().mean() > 0.95  # at 64×48 nearly every draw fits within 10 attempts
    area = (h * w)[erased].double() / (64 * 48)
    # Rounding h and w moves the area a little past the drawn fraction, never far.
    assert area.min() > 0.02 * 0.7 and area.max() < 1 / 3 * 1.3
    aspect = (h.double() / w.double())[erased]
    assert aspect.min() > 0.3 * 0.7 and aspect.max() < (1 / 0.3) * 1.3
    # The box position is uniform: its centre averages the image centre.
    assert ((top + bottom).double() / 2)[erased].mean() == pytest.approx(32, abs=1.0)
    assert ((left + right).double() / 2)[erased].mean() == pytest.approx(24, abs=1.0)


def test_probability_and_the_no_fit_case():
    n = 20000
    top, bottom, _, _ = boxes(n, 64, 64, prob=0.25)
    rate = float((bottom > top).double().mean())
    assert rate == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / n))
    # Boxes of at least half the area never fit a 4×4 image with a side < 4 at ratio 1: nothing erased.
    top, bottom, left, right = boxes(500, 4, 4, scale=(0.9, 0.95), ratio=(1.0, 1.0))
    assert (bottom == top).all() and (right == left).all()


def test_erased_area_matches_torchvision_random_erasing():
    """Same algorithm (10 attempts, first box that fits, log-uniform ratio): the mean erased fraction of a
    32×32 image, where large draws often fail to fit, agrees with torchvision's within sampling error."""
    n, side = 3000, 32
    torch.manual_seed(0)
    reference = TorchvisionRandomErasing(p=0.5, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), value=0)
    ones = torch.ones(1, side, side)
    theirs = torch.tensor([float((reference(ones) == 0).double().mean()) for _ in range(n)])
    images = torch.ones(n, 1, side, side)
    ours = (random_erase(images, RandomErasingConfig(prob=0.5), torch.Generator().manual_seed(1)) == 0)
    ours = ours.double().mean(dim=(1, 2, 3))
    stderr = math.sqrt(theirs.var() / n + ours.var() / n)
    assert float(ours.mean()) == pytest.approx(float(theirs.mean()), abs=4 * stderr)
    assert float((ours > 0).double().mean()) == pytest.approx(float((theirs > 0).double().mean()), abs=0.04)


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("value", ["zero", "random"])
def test_only_the_box_changes(value, device):
    g = torch.Generator().manual_seed(5)
    images = (torch.randn(64, 3, 20, 24, generator=g) + 10.0).to(device)  # far from what the fill draws
    cfg = RandomErasingConfig(prob=1.0, value=value)
    dev = torch.device(device)
    top, bottom, left, right = (t.cpu() for t in erase_boxes(64, 20, 24, cfg, torch.Generator(dev).manual_seed(7), dev))
    out = random_erase(images, cfg, torch.Generator(dev).manual_seed(7)).cpu()
    images = images.cpu()
    filled = []
    for i in range(64):
        mask = torch.zeros(20, 24, dtype=torch.bool)
        mask[top[i]:bottom[i], left[i]:right[i]] = True
        assert torch.equal(out[i][:, ~mask], images[i][:, ~mask])
        filled.append(out[i][:, mask].flatten())
    filled = torch.cat(filled)
    assert filled.numel() > 1000
    if value == "zero":
        assert (filled == 0).all()
    else:  # per-pixel N(0, 1) noise
        assert float(filled.mean()) == pytest.approx(0.0, abs=0.1) and float(filled.std()) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layout_and_dtype_are_kept(dtype):
    images = torch.randn(8, 3, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    out = random_erase(images, RandomErasingConfig(prob=1.0, value="random"), torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="normalized float"):
        RandomErasing(RandomErasingConfig(prob=1.0))(images.to(torch.uint8), None, torch.Generator())


def in_memory_data():
    images = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return InMemoryImageData(images, torch.arange(40) % 5, num_classes=5, batch_size=8, train=True,
                             mean=(0.5,), std=(0.25,), device=torch.device("cpu"), seed=3)


def test_erased_batches_are_a_function_of_seed_epoch_and_position():
    def batches(start, seed=3):
        data = wrap_with_random_erasing(in_memory_data(), RandomErasingConfig(prob=0.5), seed)
        assert isinstance(data, SeededBatchTransform)
        data.resume_at(epoch=1, batch_index=start)
        return list(data)

    full, resumed = batches(0), batches(2)
    assert len(full) == 5 and len(resumed) == 3
    for (x1, y1), (x2, y2) in zip(full[2:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert any((x == 0).any() for x, _ in full)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(full, batches(0, seed=4)))
    assert wrap_with_random_erasing(in_memory_data(), RandomErasingConfig(prob=0.0), 3).__class__ is InMemoryImageData


@pytest.mark.parametrize("key,value,match", [
    ("prob", 1.5, r"random_erasing.prob must be in \[0, 1\]"),
    ("scale", (0.0, 0.3), "random_erasing.scale"),
    ("scale", (0.2, 1.0), "random_erasing.scale"),
    ("ratio", (2.0, 1.0), "random_erasing.ratio"),
])
def test_bad_settings_are_named(tmp_path, key, value, match):
    cfg = config_from_dict(tiny_config_dict(tmp_path / "run", random_erasing={key: value}), "test")
    with pytest.raises(ValueError, match=match):
        ClassificationTask(cfg)


def test_a_run_with_erasing_and_mixup_trains_and_precise_bn_reads_unmixed_erased_batches(tmp_path):
    cfg = config_from_dict(tiny_config_dict(
        tmp_path / "run", epochs=1, random_erasing={"prob": 0.5, "value": "random"},
        mixup={"mixup_alpha": 0.2}, precise_bn={"enabled": True, "num_samples": 32}), "test")
    task = ClassificationTask(cfg)
    assert isinstance(task.train_data, MixupBatches)
    assert isinstance(task.train_data.source.transform, RandomErasing)  # erasing first, then mixing
    task.run()
    metrics = task.last_phase_metrics
    assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["top1"] <= 1.0
