// Shared by the CPU and CUDA kernels of classy_fast::crop_resize_normalize: the argument checks
// (so both devices reject the same inputs with the same messages) and the sampling math (so both
// compute the same value for every output pixel, and the float64 Python reference in
// classy_fast/ops/crop_resize.py can mirror one formula).
//
// Semantics, per image b: take the integer box (y0, x0, h, w) of the image, resize it bilinearly
// to out_h x out_w exactly as F.interpolate(mode="bilinear", align_corners=False, antialias=False)
// would resize the cropped tensor (reads never leave the box: edges clamp to the box), mirror it
// horizontally when flip[b], then out = (pixel / 255 - mean[c]) / std[c] in fp32, stored as fp32,
// bf16 or fp16 in NCHW or channels_last.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "classy_fast/dispatch.h"

namespace classy_fast::crop_resize {

constexpr const char* kOp = "classy_fast::crop_resize_normalize";
constexpr int kMaxChannels = 4;

// Per-channel affine map from a uint8 value: value * scale + shift == (value / 255 - mean) / std.
struct Normalize {
  float scale[kMaxChannels];
  float shift[kMaxChannels];
};

// One output coordinate's two source taps along an axis, and their weights.
struct Tap {
  int64_t i0;
  int64_t i1;
  float w0;
  float w1;
};

// PyTorch's upsample_bilinear2d source index (align_corners=False): half-pixel centres, negative
// positions clamp to 0, the upper tap clamps to the last row/column of the box. Computed in fp32
// like ATen's CPU and CUDA kernels (opmath of uint8/float is float).
C10_HOST_DEVICE inline Tap bilinear_tap(int64_t out_index, int64_t out_size, int64_t in_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float src = (static_cast<float>(out_index) + 0.5f) * scale - 0.5f;
  src = src < 0.f ? 0.f : src;
  int64_t i0 = static_cast<int64_t>(src);  // floor: src >= 0
  i0 = i0 < in_size - 1 ? i0 : in_size - 1;
  const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  float l1 = src - static_cast<float>(i0);
  l1 = l1 < 0.f ? 0.f : (l1 > 1.f ? 1.f : l1);
  return {i0, i1, 1.f - l1, l1};
}

struct Box {
  int64_t y0, x0, h, w;
};

// The CPU kernel rejects boxes that leave the image; the CUDA kernel cannot read the boxes on
// the host without a sync, so it clamps them into the image instead: whatever the box values, no
// read leaves the image.
C10_HOST_DEVICE inline Box clamp_box(int64_t y0, int64_t x0, int64_t h, int64_t w, int64_t height, int64_t width) {
  y0 = y0 < 0 ? 0 : (y0 > height - 1 ? height - 1 : y0);
  x0 = x0 < 0 ? 0 : (x0 > width - 1 ? width - 1 : x0);
  h = h < 1 ? 1 : (h > height - y0 ? height - y0 : h);
  w = w < 1 ? 1 : (w > width - x0 ? width - x0 : w);
  return {y0, x0, h, w};
}

// Checks on host metadata only (never on tensor values, which may live on a GPU). Returns the
// channel count.
inline int64_t check_args(at::TensorList images, const at::Tensor& boxes, const at::Tensor& flip, int64_t out_h,
                          int64_t out_w, c10::ArrayRef<double> mean, c10::ArrayRef<double> std, bool input_hwc,
                          c10::ScalarType dtype) {
  TORCH_CHECK(!images.empty(), kOp, ": needs at least one image");
  TORCH_CHECK(out_h >= 1 && out_w >= 1, kOp, ": output size must be positive, got ", out_h, "x", out_w);
  TORCH_CHECK(is_supported_float_type(dtype), kOp, ": output dtype must be float32, bfloat16 or float16, got ", dtype);
  const at::Tensor& first = images[0];
  const int64_t channels = first.dim() == 3 ? first.size(input_hwc ? 2 : 0) : 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const at::Tensor& im = images[i];
    TORCH_CHECK(im.scalar_type() == at::kByte, kOp, ": images[", i, "] must be uint8, got ", im.scalar_type());
    TORCH_CHECK(im.dim() == 3, kOp, ": images[", i, "] must be 3-D (", input_hwc ? "HWC" : "CHW", "), got shape ",
                im.sizes());
    TORCH_CHECK(im.device() == first.device(), kOp, ": images[", i, "] is on ", im.device(), " but images[0] is on ",
                first.device());
    TORCH_CHECK(im.size(input_hwc ? 2 : 0) == channels, kOp, ": images[", i, "] has ", im.size(input_hwc ? 2 : 0),
                " channels but images[0] has ", channels);
    TORCH_CHECK(im.size(input_hwc ? 0 : 1) >= 1 && im.size(input_hwc ? 1 : 2) >= 1, kOp, ": images[", i,
                "] is empty: shape ", im.sizes());
  }
  TORCH_CHECK(channels >= 1 && channels <= kMaxChannels, kOp, ": images need 1 to ", kMaxChannels,
              " channels, got ", channels);
  const int64_t n = static_cast<int64_t>(images.size());
  TORCH_CHECK(boxes.scalar_type() == at::kLong && boxes.dim() == 2 && boxes.size(0) == n && boxes.size(1) == 4, kOp,
              ": boxes must be int64 [", n, ", 4] (y0, x0, h, w), got ", boxes.scalar_type(), " ", boxes.sizes());
  TORCH_CHECK(flip.scalar_type() == at::kBool && flip.dim() == 1 && flip.size(0) == n, kOp,
              ": flip must be bool [", n, "], got ", flip.scalar_type(), " ", flip.sizes());
  TORCH_CHECK(boxes.device() == first.device() && flip.device() == first.device(), kOp,
              ": boxes and flip must be on the images' device ", first.device(), ", got ", boxes.device(), " and ",
              flip.device());
  TORCH_CHECK(mean.size() == 1 || static_cast<int64_t>(mean.size()) == channels, kOp,
              ": mean needs 1 value or one per channel (", channels, "), got ", mean.size());
  TORCH_CHECK(std.size() == 1 || static_cast<int64_t>(std.size()) == channels, kOp,
              ": std needs 1 value or one per channel (", channels, "), got ", std.size());
  for (double s : std) TORCH_CHECK(s != 0.0, kOp, ": std must be non-zero");
  return channels;
}

inline Normalize make_normalize(c10::ArrayRef<double> mean, c10::ArrayRef<double> std, int64_t channels) {
  Normalize n{};
  for (int64_t c = 0; c < channels; ++c) {
    const double m = mean.size() == 1 ? mean[0] : mean[c];
    const double s = std.size() == 1 ? std[0] : std[c];
    n.scale[c] = static_cast<float>(1.0 / (255.0 * s));
    n.shift[c] = static_cast<float>(-m / s);
  }
  return n;
}

}  // namespace classy_fast::crop_resize
