#include "upscaler/upscaler.h"

#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#if PETCAM_NATIVE_ENGINE
#include "upscaler/native/engine.h"
#include "upscaler/native/winograd.h"
#endif
#include "upscaler/tensor_cache.h"
#include "upscaler/tiling.h"
#include "upscaler/weights.h"

namespace petcam::upscaler {

namespace {

// A GPU tile is large: the whole image of a phone photo in a few of them. Halved on out-of-memory.
constexpr int kCudaTile = 1024;
constexpr int kMinCudaTile = 64;

torch::Dtype dtype_of(Precision p) {
  switch (p) {
    case Precision::Fp16:
      return torch::kHalf;
    case Precision::Bf16:
      return torch::kBFloat16;
    default:
      return torch::kFloat;
  }
}

// Weights in `dtype` on `device`, NHWC: oneDNN and cuDNN (tensor cores) are fastest with NHWC weights and
// activations; NCHW would reorder around every conv. Done once, at load.
void place(Network& net, torch::Device device, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  net.to(device, dtype);
  for (auto& param : net.parameters())
    if (param.dim() == 4) param.set_data(param.contiguous(at::MemoryFormat::ChannelsLast));
}

class TorchUpscaler final : public Upscaler {
 public:
  // `fallback`: the same network in fp32 on the same GPU, for tiles whose fp16/bf16 output is not finite.
  TorchUpscaler(std::shared_ptr<Network> net, std::shared_ptr<Network> fallback, const Params& p, Device device,
                Precision precision)
      : net_(std::move(net)),
        fallback_(std::move(fallback)),
        device_(device),
        torch_device_(device.kind == DeviceKind::Cuda ? torch::Device(torch::kCUDA, device.index)
                                                      : torch::Device(torch::kCPU)),
        precision_(precision),
        dtype_(dtype_of(precision)) {
    const bool cuda = device_.kind == DeviceKind::Cuda;
    tile_ = p.tile >= 0 ? p.tile : cuda ? kCudaTile : net_->default_tile();
    tile_pad_ = p.tile_pad >= 0 ? p.tile_pad : net_->default_tile_pad();
    pre_pad_ = std::max(0, p.pre_pad);
    place(*net_, torch_device_, dtype_);
    if (fallback_) place(*fallback_, torch_device_, torch::kFloat);
    if (cuda) warm_up();
  }

  int scale() const override { return net_->scale(); }
  Precision precision() const override { return precision_; }
  Device device() const override { return device_; }
  int fp32_redos() const override { return fp32_redos_; }
  std::string architecture() const override { return net_->describe(); }
  std::string engine() const override { return "libtorch"; }
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
    if (device_.kind == DeviceKind::Cuda) {
      try {
        process_cuda(in, out, progress);
      } catch (const c10::Error& e) {
        throw std::runtime_error(std::string("inference failed on ") + to_string(device_) + ": " +
                                 e.what_without_backtrace());
      }
      return;
    }
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
    return input_u8(in, r, torch::kUInt8).to(torch::kFloat).div_(255.0).to(dtype_);
  }

