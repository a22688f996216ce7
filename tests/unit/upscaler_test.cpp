#include "upscaler/upscaler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "test_photos.h"
#include "upscaler/native/engine.h"
#include "upscaler/native/winograd.h"
#include "upscaler/weights.h"

namespace fs = std::filesystem;
namespace up = petcam::upscaler;
using petcam::test::model;
using petcam::test::photo_crop;

namespace {

cv::Mat run(up::Upscaler& u, const cv::Mat& rgb) {
  cv::Mat out(rgb.rows * u.scale(), rgb.cols * u.scale(), CV_8UC3, cv::Scalar(7, 7, 7));
  u.process({rgb.data, rgb.cols, rgb.rows, rgb.step}, {out.data, out.cols, out.rows, out.step});
  return out;
}

std::unique_ptr<up::Upscaler> load(const std::string& path, up::Precision p, int tile, int pad = -1) {
  up::Params params;
  params.model_path = path;
  params.precision = p;
  params.tile = tile;
  params.tile_pad = pad;
  params.threads = 2;
  return up::Upscaler::load(params);
}

std::string load_error(const std::string& path) {
  try {
    load(path, up::Precision::Fp32, 0);
  } catch (const up::ModelError& e) {
    return e.what();
  }
  return "(loaded)";
}

// A copy of the x4fast pair in a temp dir, for corrupting.
struct ModelCopy {
  fs::path dir = fs::temp_directory_path() / ("petcam-model-" + std::to_string(::getpid()));
  fs::path param = dir / "m.param";
  fs::path bin = dir / "m.bin";
  ModelCopy() {
    fs::create_directories(dir);
    fs::copy_file(model("x4fast"), param, fs::copy_options::overwrite_existing);
    fs::copy_file(fs::path(model("x4fast")).replace_extension(".bin"), bin, fs::copy_options::overwrite_existing);
  }
  ~ModelCopy() { fs::remove_all(dir); }
  std::string read_param() const {
    std::ifstream f(param);
    return {std::istreambuf_iterator<char>(f), {}};
  }
  void write_param(const std::string& s) const { std::ofstream(param) << s; }
};

}  // namespace

TEST(Upscaler, LoadsBothArchitecturesWithTheirCost) {
  auto fast = load(model("x4fast"), up::Precision::Fp32, 0);
  EXPECT_EQ(fast->architecture(), "SRVGGNetCompact(64 feat, 32 conv, x4)");
  EXPECT_EQ(fast->macs_per_input_pixel(), 1'209'024);
  EXPECT_EQ(fast->tile_pad(), fast->engine() == "libtorch" ? 34 : 0);  // the native engine has no tiles
  auto plus = load(model("x4plus"), up::Precision::Fp32, 0);
  EXPECT_EQ(plus->architecture(), "RRDBNet(23 blocks, 64 feat, 32 grow)");
  EXPECT_EQ(plus->macs_per_input_pixel(), 17'926'848);
  EXPECT_EQ(plus->scale(), 4);
}

TEST(Upscaler, AutoPrecisionFollowsTheCpu) {
  if (up::cuda_device_count() > 0) GTEST_SKIP() << "auto picks the GPU here";
  auto u = load(model("x4fast"), up::Precision::Auto, 0);
  EXPECT_EQ(u->precision(), up::cpu_has_fast_bf16() ? up::Precision::Bf16 : up::Precision::Fp32);
  EXPECT_EQ(u->device(), (up::Device{up::DeviceKind::Cpu, -1}));
}

TEST(Options, PrecisionNamesRoundTrip) {
  for (auto p : {up::Precision::Auto, up::Precision::Fp32, up::Precision::Fp16, up::Precision::Bf16})
    EXPECT_EQ(up::parse_precision(up::to_string(p)), p);
  EXPECT_EQ(up::parse_precision("fp16"), up::Precision::Fp16);
  for (const char* bad : {"", "FP16", "half", "fp8", "float32"})
    EXPECT_THROW(up::parse_precision(bad), std::invalid_argument) << bad;
}

