#include "imaging/imaging.h"

#include <png.h>

#include <cstring>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace petcam::imaging {

namespace {

std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | p[3];
}

bool is_sof(std::uint8_t m) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

Header jpeg_header(std::span<const std::uint8_t> b) {
  std::size_t i = 2;
  while (true) {
    if (i >= b.size()) throw ImageError("JPEG is truncated before its frame header");
    if (b[i] != 0xFF) throw ImageError("JPEG is corrupt: expected a marker at byte " + std::to_string(i));
    while (i < b.size() && b[i] == 0xFF) ++i;  // fill bytes
    if (i >= b.size()) throw ImageError("JPEG is truncated before its frame header");
    const std::uint8_t m = b[i++];
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (m == 0xD9 || m == 0xDA) throw ImageError("JPEG has no frame header before its image data");
    if (i + 2 > b.size()) throw ImageError("JPEG is truncated in a segment header");
    const std::size_t len = be16(&b[i]);
    if (len < 2) throw ImageError("JPEG is corrupt: segment length " + std::to_string(len));
    if (is_sof(m)) {
      if (len < 8 || i + 8 > b.size()) throw ImageError("JPEG is truncated in its frame header");
      Header h;
      h.format = Format::Jpeg;
      h.height = be16(&b[i + 3]);
      h.width = be16(&b[i + 5]);
      h.channels = b[i + 7];
      if (h.width == 0 || h.height == 0) throw ImageError("JPEG declares a zero width or height");
      if (h.channels != 1 && h.channels != 3 && h.channels != 4)
        throw ImageError("JPEG has " + std::to_string(h.channels) + " components (1, 3 or 4 are supported)");
      return h;
    }
    i += len;
  }
}

Header png_header(std::span<const std::uint8_t> b) {
  if (b.size() < 33) throw ImageError("PNG is truncated in its header");
  if (be32(&b[8]) != 13 || std::memcmp(&b[12], "IHDR", 4) != 0) throw ImageError("PNG is corrupt: no IHDR chunk");
  Header h;
  h.format = Format::Png;
  const std::uint32_t w = be32(&b[16]), ht = be32(&b[20]);
  if (w == 0 || ht == 0 || w > 0x7FFFFFFF || ht > 0x7FFFFFFF) throw ImageError("PNG declares an invalid size");
  h.width = static_cast<int>(w);
  h.height = static_cast<int>(ht);
  switch (b[25]) {
    case 0:
      h.channels = 1;
      break;
    case 2:
    case 3:
      h.channels = 3;
      break;
    case 4:
      h.channels = 2;
      break;
    case 6:
      h.channels = 4;
      break;
    default:
      throw ImageError("PNG has an unknown colour type " + std::to_string(b[25]));
  }
  return h;
}

// libjpeg fills a truncated scan with grey and only warns, so look for the end-of-image marker
// after the first scan: inside entropy-coded data 0xFF is always stuffed, so FF D9 is the marker.
}  // namespace

bool jpeg_is_complete(std::span<const std::uint8_t> b) {
  std::size_t i = 2;
  while (i + 4 <= b.size()) {  // walk the segments up to the first scan
    if (b[i] != 0xFF) return false;
    const std::uint8_t m = b[i + 1];
    if (m == 0xFF) {
      ++i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
      i += 2;
      continue;
    }
    if (m == 0xDA) break;
    i += 2 + be16(&b[i + 2]);
  }
  for (std::size_t j = i + 2; j + 1 < b.size(); ++j)
    if (b[j] == 0xFF && b[j + 1] == 0xD9) return true;
  return false;
}

namespace {

// libpng's simplified API reports problems in image.message instead of printing to stderr
// (OpenCV's PNG reader lets libpng print), and gives RGBA whatever the stored colour type.
cv::Mat decode_png_rgb(std::span<const std::uint8_t> bytes) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    throw ImageError(std::string("PNG is corrupt: ") + image.message);
  image.format = PNG_FORMAT_RGBA;
  cv::Mat rgba(static_cast<int>(image.height), static_cast<int>(image.width), CV_8UC4);
  if (!png_image_finish_read(&image, nullptr, rgba.data, static_cast<png_int_32>(rgba.step), nullptr)) {
    const std::string why = image.message;
    png_image_free(&image);
    throw ImageError("PNG is corrupt or truncated: " + why);
  }
  cv::Mat rgb;
  cv::cvtColor(rgba, rgb, cv::COLOR_RGBA2RGB);  // drops alpha without compositing
  return rgb;
}

void swap_red_blue(cv::Mat& m) {
  for (int y = 0; y < m.rows; ++y) {
    auto* p = m.ptr<std::uint8_t>(y);
    for (int x = 0; x < m.cols; ++x, p += 3) std::swap(p[0], p[2]);
  }
}

}  // namespace

Header read_header(std::span<const std::uint8_t> b) {
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return jpeg_header(b);
  if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) return png_header(b);
  if (b.empty()) throw ImageError("the file is empty");
  throw ImageError("not a JPEG or PNG image");
}

Header check_header(std::span<const std::uint8_t> bytes, const Limits& limits) {
  const Header h = read_header(bytes);
  const std::int64_t pixels = static_cast<std::int64_t>(h.width) * h.height;
  if (pixels > limits.max_pixels || h.width > limits.max_side || h.height > limits.max_side)
    throw ImageTooLarge("image is " + std::to_string(h.width) + "x" + std::to_string(h.height) + "; the limit is " +
                     std::to_string(limits.max_pixels) + " pixels and " + std::to_string(limits.max_side) +
                     " px per side");
  return h;
}

Photo decode(std::span<const std::uint8_t> bytes, const Limits& limits) {
  const Header h = check_header(bytes, limits);
  if (h.format == Format::Jpeg && !jpeg_is_complete(bytes))
    throw ImageError("JPEG is truncated: its image data has no end marker");
  Photo photo;
  photo.grayscale = h.channels <= 2;
  if (h.format == Format::Png) {
    photo.rgb = decode_png_rgb(bytes);
    return photo;
  }
  const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<std::uint8_t*>(bytes.data()));
  // IMREAD_COLOR applies EXIF orientation and expands grey.
  photo.rgb = cv::imdecode(raw, cv::IMREAD_COLOR);
  if (photo.rgb.empty()) throw ImageError("the JPEG data is corrupt and cannot be decoded");
  swap_red_blue(photo.rgb);
  return photo;
}

std::vector<std::uint8_t> encode(cv::Mat& rgb, bool grayscale, OutputFormat format, int jpeg_quality) {
  cv::Mat out;
  if (grayscale) {
    cv::cvtColor(rgb, out, cv::COLOR_RGB2GRAY);
  } else {
    swap_red_blue(rgb);  // OpenCV writes BGR; in place, as a 4x photo is large
    out = rgb;
  }
  std::vector<int> opts;
  if (format == OutputFormat::Jpeg) opts = {cv::IMWRITE_JPEG_QUALITY, jpeg_quality};
  std::vector<std::uint8_t> buf;
  if (!cv::imencode(format == OutputFormat::Jpeg ? ".jpg" : ".png", out, buf, opts))
    throw std::runtime_error("image encoding failed");
  return buf;
}

double sharpness(const cv::Mat& rgb) {
  cv::Mat gray, lap;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  cv::Laplacian(gray, lap, CV_64F);
  cv::Scalar mean, stddev;
  cv::meanStdDev(lap, mean, stddev);
  return stddev[0] * stddev[0];
}

}  // namespace petcam::imaging
