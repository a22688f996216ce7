// Real-ESRGAN 4x upscaling on the host, one tile in the runtime at a time.
// In the spirit of whisper.h: a params struct, load(), process(). No HTTP, no DB, no OpenCV here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

namespace petcam::upscaler {

enum class Precision { Auto, Fp32, Bf16 };

// A model file that cannot be used: missing, truncated, or not the architecture its graph says.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Params {
  std::string model_path;                 // a .param (its .bin beside it) or a PyTorch .pth state dict
  Precision precision = Precision::Auto;  // Auto: bf16 where the CPU has AMX or AVX512-BF16
  int tile = -1;                          // core tile size in input px; 0 = whole image; -1 = the model's default
  int tile_pad = -1;                      // overlap per side; -1 = the model's receptive field (seamless)
  int pre_pad = 0;                        // reflect padding on the right and bottom, as Real-ESRGAN
  int threads = 0;                        // intra-op threads; 0 = all cores. Process-wide in libtorch.
};

// Interleaved 8-bit RGB; stride in bytes between rows.
struct ImageView {
  std::uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  std::size_t stride = 0;
};

struct ConstImageView {
  const std::uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  std::size_t stride = 0;
};

// Called after each tile: tiles done, tiles in all.
using Progress = std::function<void(int done, int total)>;

const char* to_string(Precision p);
Precision parse_precision(const std::string& s);  // "auto" | "fp32" | "bf16"; throws std::invalid_argument
bool cpu_has_fast_bf16();                         // AMX-BF16 or AVX512-BF16, and the OS enables AVX-512 state

class Upscaler {
 public:
  static std::unique_ptr<Upscaler> load(const Params& params);  // throws ModelError
  virtual ~Upscaler() = default;

  virtual int scale() const = 0;
  virtual Precision precision() const = 0;       // resolved: never Auto
  virtual std::string architecture() const = 0;  // e.g. "SRVGGNetCompact(64 feat, 32 conv)"
  virtual int tile() const = 0;
  virtual int tile_pad() const = 0;
  // Multiply-adds per input pixel of one forward pass, for throughput figures.
  virtual std::int64_t macs_per_input_pixel() const = 0;
  // Number of tiles process() will run for an image of this size.
  virtual int tile_count(int width, int height) const = 0;

  // `out` must be exactly scale() times `in` in both dimensions.
  virtual void process(ConstImageView in, ImageView out, const Progress& progress = {}) = 0;
};

}  // namespace petcam::upscaler
