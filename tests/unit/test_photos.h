// Real photos shipped by Debian packages that setup installs (python3-skimage, python-matplotlib-data).
#pragma once

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>
#include <string>

namespace petcam::test {

inline const char* kChelsea = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png";
inline const char* kCoffee = "/usr/lib/python3/dist-packages/skimage/data/coffee.png";

// An RGB crop of a real photo.
inline cv::Mat photo_crop(const char* path, int w, int h, int x = 120, int y = 60) {
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) throw std::runtime_error(std::string("missing test photo ") + path + " (run scripts/setup.sh)");
  cv::Mat rgb;
  cv::cvtColor(bgr(cv::Rect(x, y, w, h)), rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

inline std::string model(const std::string& name) {
  return std::string(PETCAM_MODELS_DIR) + "/realesrgan-" + name + ".param";
}

}  // namespace petcam::test
