// petcam: the command line. Subcommands: serve, migrate, upscale, bestcut, version.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "imaging/imaging.h"
#include "serve.h"
#include "storage/files.h"
#include "upscaler/model_path.h"
#include "upscaler/upscaler.h"

namespace fs = std::filesystem;
using petcam::imaging::ImageError;

namespace {

constexpr const char* kVersion = "1.0.0";
constexpr std::size_t kMaxInputBytes = 256u << 20;

petcam::imaging::OutputFormat output_format(const std::string& path) {
  auto ext = fs::path(path).extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".jpg" || ext == ".jpeg") return petcam::imaging::OutputFormat::Jpeg;
  if (ext == ".png") return petcam::imaging::OutputFormat::Png;
  if (ext == ".webp") return petcam::imaging::OutputFormat::Webp;
  throw std::invalid_argument("output file must end in .jpg, .jpeg, .png or .webp: " + path);
}

struct UpscaleArgs {
  std::string in, out, model = "x4fast", precision = "auto", device = "auto", engine = "auto";
  int tile = -1, tile_pad = -1, threads = 0, quality = 95, strip_rows = 0;
  std::int64_t max_pixels = petcam::imaging::Limits{}.max_pixels;
};

int run_upscale(const UpscaleArgs& a) {
  using clock = std::chrono::steady_clock;
  const auto format = output_format(a.out);
  if (a.quality < 1 || a.quality > 100) throw std::invalid_argument("--quality must be 1..100");
  petcam::imaging::Limits limits;
  limits.max_pixels = a.max_pixels;
  auto photo = petcam::imaging::decode(petcam::storage::read_file(a.in, kMaxInputBytes), limits);

  petcam::upscaler::Params params;
  params.device = petcam::upscaler::parse_device(a.device);
  params.precision = petcam::upscaler::parse_precision(a.precision);
  params.engine = petcam::upscaler::parse_engine(a.engine);
  params.model_path = petcam::upscaler::resolve_model(a.model);
  params.tile = a.tile;
  params.tile_pad = a.tile_pad;
  params.threads = a.threads;
  params.strip_rows = a.strip_rows;
  auto up = petcam::upscaler::Upscaler::load(params);
  std::cerr << fmt::format("engine: {}\n", up->engine());

  const int w = photo.rgb.cols, h = photo.rgb.rows, s = up->scale();
  cv::Mat out(h * s, w * s, CV_8UC3);
  const bool tty = ::isatty(STDERR_FILENO);
  const auto start = clock::now();
  auto progress = [&](int done, int total) {
    const double el = std::chrono::duration<double>(clock::now() - start).count();
    const double eta = el / done * (total - done);
    std::cerr << fmt::format("{}tiles {}/{}, {:.1f} s, ETA {:.1f} s{}", tty ? "\r" : "", done, total, el, eta,
                             tty ? (done == total ? "\n" : "") : "\n");
  };
  up->process({photo.rgb.data, w, h, photo.rgb.step}, {out.data, out.cols, out.rows, out.step}, progress);
  const double secs = std::chrono::duration<double>(clock::now() - start).count();
  const auto bytes = petcam::imaging::encode(out, photo.grayscale, format, &photo.meta, a.quality);
  petcam::storage::write_file_atomic(a.out, bytes);
  std::cerr << fmt::format("upscaled {}x{} -> {}x{} with {} ({} on {}, tile {}+{}) in {:.2f} s\n", w, h, out.cols,
                           out.rows, up->architecture(), to_string(up->precision()), to_string(up->device()),
                           up->tile(), up->tile_pad(), secs);
  return 0;
}

int run_bestcut(const std::vector<std::string>& files) {
  double best = -1;
  std::string winner;
  for (const auto& f : files) {
    const auto photo = petcam::imaging::decode(petcam::storage::read_file(f, kMaxInputBytes), {});
    const double score = petcam::imaging::sharpness(photo.rgb);
    std::cout << fmt::format("{:.6f}  {}\n", score, f);
    if (score > best) best = score, winner = f;
  }
  std::cout << "best: " << winner << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PetCam: Real-ESRGAN 4x upscaling and best-cut selection for pet photos"};
  app.require_subcommand(1);

  UpscaleArgs ua;
  auto* up = app.add_subcommand("upscale", "Upscale a JPEG or PNG 4x with Real-ESRGAN");
  up->add_option("IN", ua.in, "input JPEG or PNG")->required();
  up->add_option("OUT", ua.out, "output .jpg or .png")->required();
  up->add_option("--model", ua.model, "x4plus, x4fast, or a path to a .param or .pth")->capture_default_str();
  up->add_option("--tile", ua.tile, "tile size in input px (0 = whole image; default: the model's)");
  up->add_option("--tile-pad", ua.tile_pad, "tile overlap per side (default: seamless for the model)");
  up->add_option("--precision", ua.precision, "auto (fp16 on CUDA, else bf16 or fp32), fp32, fp16 (CUDA) or bf16")
      ->capture_default_str();
  up->add_option("--device", ua.device, "auto (CUDA when available), cpu, cuda or cuda:N")->capture_default_str();
  up->add_option("--engine", ua.engine, "CPU engine: auto (native where measured faster), native or libtorch")
      ->capture_default_str();
  up->add_option("--threads", ua.threads, "inference threads (0 = all cores)");
  up->add_option("--strip-rows", ua.strip_rows, "native engine: input rows per strip (0 = chosen from the width)");
  up->add_option("--quality", ua.quality, "JPEG quality")->capture_default_str();
  up->add_option("--max-pixels", ua.max_pixels, "refuse larger inputs")->capture_default_str();

  std::vector<std::string> burst;
  auto* bc = app.add_subcommand("bestcut", "Score photos by sharpness and name the sharpest");
  bc->add_option("FILE", burst, "photos of one burst")->required();

  std::string env_file;
  auto* serve = app.add_subcommand("serve", "Run the HTTP API and the job workers (settings: environment and .env)");
  serve->add_option("--env-file", env_file, "settings file (default: ./.env when present)");
  std::string role;
  serve->add_option("--role", role, "all (default): HTTP and jobs; api: HTTP only; worker: jobs only (or ROLE)")
      ->check(CLI::IsMember({"all", "api", "worker"}));
  std::string device;
  serve->add_option("--device", device, "auto, cpu, cuda (workers spread over the GPUs) or cuda:N (or DEVICE)");

  std::string migrate_action = "status";
  int migrate_steps = 1;
  auto* migrate = app.add_subcommand("migrate", "Apply, revert or list database migrations");
  migrate->add_option("ACTION", migrate_action, "up, down or status")
      ->check(CLI::IsMember({"up", "down", "status"}))
      ->capture_default_str();
  migrate->add_option("--steps", migrate_steps, "migrations to revert with down")->capture_default_str();
  migrate->add_option("--env-file", env_file, "settings file (default: ./.env when present)");

  app.add_subcommand("version", "Print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << " (see petcam --help)\n";
    return 2;
  }
  try {
    if (*up) return run_upscale(ua);
    if (*bc) return run_bestcut(burst);
    if (*serve) return petcam::run_serve(env_file, role, device);
    if (*migrate) return petcam::run_migrate(migrate_action, migrate_steps, env_file);
    std::cout << "petcam " << kVersion << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
