"""Generated image datasets for the data tests: small JPEGs whose colour encodes their class.

Class c is a flat image of grey level CLASS_LEVELS[c] plus a little noise, so after any crop,
resize and flip the batch mean of an image still says which class it is: a test can check that
labels travel with their own images through every backend. Sizes vary (48..72 px) so batches
mix shapes, as real JPEG folders do.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

CLASS_LEVELS = (40, 128, 215)
NUM_TRAIN_PER_CLASS, NUM_VAL_PER_CLASS = 8, 5


def write_image(path: str, level: int, rng: np.random.Generator, mode: str = "RGB", size=None) -> None:
    h, w = size if size is not None else (int(rng.integers(48, 73)), int(rng.integers(48, 73)))
    pixels = np.clip(level + rng.integers(-6, 7, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, quality=92)


def make_image_folder(root: str, seed: int = 0, train: int = NUM_TRAIN_PER_CLASS, val: int = NUM_VAL_PER_CLASS) -> str:
    """ROOT/{train,val}/class_{c}/img_{i}.jpg for the classes of CLASS_LEVELS."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c, level in enumerate(CLASS_LEVELS):
            d = os.path.join(root, split, f"class_{c}")
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                write_image(os.path.join(d, f"img_{i:02d}.jpg"), level, rng)
    return root


def add_bad_files(split_dir: str, rng: np.random.Generator) -> dict:
    """Into split_dir/class_0: a truncated JPEG, a text file named .jpg, grayscale, CMYK and RGBA PNG images."""
    d = os.path.join(split_dir, "class_0")
    good = open(os.path.join(d, "img_00.jpg"), "rb").read()
    with open(os.path.join(d, "truncated.jpg"), "wb") as f:
        f.write(good[: len(good) // 2])
    with open(os.path.join(d, "not_an_image.jpg"), "wb") as f:
        f.write(b"this is a text file, not a JPEG\n" * 8)
    write_image(os.path.join(d, "grayscale.jpg"), CLASS_LEVELS[0], rng, mode="L")
    write_image(os.path.join(d, "cmyk.jpg"), CLASS_LEVELS[0], rng, mode="CMYK")
    write_image(os.path.join(d, "rgba.png"), CLASS_LEVELS[0], rng, mode="RGBA")
    return {"bad": {"truncated.jpg", "not_an_image.jpg"}, "odd": {"grayscale.jpg", "cmyk.jpg", "rgba.png"}}


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
    return make_image_folder(str(tmp_path_factory.mktemp("image_folder")))


@pytest.fixture(scope="session")
def bad_image_folder(tmp_path_factory) -> str:
    root = make_image_folder(str(tmp_path_factory.mktemp("bad_image_folder")), seed=1, train=4, val=3)
    rng = np.random.default_rng(5)
    add_bad_files(os.path.join(root, "train"), rng)
    add_bad_files(os.path.join(root, "val"), rng)
    return root


def class_of(images) -> list:
    """The class each normalized image shows (nearest CLASS_LEVELS grey level after ImageNet normalization)."""
    import torch

    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    levels = ((images.float().cpu() * std + mean) * 255).mean(dim=(1, 2, 3))
    ref = torch.tensor(CLASS_LEVELS, dtype=torch.float32)
    return (levels[:, None] - ref[None]).abs().argmin(1).tolist()
