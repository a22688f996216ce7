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

enum class Precision { Auto, Fp32, Fp16, Bf16 };

enum class DeviceKind { Auto, Cpu, Cuda };

// Which CPU inference engine runs the network. Native: our Winograd engine in row strips (no tiles, the
// output equals whole-image inference). Libtorch: the tiled libtorch path, also the reference and the CUDA
// path. Auto: native for the CPU configurations measured faster than libtorch here, else libtorch.
enum class Engine { Auto, Native, Libtorch };

// Where inference runs. Auto: CUDA when this libtorch has it and a GPU is visible, else the CPU.
// index < 0 with Cuda: the first GPU (the job runner spreads its workers over all of them instead).
struct Device {
  DeviceKind kind = DeviceKind::Auto;
  int index = -1;
  bool operator==(const Device&) const = default;
};

// A model file that cannot be used: missing, truncated, or not the architecture its graph says.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The device asked for is not there (a CUDA device on a CPU-only libtorch, or past the GPUs visible),
// or cannot run the precision asked for (fp16 on the CPU).
class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Params {
  std::string model_path;                 // a .param (its .bin beside it) or a PyTorch .pth state dict
  Device device;                          // Auto: CUDA if available, else CPU
  Precision precision = Precision::Auto;  // Auto: fp16 on CUDA; bf16 where the CPU has AMX or AVX512-BF16
  int tile = -1;      // core tile size in input px; 0 = whole image; -1 = the model's CPU default, 1024 on CUDA
  int tile_pad = -1;  // overlap per side; -1 = the model's receptive field (seamless)
  int pre_pad = 0;    // reflect padding on the right and bottom, as Real-ESRGAN
  int threads = 0;    // intra-op threads; 0 = all cores. Process-wide in libtorch.
  Engine engine = Engine::Auto;  // CPU only: CUDA always runs libtorch
  int strip_rows = 0;            // native engine: input rows per strip; 0 = chosen from the width
  // Engine::Auto on the CPU: bytes one image may add to the process (its 4x result included); 0 = what keeps
  // the process within 1.5 GiB resident (1.5 GiB less 64 MiB, planned). An image that does not fit runs on the native
  // engine in column bands, or where even narrow bands do not, on libtorch's tiles.
  std::size_t memory_budget = 0;
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

// Called after each tile (native engine: each strip): done, in all. It may throw to cancel the job.
using Progress = std::function<void(int done, int total)>;

const char* to_string(Precision p);
Precision parse_precision(const std::string& s);  // "auto" | "fp32" | "fp16" | "bf16"; throws std::invalid_argument
const char* to_string(Engine e);
Engine parse_engine(const std::string& s);  // "auto" | "native" | "libtorch"; throws std::invalid_argument
std::string to_string(const Device& d);     // "auto", "cpu", "cuda", "cuda:1"
Device parse_device(const std::string& s);  // the same forms; throws std::invalid_argument
bool cpu_has_fast_bf16();                   // AMX-BF16 or AVX512-BF16, and the OS enables AVX-512 state
int cuda_device_count();                    // GPUs this libtorch can use: 0 on a CPU-only build or with none visible
// auto -> cuda:0 or cpu; cuda -> cuda:0. Throws DeviceError when a CUDA device is asked for and absent.
Device resolve_device(const Device& d);

class Upscaler {
 public:
  static std::unique_ptr<Upscaler> load(const Params& params);  // throws ModelError, DeviceError
  virtual ~Upscaler() = default;

  virtual int scale() const = 0;
  virtual Precision precision() const = 0;       // resolved: never Auto
  virtual Device device() const = 0;             // resolved: cpu or cuda:N
  virtual int fp32_redos() const = 0;            // tiles whose fp16/bf16 output was not finite, redone in fp32
  virtual std::string architecture() const = 0;  // e.g. "SRVGGNetCompact(64 feat, 32 conv)"
  // The engine and kernels that run, e.g. "libtorch" or "native: winograd F(4,3) avx512 ...".
  virtual std::string engine() const = 0;
  virtual int tile() const = 0;  // may shrink after a CUDA out-of-memory, for the next images
  virtual int tile_pad() const = 0;
  // Multiply-adds per input pixel of one forward pass, for throughput figures.
  virtual std::int64_t macs_per_input_pixel() const = 0;
  // Number of tiles process() will run for an image of this size.
  virtual int tile_count(int width, int height) const = 0;

  // `out` must be exactly scale() times `in` in both dimensions.
  virtual void process(ConstImageView in, ImageView out, const Progress& progress = {}) = 0;
};

}  // namespace petcam::upscaler
