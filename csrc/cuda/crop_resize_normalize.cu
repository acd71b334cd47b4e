// CUDA kernel of classy_fast::crop_resize_normalize: random-resized-crop + flip + normalize +
// dtype/layout conversion of a batch of decoded uint8 images (e.g. torchvision.io.decode_jpeg on
// the GPU) in one pass: each output value is computed from four uint8 reads and written once.
// Semantics and checks: csrc/include/classy_fast/crop_resize.h; CPU kernel:
// csrc/crop_resize_normalize.cpp; schema: csrc/registration.cpp.
//
// The images have different sizes and live in separate allocations, so their addresses, sizes
// and strides travel in the kernel's parameter space (a table of up to kImagesPerLaunch images,
// read with a block-uniform index from a __grid_constant__ parameter: no host-to-device copy,
// nothing to synchronise, capturable in a CUDA graph). Longer batches take several launches.
// Boxes and flip flags are device tensors read by the kernel, so the host never waits on them;
// the kernel clamps each box into its image (see clamp_box), so bad values cannot read out of
// bounds. Offsets are int64 throughout.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "classy_fast/crop_resize.h"
#include "classy_fast/dispatch.h"

namespace classy_fast::cuda {
namespace {

using at::Tensor;
namespace cr = classy_fast::crop_resize;

constexpr int kThreads = 256;
constexpr int kImagesPerLaunch = 64;
constexpr int64_t kMaxBlocksX = 4096;  // beyond it, threads loop over pixels (grid-stride)

struct ImageTable {
  const uint8_t* data[kImagesPerLaunch];
  int64_t height[kImagesPerLaunch];
  int64_t width[kImagesPerLaunch];
  int64_t stride_c[kImagesPerLaunch];
  int64_t stride_h[kImagesPerLaunch];
  int64_t stride_w[kImagesPerLaunch];
};

// Kernel parameters must fit the classic 4 KB parameter space (portable to every toolkit).
static_assert(sizeof(ImageTable) + sizeof(cr::Normalize) + 8 * sizeof(int64_t) <= 4096,
              "crop_resize_normalize: kernel parameters exceed 4 KB");

// grid: x = pixel blocks of one output image, y = image slot within this launch.
template <typename out_t, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    crop_resize_normalize_kernel(const __grid_constant__ ImageTable table, const cr::Normalize norm,
                                 const int64_t first_image, const int channels, const int64_t out_h,
                                 const int64_t out_w, const int64_t* __restrict__ boxes,
                                 const bool* __restrict__ flip, out_t* __restrict__ out) {
  const int slot = blockIdx.y;
  const int64_t b = first_image + slot;
  const int64_t height = table.height[slot];
  const int64_t width = table.width[slot];
  const cr::Box box = cr::clamp_box(boxes[4 * b], boxes[4 * b + 1], boxes[4 * b + 2], boxes[4 * b + 3], height, width);
  const bool mirror = flip[b];
  const uint8_t* __restrict__ data = table.data[slot];
  const int64_t sc = table.stride_c[slot];
  const int64_t sh = table.stride_h[slot];
  const int64_t sw = table.stride_w[slot];
  const int64_t plane = out_h * out_w;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t pix = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; pix < plane; pix += step) {
    const int64_t oy = pix / out_w;
    const int64_t ox = pix - oy * out_w;
    const cr::Tap ty = cr::bilinear_tap(oy, out_h, box.h);
    const cr::Tap tx = cr::bilinear_tap(mirror ? out_w - 1 - ox : ox, out_w, box.w);
    const int64_t r0 = (box.y0 + ty.i0) * sh;
    const int64_t r1 = (box.y0 + ty.i1) * sh;
    const int64_t c0 = (box.x0 + tx.i0) * sw;
    const int64_t c1 = (box.x0 + tx.i1) * sw;
#pragma unroll
    for (int c = 0; c < cr::kMaxChannels; ++c) {
      if (c < channels) {
        const uint8_t* p = data + c * sc;
        const float top = tx.w0 * static_cast<float>(p[r0 + c0]) + tx.w1 * static_cast<float>(p[r0 + c1]);
        const float bottom = tx.w0 * static_cast<float>(p[r1 + c0]) + tx.w1 * static_cast<float>(p[r1 + c1]);
        const float v = (ty.w0 * top + ty.w1 * bottom) * norm.scale[c] + norm.shift[c];
        const int64_t at = kChannelsLast ? (b * plane + pix) * channels + c : (b * channels + c) * plane + pix;
        out[at] = static_cast<out_t>(v);
      }
    }
  }
}

Tensor crop_resize_normalize_cuda(at::TensorList images, const Tensor& boxes, const Tensor& flip, int64_t out_h,
                                  int64_t out_w, c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                                  bool input_hwc, bool channels_last, c10::ScalarType dtype) {
  const int64_t channels = cr::check_args(images, boxes, flip, out_h, out_w, mean, std, input_hwc, dtype);
  TORCH_CHECK(images[0].is_cuda(), cr::kOp, ": the CUDA kernel got images on ", images[0].device());
  const c10::cuda::CUDAGuard guard(images[0].device());
  const int64_t n = static_cast<int64_t>(images.size());
  Tensor out = at::empty({n, channels, out_h, out_w}, images[0].options().dtype(dtype),
                         channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const Tensor boxes_c = boxes.contiguous();
  const Tensor flip_c = flip.contiguous();
  const cr::Normalize norm = cr::make_normalize(mean, std, channels);
  const int64_t plane = out_h * out_w;
  const int64_t blocks_x = std::min<int64_t>((plane + kThreads - 1) / kThreads, kMaxBlocksX);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t first = 0; first < n; first += kImagesPerLaunch) {
    const int count = static_cast<int>(std::min<int64_t>(kImagesPerLaunch, n - first));
    ImageTable table{};
    for (int s = 0; s < count; ++s) {
      const Tensor& im = images[first + s];
      table.data[s] = im.data_ptr<uint8_t>();
      table.height[s] = im.size(input_hwc ? 0 : 1);
      table.width[s] = im.size(input_hwc ? 1 : 2);
      table.stride_c[s] = im.stride(input_hwc ? 2 : 0);
      table.stride_h[s] = im.stride(input_hwc ? 0 : 1);
      table.stride_w[s] = im.stride(input_hwc ? 1 : 2);
    }
    const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(count));
    CLASSY_FAST_DISPATCH_FLOAT_TYPES(dtype, cr::kOp, [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      if (channels_last) {
        crop_resize_normalize_kernel<scalar_t, true><<<grid, kThreads, 0, stream>>>(
            table, norm, first, static_cast<int>(channels), out_h, out_w, boxes_c.data_ptr<int64_t>(),
            flip_c.data_ptr<bool>(), o);
      } else {
        crop_resize_normalize_kernel<scalar_t, false><<<grid, kThreads, 0, stream>>>(
            table, norm, first, static_cast<int>(channels), out_h, out_w, boxes_c.data_ptr<int64_t>(),
            flip_c.data_ptr<bool>(), o);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(classy_fast, CUDA, m) {
  m.impl("crop_resize_normalize", &crop_resize_normalize_cuda);
}

}  // namespace classy_fast::cuda