TEST(Options, DeviceForms) {
  EXPECT_EQ(up::parse_device("auto"), (up::Device{up::DeviceKind::Auto, -1}));
  EXPECT_EQ(up::parse_device("cpu"), (up::Device{up::DeviceKind::Cpu, -1}));
  EXPECT_EQ(up::parse_device("cuda"), (up::Device{up::DeviceKind::Cuda, -1}));
  EXPECT_EQ(up::parse_device("cuda:0"), (up::Device{up::DeviceKind::Cuda, 0}));
  EXPECT_EQ(up::parse_device("cuda:13"), (up::Device{up::DeviceKind::Cuda, 13}));
  for (const char* s : {"auto", "cpu", "cuda", "cuda:0", "cuda:7"}) EXPECT_EQ(up::to_string(up::parse_device(s)), s);
  for (const char* bad : {"", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda:1x", "cuda: 1", "cuda:99999", "cpu:0",
                          "cuda0", " cpu", "mps"}) {
    try {
      up::parse_device(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("auto, cpu, cuda or cuda:N"), std::string::npos) << e.what();
    }
  }
}

TEST(Device, AutoIsTheCpuWithoutAGpuAndCudaFailsClearly) {
  if (up::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA GPU is visible";
  EXPECT_EQ(up::resolve_device(up::parse_device("auto")), (up::Device{up::DeviceKind::Cpu, -1}));
  EXPECT_EQ(up::resolve_device(up::parse_device("cpu")), (up::Device{up::DeviceKind::Cpu, -1}));
  for (const char* asked : {"cuda", "cuda:0", "cuda:1"}) {
    up::Params p;
    p.model_path = model("x4fast");
    p.device = up::parse_device(asked);
    try {
      up::Upscaler::load(p);
      ADD_FAILURE() << asked << " loaded without a GPU";
    } catch (const up::DeviceError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string("device ") + asked + ": no CUDA GPU available"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    }
  }
}

TEST(Device, Fp16IsRefusedOnTheCpu) {
  up::Params p;
  p.model_path = model("x4fast");
  p.device = up::parse_device("cpu");
  p.precision = up::Precision::Fp16;
  EXPECT_THROW(up::Upscaler::load(p), up::DeviceError);
}

TEST(Upscaler, TilingWithTheReceptiveFieldAsPadIsSeamless) {
  const cv::Mat in = photo_crop(petcam::test::kChelsea, 96, 72);
  auto whole = load(model("x4fast"), up::Precision::Fp32, 0);
  auto tiled = load(model("x4fast"), up::Precision::Fp32, 32);
  EXPECT_EQ(tiled->tile_count(96, 72), 9);
  const cv::Mat a = run(*whole, in), b = run(*tiled, in);
  // Same maths; only oneDNN's summation order differs with the tile shape, flipping a rounding.
  EXPECT_LE(cv::norm(a, b, cv::NORM_INF), 1.0);
  EXPECT_LT(cv::norm(a, b, cv::NORM_L1) / double(a.total() * 3), 0.01);
  // With too little context the seams show: the test can tell.
  auto thin = load(model("x4fast"), up::Precision::Fp32, 32, 2);
  const cv::Mat c = run(*thin, in);
  EXPECT_GT(cv::norm(a, c, cv::NORM_INF), 8.0);
}

TEST(Upscaler, OutputIsExactlyFourTimesAndFillsEveryPixel) {
  const cv::Mat in = photo_crop(petcam::test::kCoffee, 37, 23);
  for (int pre_pad : {0, 10}) {
    up::Params p;
    p.model_path = model("x4fast");
    p.tile = 16;
    p.pre_pad = pre_pad;
    auto u = up::Upscaler::load(p);
    cv::Mat out(23 * 4, 37 * 4, CV_8UC3, cv::Scalar(1, 2, 3));
    u->process({in.data, in.cols, in.rows, in.step}, {out.data, out.cols, out.rows, out.step});
    // The canary colour survives only where nothing was written.
    cv::Mat canary;
    cv::inRange(out, cv::Scalar(1, 2, 3), cv::Scalar(1, 2, 3), canary);
    EXPECT_LT(cv::countNonZero(canary), 20) << "pre_pad " << pre_pad;
  }
  auto u = load(model("x4fast"), up::Precision::Fp32, 0);
  cv::Mat wrong(10, 10, CV_8UC3);
  EXPECT_THROW(u->process({in.data, in.cols, in.rows, in.step}, {wrong.data, 10, 10, wrong.step}),
               std::invalid_argument);
}

TEST(Upscaler, LoadsAPyTorchStateDictByName) {
  auto net = up::load_network(model("x4fast"));
  const fs::path pth = fs::temp_directory_path() / ("petcam-" + std::to_string(::getpid()) + ".pth");
  c10::Dict<std::string, torch::Tensor> sd;
  for (const auto& p : net->named_parameters()) sd.insert(p.key(), p.value().clone());
  c10::Dict<std::string, c10::Dict<std::string, torch::Tensor>> wrapped;
  wrapped.insert("params_ema", sd);
  const auto bytes = torch::pickle_save(torch::IValue(wrapped));
  std::ofstream(pth, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));

  const cv::Mat in = photo_crop(petcam::test::kChelsea, 40, 30);
  auto from_ncnn = load(model("x4fast"), up::Precision::Fp32, 0);
  auto from_pth = load(pth.string(), up::Precision::Fp32, 0);
  EXPECT_EQ(from_pth->architecture(), from_ncnn->architecture());
  EXPECT_EQ(cv::norm(run(*from_ncnn, in), run(*from_pth, in), cv::NORM_INF), 0.0);
  fs::remove(pth);
}

