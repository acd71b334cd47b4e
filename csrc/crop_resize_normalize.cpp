// CPU kernel of classy_fast::crop_resize_normalize: per-image crop box -> bilinear resize ->
// optional horizontal flip -> (x / 255 - mean) / std, written once in the requested dtype and
// layout. Semantics and checks: csrc/include/classy_fast/crop_resize.h; schema:
// csrc/registration.cpp; CUDA kernel: csrc/cuda/crop_resize_normalize.cu.
//
// This is the reference-speed path (tests, CPU training on decoded JPEGs): output rows are spread
// over threads with at::parallel_for, each row computes its taps once per pixel.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "classy_fast/crop_resize.h"
#include "classy_fast/dispatch.h"

namespace classy_fast::cpu {
namespace {

using at::Tensor;
namespace cr = classy_fast::crop_resize;

struct ImageView {
  const uint8_t* data;
  int64_t height, width;
  int64_t stride_c, stride_h, stride_w;
};

template <typename out_t, bool kChannelsLast>
void crop_resize_rows(const std::vector<ImageView>& views, const std::vector<cr::Box>& boxes, const bool* flip,
                      const cr::Normalize& norm, int64_t channels, int64_t out_h, int64_t out_w, out_t* out,
                      int64_t begin, int64_t end) {
  const int64_t plane = out_h * out_w;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / out_h;
    const int64_t oy = row - b * out_h;
    const ImageView& im = views[b];
    const cr::Box& box = boxes[b];
    const cr::Tap ty = cr::bilinear_tap(oy, out_h, box.h);
    const int64_t r0 = (box.y0 + ty.i0) * im.stride_h;
    const int64_t r1 = (box.y0 + ty.i1) * im.stride_h;
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const int64_t sx = flip[b] ? out_w - 1 - ox : ox;
      const cr::Tap tx = cr::bilinear_tap(sx, out_w, box.w);
      const int64_t c0 = (box.x0 + tx.i0) * im.stride_w;
      const int64_t c1 = (box.x0 + tx.i1) * im.stride_w;
      for (int64_t c = 0; c < channels; ++c) {
        const uint8_t* p = im.data + c * im.stride_c;
        const float top = tx.w0 * static_cast<float>(p[r0 + c0]) + tx.w1 * static_cast<float>(p[r0 + c1]);
        const float bottom = tx.w0 * static_cast<float>(p[r1 + c0]) + tx.w1 * static_cast<float>(p[r1 + c1]);
        const float v = (ty.w0 * top + ty.w1 * bottom) * norm.scale[c] + norm.shift[c];
        const int64_t at = kChannelsLast ? ((b * out_h + oy) * out_w + ox) * channels + c
                                         : (b * channels + c) * plane + oy * out_w + ox;
        out[at] = static_cast<out_t>(v);
      }
    }
  }
}

Tensor crop_resize_normalize_cpu(at::TensorList images, const Tensor& boxes, const Tensor& flip, int64_t out_h,
                                 int64_t out_w, c10::ArrayRef<double> mean, c10::ArrayRef<double> std, bool input_hwc,
                                 bool channels_last, c10::ScalarType dtype) {
  const int64_t channels = cr::check_args(images, boxes, flip, out_h, out_w, mean, std, input_hwc, dtype);
  TORCH_CHECK(images[0].device().is_cpu(), cr::kOp, ": the CPU kernel got images on ", images[0].device());
  const int64_t n = static_cast<int64_t>(images.size());
  const Tensor boxes_c = boxes.contiguous();
  const Tensor flip_c = flip.contiguous();
  const int64_t* bx = boxes_c.data_ptr<int64_t>();
  std::vector<ImageView> views(n);
  std::vector<cr::Box> clamped(n);
  for (int64_t i = 0; i < n; ++i) {
    const Tensor& im = images[i];
    const int64_t h = im.size(input_hwc ? 0 : 1), w = im.size(input_hwc ? 1 : 2);
    views[i] = {im.data_ptr<uint8_t>(), h, w, im.stride(input_hwc ? 2 : 0), im.stride(input_hwc ? 0 : 1),
                im.stride(input_hwc ? 1 : 2)};
    const int64_t y0 = bx[4 * i], x0 = bx[4 * i + 1], bh = bx[4 * i + 2], bw = bx[4 * i + 3];
    // Values are on the host here, so a bad box is an error (the CUDA kernel clamps instead).
    TORCH_CHECK(bh >= 1 && bw >= 1 && y0 >= 0 && x0 >= 0 && y0 + bh <= h && x0 + bw <= w, cr::kOp, ": boxes[", i,
                "] = (y0=", y0, ", x0=", x0, ", h=", bh, ", w=", bw, ") is not inside image ", i, " of size ", h, "x",
                w);
    clamped[i] = {y0, x0, bh, bw};
  }
  const cr::Normalize norm = cr::make_normalize(mean, std, channels);
  Tensor out = at::empty({n, channels, out_h, out_w}, images[0].options().dtype(dtype),
                         channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const bool* fl = flip_c.data_ptr<bool>();
  const int64_t rows = n * out_h;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, out_w * channels));
  CLASSY_FAST_DISPATCH_FLOAT_TYPES(dtype, cr::kOp, [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      if (channels_last) {
        crop_resize_rows<scalar_t, true>(views, clamped, fl, norm, channels, out_h, out_w, o, begin, end);
      } else {
        crop_resize_rows<scalar_t, false>(views, clamped, fl, norm, channels, out_h, out_w, o, begin, end);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CPU, m) {
  m.impl("crop_resize_normalize", &crop_resize_normalize_cpu);
}

}  // namespace classy_fast::cpu
