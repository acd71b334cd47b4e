"""The GPU-resident path (InMemoryImageData and the 'arrays' .npz dataset): device permutation,
augmentation statistics, normalization, layouts and bad labels."""

from collections import Counter

import numpy as np
import pytest
import torch

from classy_fast.config import DataConfig
from classy_fast.data import BadImageError, InMemoryImageData, build_data
from classy_fast.data.arrays import to_nchw

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


def position_images(n: int, size: int = 12) -> torch.Tensor:
    """Image i holds (1 + y*size + x) at (y, x): any crop window can be located from its pixels."""
    grid = 1 + torch.arange(size * size, dtype=torch.uint8).view(1, 1, size, size)
    return grid.expand(n, 1, size, size).contiguous()


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return (x.float().cpu() * 0.25 + 0.5) * 255


def make(images, device, batch_size=64, **kw):
    labels = torch.arange(len(images)) % 4
    return InMemoryImageData(images, labels, num_classes=4, batch_size=batch_size, train=True, mean=(0.5,),
                             std=(0.25,), device=device, seed=11, **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_epoch_order_is_a_device_permutation_same_for_every_rank(device):
    data = make(position_images(100), device, drop_last=False)
    data.set_epoch(2)
    order = data._order()
    assert order.device.type == device and sorted(order.tolist()) == list(range(100))
    again = make(position_images(100), device, drop_last=False)
    again.set_epoch(2)
    assert torch.equal(again._order(), order)  # a function of (seed, epoch), not of the process
    again.set_epoch(3)
    assert not torch.equal(again._order(), order)
    if hasattr(data, "set_shard"):  # ranks read disjoint shares of the same permutation
        seen = []
        for rank in range(2):
            shard = make(position_images(100), device, drop_last=True, batch_size=10)
            shard.set_shard(rank, 2)
            shard.set_epoch(2)
            seen += torch.cat([y for _, y in shard]).tolist()
        assert len(seen) == 100


@pytest.mark.parametrize("device", DEVICES)
def test_crop_offsets_are_uniform_and_flips_fair(device):
    size, pad, n = 12, 2, 4096
    data = make(position_images(n, size), device, batch_size=512, crop_padding=pad, flip=False)
    offsets = Counter()
    c = size // 2
    for x, _ in data:
        # The centre output pixel is always inside the image (|offset| ≤ pad < size/2): its value
        # 1 + y*size + x says where the crop window sits.
        v = unnormalize(x)[:, 0, c, c].round().to(torch.int64) - 1
        offsets.update(zip((v // size - c + pad).tolist(), (v % size - c + pad).tolist()))
    assert set(offsets) == {(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}
    expected = n / (2 * pad + 1) ** 2
    assert all(abs(count - expected) < 5 * expected ** 0.5 for count in offsets.values())  # ±5σ of a fair draw
    flips = make(position_images(n, size), device, batch_size=512, crop_padding=0, flip=True)
    # a mirrored image starts with the original's pixel (0, size-1), whose value is size
    flipped = sum(int((unnormalize(x)[:, 0, 0, 0].round() == size).sum()) for x, _ in flips)
    assert abs(flipped - n / 2) < 5 * (n / 4) ** 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_arrays_dataset_layouts_stats_and_bad_labels(tmp_path, device):
    rng = np.random.default_rng(0)
    train_hwc = rng.integers(0, 256, (300, 10, 10, 3), dtype=np.uint8)
    train_hwc[..., 0] //= 2  # channels with different statistics
    test_chw = rng.integers(0, 256, (50, 3, 10, 10), dtype=np.uint8)
    labels = rng.integers(0, 5, 300)
    test_labels = rng.integers(0, 5, 50)
    test_labels[[3, 7]] = [5, -1]  # out of range for 5 classes
    path = tmp_path / "cifar_like.npz"
    np.savez(path, train_images=train_hwc, train_labels=labels, test_images=test_chw, test_labels=test_labels)
    cfg = DataConfig(name="arrays", root=str(path), batch_size=300, test_batch_size=64, augment=False)
    train = build_data(cfg, "train", device=torch.device(device), seed=0)
    assert train.num_classes == 5 and train.in_channels == 3 and train.image_size == (10, 10)
    x, _ = next(iter(train))
    assert x.device.type == device
    mean, std = x.float().mean(dim=(0, 2, 3)), x.float().std(dim=(0, 2, 3))
    torch.testing.assert_close(mean.cpu(), torch.zeros(3), atol=1e-3, rtol=0)  # normalized by the training stats
    torch.testing.assert_close(std.cpu(), torch.ones(3), atol=1e-2, rtol=0)
    test = build_data(cfg, "test", device=torch.device(device), seed=0)
    assert test.num_samples == 48 and test.skipped_files == 2
    with pytest.raises(BadImageError, match=r"test_labels\[3\].*label 5 out of range for 5 classes"):
        build_data(DataConfig(name="arrays", root=str(path), strict=True), "test", device="cpu", seed=0)


def test_layout_rule_and_errors(tmp_path):
    assert to_nchw(np.zeros((2, 32, 32, 3), np.uint8), "x").shape == (2, 3, 32, 32)
    assert to_nchw(np.zeros((2, 3, 32, 32), np.uint8), "x").shape == (2, 3, 32, 32)
    assert to_nchw(np.zeros((2, 28, 28), np.uint8), "x").shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="must be uint8"):
        to_nchw(np.zeros((2, 3, 4, 4), np.float32), "x")
    np.savez(tmp_path / "a.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros(2, np.int64))
    with pytest.raises(KeyError, match="no test_images, test_labels"):
        build_data(DataConfig(name="arrays", root=str(tmp_path / "a.npz")), "test", device="cpu", seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_data(DataConfig(name="arrays", root=str(tmp_path / "b.npz")), "train", device="cpu", seed=0)


def test_device_resident_batches_come_in_data_dtype():
    import torch

    from classy_fast.config import DataConfig
    from classy_fast.data import build_data

    for dtype in ("bfloat16", "float16", "float32"):
        cfg = DataConfig(name="synthetic", dtype=dtype, synthetic_train_size=32, synthetic_test_size=16, batch_size=8)
        for split in ("train", "test"):
            x, _ = next(iter(build_data(cfg, split, device=torch.device("cpu"), seed=0, channels_last=False)))
            assert x.dtype == getattr(torch, dtype), (dtype, split)


def test_corrupt_gzip_idx_file_is_a_named_idx_format_error(tmp_path):
    import gzip

    from classy_fast.data import IdxFormatError, read_idx

    raw = bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(range(100))
    data = bytearray(gzip.compress(raw))
    for i in range(12, len(data) - 8):  # the deflate stream, not the gzip header or trailer
        data[i] ^= 0x5A
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError, match=r"train-labels-idx1-ubyte\.gz: cannot read IDX file"):
        read_idx(str(path))


@pytest.mark.parametrize("content", [b"not an npz at all", b"PK\x03\x04 truncated zip"])
def test_arrays_file_that_is_not_an_npz_is_named(tmp_path, content):
    path = tmp_path / "cifar.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cifar\.npz: cannot read it as an \.npz"):
        build_data(DataConfig(name="arrays", root=str(path)), "train", device="cpu", seed=0)


@pytest.mark.parametrize("key", ["limit_train", "limit_test"])
def test_negative_limits_are_refused_for_in_memory_data(key):
    split = "train" if key == "limit_train" else "test"
    with pytest.raises(ValueError, match=f"data.{key} must be ≥ 0, got -5"):
        build_data(DataConfig(name="synthetic", **{key: -5}), split, device="cpu", seed=0)


def test_negative_crop_padding_is_refused():
    with pytest.raises(ValueError, match="data.crop_padding must be ≥ 0, got -2"):
        build_data(DataConfig(name="synthetic", crop_padding=-2), "train", device="cpu", seed=0)


@pytest.mark.parametrize("key, split", [("batch_size", "train"), ("test_batch_size", "test")])
def test_batch_size_below_one_names_its_key(key, split):
    with pytest.raises(ValueError, match=f"data.{key} must be ≥ 1, got 0"):
        build_data(DataConfig(name="synthetic", **{key: 0}), split, device="cpu", seed=0)


def test_fewer_samples_than_ranks_still_give_every_rank_its_batch():
    """Padding repeats the order as often as needed (1 sample, 4 ranks): no rank has an empty share."""
    for rank in range(4):
        data = make(position_images(1), "cpu", batch_size=2, drop_last=False)
        data.set_shard(rank, 4)
        batches = list(data)
        assert len(batches) == len(data) == 1 and batches[0][0].shape[0] == 1


def test_non_uint8_idx_images_and_mismatched_array_channels_are_named(tmp_path):
    from classy_fast.data import IdxFormatError
    from classy_fast.data.idx import read_idx_split

    images = bytes([0, 0, 0x0D, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 2, 2)) + bytes(8 * 4)  # float32
    (tmp_path / "train-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes(2))
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte: images are float32, expected uint8"):
        read_idx_split(str(tmp_path), "train")
    path = tmp_path / "mixed.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8, 3), np.uint8), train_labels=np.arange(4) % 2,
             test_images=np.zeros((2, 8, 8), np.uint8), test_labels=np.arange(2))
    with pytest.raises(ValueError, match=r"mixed\.npz: test_images have 1 channel\(s\), train_images 3"):
        build_data(DataConfig(name="arrays", root=str(path)), "test", device="cpu", seed=0)


def test_embedded_fashion_mnist_with_a_directory_root_points_to_the_idx_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a file.*use data.name=fashion_mnist"):
        build_data(DataConfig(name="fashion_mnist_embedded", root=str(tmp_path)), "train", device="cpu", seed=0)
