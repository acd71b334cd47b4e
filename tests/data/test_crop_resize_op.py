"""classy_fast::crop_resize_normalize: the kernels against the float64 reference, which is
itself checked against F.interpolate on the cropped image."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from classy_fast.ops import crop_resize_normalize, crop_resize_normalize_reference
from classy_fast.ops import _extension as ext

HAS_OP = ext.has_kernel("crop_resize_normalize", "CPU")
needs_op = pytest.mark.skipif(not HAS_OP, reason="classy_fast._C not built with crop_resize_normalize")
HAS_CUDA_OP = torch.cuda.is_available() and ext.has_kernel("crop_resize_normalize", "CUDA")
needs_cuda_op = pytest.mark.skipif(not HAS_CUDA_OP, reason="needs CUDA and the CUDA kernel")
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=1e-2),
       torch.float16: dict(atol=3e-3, rtol=1e-3)}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_batch(seed=0, channels=3, n=6, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    images, boxes = [], []
    for i in range(n):
        h, w = torch.randint(5, 90, (2,), generator=g).tolist()
        images.append(torch.randint(0, 256, (channels, h, w), generator=g, dtype=torch.uint8).to(device))
        bh, bw = torch.randint(1, h + 1, (1,), generator=g).item(), torch.randint(1, w + 1, (1,), generator=g).item()
        y0 = torch.randint(0, h - bh + 1, (1,), generator=g).item()
        x0 = torch.randint(0, w - bw + 1, (1,), generator=g).item()
        boxes.append((y0, x0, bh, bw))
    boxes[0] = (0, 0, images[0].shape[1], images[0].shape[2])  # the whole image
    flip = torch.rand(n, generator=g) < 0.5
    return images, torch.tensor(boxes), flip


def test_reference_is_crop_then_interpolate_then_flip_then_normalize():
    images, boxes, flip = make_batch()
    for size in ((24, 24), (7, 130), (1, 1)):
        ref = crop_resize_normalize_reference(images, boxes, flip, size, MEAN, STD, dtype=torch.float64)
        for i, (im, (y0, x0, h, w)) in enumerate(zip(images, boxes.tolist())):
            crop = im[:, y0:y0 + h, x0:x0 + w].double()[None]
            want = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0]
            if flip[i]:
                want = want.flip(-1)
            m = torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1)
            want = (want / 255 - m) / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)
            torch.testing.assert_close(ref[i].double(), want, atol=1e-12, rtol=1e-12)


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_kernel_matches_reference(dtype, channels_last):
    images, boxes, flip = make_batch(seed=1)
    for size in ((32, 32), (17, 45)):
        out = crop_resize_normalize(images, boxes, flip, size, dtype=dtype, channels_last=channels_last, impl="fused")
        ref = crop_resize_normalize_reference(images, boxes, flip, size)
        assert out.dtype == dtype and out.shape == (len(images), 3, *size)
        assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        torch.testing.assert_close(out.double(), ref.double(), **TOL[dtype])


@needs_op
@pytest.mark.parametrize("channels", [1, 4])
def test_cpu_kernel_hwc_views_padded_batches_and_channel_counts(channels):
    images, boxes, flip = make_batch(seed=2, channels=channels)
    hwc = [im.permute(1, 2, 0) for im in images]  # non-contiguous HWC views
    mean, std = (0.5,), (0.25,)
    ref = crop_resize_normalize_reference(images, boxes, flip, 20, mean, std)
    out = crop_resize_normalize(hwc, boxes, flip, 20, mean, std, input_hwc=True, impl="fused")
    torch.testing.assert_close(out.double(), ref.double(), **TOL[torch.float32])
    padded = torch.zeros(len(images), channels, 90, 90, dtype=torch.uint8)
    for i, im in enumerate(images):
        padded[i, :, : im.shape[1], : im.shape[2]] = im
    out = crop_resize_normalize(padded, boxes, flip, 20, mean, std, impl="fused")  # boxes stay inside each image
    torch.testing.assert_close(out.double(), ref.double(), **TOL[torch.float32])


@needs_op
def test_bad_arguments_are_named():
    images, boxes, flip = make_batch(n=3)
    bad = boxes.clone()
    bad[2] = torch.tensor([0, 0, images[2].shape[1] + 1, 1])
    with pytest.raises(ValueError, match=r"boxes\[2\] .* is not inside image 2"):
        crop_resize_normalize(images, bad, flip, 8, impl="fused")
    with pytest.raises(RuntimeError, match=r"boxes\[2\] .* is not inside image 2"):  # the kernel's own check
        torch.ops.classy_fast.crop_resize_normalize(images, bad, flip, 8, 8, list(MEAN), list(STD), False, False,
                                                    torch.float32)
    # The kernel's own checks, op called directly ...
    op = torch.ops.classy_fast.crop_resize_normalize
    with pytest.raises(RuntimeError, match=r"images\[1\] has 1 channels but images\[0\] has 3"):
        op([images[0], images[1][:1]], boxes[:2], flip[:2], 8, 8, list(MEAN), list(STD), False, False, torch.float32)
    with pytest.raises(RuntimeError, match=r"images\[0\] must be uint8"):
        op([images[0].float()], boxes[:1], flip[:1], 8, 8, list(MEAN), list(STD), False, False, torch.float32)
    with pytest.raises(RuntimeError, match=r"mean needs 1 value or one per channel \(3\), got 2"):
        op(images, boxes, flip, 8, 8, [0.1, 0.2], list(STD), False, False, torch.float32)


@pytest.mark.parametrize("impl", [pytest.param("fused", marks=needs_op), "reference"])
@pytest.mark.parametrize("call,match", [
    (lambda im, b, f, impl: crop_resize_normalize([im[0], im[1][:1]], b[:2], f[:2], 8, impl=impl),
     "same channel count"),
    (lambda im, b, f, impl: crop_resize_normalize([im[0].float()], b[:1], f[:1], 8, impl=impl), "must be uint8"),
    (lambda im, b, f, impl: crop_resize_normalize(im, b, f, 8, mean=(0.1, 0.2), impl=impl),
     r"mean needs 1 value or one per channel \(3\)"),
    (lambda im, b, f, impl: crop_resize_normalize(im, b[:1], f, 8, impl=impl), r"boxes must be \[3, 4\]"),
    (lambda im, b, f, impl: crop_resize_normalize(im, b, f[:2], 8, impl=impl), r"flip must be \[3\]"),
    (lambda im, b, f, impl: crop_resize_normalize(im, b, f, 8, std=(0.0,), impl=impl), "std must be non-zero"),
    (lambda im, b, f, impl: crop_resize_normalize(im, b, f, 0, impl=impl), "output size must be positive"),
    (lambda im, b, f, impl: crop_resize_normalize([im[0][0]], b[:1], f[:1], 8, impl=impl), "must be 3-D"),
    (lambda im, b, f, impl: crop_resize_normalize(im, b.double() + 0.5, f, 8, impl=impl), "whole pixels"),
], ids=["channels", "dtype", "mean", "boxes", "flip", "std", "size", "2d", "fractional"])
def test_every_path_refuses_bad_arguments_alike(impl, call, match):
    """... and the wrapper's, which the reference fallback (extension not built) goes through too."""
    images, boxes, flip = make_batch(n=3)
    with pytest.raises(ValueError, match=match):
        call(images, boxes, flip, impl)


