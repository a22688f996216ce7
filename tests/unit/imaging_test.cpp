#include "imaging/imaging.h"

#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "test_photos.h"

namespace im = petcam::imaging;
using Bytes = std::vector<std::uint8_t>;

namespace {

Bytes encode_bgr(const cv::Mat& m, const char* ext) {
  Bytes out;
  cv::imencode(ext, m, out);
  return out;
}

// SOI, a baseline frame header declaring w x h with 3 components, EOI.
Bytes jpeg_declaring(int w, int h) {
  return {0xFF,
          0xD8,
          0xFF,
          0xC0,
          0x00,
          0x11,
          0x08,
          std::uint8_t(h >> 8),
          std::uint8_t(h),
          std::uint8_t(w >> 8),
          std::uint8_t(w),
          0x03,
          0x01,
          0x22,
          0x00,
          0x02,
          0x11,
          0x01,
          0x03,
          0x11,
          0x01,
          0xFF,
          0xD9};
}

std::string error_of(const Bytes& b, const im::Limits& limits = {}) {
  try {
    im::decode(b, limits);
  } catch (const im::ImageError& e) {
    return e.what();
  }
  return "(decoded)";
}

}  // namespace

TEST(ImageHeader, ReadsJpegAndPngWithoutDecoding) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 120, 80);
  auto h = im::read_header(encode_bgr(photo, ".jpg"));
  EXPECT_EQ(h.format, im::Format::Jpeg);
  EXPECT_EQ(h.width, 120);
  EXPECT_EQ(h.height, 80);
  EXPECT_EQ(h.channels, 3);
  cv::Mat gray, rgba;
  cv::cvtColor(photo, gray, cv::COLOR_RGB2GRAY);
  EXPECT_EQ(im::read_header(encode_bgr(gray, ".jpg")).channels, 1);
  cv::cvtColor(photo, rgba, cv::COLOR_RGB2BGRA);
  h = im::read_header(encode_bgr(rgba, ".png"));
  EXPECT_EQ(h.format, im::Format::Png);
  EXPECT_EQ(h.width, 120);
  EXPECT_EQ(h.channels, 4);
}

TEST(ImageHeader, RefusesDecompressionBombsBeforeDecoding) {
  const auto bomb = jpeg_declaring(60000, 60000);
  EXPECT_EQ(im::read_header(bomb).width, 60000);
  const auto e = error_of(bomb);
  EXPECT_NE(e.find("image is 60000x60000; the limit is 16000000 pixels"), std::string::npos) << e;
  im::Limits small;
  small.max_pixels = 100;
  EXPECT_NE(error_of(jpeg_declaring(11, 10), small).find("11x10"), std::string::npos);
}

TEST(ImageHeader, ExplainsWhatIsWrong) {
  EXPECT_EQ(error_of({}), "the file is empty");
  EXPECT_EQ(error_of({'h', 'e', 'l', 'l', 'o'}), "not a JPEG or PNG image");
  EXPECT_EQ(error_of({0xFF, 0xD8, 0xFF}), "JPEG is truncated before its frame header");
  EXPECT_EQ(error_of({0xFF, 0xD8, 0xFF, 0xE0, 0x00}), "JPEG is truncated in a segment header");
  EXPECT_EQ(error_of({0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02}), "JPEG has no frame header before its image data");
}

TEST(Decode, RefusesTruncatedImages) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 120, 80);
  for (const char* ext : {".jpg", ".png"}) {
    auto bytes = encode_bgr(photo, ext);
    bytes.resize(bytes.size() * 2 / 3);
    EXPECT_NE(error_of(bytes).find("truncated"), std::string::npos) << ext << ": " << error_of(bytes);
  }
}

TEST(Decode, GreyStaysGreyAndAlphaIsDropped) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 64, 48);
  cv::Mat gray, bgra;
  cv::cvtColor(photo, gray, cv::COLOR_RGB2GRAY);
  auto p = im::decode(encode_bgr(gray, ".png"), {});
  EXPECT_TRUE(p.grayscale);
  EXPECT_EQ(p.rgb.type(), CV_8UC3);
  cv::cvtColor(photo, bgra, cv::COLOR_RGB2BGRA);
  p = im::decode(encode_bgr(bgra, ".png"), {});
  EXPECT_FALSE(p.grayscale);
  EXPECT_EQ(p.rgb.type(), CV_8UC3);
  EXPECT_EQ(cv::norm(p.rgb, photo, cv::NORM_INF), 0.0);  // lossless PNG: channel order kept as RGB
}

TEST(Encode, WritesJpegOrPngOfTheSameSize) {
  cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 64, 48);
  const cv::Mat original = photo.clone();
  auto png = im::encode(photo, false, im::OutputFormat::Png);
  auto back = im::decode(png, {});
  EXPECT_EQ(cv::norm(back.rgb, original, cv::NORM_INF), 0.0);
  cv::Mat again = original.clone();
  auto jpg = im::encode(again, true, im::OutputFormat::Jpeg, 90);
  const auto h = im::read_header(jpg);
  EXPECT_EQ(h.channels, 1);
  EXPECT_EQ(h.width, 64);
}

TEST(Sharpness, IsTheLaplacianVarianceAndFallsWithBlur) {
  const cv::Mat flat(32, 32, CV_8UC3, cv::Scalar(90, 90, 90));
  EXPECT_EQ(im::sharpness(flat), 0.0);
  // One white pixel in black: Laplacian is -4 there and 1 at its four neighbours (scaled by 255).
  cv::Mat dot(10, 10, CV_8UC3, cv::Scalar(0, 0, 0));
  dot.at<cv::Vec3b>(5, 5) = {255, 255, 255};
  const double n = 100, sum = 0, sumsq = (16.0 + 4.0) * 255 * 255;
  EXPECT_NEAR(im::sharpness(dot), sumsq / n - (sum / n) * (sum / n), 1e-6);
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 200, 150);
  double last = im::sharpness(photo);
  for (double sigma : {1.0, 2.0, 3.0}) {
    cv::Mat blurred;
    cv::GaussianBlur(photo, blurred, {0, 0}, sigma);
    const double s = im::sharpness(blurred);
    EXPECT_LT(s, last) << "sigma " << sigma;
    last = s;
  }
}