  // The padded tile's 8-bit pixels, in memory of `options` (pinned host memory for a GPU upload).
  static torch::Tensor input_u8(ConstImageView in, const Rect& r, const torch::TensorOptions& options) {
    auto hwc = torch::empty({r.h, r.w, 3}, options);
    auto* dst = hwc.data_ptr<std::uint8_t>();
    for (int y = 0; y < r.h; ++y) {
      const std::uint8_t* row = in.data + in.stride * static_cast<std::size_t>(reflect(r.y + y, in.height));
      std::uint8_t* d = dst + static_cast<std::size_t>(y) * r.w * 3;
      const int inside = std::clamp(in.width - r.x, 0, r.w);
      if (inside > 0) std::memcpy(d, row + static_cast<std::size_t>(r.x) * 3, static_cast<std::size_t>(inside) * 3);
      for (int x = inside; x < r.w; ++x)
        std::memcpy(d + x * 3, row + static_cast<std::size_t>(reflect(r.x + x, in.width)) * 3, 3);
    }
    return hwc;
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

  // ---- CUDA: the tail runs on the GPU too, so only 8-bit pixels cross the bus --------------------------

  // One tile between upload and write-back. The host tensors are pinned, so copies run asynchronously.
  struct InFlight {
    Tile tile;
    Rect core;               // the tile's core clipped to the image
    torch::Tensor host_in;   // padded input, uint8 HWC; kept for an fp32 redo
    torch::Tensor host_out;  // the core's 4x output, uint8 HWC
    torch::Tensor host_bad;  // true when the network's output had a non-finite value
    std::optional<c10::Event> done;
  };

  c10::Stream stream() const { return c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(torch_device_); }

  // The image of a padded tile on the GPU: network, tail, x255, clamp, round, crop to the core, uint8 HWC.
  torch::Tensor infer_u8(Network& net, torch::Dtype dtype, const torch::Tensor& x_u8, const Rect& padded,
                         const Rect& core, torch::Tensor& bad) {
    const int s = scale();
    // HWC -> NCHW sizes with NHWC strides: channels_last without a copy.
    auto x = x_u8.to(torch::kFloat).div_(255.0).to(dtype).permute({2, 0, 1}).unsqueeze(0);
    auto y = net.forward(x);
    bad = torch::isfinite(y).all().logical_not().reshape({1});
    auto img = y.to(torch::kFloat);
    if (net.tail() == Tail::PixelShuffleAddInput) {
      namespace F = torch::nn::functional;
      img = torch::pixel_shuffle(img, s) +
            F::interpolate(x.to(torch::kFloat), F::InterpolateFuncOptions()
                                                    .scale_factor(std::vector<double>{double(s), double(s)})
                                                    .mode(torch::kNearest));
    }
    const int lx0 = core.x - padded.x, ly0 = core.y - padded.y;
    img = img.narrow(2, ly0 * s, core.h * s).narrow(3, lx0 * s, core.w * s);
    return img.mul(255.0).clamp_(0.0, 255.0).round_().to(torch::kUInt8).squeeze(0).permute({1, 2, 0}).contiguous();
  }

  // Queues upload, inference and download of one tile; returns at once. Throws c10::OutOfMemoryError.
  void launch(InFlight& f, Network& net, torch::Dtype dtype) {
    const auto pinned = torch::TensorOptions().pinned_memory(true);
    auto x = f.host_in.to(torch_device_, torch::kUInt8, /*non_blocking=*/true);
    torch::Tensor bad;
    auto u8 = infer_u8(net, dtype, x, f.tile.padded, f.core, bad);
    f.host_out = torch::empty({u8.size(0), u8.size(1), 3}, pinned.dtype(torch::kUInt8));
    f.host_out.copy_(u8, /*non_blocking=*/true);
    f.host_bad = torch::empty({1}, pinned.dtype(torch::kBool));
    f.host_bad.copy_(bad, /*non_blocking=*/true);
    f.done.emplace(c10::DeviceType::CUDA);
    f.done->record(stream());
  }

  static void wait(const InFlight& f) {
    // c10::Event has no blocking wait in libtorch 1.13; a tile takes milliseconds, so poll finely.
    while (!f.done->query()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  // Waits for a launched tile and writes its pixels; a non-finite fp16/bf16 output is redone in fp32.
  void finish(InFlight& f, ImageView out) {
    wait(f);
    if (f.host_bad.item<bool>()) {
      if (!fallback_) throw std::runtime_error("the network's output is not finite (NaN or inf) even in fp32");
      launch(f, *fallback_, torch::kFloat);
      wait(f);
      ++fp32_redos_;
      if (f.host_bad.item<bool>()) throw std::runtime_error("the network's output is not finite even in fp32");
    }
    const int s = scale();
    const std::size_t row = static_cast<std::size_t>(f.core.w) * s * 3;
    const auto* src = f.host_out.data_ptr<std::uint8_t>();
    for (int y = 0; y < f.core.h * s; ++y)
      std::memcpy(out.data + out.stride * static_cast<std::size_t>(f.core.y * s + y) +
                      static_cast<std::size_t>(f.core.x) * s * 3,
                  src + row * y, row);
  }

  // A tile ready to launch, or nullopt when its core lies wholly in the pre_pad margin.
  std::optional<InFlight> stage(ConstImageView in, const Tile& t) const {
    InFlight f;
    f.tile = t;
    f.core = t.core;
    f.core.w = std::min(f.core.x + f.core.w, in.width) - f.core.x;
    f.core.h = std::min(f.core.y + f.core.h, in.height) - f.core.y;
    if (f.core.w <= 0 || f.core.h <= 0) return std::nullopt;
    f.host_in = input_u8(in, t.padded, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(true));
    return f;
  }

  // Tile i+1 is staged (host) and queued before tile i is written back (host), so the GPU computes while
  // the CPU copies pixels. One stream: the tiles' GPU work never overlaps, so memory is one tile's.
  void process_cuda(ConstImageView in, ImageView out, const Progress& progress) {
    const int w = in.width + pre_pad_, h = in.height + pre_pad_;
    const TileGrid grid(w, h, tile_, tile_pad_);
    const int total = grid.count();
    const int size = tile_ > 0 ? tile_ : std::max(w, h);
    std::optional<InFlight> prev;
    for (int i = 0; i < total; ++i) {
      auto cur = stage(in, grid.at(i));
      bool oom = false;
      if (cur) {
        try {
          launch(*cur, *net_, dtype_);
        } catch (const c10::OutOfMemoryError&) {
          oom = true;
        }
      }
      if (prev) {
        finish(*prev, out);
        prev.reset();
        if (progress) progress(i, total);
      }
      if (oom) {
        cur.reset();  // drop its partial work before retrying smaller
        run_split(in, out, grid.at(i).core, size / 2, w, h);
      }
      if (cur && !oom) {
        prev = std::move(cur);
      } else if (progress) {
        progress(i + 1, total);
      }
    }
    if (prev) {
      finish(*prev, out);
      if (progress) progress(total, total);
    }
  }

  // A core that ran out of GPU memory, redone as tiles of at most `size` px (one at a time, halving
  // again if need be). Later images start at this size.
  void run_split(ConstImageView in, ImageView out, const Rect& region, int size, int w, int h) {
    if (size < kMinCudaTile)
      throw std::runtime_error("CUDA out of memory even with " + std::to_string(kMinCudaTile * 2) + " px tiles");
    tile_ = std::min(tile_ > 0 ? tile_ : size, size);
    const TileGrid sub(region.w, region.h, size, 0);
    for (int k = 0; k < sub.count(); ++k) {
      Tile t = sub.at(k);
      t.core.x += region.x;
      t.core.y += region.y;
      t.padded.x = std::max(0, t.core.x - tile_pad_);
      t.padded.y = std::max(0, t.core.y - tile_pad_);
      t.padded.w = std::min(w, t.core.x + t.core.w + tile_pad_) - t.padded.x;
      t.padded.h = std::min(h, t.core.y + t.core.h + tile_pad_) - t.padded.y;
      auto f = stage(in, t);
      if (!f) continue;
      try {
        launch(*f, *net_, dtype_);
      } catch (const c10::OutOfMemoryError&) {
        f.reset();
        run_split(in, out, t.core, size / 2, w, h);
        continue;
      }
      finish(*f, out);
    }
  }

  // cuDNN handles, kernels and the allocator's first blocks, so the first job is not the slow one.
  void warm_up() {
    c10::InferenceMode guard;
    auto x = torch::zeros({128, 128, 3}, torch::TensorOptions().dtype(torch::kUInt8).device(torch_device_));
    torch::Tensor bad;
    const Rect r{0, 0, 128, 128};
    infer_u8(*net_, dtype_, x, r, r, bad);
    torch::cuda::synchronize(torch_device_.index());
  }

  std::shared_ptr<Network> net_;
  std::shared_ptr<Network> fallback_;  // CUDA with fp16/bf16 only
  Device device_;
  torch::Device torch_device_;
  Precision precision_ = Precision::Fp32;
  torch::Dtype dtype_ = torch::kFloat;
  int tile_ = 0, tile_pad_ = 0, pre_pad_ = 0;
  int fp32_redos_ = 0;
};

// Native where it was measured faster than libtorch (README, "CPU engine"); forced with Engine::Native.
// Tiles are a libtorch notion: asking for tiles (tile > 0 or a tile_pad) under auto keeps libtorch.
bool use_native(const Params& p, const Network& net, Precision precision) {
  if (p.engine == Engine::Libtorch) return false;
#if !PETCAM_NATIVE_ENGINE
  (void)net, (void)precision;
  if (p.engine == Engine::Native) throw DeviceError("this build has no native engine (built without oneDNN)");
  return false;
#else
  if (p.engine == Engine::Native) {
    if (!native::supports(net)) throw ModelError("the native engine cannot run " + net.describe());
    if (p.pre_pad > 0) throw DeviceError("the native engine has no pre_pad (it runs the whole image in strips)");
    return true;
  }
  if (p.tile > 0 || p.tile_pad >= 0 || p.pre_pad > 0) return false;
  // fp32 on AVX-512 or AVX2+FMA: 0.25-0.38x plain PyTorch's time on 2 threads of a Sapphire Rapids Xeon
  // (bench/results/engine.txt). bf16 on AVX-512 (the only CPUs native bf16 runs on): 0.76-0.91x PyTorch's
  // channels_last bf16 on 64-256 px inputs, and on a 1280x720 photo x4plus 30.5 s vs libtorch's tiles 65.0 s,
  // x4fast 1.74 s both. SSE2-only CPUs keep libtorch (not measured).
  if (!native::supports(net)) return false;
  const auto isa = native::detect_isa();
  if (precision == Precision::Bf16) return isa == native::Isa::Avx512;
  return precision == Precision::Fp32 && isa != native::Isa::Generic;
#endif
}

#if PETCAM_NATIVE_ENGINE
// Engine::Auto on the CPU keeps one image within a memory budget (Params::memory_budget; by default what keeps
// the process within 1.5 GiB resident): the 4x result and the native engine's rows (working_bytes). An image that fits
// runs whole on the native engine. One that does not (x4plus holds 3.6 GiB of rows at 4000 px wide) runs on it in
// column bands, each with kBandPad px of the neighbouring columns (libtorch's tile pad for x4plus), the widest bands
// that fit, each band's own result included; only where even bands of 4 x kBandPad px do not fit does it go to
// libtorch's tiles (loaded then, and kept). Unlike the row strips, band edges are approximate (about as close to
// whole-image inference as libtorch's tiles are) and their pads are computed twice. Reports the native engine's names.
// 1.5 GiB less 64 MiB for what the budget does not plan (decoding, encoding, the allocators' slack): with the
// whole 1.5 GiB planned, x4plus fp32 at 12 MP peaked at 1540 MiB, bf16 at 1532 (bench/results/engine.txt).
constexpr std::size_t kDefaultResidentBytes = std::size_t{1536 - 64} << 20;
constexpr int kBandPad = 64;

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

class AutoCpuUpscaler final : public Upscaler {
 public:
  AutoCpuUpscaler(std::unique_ptr<native::NativeUpscaler> native, Params params, Precision precision)
      : native_(std::move(native)), params_(std::move(params)), precision_(precision) {}

  int scale() const override { return native_->scale(); }
  Precision precision() const override { return native_->precision(); }
  Device device() const override { return native_->device(); }
  int fp32_redos() const override { return native_->fp32_redos(); }
  std::string architecture() const override { return native_->architecture(); }
  std::string engine() const override { return native_->engine(); }
  int tile() const override { return native_->tile(); }
  int tile_pad() const override { return native_->tile_pad(); }
  std::int64_t macs_per_input_pixel() const override { return native_->macs_per_input_pixel(); }
  int tile_count(int width, int height) const override {
    const int band = band_for(width, height);
    if (band == 0) return native_->tile_count(width, height);
    if (band < 0) return tiles().tile_count(width, height);
    return band_strips(width, height, band);
  }
  void process(ConstImageView in, ImageView out, const Progress& progress) override {
    const int band = band_for(in.width, in.height);
    if (band == 0)
      native_->process(in, out, progress);
    else if (band < 0)
      tiles().process(in, out, progress);
    else
      process_bands(in, out, band, progress);
  }

 private:
  static std::size_t result_bytes(int width, int height) {
    return std::size_t{16} * 3 * static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
  }
  static int bands(int width, int band) { return (width + band - 1) / band; }
  // Band b's core [x0, x1) and the input columns it runs on, [a, a + width): the core and up to kBandPad each side.
  struct Span {
    int x0, x1, a, width;
  };
  static Span band_span(int width, int band, int b) {
    const int x0 = b * band, x1 = std::min(width, x0 + band);
    const int a = std::max(0, x0 - kBandPad), e = std::min(width, x1 + kBandPad);
    return {x0, x1, a, e - a};
  }
  // The strips of all bands (bands of other widths may run other numbers of strips).
  int band_strips(int width, int height, int band) const {
    int strips = 0;
    for (int b = 0; b < bands(width, band); ++b) strips += native_->tile_count(band_span(width, band, b).width, height);
    return strips;
  }

  // 0: the whole image fits; > 0: the core width of the bands that fit; -1: libtorch's tiles.
  int band_for(int width, int height) const {
    std::size_t room = params_.memory_budget;
    if (room == 0) {
      const std::size_t held = resident_bytes();
      room = kDefaultResidentBytes > held ? kDefaultResidentBytes - held : 0;
    }
    const std::size_t result = result_bytes(width, height);
    room = room > result ? room - result : 0;
    const std::size_t whole = native_->working_bytes(width, height);
    if (whole <= room) return 0;
    // Rows grow with the width: start from the proportional width and narrow until a band fits.
    int band = static_cast<int>(static_cast<double>(width) * static_cast<double>(room) / static_cast<double>(whole)) -
               2 * kBandPad;
    for (band = std::min(band, width - 1); band >= 2 * kBandPad; band = band * 9 / 10) {
      const int w = std::min(width, band + 2 * kBandPad);
      if (native_->working_bytes(w, height) + result_bytes(w, height) <= room) return band;
    }
    return -1;
  }

  void process_bands(ConstImageView in, ImageView out, int band, const Progress& progress) {
    const int n = bands(in.width, band);
    const int wmax = std::min(in.width, band + 2 * kBandPad);
    const int total = band_strips(in.width, in.height, band);
    std::vector<std::uint8_t> part(static_cast<std::size_t>(wmax) * 4 * 3 * in.height * 4);
    for (int b = 0, before = 0; b < n; ++b) {
      const Span s = band_span(in.width, band, b);
      const int per = native_->tile_count(s.width, in.height);
      const ConstImageView src{in.data + static_cast<std::size_t>(s.a) * 3, s.width, in.height, in.stride};
      const ImageView dst{part.data(), 4 * s.width, 4 * in.height, static_cast<std::size_t>(4 * s.width) * 3};
      native_->process(src, dst, [&](int done, int) {
        if (progress) progress(before + std::min(done, per), total);
      });
      before += per;
      for (int y = 0; y < dst.height; ++y)
        std::memcpy(
            out.data + out.stride * static_cast<std::size_t>(y) + static_cast<std::size_t>(4 * s.x0) * 3,
            dst.data + dst.stride * static_cast<std::size_t>(y) + static_cast<std::size_t>(4 * (s.x0 - s.a)) * 3,
            static_cast<std::size_t>(4 * (s.x1 - s.x0)) * 3);
    }
  }

  Upscaler& tiles() const {
    if (!tiles_)
      tiles_ = std::make_unique<TorchUpscaler>(load_network(params_.model_path), nullptr, params_,
                                               Device{DeviceKind::Cpu, -1}, precision_);
    return *tiles_;
  }

  std::unique_ptr<native::NativeUpscaler> native_;
  const Params params_;
  const Precision precision_;
  mutable std::unique_ptr<Upscaler> tiles_;
};
#endif

}  // namespace

int cuda_device_count() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

Device resolve_device(const Device& d) {
  if (d.kind == DeviceKind::Cpu) return {DeviceKind::Cpu, -1};
  const int count = cuda_device_count();
  if (d.kind == DeviceKind::Auto) return count > 0 ? Device{DeviceKind::Cuda, 0} : Device{DeviceKind::Cpu, -1};
  if (count == 0)
    throw DeviceError("device " + to_string(d) +
                      ": no CUDA GPU available (this build's libtorch has no CUDA, or no GPU is visible)");
  if (d.index >= count)
    throw DeviceError("device " + to_string(d) + ": only " + std::to_string(count) + " CUDA GPU(s) visible");
  return {DeviceKind::Cuda, std::max(0, d.index)};
}

std::unique_ptr<Upscaler> Upscaler::load(const Params& params) {
  const Device device = resolve_device(params.device);
  const bool cuda = device.kind == DeviceKind::Cuda;
  Precision precision = params.precision;
  if (precision == Precision::Auto)
    precision = cuda ? Precision::Fp16 : cpu_has_fast_bf16() ? Precision::Bf16 : Precision::Fp32;
  if (!cuda && precision == Precision::Fp16)
    throw DeviceError("precision fp16 runs on CUDA only; on the CPU use bf16, fp32 or auto");
  const int threads = params.threads > 0 ? params.threads : static_cast<int>(std::thread::hardware_concurrency());
  // Debian's libtorch starts with one intra-op thread: set it explicitly.
  at::set_num_threads(std::max(1, threads));
  tensor_cache::install();
  std::shared_ptr<Network> net, fallback;
  try {
    net = load_network(params.model_path);
    if (cuda && precision != Precision::Fp32) fallback = load_network(params.model_path);
  } catch (const c10::Error& e) {
    throw ModelError(params.model_path + ": " + e.what_without_backtrace());
  }
#if PETCAM_NATIVE_ENGINE
  if (!cuda && use_native(params, *net, precision)) {
    try {
      auto engine = native::make_upscaler(std::move(net), precision, threads, params.strip_rows);
      if (params.engine == Engine::Native) return engine;
      return std::make_unique<AutoCpuUpscaler>(std::move(engine), params, precision);
    } catch (const ModelError&) {
      throw;
    } catch (const std::exception& e) {
      if (params.engine == Engine::Native) throw DeviceError(std::string("native engine: ") + e.what());
      net = load_network(params.model_path);  // auto: libtorch instead
    }
  }
#else
  use_native(params, *net, precision);  // throws for Engine::Native
#endif
  try {
    return std::make_unique<TorchUpscaler>(std::move(net), std::move(fallback), params, device, precision);
  } catch (const c10::Error& e) {
    throw DeviceError("cannot start on " + to_string(device) + ": " + e.what_without_backtrace());
  }
}

}  // namespace petcam::upscaler
