"""The NVIDIA DALI backend: one pipeline definition that runs on a GPU and without one.

    train: readers.file → decoders.image_random_crop (ROI decode: only the crop's part of the JPEG
           is decoded) → resize to crop_size² → [data.auto_augment policy: DALI's auto_aug suites]
           → crop_mirror_normalize (random mirror, mean/std, fp32/fp16, CHW or HWC for channels_last)
    eval:  readers.file → decoders.image → resize (shorter side) → crop_mirror_normalize (center crop)

With a CUDA device the decoder is ``device="mixed"`` (nvJPEG, the hardware decoder where the GPU
has one), the other ops run on the GPU and batches arrive on it; without one the pipeline is
built with ``device_id=None`` and every op on the CPU (how CI tests it on generated JPEGs).

Order, shards, resume. Each epoch builds a pipeline over an explicit file list: the epoch's
global order (file_source.py: a permutation seeded by (seed, epoch), the same on every rank;
eval: file order), which the reader splits with ``shard_id=rank, num_shards=world,
pad_last_batch=True``; ``random_shuffle`` is off because the list is already shuffled globally.
The pipeline's seed (augmentations) is per (seed, rank, epoch, start batch). Training uses
LastBatchPolicy DROP or FILL (static batch shape), eval PARTIAL (each sample exactly once across
ranks; an empty padding-only batch is skipped). Resuming at batch k drops the first k batches
of every rank's share from the list: the reader's equal split then starts each rank exactly at
its batch k without decoding anything before it. The files and their order match an
uninterrupted run; the random crops after a resume are drawn from a different seed.

Bad files. A DALI decoder error kills the pipeline and usually doesn't name the file. The
failing batch is known by position, so its candidate files (and the prefetched batches after
it) are decoded with PIL to find the culprit(s); they are reported (bad_data.py: skip and count,
or stop naming the file when strict), replaced in the list by a good file of the same share
carrying label -1 (so shard boundaries and step counts stay identical on every rank), and the
pipeline is rebuilt at the failing batch; rows with label -1 are dropped (eval) or refilled
(train). If no candidate fails to decode, the error is raised with the candidates named.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Set, Tuple

import torch

from .auto_augment import AutoAugment
from .bad_data import BadImageError
from .file_source import ImageFileSource
from .memory import _mix_seed

READER = "Reader"
DALI_HINT = ("NVIDIA DALI is not installed: `pip install nvidia-dali-cuda130` (or "
             "`pip install 'classy_fast[dali]'`), or pick another pipeline with data.backend=torchvision|nvjpeg")
# Preallocation hints for the mixed decoder (NVIDIA's ResNet-50 example values): fewer reallocs
# in the first iterations on ImageNet-sized JPEGs.
DEVICE_MEMORY_PADDING = 211025920
HOST_MEMORY_PADDING = 140544512


def dali_import_error() -> Optional[str]:
    """None when DALI imports, else why not."""
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising something else
        return f"{type(e).__name__}: {e}"
    return None


def dali_available() -> bool:
    return dali_import_error() is None


def build_image_pipeline(files: List[str], labels: List[int], *, train: bool, augment: bool, use_gpu: bool,
                         batch_size: int, num_threads: int, device_id: Optional[int], seed: int, shard_id: int,
                         num_shards: int, crop_size: int, resize_size: int, scale, ratio, mean, std, flip: bool,
                         fp16: bool, channels_last: bool, prefetch: int, auto_augment: Optional[AutoAugment] = None):
    """The DALI pipeline (built, not started). ``use_gpu`` False: CPU-only, ``device_id`` None.
    ``auto_augment``: a policy applied to the training crops (uint8 HWC) before normalization."""
    from nvidia.dali import fn, pipeline_def, types

    ops_device = "gpu" if use_gpu else "cpu"
    decode_kw = dict(device="mixed", device_memory_padding=DEVICE_MEMORY_PADDING,
                     host_memory_padding=HOST_MEMORY_PADDING) if use_gpu else dict(device="cpu")
    cmn_kw = dict(device=ops_device, dtype=types.FLOAT16 if fp16 else types.FLOAT,
                  output_layout="HWC" if channels_last else "CHW",
                  mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])

    policy = auto_augment if train and augment else None

    # The policies pick one operation per sample with DALI's conditionals (``if`` on data nodes).
    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  prefetch_queue_depth=prefetch, enable_conditionals=policy is not None)
    def image_pipeline():
        jpegs, label = fn.readers.file(files=files, labels=labels, shard_id=shard_id, num_shards=num_shards,
                                       pad_last_batch=True, random_shuffle=False, name=READER)
        if train and augment:
            images = fn.decoders.image_random_crop(jpegs, output_type=types.RGB, random_area=list(scale),
                                                   random_aspect_ratio=list(ratio), num_attempts=10, **decode_kw)
            images = fn.resize(images, device=ops_device, resize_x=crop_size, resize_y=crop_size)
            if policy is not None:
                images = policy.dali_apply(images)
            mirror = fn.random.coin_flip(probability=0.5) if flip else 0
            images = fn.crop_mirror_normalize(images, mirror=mirror, **cmn_kw)
        else:
            images = fn.decoders.image(jpegs, output_type=types.RGB, **decode_kw)
            images = fn.resize(images, device=ops_device, resize_shorter=resize_size)
            images = fn.crop_mirror_normalize(images, crop=(crop_size, crop_size), **cmn_kw)
        return images, label  # labels stay on the host: filtering substituted rows needs no sync

    return image_pipeline()


class DALIImageData(ImageFileSource):
    """Image files through a DALI pipeline (see the module docstring)."""

    backend = "dali"

    def __init__(self, files, **kw):
        error = dali_import_error()
        if error is not None:
            raise ImportError(f"{DALI_HINT} ({error})")
        super().__init__(files, **kw)
        self.use_gpu = self.device.type == "cuda"
        if self.use_gpu:
            self.device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        else:
            self.device_id = None
        self._bad: Set[int] = set()  # sample indices found undecodable

    # ------------------------------------------------------------------ the epoch's file list
    def _epoch_list(self, epoch: int, start_batch: int) -> Tuple[List[int], List[int]]:
        """Every rank's share from its batch ``start_batch`` on, concatenated: (sample indices, labels).

        The reader's split of this list gives rank r exactly its share's remainder (equal cuts
        from each share keep the boundaries ``n*r // world`` aligned). Bad samples are replaced
        by a good one of the same share with label -1.
        """
        order = self.epoch_order(epoch).tolist()
        cut = start_batch * self.batch_size
        indices: List[int] = []
        labels: List[int] = []
        for r in range(self.world_size):
            lo, hi = self.share_bounds(r)
            share = order[lo:hi]
            good = [i for i in share if i not in self._bad]
            for i in share[cut:]:
                if i in self._bad:
                    if not good:
                        raise BadImageError(self.files.paths[i], "every file of this rank's shard is undecodable")
                    indices.append(good[0])
                    labels.append(-1)
                else:
                    indices.append(i)
                    labels.append(int(self.files.labels[i]))
        return indices, labels

    def _pipeline_iterator(self, epoch: int, start_batch: int):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        indices, labels = self._epoch_list(epoch, start_batch)
        pipe = build_image_pipeline(
            [self.files.paths[i] for i in indices], labels, train=self.train, augment=self.augment,
            use_gpu=self.use_gpu, batch_size=self.batch_size, num_threads=max(1, self.num_workers),
            device_id=self.device_id, seed=_mix_seed(self.seed, self.rank, epoch, start_batch, 3) % (2**31 - 1),
            shard_id=self.rank, num_shards=self.world_size, crop_size=self.crop_size, resize_size=self.resize_size,
            scale=self.scale, ratio=self.ratio, mean=self.mean, std=self.std, flip=self.flip,
            fp16=self.dtype == torch.float16, channels_last=self.channels_last, prefetch=self.prefetch,
            auto_augment=self.auto_augment)
        pipe.build()
        policy = (LastBatchPolicy.DROP if self.drop_last else LastBatchPolicy.FILL) if self.train \
            else LastBatchPolicy.PARTIAL
        return DALIGenericIterator([pipe], ["images", "labels"], reader_name=READER, last_batch_policy=policy,
                                   auto_reset=False)

    # ------------------------------------------------------------------ batches
    def _to_batch(self, out: Dict[str, torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        x, y = out["images"], out["labels"].view(-1).to(torch.int64)
        if x.shape[0] == 0:
            return None  # the padding-only last batch of a shorter eval shard
        if self.channels_last:  # N×H×W×C from DALI is N×C×H×W in channels_last memory
            x = x.permute(0, 3, 1, 2)
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        x = x.to(self.device, non_blocking=True)
        keep = (y >= 0).nonzero().view(-1) if self._bad else None  # labels are host tensors: no device sync
        if keep is not None and len(keep) == 0:
            batch = self.stand_in_batch(len(y))
            if batch is None:
                return None
            x, y = batch
        else:
            wanted = len(y)
            if keep is not None and len(keep) < wanted:
                x, y = x.index_select(0, keep.to(x.device)), y.index_select(0, keep)
            x, y = self.fill_batch(x, y, wanted)  # also keeps a good sample for a batch of bad files
        if self.use_gpu:
            y = y.pin_memory()  # an asynchronous copy needs pinned host memory
        return x, y.to(self.device, non_blocking=True)

    def _find_bad(self, epoch: int, batch: int, error: str) -> List[Tuple[int, str]]:
        """Undecodable samples among the failing batch and the ones prefetched after it."""
        from .image_files import load_rgb

        lo, hi = self.share_bounds(self.rank)
        order = self.epoch_order(epoch).tolist()[lo:hi]
        first = batch * self.batch_size
        candidates = order[first: first + (self.prefetch + 2) * self.batch_size]
        found = []
        for i in dict.fromkeys(candidates):
            if i in self._bad:
                continue
            path = self.files.paths[i]
            try:
                load_rgb(path)
                # Matched as a substring of DALI's message, not by a pattern: paths may contain spaces.
                if "Failed to decode sample" in error and path in error:
                    found.append((i, "DALI cannot decode it (PIL can)"))
            except BadImageError as e:
                found.append((i, e.reason))
        return found

    def _iterate(self, epoch: int, start_batch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        batch = start_batch
        while True:
            it = None
            try:
                it = self._pipeline_iterator(epoch, batch)  # runs the first batches already
                for out in it:
                    converted = self._to_batch(out[0])
                    batch += 1
                    if converted is not None:
                        yield converted
                return
            except RuntimeError as e:
                message = str(e)
                bad = self._find_bad(epoch, batch, message)
                if not bad:
                    lo, hi = self.share_bounds(self.rank)
                    first = lo + batch * self.batch_size
                    names = [self.files.paths[i] for i in self.epoch_order(epoch).tolist()[first: first + 4]]
                    raise RuntimeError(f"DALI pipeline failed in batch {batch} of epoch {epoch + 1} "
                                       f"(rank {self.rank}); "
                                       f"no file of that batch fails to decode with PIL (its first files: {names}). "
                                       f"DALI said: {message.strip()[-400:]}") from e
                for i, reason in bad:
                    self.skipped.report(self.files.paths[i], reason)  # raises BadImageError when strict
                    self._bad.add(i)
            finally:
                del it  # releases the pipeline's threads and buffers before a rebuild