TEST(ModelErrors, NameTheFileAndTheLayer) {
  EXPECT_NE(load_error("/nonexistent/m.param").find("/nonexistent/m.param"), std::string::npos);
  {
    ModelCopy m;
    fs::resize_file(m.bin, fs::file_size(m.bin) - 7);
    const auto e = load_error(m.param.string());
    EXPECT_NE(e.find("truncated in layer Conv_66"), std::string::npos) << e;
  }
  {
    ModelCopy m;
    std::ofstream(m.bin, std::ios::app) << "junk";
    EXPECT_NE(load_error(m.param.string()).find("4 bytes left after the last layer"), std::string::npos);
  }
  {
    ModelCopy m;
    auto text = m.read_param();
    const auto at = text.find("0=64", text.find("Conv_2 "));
    text.replace(at, 4, "0=32");
    m.write_param(text);
    const auto e = load_error(m.param.string());
    EXPECT_NE(e.find("layer Conv_2 does not fit"), std::string::npos) << e;
  }
  {
    ModelCopy m;
    std::fstream f(m.bin, std::ios::in | std::ios::out | std::ios::binary);
    f.write("\x11\x22\x33\x44", 4);  // the first weight tag
    f.close();
    const auto e = load_error(m.param.string());
    EXPECT_NE(e.find("Conv_0 has weight tag 0x44332211"), std::string::npos) << e;
  }
  {
    ModelCopy m;  // sizes from the file decide allocations: absurd ones are refused, not attempted
    auto text = m.read_param();
    text.replace(text.find("0=64", text.find("Conv_0 ")), 4, "0=100000");
    m.write_param(text);
    const auto e = load_error(m.param.string());
    EXPECT_NE(e.find("implausible SRVGGNetCompact (100000 feat, 32 conv)"), std::string::npos) << e;
  }
  {
    ModelCopy m;
    std::ofstream(m.dir / "bad.pth") << "not a pickle";
    EXPECT_NE(load_error((m.dir / "bad.pth").string()).find("not a PyTorch .pth file"), std::string::npos);
  }
}

