#include "upscaler/upscaler.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "upscaler/tensor_cache.h"
#include "upscaler/tiling.h"
#include "upscaler/weights.h"

namespace petcam::upscaler {

namespace {

class TorchUpscaler final : public Upscaler {
 public:
  TorchUpscaler(std::shared_ptr<Network> net, const Params& p) : net_(std::move(net)) {
    precision_ =
        p.precision == Precision::Auto ? (cpu_has_fast_bf16() ? Precision::Bf16 : Precision::Fp32) : p.precision;
    dtype_ = precision_ == Precision::Bf16 ? torch::kBFloat16 : torch::kFloat;
    tile_ = p.tile >= 0 ? p.tile : net_->default_tile();
    tile_pad_ = p.tile_pad >= 0 ? p.tile_pad : net_->default_tile_pad();
    pre_pad_ = std::max(0, p.pre_pad);
    // oneDNN is fastest with NHWC weights and activations; NCHW would reorder around every conv.
    torch::NoGradGuard no_grad;
    net_->to(dtype_);
    for (auto& param : net_->parameters())
      if (param.dim() == 4) param.set_data(param.contiguous(at::MemoryFormat::ChannelsLast));
  }

  int scale() const override { return net_->scale(); }
  Precision precision() const override { return precision_; }
  std::string architecture() const override { return net_->describe(); }
  int tile() const override { return tile_; }
  int tile_pad() const override { return tile_pad_; }
  std::int64_t macs_per_input_pixel() const override { return net_->macs_per_input_pixel(); }
  int tile_count(int width, int height) const override {
    return TileGrid(width + pre_pad_, height + pre_pad_, tile_, tile_pad_).count();
  }

  void process(ConstImageView in, ImageView out, const Progress& progress) override {
    const int s = scale();
    if (in.width <= 0 || in.height <= 0 || out.width != in.width * s || out.height != in.height * s)
      throw std::invalid_argument("output must be exactly " + std::to_string(s) + "x the input size");
    c10::InferenceMode guard;
    struct ReleaseCache {  // hold the tile working set only while tiles run, even on errors
      ~ReleaseCache() { tensor_cache::release(); }
    } release_cache;
    const TileGrid grid(in.width + pre_pad_, in.height + pre_pad_, tile_, tile_pad_);
    const int total = grid.count();
    for (int i = 0; i < total; ++i) {
      const Tile t = grid.at(i);
      try {
        run_tile(in, out, t);
      } catch (const c10::Error& e) {
        throw std::runtime_error(std::string("inference failed: ") + e.what_without_backtrace());
      }
      if (progress) progress(i + 1, total);
    }
  }

 private:
  // The padded tile as an HxWx3 tensor in the model's dtype; rows and columns past the image are
  // reflected (pre_pad), as numpy's reflect pad does.
  torch::Tensor input_hwc(ConstImageView in, const Rect& r) const {
    auto hwc = torch::empty({r.h, r.w, 3}, torch::kUInt8);
    auto* dst = hwc.data_ptr<std::uint8_t>();
    for (int y = 0; y < r.h; ++y) {
      const std::uint8_t* row = in.data + in.stride * static_cast<std::size_t>(reflect(r.y + y, in.height));
      std::uint8_t* d = dst + static_cast<std::size_t>(y) * r.w * 3;
      const int inside = std::clamp(in.width - r.x, 0, r.w);
      if (inside > 0) std::memcpy(d, row + static_cast<std::size_t>(r.x) * 3, static_cast<std::size_t>(inside) * 3);
      for (int x = inside; x < r.w; ++x)
        std::memcpy(d + x * 3, row + static_cast<std::size_t>(reflect(r.x + x, in.width)) * 3, 3);
    }
    return hwc.to(torch::kFloat).div_(255.0).to(dtype_);
  }

  static int reflect(int i, int n) {
    if (n == 1) return 0;
    while (i >= n || i < 0) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
  }

