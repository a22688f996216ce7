// The size of a result: Real-ESRGAN's --outscale, i.e. the network's 4x output resized to outscale x the
// (EXIF-oriented) original, each side rounded half up.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace petcam::imaging {

struct Size {
  int width = 0;
  int height = 0;
  std::int64_t pixels() const { return static_cast<std::int64_t>(width) * height; }
};

inline Size outscaled(int width, int height, double outscale) {
  return {static_cast<int>(std::floor(width * outscale + 0.5)), static_cast<int>(std::floor(height * outscale + 0.5))};
}

// The largest outscale in hundredths, at most 4 and above 1, whose result keeps within `max_pixels` and
// `max_side`; 0 when none does.
inline double largest_outscale(int width, int height, std::int64_t max_pixels, int max_side) {
  const double area = static_cast<double>(width) * height;
  double s = std::min({4.0, std::sqrt(static_cast<double>(max_pixels) / area),
                       static_cast<double>(max_side) / std::max(width, height)});
  for (int hundredths = static_cast<int>(std::floor(s * 100)); hundredths > 100; --hundredths) {
    const double candidate = hundredths / 100.0;
    const Size r = outscaled(width, height, candidate);
    if (r.pixels() <= max_pixels && std::max(r.width, r.height) <= max_side) return candidate;
  }
  return 0;
}

}  // namespace petcam::imaging
