"""Datasets of image files on disk: an ImageFolder (one subdirectory per class) or a file list.

Layouts under ``data.root``::

    image_folder:  ROOT/train/<class>/**/<image>   ROOT/val/<class>/**/<image>   (or ROOT/test)
    file_list:     ROOT/train.txt   ROOT/val.txt (or ROOT/test.txt); lines "path label", the path
                   relative to ROOT (or absolute), the label an integer; '#' starts a comment

Class indices are deterministic: an ImageFolder's classes are the sorted names of the *training*
split's subdirectories (the test split is mapped by name, so a class missing from it shifts
nothing); a file list's class count is the largest training label + 1. Files inside a class are
sorted, so the same tree always yields the same (path, label) list. A missing or empty directory
is an error that says what was expected; a label out of range is a bad sample (see bad_data.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .bad_data import BadImageError, SkippedFiles

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TEST_SPLIT_NAMES = ("val", "test")


@dataclass
class ImageList:
    """Paths and int64 labels of one split, with the class names that index the labels."""

    paths: List[str]
    labels: np.ndarray
    classes: List[str]
    source: str  # the directory or list file it came from (for messages)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, limit: Optional[int]) -> "ImageList":
        if not limit:
            return self
        return ImageList(self.paths[:limit], self.labels[:limit], self.classes, self.source)


def split_location(root: str, split: str, kind: str) -> str:
    """ROOT/train (or train.txt) for the train split; ROOT/val or ROOT/test (.txt) for the test split."""
    if not root:
        raise ValueError(f"data.root must name the dataset directory for data.name={kind}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data.root {root} does not exist or is not a directory")
    suffix = ".txt" if kind == "file_list" else ""
    names = ("train",) if split == "train" else TEST_SPLIT_NAMES
    exists = os.path.isfile if suffix else os.path.isdir
    for name in names:
        path = os.path.join(root, name + suffix)
        if exists(path):
            return path
    wanted = " or ".join(os.path.join(root, n + suffix) for n in names)
    what = "file list" if suffix else "directory"
    raise FileNotFoundError(f"no {split} split in {root}: expected the {what} {wanted}")


def class_names(directory: str) -> List[str]:
    """Sorted names of the (non-hidden) subdirectories: the class index of an ImageFolder."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder {directory} does not exist")
    names = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {directory} has no class subdirectories (expected {directory}/<class>/<image>)")
    return names


def _images_under(directory: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return found


def scan_image_folder(directory: str, classes: Optional[Sequence[str]] = None,
                      skipped: Optional[SkippedFiles] = None) -> ImageList:
    """(path, label) of every image under ``directory/<class>/``; labels index ``classes``.

    ``classes`` defaults to this directory's own subdirectories; pass the training split's to map
    a test split by name. A subdirectory that is not among ``classes`` is a label out of range:
    its files are reported to ``skipped`` (or raise, when strict or when ``skipped`` is None).
    """
    found = class_names(directory)
    classes = list(found if classes is None else classes)
    index = {name: i for i, name in enumerate(classes)}
    paths: List[str] = []
    labels: List[int] = []
    for name in found:
        files = _images_under(os.path.join(directory, name))
        if name not in index:
            for f in files:
                reason = (f"class directory '{name}' is not one of the {len(classes)} training classes "
                          f"(label out of range)")
                if skipped is None:
                    raise BadImageError(f, reason)
                skipped.report(f, reason)
            continue
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    if not paths:
        raise ValueError(f"image folder {directory} has no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                         f"under its class subdirectories")
    return ImageList(paths, np.asarray(labels, dtype=np.int64), classes, directory)


def read_file_list(list_path: str, num_classes: Optional[int] = None,
                   skipped: Optional[SkippedFiles] = None) -> ImageList:
    """Lines ``path label`` of ``list_path``; paths relative to the list's directory.

    ``num_classes`` None takes the largest label + 1 (the training list). A negative label, or one
    ≥ ``num_classes``, is reported to ``skipped`` as "file:line" (or raises). A line that doesn't
    parse is an error naming the file and line: the list itself is broken, not one sample.
    """
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"file list {list_path} does not exist")
    base = os.path.dirname(os.path.abspath(list_path))
    entries = []
    try:
        with open(list_path, "r", encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{list_path}: not a UTF-8 text file ({e}); expected lines 'path label'") from None
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)  # the path may contain spaces; the label is the last field
        try:
            label = int(parts[1])
        except (IndexError, ValueError):
            raise ValueError(f"{list_path}:{lineno}: expected 'path label' with an integer label, "
                             f"got {line!r}") from None
        entries.append((os.path.join(base, parts[0]), label, lineno))
    if not entries:
        raise ValueError(f"file list {list_path} has no entries (expected lines 'path label')")
    if num_classes is None:
        num_classes = max(label for _, label, _ in entries) + 1
    paths: List[str] = []
    labels: List[int] = []
    for path, label, lineno in entries:
        if not 0 <= label < num_classes:
            where, reason = f"{list_path}:{lineno} ({path})", f"label {label} out of range for {num_classes} classes"
            if skipped is None:
                raise BadImageError(where, reason)
            skipped.report(where, reason)
            continue
        paths.append(path)
        labels.append(label)
    if not paths:
        raise ValueError(f"file list {list_path} has no usable entries")
    return ImageList(paths, np.asarray(labels, dtype=np.int64), [str(i) for i in range(num_classes)], list_path)


def image_list(root: str, kind: str, split: str, skipped: Optional[SkippedFiles] = None) -> ImageList:
    """The ``split`` of an 'image_folder' or 'file_list' dataset under ``root``, with the training classes."""
    if kind == "image_folder":
        classes = class_names(split_location(root, "train", kind))
        return scan_image_folder(split_location(root, split, kind), classes, skipped)
    if kind == "file_list":
        train = split_location(root, "train", kind)
        if split == "train":
            return read_file_list(train, None, skipped)
        num_classes = read_file_list(train, None, SkippedFiles(strict=False)).num_classes
        return read_file_list(split_location(root, split, kind), num_classes, skipped)
    raise ValueError(f"unknown image dataset kind {kind!r}")


SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL modes of 16-bit grayscale PNG / TIFF


def load_rgb(path: str):
    """Decode ``path`` with PIL into an RGB image; any failure is a BadImageError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later in a transform
            # Grayscale, CMYK, palette, RGBA and 16-bit images are converted, not rejected.
            if im.mode in SIXTEEN_BIT_GRAY_MODES:
                # PIL's convert("RGB") clips 16-bit values at 255 (a 16-bit scan comes out white):
                # keep the top 8 bits, as DALI and torchvision's decoders do.
                gray = (np.asarray(im).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
                return Image.fromarray(gray, mode="L").convert("RGB")
            return im.convert("RGB") if im.mode != "RGB" else im.copy()
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(path, f"cannot decode: {type(e).__name__}: {e}") from None