  void run_tile(ConstImageView in, ImageView out, const Tile& t) {
    const auto x_hwc = input_hwc(in, t.padded);
    // Permuting HWC gives NCHW sizes with NHWC strides: channels_last without a copy.
    auto y = net_->forward(x_hwc.permute({2, 0, 1}).unsqueeze(0)).contiguous(at::MemoryFormat::ChannelsLast);
    // The tile's core, clipped to the image (a pre_pad tile may lie wholly in the margin).
    Rect core = t.core;
    core.w = std::min(core.x + core.w, in.width) - core.x;
    core.h = std::min(core.y + core.h, in.height) - core.y;
    if (core.w <= 0 || core.h <= 0) return;
    if (dtype_ == torch::kBFloat16)
      write_core<c10::BFloat16>(y, x_hwc, t.padded, core, out);
    else
      write_core<float>(y, x_hwc, t.padded, core, out);
  }

  static std::uint8_t to_u8(float v) {
    return static_cast<std::uint8_t>(std::nearbyint(std::clamp(v * 255.0f, 0.0f, 255.0f)));
  }

  // The network's tail, x255, clamp, round and the crop to the core, in one pass into `out`.
  template <class T>
  void write_core(const torch::Tensor& y, const torch::Tensor& x_hwc, const Rect& padded, const Rect& core,
                  ImageView out) const {
    const int s = scale();
    const T* yp = y.data_ptr<T>();  // NHWC memory
    const T* xp = x_hwc.data_ptr<T>();
    const int lx0 = core.x - padded.x, ly0 = core.y - padded.y, pw = padded.w;
    if (net_->tail() == Tail::None) {
      at::parallel_for(ly0 * s, (ly0 + core.h) * s, 16, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t oy = b; oy < e; ++oy) {
          const T* src = yp + (static_cast<std::size_t>(oy) * pw * s + static_cast<std::size_t>(lx0) * s) * 3;
          std::uint8_t* dst = out.data + out.stride * static_cast<std::size_t>(padded.y * s + oy) +
                              static_cast<std::size_t>(core.x) * s * 3;
          for (int k = 0; k < core.w * s * 3; ++k) dst[k] = to_u8(static_cast<float>(src[k]));
        }
      });
      return;
    }
    // PixelShuffleAddInput: channel c*s*s + i*s + j of input pixel (ly, lx) is output pixel
    // (s*ly + i, s*lx + j), channel c, plus the input pixel itself (nearest upsampling).
    const int C = 3 * s * s;
    at::parallel_for(ly0, ly0 + core.h, 4, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t ly = b; ly < e; ++ly) {
        for (int i = 0; i < s; ++i) {
          std::uint8_t* dst = out.data + out.stride * static_cast<std::size_t>((padded.y + ly) * s + i) +
                              static_cast<std::size_t>(core.x) * s * 3;
          for (int lx = lx0; lx < lx0 + core.w; ++lx) {
            const T* r = yp + (static_cast<std::size_t>(ly) * pw + lx) * C + i * s;
            const T* xi = xp + (static_cast<std::size_t>(ly) * pw + lx) * 3;
            for (int j = 0; j < s; ++j)
              for (int ch = 0; ch < 3; ++ch)
                *dst++ = to_u8(static_cast<float>(r[ch * s * s + j]) + static_cast<float>(xi[ch]));
          }
        }
      }
    });
  }

  std::shared_ptr<Network> net_;
  Precision precision_ = Precision::Fp32;
  torch::Dtype dtype_ = torch::kFloat;
  int tile_ = 0, tile_pad_ = 0, pre_pad_ = 0;
};

}  // namespace

std::unique_ptr<Upscaler> Upscaler::load(const Params& params) {
  const int threads = params.threads > 0 ? params.threads : static_cast<int>(std::thread::hardware_concurrency());
  // Debian's libtorch starts with one intra-op thread: set it explicitly.
  at::set_num_threads(std::max(1, threads));
  tensor_cache::install();
  try {
    return std::make_unique<TorchUpscaler>(load_network(params.model_path), params);
  } catch (const c10::Error& e) {
    throw ModelError(params.model_path + ": " + e.what_without_backtrace());
  }
}

}  // namespace petcam::upscaler
