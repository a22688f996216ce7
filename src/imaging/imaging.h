// Photos in and out: header checks before decoding, decode with EXIF orientation, JPEG/PNG encode,
// and the best-cut sharpness score. The only module besides upscaler that knows pixels.
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <span>
#include <stdexcept>
#include <vector>

namespace petcam::imaging {

// Input a caller can fix: not an image, truncated, too large. The message says what is wrong.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The image is valid but larger than the limits allow.
class ImageTooLarge : public ImageError {
 public:
  using ImageError::ImageError;
};

enum class Format { Jpeg, Png };

struct Header {
  Format format = Format::Jpeg;
  int width = 0;
  int height = 0;
  int channels = 0;  // as stored: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha
};

struct Limits {
  std::int64_t max_pixels = 16'000'000;  // width x height of the input
  int max_side = 16'375;                 // 4x must stay within JPEG's 65,500 px
};

// Reads only the header (JPEG SOFn, PNG IHDR). Throws ImageError.
Header read_header(std::span<const std::uint8_t> bytes);
// read_header plus the limits; throws ImageTooLarge saying the size and the limit.
Header check_header(std::span<const std::uint8_t> bytes, const Limits& limits);

// A JPEG whose first scan reaches its end-of-image marker; false for a truncated upload.
bool jpeg_is_complete(std::span<const std::uint8_t> bytes);

struct Photo {
  cv::Mat rgb;             // CV_8UC3, EXIF orientation applied, alpha dropped
  bool grayscale = false;  // stored as grey: encode the result as grey too
};

Photo decode(std::span<const std::uint8_t> bytes, const Limits& limits);

enum class OutputFormat { Jpeg, Png };
// Encodes RGB (or grey when `grayscale`); may reorder channels of `rgb` in place to save a copy.
std::vector<std::uint8_t> encode(cv::Mat& rgb, bool grayscale, OutputFormat format, int jpeg_quality = 95);

// Variance of the Laplacian of the grey image: the original server's sharpness measure.
double sharpness(const cv::Mat& rgb);

}  // namespace petcam::imaging
