// Times the imaging steps around the upscaler on a 12 MP photo: the outscale resize of a 4x result to 2x,
// the thumbnail and preview, and JPEG/PNG/WebP encoding of 4x and 2x results. Prints figures only.
//   bench_imaging [--photo PATH] [--mp 12]
// The photo (default: skimage's coffee.png) is enlarged with Lanczos to the size of a 12 MP camera photo
// and again to its 4x result, so the pixels are smooth like a network's output.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>

#include "imaging/imaging.h"

namespace im = petcam::imaging;

namespace {

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

double ms_of(const std::function<void()>& run, int repeats) {
  double best = 1e300;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

double mp(const cv::Mat& m) {
  return m.total() / 1e6;
}

std::string arg(int argc, char** argv, const char* name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = arg(argc, argv, "--photo", "/usr/lib/python3/dist-packages/skimage/data/coffee.png");
  const double megapixels = std::stod(arg(argc, argv, "--mp", "12"));
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return 1;
  }
  cv::Mat small;
  cv::cvtColor(bgr, small, cv::COLOR_BGR2RGB);
  const double aspect = 4.0 / 3.0;
  const int h = static_cast<int>(std::lround(std::sqrt(megapixels * 1e6 / aspect)));
  const int w = static_cast<int>(std::lround(h * aspect));
  const cv::Mat photo = im::resize_to(small, w, h);
  cv::Mat x4 = im::resize_to(photo, 4 * w, 4 * h);

  std::printf("CPU: %s; OpenCV threads: %d\n", cpu_name().c_str(), cv::getNumThreads());
  std::printf("photo %dx%d (%.1f MP), 4x result %dx%d (%.1f MP)\n\n", photo.cols, photo.rows, mp(photo), x4.cols,
              x4.rows, mp(x4));

  cv::Mat x2;
  const double resize_ms = ms_of([&] { x2 = im::resize_to(x4, 2 * w, 2 * h); }, 3);
  std::printf("%-40s %9.1f ms  %7.2f ms/MP (of the 4x result)\n", "resize 4x -> 2x (INTER_AREA)", resize_ms,
              resize_ms / mp(x4));
  cv::Mat thumb, preview4, preview2;
  const double thumb_ms = ms_of([&] { thumb = im::fit_within(photo, 256).clone(); }, 5);
  std::printf("%-40s %9.1f ms  %7.2f ms/MP (of the photo)\n", "thumbnail 256 px from the photo", thumb_ms,
              thumb_ms / mp(photo));
  const double p4_ms = ms_of([&] { preview4 = im::fit_within(x4, 2048).clone(); }, 3);
  std::printf("%-40s %9.1f ms  %7.2f ms/MP (of the 4x result)\n", "preview 2048 px from the 4x result", p4_ms,
              p4_ms / mp(x4));
  const double p2_ms = ms_of([&] { preview2 = im::fit_within(x2, 2048).clone(); }, 3);
  std::printf("%-40s %9.1f ms  %7.2f ms/MP (of the 2x result)\n", "preview 2048 px from the 2x result", p2_ms,
              p2_ms / mp(x2));
  for (const auto& [name, m] : {std::pair<const char*, cv::Mat*>{"thumbnail", &thumb}, {"preview", &preview4}}) {
    std::vector<std::uint8_t> out;
    const double ms = ms_of([&] { out = im::encode(*m, false, im::OutputFormat::Jpeg, nullptr, 90); }, 3);
    std::printf("%-40s %9.1f ms  %10zu bytes\n", (std::string("encode JPEG q90 of the ") + name).c_str(), ms,
                out.size());
  }
  std::printf("\n");

  for (const auto f : {im::OutputFormat::Jpeg, im::OutputFormat::Png, im::OutputFormat::Webp}) {
    for (const auto& [label, m] : {std::pair<const char*, cv::Mat*>{"4x", &x4}, {"2x", &x2}}) {
      if (m->cols > im::max_output_side(f) || m->rows > im::max_output_side(f)) {
        std::printf("encode %-4s of the %s result: over the format's %d px per side\n", im::extension(f), label,
                    im::max_output_side(f));
        continue;
      }
      std::vector<std::uint8_t> out;
      const double ms = ms_of([&] { out = im::encode(*m, false, f, nullptr, 95); }, 1);
      std::printf("encode %-4s q95 of the %s result %-13s %9.1f ms  %7.2f ms/MP  %11zu bytes  %.2f bits/px\n",
                  im::extension(f), label, "", ms, ms / mp(*m), out.size(), 8.0 * out.size() / m->total());
    }
  }
  return 0;
}