// ---- the native engine ------------------------------------------------------------------------------

namespace {

std::unique_ptr<up::Upscaler> load_engine(const std::string& path, up::Engine e, up::Precision p, int strip = 0) {
  up::Params params;
  params.model_path = path;
  params.precision = p;
  params.engine = e;
  params.tile = 0;  // libtorch: the whole image, the reference the strips must equal
  params.threads = 2;
  params.strip_rows = strip;
  return up::Upscaler::load(params);
}

double psnr(const cv::Mat& a, const cv::Mat& b) {
  return cv::PSNR(a, b);
}

}  // namespace

TEST(Options, EngineNamesRoundTrip) {
  for (auto e : {up::Engine::Auto, up::Engine::Native, up::Engine::Libtorch})
    EXPECT_EQ(up::parse_engine(up::to_string(e)), e);
  EXPECT_THROW(up::parse_engine("ncnn"), std::invalid_argument);
}

TEST(NativeEngine, StripsEqualWholeImageLibtorchForBothNetworks) {
  struct Case {
    const char* model;
    int w, h, strip, strips;  // strips: how many the engine runs (progress counts them)
  };
  // strip 0: the engine's choice, one strip for images this small (x4plus: its trunk, where the dense blocks
  // share their transformed inputs; the tail at 2x and 4x in strips of 4096 px, three for 150x60).
  for (const Case c : {Case{"x4fast", 61, 45, 8, 6}, Case{"x4plus", 23, 19, 4, 5}, Case{"x4fast", 61, 45, 0, 1},
                       Case{"x4plus", 45, 37, 0, 1}, Case{"x4plus", 150, 60, 0, 3}}) {
    const cv::Mat in = photo_crop(petcam::test::kChelsea, c.w, c.h);
    auto native = load_engine(model(c.model), up::Engine::Native, up::Precision::Fp32, c.strip);
    auto torch = load_engine(model(c.model), up::Engine::Libtorch, up::Precision::Fp32);
    EXPECT_EQ(native->engine().rfind("native", 0), 0u) << native->engine();
    EXPECT_EQ(torch->engine(), "libtorch");
    EXPECT_EQ(native->tile_count(c.w, c.h), c.strips) << c.model << " " << c.w << "x" << c.h;
    const cv::Mat a = run(*native, in), b = run(*torch, in);
    EXPECT_LE(cv::norm(a, b, cv::NORM_INF), 1.0) << c.model;
    EXPECT_GE(psnr(a, b), 60.0) << c.model;
    // A second image of another size through the same engine (buffers are per image).
    const cv::Mat in2 = photo_crop(petcam::test::kCoffee, c.h, c.w);
    EXPECT_GE(psnr(run(*native, in2), run(*torch, in2)), 60.0) << c.model;
  }
}

// bf16 runs x4plus's trunk as one strip up to 384x384 (fp32: 192x192), the tail in strips: as close to fp32 as
// all in strips (here ~50.5 dB both; bf16 on fur is further from fp32 either way: Chelsea 200x60 ~45 dB; the model
// tests hold bf16 to >= 50 dB on their crops).
TEST(NativeEngine, Bf16TrunkAsOneStripEqualsStrips) {
  if (up::native::detect_isa() != up::native::Isa::Avx512) GTEST_SKIP() << "bf16 needs AVX-512";
  const cv::Mat in = photo_crop(petcam::test::kCoffee, 200, 60, 150, 100);
  auto chosen = load_engine(model("x4plus"), up::Engine::Native, up::Precision::Bf16);
  auto strips = load_engine(model("x4plus"), up::Engine::Native, up::Precision::Bf16, 8);
  EXPECT_EQ(chosen->tile_count(200, 60), 3);  // tail strips of 4096 px: 24 rows
  const cv::Mat a = run(*chosen, in), b = run(*strips, in);
  const cv::Mat ref = run(*load_engine(model("x4plus"), up::Engine::Libtorch, up::Precision::Fp32), in);
  const double same = psnr(a, b), to_fp32 = psnr(a, ref);
  std::printf("x4plus bf16 trunk as one strip: %.2f dB to all in strips, %.2f dB to fp32 (strips: %.2f)\n", same,
              to_fp32, psnr(b, ref));
  EXPECT_GE(same, 45.0);
  EXPECT_GE(to_fp32, psnr(b, ref) - 0.5);
}

