#include "upscaler/upscaler.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "upscaler/tiling.h"
#include "upscaler/weights.h"

namespace petcam::upscaler {

namespace {

class TorchUpscaler final : public Upscaler {
 public:
  TorchUpscaler(std::shared_ptr<Network> net, const Params& p) : net_(std::move(net)) {
    precision_ = p.precision == Precision::Auto ? (cpu_has_fast_bf16() ? Precision::Bf16 : Precision::Fp32)
                                                 : p.precision;
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
    const TileGrid grid(in.width + pre_pad_, in.height + pre_pad_, tile_, tile_pad_);
    const int total = grid.count();
    for (int i = 0; i < total; ++i) {
      const Tile t = grid.at(i);
      try {
        write_output(net_->forward(input_tensor(in, t.padded)), t, in, out);
      } catch (const c10::Error& e) {
        throw std::runtime_error(std::string("inference failed: ") + e.what_without_backtrace());
      }
      if (progress) progress(i + 1, total);
    }
  }

 private:
  // The padded tile as a 1x3xHxW tensor in NHWC memory; rows and columns past the image are
  // reflected (pre_pad), as numpy's reflect pad does.
  torch::Tensor input_tensor(ConstImageView in, const Rect& r) const {
    auto hwc = torch::empty({r.h, r.w, 3}, torch::kUInt8);
    auto* dst = hwc.data_ptr<std::uint8_t>();
    for (int y = 0; y < r.h; ++y) {
      const std::uint8_t* row = in.data + in.stride * static_cast<std::size_t>(reflect(r.y + y, in.height));
      std::uint8_t* d = dst + static_cast<std::size_t>(y) * r.w * 3;
      const int inside = std::clamp(in.width - r.x, 0, r.w);
      std::memcpy(d, row + static_cast<std::size_t>(r.x) * 3, static_cast<std::size_t>(inside) * 3);
      for (int x = inside; x < r.w; ++x)
        std::memcpy(d + x * 3, row + static_cast<std::size_t>(reflect(r.x + x, in.width)) * 3, 3);
    }
    // Permuting HWC gives NCHW sizes with NHWC strides: channels_last without a copy.
    return hwc.to(torch::kFloat).div_(255.0).to(dtype_).permute({2, 0, 1}).unsqueeze(0);
  }

  static int reflect(int i, int n) {
    if (n == 1) return 0;
    while (i >= n || i < 0) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
  }

  // Crops the tile's core from the model output and writes it as uint8 into `out`.
  void write_output(const torch::Tensor& y, const Tile& t, ConstImageView in, ImageView out) const {
    const int s = scale();
    const int x1 = std::min(t.core.x + t.core.w, in.width), y1 = std::min(t.core.y + t.core.h, in.height);
    if (x1 <= t.core.x || y1 <= t.core.y) return;  // a tile wholly inside the pre_pad margin
    const int ox = (t.core.x - t.padded.x) * s, oy = (t.core.y - t.padded.y) * s;
    const int ow = (x1 - t.core.x) * s, oh = (y1 - t.core.y) * s;
    auto core = y.slice(2, oy, oy + oh).slice(3, ox, ox + ow);
    auto hwc = core.to(torch::kFloat).mul_(255.0).clamp_(0.0, 255.0).round_().to(torch::kUInt8)
                   .squeeze(0).permute({1, 2, 0}).contiguous();
    const auto* src = hwc.data_ptr<std::uint8_t>();
    for (int r = 0; r < oh; ++r)
      std::memcpy(out.data + out.stride * static_cast<std::size_t>(t.core.y * s + r) +
                      static_cast<std::size_t>(t.core.x) * s * 3,
                  src + static_cast<std::size_t>(r) * ow * 3, static_cast<std::size_t>(ow) * 3);
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
  try {
    return std::make_unique<TorchUpscaler>(load_network(params.model_path), params);
  } catch (const c10::Error& e) {
    throw ModelError(params.model_path + ": " + e.what_without_backtrace());
  }
}

}  // namespace petcam::upscaler
