import gzip
import struct

import numpy as np
import pytest
import torch

from classy_fast.config import DataConfig
from classy_fast.data import IdxFormatError, InMemoryImageData, build_data, random_crop_flip, read_idx, read_idx_split

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_round_trip_and_errors(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 4, 3)).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4]))
    x, y = read_idx_split(str(tmp_path), "train")
    assert np.array_equal(x, imgs) and y.tolist() == [0, 1, 2, 3, 4] and y.dtype == np.int64
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(IdxFormatError, match="bad.*truncated"):
        read_idx(str(tmp_path / "bad"))
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(IdxFormatError, match="junk.*not an IDX file"):
        read_idx(str(tmp_path / "junk"))
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        read_idx_split(str(tmp_path), "test")
    # A label out of range names the data, the split and the sample.
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 12, 3, 14]))
    with pytest.raises(ValueError, match=rf"data.root {tmp_path}, train split: label 12 of sample 2 is out of range "
                                         r"for 10 classes \(2 such labels\)"):
        build_data(DataConfig(name="fashion_mnist", root=str(tmp_path)), "train", device="cpu", seed=0)


def test_embedded_subset_is_stratified():
    train = build_data(DataConfig(), "train", device="cpu", seed=0)
    test = build_data(DataConfig(), "test", device="cpu", seed=0)
    assert train.num_samples == 12000 and test.num_samples == 2000
    assert torch.bincount(train.labels).tolist() == [1200] * 10
    assert torch.bincount(test.labels).tolist() == [200] * 10
    assert train.in_channels == 1 and train.image_size == (28, 28)


@pytest.mark.skipif(not __import__("os").path.isdir(FASHION_DIR), reason="Debian's dataset-fashion-mnist not installed")
def test_full_fashion_mnist_from_idx():
    data = build_data(DataConfig(name="fashion_mnist", root=FASHION_DIR), "test", device="cpu", seed=0)
    assert data.num_samples == 10000 and data.num_classes == 10


def test_random_crop_flip_is_a_shifted_window():
    g = torch.Generator().manual_seed(0)
    img = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop_flip(img, padding=2, flip=False, generator=g)
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    for i in range(2):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6]) for dy in range(5) for dx in range(5))
    flipped = random_crop_flip(img, padding=0, flip=True, generator=torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(flipped[i], img[i]) or torch.equal(flipped[i], img[i].flip(2))


def make(train=True, n=50, **kw):
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(n) % 5
    return InMemoryImageData(images, labels, num_classes=5, batch_size=8, train=train, mean=(0.5,), std=(0.25,),
                             device="cpu", seed=4, **kw)


def test_eval_sees_every_sample_once_train_drops_last():
    ev = make(train=False)
    seen = torch.cat([y for _, y in ev])
    assert len(ev) == 7 and seen.tolist() == (torch.arange(50) % 5).tolist()
    tr = make(train=True)
    assert len(tr) == 6 and all(x.shape == (8, 1, 8, 8) for x, _ in tr)


def test_batches_are_a_function_of_seed_epoch_and_position():
    torch.manual_seed(0)
    a = make()
    torch.manual_seed(0)
    b = make()
    a.set_epoch(3)
    batches = list(a)
    b.resume_at(3, 4)
    resumed = list(b)
    assert len(resumed) == 2
    for (x1, y1), (x2, y2) in zip(batches[4:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    a.set_epoch(4)
    assert not torch.equal(next(iter(a))[1], batches[0][1])  # a new epoch reshuffles


def test_label_out_of_range_is_named():
    with pytest.raises(ValueError, match="label 7 out of range for 5 classes"):
        InMemoryImageData(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.tensor([0, 7, 1]), num_classes=5,
                          batch_size=2, train=True, mean=(0.5,), std=(0.5,), device="cpu")


def test_normalization():
    images = torch.full((4, 1, 2, 2), 255, dtype=torch.uint8)
    d = InMemoryImageData(images, torch.zeros(4, dtype=torch.long), num_classes=1, batch_size=4, train=False,
                          mean=(0.5,), std=(0.25,), device="cpu")
    x, _ = next(iter(d))
    assert torch.allclose(x, torch.full_like(x, 2.0))
