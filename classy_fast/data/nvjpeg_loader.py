"""The GPU JPEG backend without DALI: batched nvJPEG decode (``torchvision.io.decode_jpeg`` on the
device) followed by one fused kernel for crop + resize + flip + normalize + dtype/layout
(``classy_fast.ops.crop_resize_normalize``).

Loader workers only read file bytes (cheap: no decode on the host), the main process decodes
the whole batch on the device in one call, draws each sample's box from its decoded size (the
same seeded boxes as the torchvision backend, crop_boxes.py), and the fused kernel writes the
batch. Decode and kernel run on a side stream one batch ahead (prefetch.py). On a CPU device the
same path runs with torchvision's CPU decoder and the op's CPU kernel (how CI tests it).

Odd files: non-JPEGs (PNG, BMP, WebP), JPEGs without their end marker (truncated) and JPEGs
the device decoder rejects (CMYK, some progressive files) are decoded on the host (torchvision,
then PIL) and uploaded; a file nothing can decode is reported as bad (skipped and counted, or
strict) and training batches are refilled.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .bad_data import BadImageError
from .crop_boxes import sample_box
from .torchvision_loader import DataLoaderImageSource, _PositionSampler

JPEG_MAGIC = b"\xff\xd8"  # start of image
JPEG_END = b"\xff\xd9"  # end of image


def is_whole_jpeg(data: torch.Tensor) -> bool:
    """Starts like a JPEG and has its end marker near the end (a truncated file doesn't).

    Only whole JPEGs go to the batched device decoder: libjpeg-turbo on the host reports a
    truncated stream precisely, a device decoder may not. Files with a few bytes of trailing junk
    after the marker still count as whole.
    """
    return bytes(data[:2].tolist()) == JPEG_MAGIC and JPEG_END in bytes(data[-64:].tolist())


class FileBytesDataset(Dataset):
    """Raw bytes of one file (uint8 tensor), keyed by (sample index, augmentation seed)."""

    def __init__(self, paths, labels):
        self.paths, self.labels = list(paths), labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, seed = key
        path = self.paths[index]
        try:
            data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        except OSError as e:
            return None, int(self.labels[index]), path, seed, f"cannot read: {e.strerror or e}"
        if data.numel() == 0:
            return None, int(self.labels[index]), path, seed, "empty file"
        return data, int(self.labels[index]), path, seed, None


@contextlib.contextmanager
def quiet_torchvision_io():
    """torchvision 0.29 deprecates its image codecs for TorchCodec; they still are the nvJPEG path
    available everywhere torchvision is, and a warning per decode call would flood the log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io.image")
        yield


def collate_bytes(samples):
    return samples  # variable-length byte tensors: kept as a list


def decode_on_host(data: torch.Tensor, path: str) -> torch.Tensor:
    """uint8 RGB CHW from any format torchvision or PIL reads; BadImageError naming ``path`` otherwise."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        with quiet_torchvision_io():
            image = decode_image(data, mode=ImageReadMode.RGB)
        # 16-bit PNGs decode to uint16: keep the top 8 bits (the crop kernel takes uint8).
        return image if image.dtype == torch.uint8 else (image.to(torch.int32) >> 8).to(torch.uint8)
    except RuntimeError:
        pass  # BMP and friends: torchvision's decoders don't read them, PIL does
    from .image_files import load_rgb

    img = load_rgb(path)
    return torch.from_numpy(np.asarray(img)).permute(2, 0, 1).contiguous()


class GPUJpegImageData(DataLoaderImageSource):
    """Image files decoded by nvJPEG on the device and cropped by the fused kernel."""

    backend = "nvjpeg"

    def __init__(self, files, **kw):
        super().__init__(files, **kw)
        if self.auto_augment is not None:
            raise ValueError(f"data.auto_augment={self.auto_augment.policy}: the nvjpeg backend has no uint8 crop to "
                             "augment (one fused kernel crops, resizes and normalizes); use data.backend torchvision or dali")
        self._loader: Optional[DataLoader] = None
        self._iter_epoch, self._iter_start = 0, 0

    def _make_loader(self) -> DataLoader:
        import torchvision.io  # noqa: F401  (imported once here, not per batch)

        workers = self.num_workers
        return DataLoader(FileBytesDataset(self.files.paths, self.files.labels), batch_size=self.batch_size,
                          sampler=_PositionSampler(self), collate_fn=collate_bytes, num_workers=workers,
                          persistent_workers=workers > 0, prefetch_factor=self.prefetch if workers else None)

    def _decode(self, samples) -> List[Tuple[torch.Tensor, int, int]]:
        """Decoded images on the device with their labels and seeds; bad files reported."""
        from torchvision.io import ImageReadMode, decode_jpeg

        ok = [s for s in samples if s[4] is None]
        for _, _, path, _, reason in samples:
            if reason is not None:
                self.skipped.report(path, reason)
        decoded: List[Optional[torch.Tensor]] = [None] * len(ok)
        jpeg_slots = [i for i, s in enumerate(ok) if is_whole_jpeg(s[0])]
        if jpeg_slots:
            datas = [ok[i][0] for i in jpeg_slots]
            try:  # one batched call: nvJPEG decodes the whole batch together
                with quiet_torchvision_io():
                    images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:
                images = [None] * len(datas)  # find the culprit(s): decode one by one below
            for i, img in zip(jpeg_slots, images):
                decoded[i] = img
        for i, (data, _, path, _, _) in enumerate(ok):
            if decoded[i] is not None:
                continue
            try:
                if self.device.type == "cuda" and is_whole_jpeg(data):
                    try:
                        with quiet_torchvision_io():
                            decoded[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
                        continue
                    except RuntimeError:
                        pass  # e.g. CMYK: the host decoder converts it
                decoded[i] = decode_on_host(data, path).to(self.device, non_blocking=True)
            except BadImageError as e:
                self.skipped.report(path, e.reason)
        return [(img, s[1], s[3]) for img, s in zip(decoded, ok) if img is not None]

    def _prepare(self, samples):
        from classy_fast.ops import crop_resize_normalize

        wanted = len(samples)
        good = self._decode(samples)
        if not good:
            return self.stand_in_batch(wanted)
        boxes, flips = [], []
        for img, _, seed in good:
            box, mirror = sample_box(int(img.shape[1]), int(img.shape[2]), train=self.train, augment=self.augment,
                                     crop_size=self.crop_size, resize_size=self.resize_size, scale=self.scale,
                                     ratio=self.ratio, flip=self.flip, rng=np.random.default_rng(seed))
            boxes.append(box)
            flips.append(mirror)
        pin = self.device.type == "cuda"
        boxes_t = torch.tensor(boxes, dtype=torch.int64)
        flips_t = torch.tensor(flips, dtype=torch.bool)
        labels = torch.tensor([label for _, label, _ in good], dtype=torch.int64)
        if pin:
            boxes_t, flips_t, labels = boxes_t.pin_memory(), flips_t.pin_memory(), labels.pin_memory()
        images = crop_resize_normalize([img for img, _, _ in good], boxes_t, flips_t, self.crop_size, self.mean,
                                       self.std, dtype=self.dtype, channels_last=self.channels_last)
        return self.fill_batch(images, labels.to(self.device, non_blocking=True), wanted)