// An engine keeps a small arena for the next image, whose pages then hold the last image's rows: a smaller,
// narrower image after a larger one must come out as from a fresh engine (padding columns zeroed again), in
// fp32 and in bf16 (on AMX: the direct convs and their bf16 rows).
TEST(NativeEngine, TheNextImageInAKeptArenaEqualsAFreshEngine) {
  const cv::Mat big = photo_crop(petcam::test::kCoffee, 88, 72), small = photo_crop(petcam::test::kChelsea, 45, 38);
  for (const char* name : {"x4fast", "x4plus"})
    for (auto p : {up::Precision::Fp32, up::Precision::Bf16}) {
      if (p == up::Precision::Bf16 && up::native::detect_isa() != up::native::Isa::Avx512) continue;
      auto kept = load_engine(model(name), up::Engine::Native, p);
      run(*kept, big);
      const cv::Mat again = run(*kept, small);
      const cv::Mat fresh = run(*load_engine(model(name), up::Engine::Native, p), small);
      EXPECT_EQ(cv::norm(again, fresh, cv::NORM_INF), 0.0)
          << name << " " << (p == up::Precision::Bf16 ? "bf16" : "fp32");
    }
}

// The Winograd transforms are built for AVX-512, AVX2 and SSE2 and picked per CPU: every one this CPU can run
// (PETCAM_CPU_ISA lowers the pick) must give the whole-image result, on two threads.
// F(6,3) (PETCAM_WINOGRAD=6, opt-in) on every instruction set, in strips and as one strip.
TEST(NativeEngine, WinogradF63GivesTheSameResult) {
  for (const char* name : {"x4fast", "x4plus"}) {
    const cv::Mat in = photo_crop(petcam::test::kChelsea, 37, 29);
    const cv::Mat ref = run(*load_engine(model(name), up::Engine::Libtorch, up::Precision::Fp32), in);
    for (const char* isa : {"", "avx2", "sse2"})
      for (int strip : {6, 0}) {
        ::setenv("PETCAM_CPU_ISA", isa, 1);
        ::setenv("PETCAM_WINOGRAD", "6", 1);
        auto u = load_engine(model(name), up::Engine::Native, up::Precision::Fp32, strip);
        ::unsetenv("PETCAM_WINOGRAD");
        ::unsetenv("PETCAM_CPU_ISA");
        EXPECT_NE(u->engine().find("F(6,3)"), std::string::npos) << u->engine();
        const double db = psnr(run(*u, in), ref);
        std::printf("%s F(6,3) %s strip %d: %.2f dB\n", name, *isa ? isa : "best", strip, db);
        EXPECT_GE(db, 60.0) << u->engine();
      }
  }
}

TEST(NativeEngine, EveryInstructionSetThisCpuRunsGivesTheSameResult) {
  const cv::Mat in = photo_crop(petcam::test::kChelsea, 37, 29);
  const cv::Mat ref = run(*load_engine(model("x4fast"), up::Engine::Libtorch, up::Precision::Fp32), in);
  for (const char* isa : {"", "avx2", "sse2"}) {
    ::setenv("PETCAM_CPU_ISA", isa, 1);
    auto u = load_engine(model("x4fast"), up::Engine::Native, up::Precision::Fp32, 8);
    ::unsetenv("PETCAM_CPU_ISA");
    if (*isa) {
      EXPECT_NE(u->engine().find(std::string(" ") + isa + " transforms"), std::string::npos) << u->engine();
    }
    EXPECT_GE(psnr(run(*u, in), ref), 60.0) << u->engine();
  }
}