@needs_op
def test_opcheck_cpu():
    images, boxes, flip = make_batch(n=3)
    for dtype, cl in ((torch.float32, False), (torch.bfloat16, True)):
        torch.library.opcheck(torch.ops.classy_fast.crop_resize_normalize,
                              (images, boxes, flip, 12, 9, list(MEAN), list(STD), False, cl, dtype))


def test_reference_fallback_without_the_kernel(monkeypatch):
    monkeypatch.setattr(ext, "EXTENSION_AVAILABLE", False)
    images, boxes, flip = make_batch(n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the once-per-process "not built" warning
        out = crop_resize_normalize(images, boxes, flip, 10)
    torch.testing.assert_close(out, crop_resize_normalize_reference(images, boxes, flip, 10), **TOL[torch.float32])
    with pytest.raises(RuntimeError, match="impl='fused'"):
        crop_resize_normalize(images, boxes, flip, 10, impl="fused")


# ---- CUDA ----


@pytest.mark.cuda
@needs_cuda_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_kernel_matches_reference(dtype, channels_last):
    images, boxes, flip = make_batch(seed=3, n=150, device="cuda")  # > 64 images: several launches
    out = crop_resize_normalize(images, boxes, flip, (40, 33), dtype=dtype, channels_last=channels_last, impl="fused")
    torch.cuda.synchronize()
    ref = crop_resize_normalize_reference([im.cpu() for im in images], boxes, flip, (40, 33))
    assert out.is_cuda and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out.cpu().double(), ref.double(), **TOL[dtype])
    hwc = [im.permute(1, 2, 0) for im in images[:5]]
    out = crop_resize_normalize(hwc, boxes[:5], flip[:5], 19, input_hwc=True, impl="fused")
    torch.testing.assert_close(out.cpu().double(), crop_resize_normalize_reference(
        [im.cpu() for im in images[:5]], boxes[:5], flip[:5], 19).double(), **TOL[torch.float32])


@pytest.mark.cuda
@needs_cuda_op
def test_cuda_boxes_on_the_device_are_clamped_and_opcheck():
    images, boxes, flip = make_batch(seed=4, n=4, device="cuda")
    wild = torch.tensor([[-5, -5, 10**6, 10**6], [10**6, 10**6, 3, 3], [0, 0, 0, 0], [2, 3, -7, 4]], device="cuda")
    out = torch.ops.classy_fast.crop_resize_normalize(images, wild, flip.cuda(), 8, 8, list(MEAN), list(STD), False,
                                                      False, torch.float32)
    torch.cuda.synchronize()  # no illegal address: every read stays inside its image
    assert torch.isfinite(out).all()
    whole = torch.tensor([[0, 0, images[0].shape[1], images[0].shape[2]]])
    torch.testing.assert_close(out[:1].cpu().double(), crop_resize_normalize_reference(
        [images[0].cpu()], whole, flip[:1].cpu(), 8).double(), **TOL[torch.float32])
    torch.library.opcheck(torch.ops.classy_fast.crop_resize_normalize,
                          (images, boxes.cuda(), flip.cuda(), 12, 9, list(MEAN), list(STD), False, True,
                           torch.bfloat16))
