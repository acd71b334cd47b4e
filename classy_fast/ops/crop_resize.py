"""Fused crop + resize + flip + normalize of decoded uint8 images, in one pass, to a training batch.

    from classy_fast.ops import crop_resize_normalize
    x = crop_resize_normalize(images, boxes, flip, size=224, dtype=torch.bfloat16, channels_last=True)

``images`` is a list of uint8 images of any sizes (CHW, or HWC with ``input_hwc=True``), e.g. the
output of ``torchvision.io.decode_jpeg(datas, device="cuda")``, or a padded 4-D batch. For image
``b`` the kernel takes the integer box ``boxes[b] = (y0, x0, h, w)``, resizes it bilinearly to
``size`` (exactly ``F.interpolate(crop, size, mode="bilinear", align_corners=False)``, no
antialiasing: reads clamp to the box edges), mirrors it horizontally when ``flip[b]``, and writes
``(x / 255 - mean) / std`` as fp32/bf16/fp16 in NCHW or channels_last. One read of each source
pixel neighbourhood and one write of the output: the random-resized-crop, flip, normalize, cast
and layout change that a torchvision pipeline does in five passes.

Kernels: csrc/crop_resize_normalize.cpp (CPU), csrc/cuda/crop_resize_normalize.cu (CUDA). The
float64 reference below defines the semantics; it is also the fallback (in fp32) when the
extension isn't built.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch

from classy_fast.ops import _extension as _ext

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "crop_resize_normalize", "crop_resize_normalize_reference"]

OP = "classy_fast::crop_resize_normalize"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

Images = Union[torch.Tensor, Sequence[torch.Tensor]]


def _op_registered() -> bool:
    # An extension built before this op existed imports fine but lacks it.
    return _ext.EXTENSION_AVAILABLE and _ext.has_kernel("crop_resize_normalize", "CPU")


def _register_fake_kernel() -> None:
    @torch.library.register_fake(OP)
    def _(images, boxes, flip, out_height, out_width, mean, std, input_hwc, channels_last, dtype):
        torch._check(len(images) >= 1, lambda: f"{OP}: needs at least one image")
        channels = images[0].shape[2 if input_hwc else 0]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty((len(images), channels, out_height, out_width), dtype=dtype, device=images[0].device,
                           memory_format=fmt)


if _op_registered():
    _register_fake_kernel()


# ---- reference ----


def _taps(out_size: int, in_size: int, dtype: torch.dtype, device) -> Tuple[torch.Tensor, ...]:
    """Bilinear source taps and weights along one axis (align_corners=False, as ATen computes them)."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=dtype, device=device) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = (src - i0.to(dtype)).clamp(0, 1)
    return i0, i1, 1 - w1, w1


