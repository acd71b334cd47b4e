"""ImageFolder / file-list scanning, class index, errors, bad entries, crop boxes."""

import os

import numpy as np
import pytest

from classy_fast.data.bad_data import BadImageError, SkippedFiles
from classy_fast.data.crop_boxes import center_crop_box, random_resized_crop_box
from classy_fast.data.image_datasets import spread_subset
from classy_fast.data.image_files import image_list, read_file_list, scan_image_folder

from .conftest import NUM_TRAIN_PER_CLASS, NUM_VAL_PER_CLASS


def test_image_folder_is_deterministic_with_sorted_classes(image_folder):
    a = image_list(image_folder, "image_folder", "train")
    b = image_list(image_folder, "image_folder", "train")
    assert a.paths == b.paths and np.array_equal(a.labels, b.labels)
    assert a.classes == ["class_0", "class_1", "class_2"]
    assert len(a) == 3 * NUM_TRAIN_PER_CLASS and np.bincount(a.labels).tolist() == [NUM_TRAIN_PER_CLASS] * 3
    assert all(os.path.basename(os.path.dirname(p)) == a.classes[y] for p, y in zip(a.paths, a.labels))
    val = image_list(image_folder, "image_folder", "test")
    assert val.source.endswith("val") and len(val) == 3 * NUM_VAL_PER_CLASS


def test_test_split_uses_the_training_class_index(tmp_path):
    for split, classes in (("train", ["ant", "bee", "cat"]), ("val", ["bee", "cat"])):  # val lacks 'ant'
        for c in classes:
            os.makedirs(tmp_path / split / c)
            (tmp_path / split / c / "x.jpg").write_bytes(b"")
    val = image_list(str(tmp_path), "image_folder", "test")
    assert val.classes == ["ant", "bee", "cat"] and val.labels.tolist() == [1, 2]


def test_missing_and_empty_directories_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_list(str(tmp_path / "nope"), "image_folder", "train")
    with pytest.raises(FileNotFoundError, match=r"no train split .*expected the directory .*train"):
        image_list(str(tmp_path), "image_folder", "train")
    os.makedirs(tmp_path / "train")
    with pytest.raises(ValueError, match="has no class subdirectories"):
        image_list(str(tmp_path), "image_folder", "train")
    os.makedirs(tmp_path / "train" / "a")
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="has no image files"):
        image_list(str(tmp_path), "image_folder", "train")
    (tmp_path / "train" / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no test split .*val or .*test"):
        image_list(str(tmp_path), "image_folder", "test")


def test_unknown_class_in_the_test_split_is_a_label_out_of_range(tmp_path):
    for split, classes in (("train", ["a"]), ("val", ["a", "zebra"])):
        for c in classes:
            os.makedirs(tmp_path / split / c)
            (tmp_path / split / c / "x.jpg").write_bytes(b"")
    skipped = SkippedFiles(strict=False)
    val = image_list(str(tmp_path), "image_folder", "test", skipped)
    assert len(val) == 1 and skipped.count == 1 and "zebra" in skipped.examples[0][0]
    with pytest.raises(BadImageError, match="zebra.*not one of the 1 training classes"):
        image_list(str(tmp_path), "image_folder", "test", SkippedFiles(strict=True))


def test_file_list(tmp_path):
    (tmp_path / "train.txt").write_text("# path label\nimgs/a b.jpg 0\nimgs/c.jpg 2\n\n/abs/d.png 1  # comment\n")
    (tmp_path / "val.txt").write_text("imgs/e.jpg 1\nimgs/f.jpg 7\nimgs/g.jpg -1\n")
    train = image_list(str(tmp_path), "file_list", "train")
    assert train.paths == [str(tmp_path / "imgs" / "a b.jpg"), str(tmp_path / "imgs" / "c.jpg"), "/abs/d.png"]
    assert train.labels.tolist() == [0, 2, 1] and train.num_classes == 3
    skipped = SkippedFiles(strict=False)
    val = image_list(str(tmp_path), "file_list", "test", skipped)
    assert val.labels.tolist() == [1] and skipped.count == 2
    with pytest.raises(BadImageError, match=r"val.txt:2 .*label 7 out of range for 3 classes"):
        image_list(str(tmp_path), "file_list", "test", SkippedFiles(strict=True))
    (tmp_path / "bad.txt").write_text("imgs/a.jpg zero\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'path label'"):
        read_file_list(str(tmp_path / "bad.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="has no entries"):
        read_file_list(str(tmp_path / "empty.txt"))


def test_spread_subset_keeps_every_class(image_folder):
    files = scan_image_folder(os.path.join(image_folder, "train"))
    sub = spread_subset(files, 6)
    assert len(sub) == 6 and sorted(set(sub.labels.tolist())) == [0, 1, 2]


def test_crop_boxes():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_box(375, 500, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500 and h >= 1 and w >= 1
        areas.append(h * w / (375 * 500))
        ratios.append(w / h)
    assert 0.07 < min(areas) and max(areas) <= 1.0 and 0.74 < min(ratios) and max(ratios) < 1.34
    assert 0.40 < np.mean(areas) < 0.47  # torchvision's get_params gives 0.435 here (20k draws)
    assert random_resized_crop_box(10, 200, (0.9, 1.0), (3 / 4, 4 / 3), rng) == (0, 93, 10, 13)  # the fallback
    assert center_crop_box(256, 512, 256, 224) == (16, 144, 224, 224)  # resize 256 → crop 224
    assert center_crop_box(375, 500, 256, 224) == (23, 86, 328, 328)


def test_16_bit_grayscale_images_keep_their_top_8_bits(tmp_path):
    """PIL's convert('RGB') would clip a 16-bit PNG at 255 (white); both host decoders scale it instead."""
    import torch
    from PIL import Image

    from classy_fast.data.image_files import load_rgb
    from classy_fast.data.nvjpeg_loader import decode_on_host

    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = str(tmp_path / "gray16.png")
    Image.fromarray(values).save(path)
    expected = (values >> 8).astype(np.uint8)
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    with open(path, "rb") as f:
        chw = decode_on_host(torch.frombuffer(bytearray(f.read()), dtype=torch.uint8), path)
    assert chw.dtype == torch.uint8 and chw.shape == (3, 64, 64)
    assert np.array_equal(chw[1].numpy(), expected)


def test_file_list_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"a.jpg 0\n\xff\xfe b.jpg 1\n")
    with pytest.raises(ValueError, match=r"train.txt: not a UTF-8 text file"):
        read_file_list(str(tmp_path / "train.txt"))


@pytest.mark.parametrize("key", ["limit_train", "limit_test"])
def test_negative_limits_are_refused_for_image_files(image_folder, key):
    import torch

    from classy_fast.config import DataConfig
    from classy_fast.data import build_data

    cfg = DataConfig(name="image_folder", root=image_folder, backend="torchvision", num_workers=0, crop_size=16,
                     resize_size=20, **{key: -5})
    with pytest.raises(ValueError, match=f"data.{key} must be ≥ 0, got -5"):
        build_data(cfg, "train" if key == "limit_train" else "test", device=torch.device("cpu"), seed=0)


def test_test_batch_size_below_one_names_its_key_for_image_files(image_folder):
    import torch

    from classy_fast.config import DataConfig
    from classy_fast.data import build_data

    cfg = DataConfig(name="image_folder", root=image_folder, backend="torchvision", num_workers=0, crop_size=16,
                     resize_size=20, test_batch_size=0)
    with pytest.raises(ValueError, match="data.test_batch_size must be ≥ 1, got 0"):
        build_data(cfg, "test", device=torch.device("cpu"), seed=0)