// The rows each tensor holds are planned from the schedule: they grow with the width, hardly with the height,
// and RRDBNet's skip connections hold many (why auto sends wide RRDBNet images to libtorch's tiles).
TEST(NativeEngine, PlansTheRowsItHolds) {
  auto fast = up::native::make_upscaler(up::load_network(model("x4fast")), up::Precision::Fp32, 2);
  auto plus = up::native::make_upscaler(up::load_network(model("x4plus")), up::Precision::Fp32, 2);
  const auto mib = [](std::size_t b) { return static_cast<double>(b) / (1 << 20); };
  const auto f_narrow = fast->working_bytes(256, 256), f_wide = fast->working_bytes(4000, 64),
             f_12mp = fast->working_bytes(4000, 3000), p_720 = plus->working_bytes(1280, 720),
             p_12mp = plus->working_bytes(4000, 3000), p_64 = plus->working_bytes(64, 64),
             p_128 = plus->working_bytes(128, 128);
  std::printf(
      "working MiB: x4fast 256x256 %.0f, 4000x64 %.0f, 4000x3000 %.0f; x4plus 64x64 %.0f, 128x128 %.0f, 1280x720 %.0f, "
      "4000x3000 %.0f\n",
      mib(f_narrow), mib(f_wide), mib(f_12mp), mib(p_64), mib(p_128), mib(p_720), mib(p_12mp));
  EXPECT_LT(f_narrow, f_wide);
  EXPECT_LT(f_12mp, f_wide * 3 / 2);
  EXPECT_GT(p_12mp, f_12mp * 4);
  // One strip: the blocks of dead tensors are reused (x4plus 64x64 with each tensor in its own block: 281 MiB).
  EXPECT_LT(p_64, std::size_t{80} << 20);
  EXPECT_LT(p_128, std::size_t{160} << 20);  // 219 MiB with the tail at 4x as one strip too
  EXPECT_EQ(fast->working_bytes(0, 10), 0u);
  // Planning leaves the engine as it was: the next image runs right.
  const cv::Mat in = photo_crop(petcam::test::kChelsea, 30, 21);
  EXPECT_GE(psnr(run(*fast, in), run(*load_engine(model("x4fast"), up::Engine::Libtorch, up::Precision::Fp32), in)),
            60.0);
}

// An image whose rows and result pass Params::memory_budget runs on the native engine in column bands with
// 64 px pads: x4fast (33 px of receptive field per side) exactly, x4plus (~350 px) about as close as
// libtorch's tiles are; progress runs over all bands.
TEST(NativeEngine, AutoRunsWhatDoesNotFitInColumnBands) {
  for (const char* name : {"x4fast", "x4plus"}) {
    const int W = 420, H = 40;
    const cv::Mat in = photo_crop(petcam::test::kChelsea, W, H, 10, 130);
    auto native = up::native::make_upscaler(up::load_network(model(name)), up::Precision::Fp32, 2);
    up::Params p;
    p.model_path = model(name);
    p.precision = up::Precision::Fp32;
    p.threads = 2;
    const std::size_t result = 48u * W * H, band = 48u * 288 * H + native->working_bytes(288, H);
    ASSERT_GT(native->working_bytes(W, H), band);
    p.memory_budget = result + band;  // room for bands of 160 + 2 x 64 px: 3 of them
    auto banded = up::Upscaler::load(p);
    EXPECT_EQ(banded->engine().rfind("native", 0), 0u);
    std::vector<std::pair<int, int>> calls;
    cv::Mat out(H * 4, W * 4, CV_8UC3);
    banded->process({in.data, in.cols, in.rows, in.step}, {out.data, out.cols, out.rows, out.step},
                    [&](int done, int total) { calls.emplace_back(done, total); });
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(calls.back().first, calls.back().second);
    EXPECT_EQ(calls.back().second, banded->tile_count(W, H));
    // Cores 0-160, 160-320, 320-420 with their pads: 224, 288 and 164 columns, each its own number of strips.
    EXPECT_EQ(banded->tile_count(W, H),
              native->tile_count(224, H) + native->tile_count(288, H) + native->tile_count(164, H))
        << name;
    const double db = psnr(out, run(*native, in));
    std::printf("%s in 3 bands: %.2f dB to the whole image\n", name, db);
    EXPECT_GE(db, std::string(name) == "x4fast" ? 80.0 : 60.0) << name;
    // Room for nothing but the result: libtorch's tiles.
    p.memory_budget = result;
    up::Params tiles = p;
    tiles.engine = up::Engine::Libtorch;
    EXPECT_EQ(up::Upscaler::load(p)->tile_count(W, H), up::Upscaler::load(tiles)->tile_count(W, H)) << name;
  }
}