def crop_resize_normalize_reference(
    images: Images,
    boxes,
    flip=None,
    size: Union[int, Tuple[int, int]] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    input_hwc: bool = False,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The semantics of the fused op in plain PyTorch (float64 by default), one image at a time.

    Reads box and flip values on the host (a sync on a GPU): for tests and the unbuilt fallback.
    """
    images = _as_list(images)
    out_h, out_w = _pair(size)
    boxes_l = torch.as_tensor(boxes).tolist()
    flips = [False] * len(images) if flip is None else [bool(f) for f in torch.as_tensor(flip).tolist()]
    rows = []
    for im, (y0, x0, h, w), f in zip(images, boxes_l, flips):
        chw = im.permute(2, 0, 1) if input_hwc else im
        crop = chw[:, y0 : y0 + h, x0 : x0 + w].to(compute_dtype)
        iy0, iy1, wy0, wy1 = _taps(out_h, h, compute_dtype, im.device)
        ix0, ix1, wx0, wx1 = _taps(out_w, w, compute_dtype, im.device)
        if f:  # output column x reads the resized image's column out_w - 1 - x
            ix0, ix1, wx0, wx1 = ix0.flip(0), ix1.flip(0), wx0.flip(0), wx1.flip(0)
        top, bottom = crop[:, iy0], crop[:, iy1]  # C x out_h x w
        top = top[:, :, ix0] * wx0 + top[:, :, ix1] * wx1
        bottom = bottom[:, :, ix0] * wx0 + bottom[:, :, ix1] * wx1
        rows.append(top * wy0[:, None] + bottom * wy1[:, None])
    x = torch.stack(rows)
    c = x.shape[1]
    m = torch.tensor(list(mean) * (c if len(mean) == 1 else 1), dtype=compute_dtype, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(list(std) * (c if len(std) == 1 else 1), dtype=compute_dtype, device=x.device).view(1, c, 1, 1)
    x = ((x / 255 - m) / s).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---- public op ----


def _as_list(images: Images) -> List[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"crop_resize_normalize: a tensor of images must be 4-D, got shape {tuple(images.shape)}")
        return list(images.unbind(0))
    return list(images)


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


MAX_CHANNELS = 4  # csrc/include/classy_fast/crop_resize.h kMaxChannels


def _check_inputs(images: List[torch.Tensor], boxes: torch.Tensor, flip: torch.Tensor, out_h: int, out_w: int,
                  mean: Sequence[float], std: Sequence[float], input_hwc: bool) -> None:
    """The kernel's argument checks (crop_resize.h), made here so the reference fallback raises the
    same errors instead of silently dropping images or dividing by zero."""
    n = len(images)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"crop_resize_normalize: output size must be positive, got {out_h}x{out_w}")
    for i, im in enumerate(images):
        if im.dim() != 3:
            raise ValueError(f"crop_resize_normalize: images[{i}] must be 3-D ({'HWC' if input_hwc else 'CHW'}), "
                             f"got shape {tuple(im.shape)}")
        if im.dtype != torch.uint8:
            raise ValueError(f"crop_resize_normalize: images[{i}] must be uint8, got {im.dtype}")
    channel_dim = 2 if input_hwc else 0
    channels = images[0].shape[channel_dim]
    if any(im.shape[channel_dim] != channels for im in images) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"crop_resize_normalize: images need the same channel count, 1 to {MAX_CHANNELS}; got "
                         f"{[im.shape[channel_dim] for im in images]}")
    if boxes.shape != (n, 4):
        raise ValueError(f"crop_resize_normalize: boxes must be [{n}, 4] (y0, x0, h, w), got {tuple(boxes.shape)}")
    if flip.shape != (n,):
        raise ValueError(f"crop_resize_normalize: flip must be [{n}], got {tuple(flip.shape)}")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"crop_resize_normalize: {name} needs 1 value or one per channel ({channels}), "
                             f"got {len(values)}")
    if any(float(s) == 0.0 for s in std):
        raise ValueError("crop_resize_normalize: std must be non-zero")


def _as_int_boxes(boxes) -> torch.Tensor:
    """int64 boxes; fractional ones are refused rather than truncated."""
    t = torch.as_tensor(boxes)
    if t.is_floating_point():
        if t.device.type == "cpu" and not torch.equal(t, t.round()):
            raise ValueError("crop_resize_normalize: boxes must be whole pixels (y0, x0, h, w), got fractional values")
    return t.to(torch.int64)


def _check_boxes(images: List[torch.Tensor], boxes: torch.Tensor, input_hwc: bool) -> None:
    """Name the first box that leaves its image (host values only: boxes made on the CPU)."""
    for i, (im, (y0, x0, h, w)) in enumerate(zip(images, boxes.tolist())):
        ih, iw = (im.shape[0], im.shape[1]) if input_hwc else (im.shape[1], im.shape[2])
        if not (h >= 1 and w >= 1 and y0 >= 0 and x0 >= 0 and y0 + h <= ih and x0 + w <= iw):
            raise ValueError(f"crop_resize_normalize: boxes[{i}] = (y0={y0}, x0={x0}, h={h}, w={w}) is not inside "
                             f"image {i} of size {ih}x{iw}")


def crop_resize_normalize(
    images: Images,
    boxes,
    flip=None,
    size: Union[int, Tuple[int, int]] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    input_hwc: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Crop ``boxes[b] = (y0, x0, h, w)`` of each uint8 image, resize to ``size``, flip, normalize.

    images: list of uint8 CHW (or HWC with ``input_hwc``) tensors on one device, or a 4-D batch.
    boxes: int B×4 (tensor or nested sequence; CPU boxes are validated here, naming a bad one).
    flip: B bools (None: no flips). Returns B×C×H×W of ``dtype`` (channels_last memory when asked)
    on the images' device. impl: "auto" (fused kernel when built), "fused", "reference".
    """
    images = _as_list(images)
    if not images:
        raise ValueError("crop_resize_normalize: needs at least one image")
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"crop_resize_normalize: dtype must be one of {OUTPUT_DTYPES}, got {dtype}")
    out_h, out_w = _pair(size)
    device = images[0].device
    boxes = _as_int_boxes(boxes)
    flip = torch.zeros(len(images), dtype=torch.bool) if flip is None else torch.as_tensor(flip, dtype=torch.bool)
    _check_inputs(images, boxes, flip, out_h, out_w, mean, std, input_hwc)
    if boxes.device.type == "cpu":
        _check_boxes(images, boxes, input_hwc)
    fused = _ext.use_fused(impl, images[0], "crop_resize_normalize")
    if fused and not _op_registered():
        if impl == "fused":
            raise RuntimeError(f"classy_fast.ops.crop_resize_normalize(impl='fused'): the built extension predates "
                               f"this op; {_ext.BUILD_HINT}")
        fused = False
    if not fused:
        compute = torch.float64 if impl == "reference" else torch.float32
        return crop_resize_normalize_reference(images, boxes, flip, (out_h, out_w), mean, std, dtype=dtype,
                                               channels_last=channels_last, input_hwc=input_hwc,
                                               compute_dtype=compute)
    return torch.ops.classy_fast.crop_resize_normalize(
        images, boxes.to(device, non_blocking=True), flip.to(device, non_blocking=True), out_h, out_w,
        [float(v) for v in mean], [float(v) for v in std], bool(input_hwc), bool(channels_last), dtype)
