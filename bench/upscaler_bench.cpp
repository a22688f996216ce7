// Times the upscaler on one image and prints one JSON line. Needs only libtorch, so it builds
// beside the model core anywhere (see src/upscaler/CMakeLists.txt), a CUDA libtorch included.
// Input: a binary PPM (P6); --output writes the last run's result as one, for PSNR checks.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "upscaler/upscaler.h"

namespace {

struct Image {
  int w = 0, h = 0;
  std::vector<std::uint8_t> rgb;
};

Image read_ppm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string magic;
  int maxval = 0;
  Image im;
  f >> magic >> im.w >> im.h >> maxval;
  f.get();
  if (!f || magic != "P6" || maxval != 255 || im.w <= 0 || im.h <= 0) throw std::runtime_error(path + ": not a P6 PPM");
  im.rgb.resize(static_cast<std::size_t>(im.w) * im.h * 3);
  if (!f.read(reinterpret_cast<char*>(im.rgb.data()), static_cast<std::streamsize>(im.rgb.size())))
    throw std::runtime_error(path + ": truncated");
  return im;
}

void write_ppm(const std::string& path, const std::vector<std::uint8_t>& rgb, int w, int h) {
  std::ofstream f(path, std::ios::binary);
  f << "P6\n" << w << " " << h << "\n255\n";
  f.write(reinterpret_cast<const char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()));
  if (!f) throw std::runtime_error(path + ": cannot write");
}

std::string arg(int argc, char** argv, const char* name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) try {
  namespace up = petcam::upscaler;
  const std::string image_path = arg(argc, argv, "--image", "");
  if (image_path.empty()) {
    std::cerr
        << "usage: upscaler_bench --model PATH --image F.ppm [--precision auto|fp32|fp16|bf16]\n"
           "                      [--device auto|cpu|cuda|cuda:N] [--engine auto|native|libtorch] [--strip ROWS]\n"
           "                      [--threads N] [--tile N] [--tile-pad N]\n"
           "                      [--repeat R] [--warmup W] [--output OUT.ppm]\n";
    return 2;
  }
  up::Params p;
  p.model_path = arg(argc, argv, "--model", "models/realesrgan-x4fast.param");
  p.precision = up::parse_precision(arg(argc, argv, "--precision", "auto"));
  p.device = up::parse_device(arg(argc, argv, "--device", "auto"));
  p.engine = up::parse_engine(arg(argc, argv, "--engine", "auto"));
  p.strip_rows = std::stoi(arg(argc, argv, "--strip", "0"));
  const std::string output = arg(argc, argv, "--output", "");
  p.threads = std::stoi(arg(argc, argv, "--threads", "0"));
  p.tile = std::stoi(arg(argc, argv, "--tile", "-1"));
  p.tile_pad = std::stoi(arg(argc, argv, "--tile-pad", "-1"));
  const int repeat = std::max(1, std::stoi(arg(argc, argv, "--repeat", "3")));
  const int warmup = std::max(0, std::stoi(arg(argc, argv, "--warmup", "1")));

  const Image in = read_ppm(image_path);
  const auto t_load = std::chrono::steady_clock::now();
  auto model = up::Upscaler::load(p);  // on CUDA this includes moving the weights and the warm-up
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count();
  const int s = model->scale();
  std::vector<std::uint8_t> out(static_cast<std::size_t>(in.w) * s * in.h * s * 3);
  const up::ConstImageView iv{in.rgb.data(), in.w, in.h, static_cast<std::size_t>(in.w) * 3};
  const up::ImageView ov{out.data(), in.w * s, in.h * s, static_cast<std::size_t>(in.w) * s * 3};

  std::vector<double> ms;
  for (int i = 0; i < warmup + repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model->process(iv, ov);
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) ms.push_back(t);
  }
  if (!output.empty()) write_ppm(output, out, in.w * s, in.h * s);
  std::sort(ms.begin(), ms.end());
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::string model_name = p.model_path.substr(p.model_path.find_last_of('/') + 1);
  model_name = model_name.substr(0, model_name.find_last_of('.'));
  std::printf(
      "{\"impl\":\"petcam\",\"model\":\"%s\",\"precision\":\"%s\",\"device\":\"%s\",\"size\":\"%dx%d\","
      "\"ms\":%.1f,\"ms_median\":%.1f,\"load_ms\":%.1f,\"peak_rss_mb\":%.1f,\"threads\":%d,\"tiles\":%d,"
      "\"tile\":%d,\"tile_pad\":%d,\"fp32_redos\":%d,\"macs_per_px\":%lld,\"engine\":\"%s\"}\n",
      model_name.c_str(), up::to_string(model->precision()), up::to_string(model->device()).c_str(), in.w, in.h,
      ms.front(), ms[ms.size() / 2], load_ms, ru.ru_maxrss / 1024.0, p.threads, model->tile_count(in.w, in.h),
      model->tile(), model->tile_pad(), model->fp32_redos(), static_cast<long long>(model->macs_per_input_pixel()),
      model->engine().c_str());
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