TEST(NativeEngine, ProgressPerStripAndCancellation) {
  const cv::Mat in = photo_crop(petcam::test::kChelsea, 40, 33);
  auto u = load_engine(model("x4fast"), up::Engine::Native, up::Precision::Fp32, 8);
  cv::Mat out(33 * 4, 40 * 4, CV_8UC3);
  std::vector<std::pair<int, int>> calls;
  u->process({in.data, in.cols, in.rows, in.step}, {out.data, out.cols, out.rows, out.step},
             [&](int done, int total) { calls.emplace_back(done, total); });
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), std::make_pair(5, 5));
  for (std::size_t i = 1; i < calls.size(); ++i) EXPECT_GT(calls[i].first, calls[i - 1].first);
  // The callback may throw to cancel; the engine stays usable.
  EXPECT_THROW(u->process({in.data, in.cols, in.rows, in.step}, {out.data, out.cols, out.rows, out.step},
                          [](int done, int) {
                            if (done >= 2) throw std::runtime_error("cancelled");
                          }),
               std::runtime_error);
  const cv::Mat again = run(*u, in);
  EXPECT_GE(psnr(again, run(*load_engine(model("x4fast"), up::Engine::Libtorch, up::Precision::Fp32), in)), 60.0);
}

TEST(NativeEngine, AutoPicksNativeOnlyWhereMeasuredAndNeverForTiles) {
  auto tiled = load(model("x4fast"), up::Precision::Fp32, 32);
  EXPECT_EQ(tiled->engine(), "libtorch");
  // fp32: native (measured faster with AVX-512 and AVX2); bf16: native on AVX-512, libtorch below it.
  up::Params two;
  two.model_path = model("x4fast");
  two.precision = up::Precision::Fp32;
  two.threads = 2;
  EXPECT_EQ(up::Upscaler::load(two)->engine().rfind("native", 0), 0u);
  ::setenv("PETCAM_CPU_ISA", "sse2", 1);
  EXPECT_EQ(up::Upscaler::load(two)->engine(), "libtorch");
  ::unsetenv("PETCAM_CPU_ISA");
  two.precision = up::Precision::Bf16;
  if (up::native::detect_isa() == up::native::Isa::Avx512) {
    EXPECT_EQ(up::Upscaler::load(two)->engine().rfind("native", 0), 0u);
  }
  ::setenv("PETCAM_CPU_ISA", "avx2", 1);
  EXPECT_EQ(up::Upscaler::load(two)->engine(), "libtorch");
  ::unsetenv("PETCAM_CPU_ISA");
  up::Params p;
  p.model_path = model("x4fast");
  p.engine = up::Engine::Native;
  p.pre_pad = 10;
  EXPECT_THROW(up::Upscaler::load(p), up::DeviceError);
}
