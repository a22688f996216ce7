#include "imaging/imaging.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>

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
  EXPECT_EQ(error_of({'h', 'e', 'l', 'l', 'o'}), "not a JPEG, PNG, WebP or HEIC image");
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
  auto jpg = im::encode(again, true, im::OutputFormat::Jpeg, nullptr, 90);
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

// ---- WebP, HEIC, metadata, resizing ----

namespace {

void put16(Bytes& b, unsigned v, bool le = false) {
  if (le) {
    b.push_back(std::uint8_t(v));
    b.push_back(std::uint8_t(v >> 8));
  } else {
    b.push_back(std::uint8_t(v >> 8));
    b.push_back(std::uint8_t(v));
  }
}
void put32(Bytes& b, std::uint32_t v, bool le = false) {
  if (le) {
    put16(b, v & 0xFFFF, true);
    put16(b, v >> 16, true);
  } else {
    put16(b, v >> 16);
    put16(b, v & 0xFFFF);
  }
}
void put(Bytes& b, const std::string& s) {
  b.insert(b.end(), s.begin(), s.end());
}
void put(Bytes& b, const Bytes& more) {
  b.insert(b.end(), more.begin(), more.end());
}

// An EXIF TIFF as a camera writes it: IFD0 with ImageWidth/ImageLength, Make (stored out of line), Orientation
// and the Exif IFD pointer; the Exif IFD with PixelXDimension/PixelYDimension as SHORTs; IFD1 (a thumbnail's).
Bytes exif_blob(int orientation, int w, int h, bool le = true) {
  Bytes b;
  put(b, le ? std::string("II") : std::string("MM"));
  put16(b, 42, le);
  put32(b, 8, le);
  const std::uint32_t ifd0 = 8, n0 = 5, exif_ifd = ifd0 + 2 + 12 * n0 + 4, n1 = 2;
  const std::uint32_t ifd1 = exif_ifd + 2 + 12 * n1 + 4, make = ifd1 + 2 + 12 + 4;
  auto entry = [&](unsigned tag, unsigned type, std::uint32_t count, std::uint32_t value) {
    put16(b, tag, le);
    put16(b, type, le);
    put32(b, count, le);
    if (type == 3 && count == 1) {
      put16(b, value, le);
      put16(b, 0, le);
    } else {
      put32(b, value, le);
    }
  };
  put16(b, n0, le);
  entry(0x0100, 4, 1, w);
  entry(0x0101, 4, 1, h);
  entry(0x010F, 2, 12, make);
  entry(0x0112, 3, 1, orientation);
  entry(0x8769, 4, 1, exif_ifd);
  put32(b, ifd1, le);
  put16(b, n1, le);
  entry(0xA002, 3, 1, w);
  entry(0xA003, 3, 1, h);
  put32(b, 0, le);
  put16(b, 1, le);
  entry(0x0103, 3, 1, 6);  // IFD1: Compression JPEG
  put32(b, 0, le);
  put(b, std::string("PetCam test", 12));
  return b;
}

// A real profile if the system has one, else one that looks real: a 128-byte header with 'acsp', then tags.
Bytes icc_blob(std::size_t size = 3000) {
  for (const char* dir : {"/usr/share/color/icc", "/usr/share/color/icc/colord"}) {
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(dir, ec))
      if (size <= 65519 && (f.path().extension() == ".icc" || f.path().extension() == ".icm")) {
        std::ifstream in(f.path(), std::ios::binary);
        return Bytes(std::istreambuf_iterator<char>(in), {});
      }
  }
  Bytes b;
  put32(b, static_cast<std::uint32_t>(size));
  put(b, std::string("lcms"));
  put32(b, 0x04300000);
  put(b, std::string("mntrRGB XYZ "));
  b.resize(36, 0);
  put(b, std::string("acsp"));
  b.resize(128, 0);
  put32(b, 0);  // tag count
  for (std::size_t i = b.size(); i < size; ++i) b.push_back(std::uint8_t(i * 7919 >> 3));
  return b;
}

Bytes with_exif(const Bytes& jpeg, const Bytes& tiff) {
  Bytes app1 = {0xFF, 0xE1};
  put16(app1, static_cast<unsigned>(2 + 6 + tiff.size()));
  put(app1, std::string("Exif\0\0", 6));
  put(app1, tiff);
  Bytes out(jpeg.begin(), jpeg.begin() + 2);
  put(out, app1);
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes box(const std::string& type, const Bytes& body) {
  Bytes b;
  put32(b, static_cast<std::uint32_t>(8 + body.size()));
  put(b, type);
  put(b, body);
  return b;
}
Bytes full_box(const std::string& type, int version, const Bytes& body) {
  Bytes v = {std::uint8_t(version), 0, 0, 0};
  put(v, body);
  return box(type, v);
}

// A HEIF header (no image data): ftyp, meta with pitm, iinf, iprp (ispe and any turns, in this order).
Bytes heif_declaring(std::uint32_t w, std::uint32_t h, std::vector<Bytes> turns = {}, const std::string& brand = "heic",
                     const std::string& item_type = "hvc1") {
  Bytes ftyp;
  put(ftyp, brand);
  put32(ftyp, 0);
  put(ftyp, brand + (brand == "isom" ? "mp42" : "mif1"));
  Bytes hdlr(4, 0);
  put(hdlr, std::string("pict"));
  hdlr.resize(hdlr.size() + 13, 0);
  Bytes pitm, iinf, infe, ispe, ipco, ipma;
  put16(pitm, 1);
  put16(infe, 1);
  put16(infe, 0);
  put(infe, item_type);
  infe.push_back(0);
  put16(iinf, 1);
  put(iinf, full_box("infe", 2, infe));
  put32(ispe, w);
  put32(ispe, h);
  put(ipco, full_box("ispe", 0, ispe));
  for (const auto& t : turns) put(ipco, t);
  put32(ipma, 1);
  put16(ipma, 1);
  ipma.push_back(std::uint8_t(1 + turns.size()));
  for (std::size_t i = 1; i <= 1 + turns.size(); ++i) ipma.push_back(std::uint8_t(i | (i > 1 ? 0x80 : 0)));
  Bytes meta;
  put(meta, full_box("hdlr", 0, hdlr));
  put(meta, full_box("pitm", 0, pitm));
  put(meta, full_box("iinf", 0, iinf));
  put(meta, box("iprp", box("ipco", ipco) + full_box("ipma", 0, ipma)));
  return box("ftyp", ftyp) + full_box("meta", 0, meta);
}
Bytes irot(int quarter_turns_anticlockwise) {
  return box("irot", {std::uint8_t(quarter_turns_anticlockwise)});
}
Bytes imir(int axis) {
  return box("imir", {std::uint8_t(axis)});
}

Bytes read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// heif-enc (libheif-examples) on an encoded PNG or JPEG; empty if heif-enc is missing.
Bytes heic_from(const Bytes& input, const char* ext, const std::string& options = "-q 92") {
  if (std::system("command -v heif-enc >/dev/null 2>&1") != 0) return {};
  const auto dir = std::filesystem::temp_directory_path() / ("petcam_heic_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto in = dir / (std::string("in") + ext), out = dir / "out.heic";
  std::ofstream(in, std::ios::binary).write(reinterpret_cast<const char*>(input.data()), input.size());
  const std::string cmd = "heif-enc " + options + " -o '" + out.string() + "' '" + in.string() + "' >/dev/null 2>&1";
  Bytes result = std::system(cmd.c_str()) == 0 ? read_file(out) : Bytes{};
  std::filesystem::remove_all(dir);
  return result;
}

Bytes webp_of(const cv::Mat& rgb, int quality) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  Bytes out;
  cv::imencode(".webp", bgr, out, {cv::IMWRITE_WEBP_QUALITY, quality});
  return out;
}

double mean_abs_diff(const cv::Mat& a, const cv::Mat& b) {
  return cv::norm(a, b, cv::NORM_L1) / a.total() / 3;
}

std::string header_error(const Bytes& b) {
  try {
    im::read_header(b);
  } catch (const im::ImageError& e) {
    return e.what();
  }
  return "(read)";
}

}  // namespace

TEST(ImageHeader, ReadsWebpLossyLosslessAndAlpha) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 120, 80);
  auto h = im::read_header(webp_of(photo, 90));
  EXPECT_EQ(h.format, im::Format::Webp);
  EXPECT_EQ(h.width, 120);
  EXPECT_EQ(h.height, 80);
  EXPECT_EQ(h.channels, 3);
  EXPECT_EQ(h.orientation, 1);
  h = im::read_header(webp_of(photo, 101));  // lossless: VP8L
  EXPECT_EQ(h.width, 120);
  EXPECT_EQ(h.height, 80);
  cv::Mat bgra;
  cv::cvtColor(photo, bgra, cv::COLOR_RGB2BGRA);
  for (int y = 0; y < bgra.rows; ++y) bgra.at<cv::Vec4b>(y, 0)[3] = 0;  // libwebp drops an opaque alpha
  Bytes with_alpha;
  cv::imencode(".webp", bgra, with_alpha, {cv::IMWRITE_WEBP_QUALITY, 80});
  h = im::read_header(with_alpha);
  EXPECT_EQ(h.channels, 4);
  EXPECT_EQ(h.width, 120);
  EXPECT_EQ(im::extension(h.format), std::string("webp"));
  EXPECT_EQ(im::content_type(h.format), std::string("image/webp"));
}

TEST(ImageHeader, ReadsHeifSizeAndTurnsFromItsMetaBox) {
  auto h = im::read_header(heif_declaring(4032, 3024));
  EXPECT_EQ(h.format, im::Format::Heif);
  EXPECT_EQ(h.width, 4032);
  EXPECT_EQ(h.height, 3024);
  EXPECT_EQ(h.orientation, 1);
  EXPECT_EQ(im::extension(h.format), std::string("heic"));
  EXPECT_EQ(im::content_type(h.format), std::string("image/heic"));
  // ispe is the coded size; a quarter turn (irot 1 = 90 degrees anticlockwise) shows it 3024 wide.
  h = im::read_header(heif_declaring(4032, 3024, {irot(1)}));
  EXPECT_EQ(h.orientation, 8);
  EXPECT_EQ(h.width, 4032);
  EXPECT_EQ(h.oriented_width(), 3024);
  EXPECT_EQ(h.oriented_height(), 4032);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {irot(3)})).orientation, 6);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {irot(2)})).orientation, 3);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {imir(1)})).orientation, 2);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {imir(0)})).orientation, 4);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {irot(1), imir(1)})).orientation, 7);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {irot(3), imir(1)})).orientation, 5);
  EXPECT_EQ(im::read_header(heif_declaring(40, 30, {}, "mif1")).format, im::Format::Heif);
}

TEST(ImageHeader, RefusesBombsOfEveryFormatBeforeDecoding) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  put32(png, 60000);
  put32(png, 60000);
  put(png, Bytes{8, 2, 0, 0, 0, 0, 0, 0, 0});
  Bytes vp8x = {'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 10, 0, 0, 0, 0, 0, 0, 0};
  const std::uint32_t side = 60000 - 1;
  for (int k = 0; k < 2; ++k) put(vp8x, Bytes{std::uint8_t(side), std::uint8_t(side >> 8), std::uint8_t(side >> 16)});
  const Bytes vp8l = {'R', 'I', 'F', 'F', 0, 0, 0, 0,    'W',  'E',  'B',  'P', 'V',
                      'P', '8', 'L', 5,   0, 0, 0, 0x2F, 0xFF, 0xFF, 0xFF, 0x0F};  // 16384 x 16384
  for (const Bytes& bomb : {png, vp8x, heif_declaring(60000, 60000)}) {
    const auto e = error_of(bomb);
    EXPECT_NE(e.find("image is 60000x60000; the limit is 16000000 pixels"), std::string::npos) << e;
  }
  EXPECT_EQ(im::read_header(vp8l).width, 16384);
  EXPECT_NE(error_of(vp8l).find("image is 16384x16384"), std::string::npos) << error_of(vp8l);
  // A HEIC turned a quarter: the message names the size the user sees.
  EXPECT_NE(error_of(heif_declaring(60000, 20000, {irot(1)})).find("image is 20000x60000"), std::string::npos);
  im::Limits small;
  small.max_pixels = 100;
  EXPECT_THROW(im::check_header(heif_declaring(11, 10), small), im::ImageTooLarge);
}

TEST(ImageHeader, ExplainsWhatIsWrongWithWebpAndHeif) {
  EXPECT_EQ(header_error({'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'A', 'V', 'E', 'f', 'm', 't', ' '}),
            "not a JPEG, PNG, WebP or HEIC image");
  EXPECT_EQ(header_error({'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8'}),
            "WebP is truncated in its header");
  EXPECT_EQ(header_error({'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', ' ', 0, 0}),
            "WebP is truncated in its header");
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 32, 24);
  Bytes webp = webp_of(photo, 80);
  webp.resize(24);
  EXPECT_EQ(header_error(webp), "WebP is truncated in its header");
  Bytes animated = {'R', 'I', 'F', 'F', 0, 0,    0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8',
                    'X', 10,  0,   0,   0, 0x02, 0, 0, 0,   9,   0,   0,   9,   0,   0};
  EXPECT_EQ(header_error(animated), "animated WebP is not supported; send a still image");

  const Bytes heif = heif_declaring(40, 30);
  for (std::size_t cut : {std::size_t{20}, std::size_t{40}, heif.size() - 1})
    EXPECT_EQ(header_error(Bytes(heif.begin(), heif.begin() + cut)), "HEIC is truncated in its metadata") << cut;
  EXPECT_EQ(header_error(heif_declaring(40, 30, {}, "avif")),
            "AVIF images are not supported; send JPEG, PNG, WebP or HEIC");
  EXPECT_EQ(header_error(heif_declaring(40, 30, {}, "mif1", "av01")),
            "AVIF images are not supported; send JPEG, PNG, WebP or HEIC");
  EXPECT_EQ(header_error(heif_declaring(40, 30, {}, "isom")), "not a JPEG, PNG, WebP or HEIC image");  // an MP4
  Bytes huge_box = heif_declaring(40, 30);
  huge_box[24 + 1] = 0xFF;  // the meta box's size, far past the end
  huge_box[24 + 2] = 0xFF;
  EXPECT_EQ(header_error(huge_box), "HEIC is truncated in its metadata");
  Bytes tiny_box = heif_declaring(40, 30);
  tiny_box[24 + 2] = 0;
  tiny_box[24 + 3] = 4;  // smaller than its own header
  EXPECT_EQ(header_error(tiny_box), "HEIC is corrupt: a box has an invalid size");
}

TEST(ImageHeader, JpegOrientationComesFromItsExifAndMatchesTheDecodedPhoto) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 64, 48);
  const Bytes plain = encode_bgr(photo, ".jpg");
  for (int o = 1; o <= 8; ++o) {
    const Bytes jpeg = with_exif(plain, exif_blob(o, 64, 48, o % 2 == 0));
    const auto h = im::read_header(jpeg);
    EXPECT_EQ(h.orientation, o);
    EXPECT_EQ(h.width, 64);
    EXPECT_EQ(h.oriented_width(), o >= 5 ? 48 : 64);
    EXPECT_EQ(h.oriented_height(), o >= 5 ? 64 : 48);
    const auto p = im::decode(jpeg, {});
    EXPECT_EQ(p.rgb.cols, h.oriented_width());
    // OpenCV's own EXIF handling turns the same way.
    const cv::Mat raw(1, static_cast<int>(jpeg.size()), CV_8UC1, const_cast<std::uint8_t*>(jpeg.data()));
    cv::Mat expected = cv::imdecode(raw, cv::IMREAD_COLOR);
    cv::cvtColor(expected, expected, cv::COLOR_BGR2RGB);
    EXPECT_EQ(cv::norm(p.rgb, expected, cv::NORM_INF), 0.0) << "orientation " << o;
    EXPECT_EQ(p.meta.exif, exif_blob(o, 64, 48, o % 2 == 0));
  }
  EXPECT_EQ(im::read_header(with_exif(plain, {'I', 'I', 42, 0, 0xFF, 0xFF, 0, 0})).orientation, 1);  // malformed
}

TEST(Decode, WebpLossyAndLossless) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 64, 48);
  auto p = im::decode(webp_of(photo, 101), {});
  EXPECT_FALSE(p.grayscale);
  EXPECT_EQ(p.rgb.type(), CV_8UC3);
  EXPECT_EQ(cv::norm(p.rgb, photo, cv::NORM_INF), 0.0);  // lossless, channel order RGB
  p = im::decode(webp_of(photo, 90), {});
  EXPECT_EQ(p.rgb.size(), photo.size());
  EXPECT_LT(mean_abs_diff(p.rgb, photo), 6.0);
  Bytes truncated = webp_of(photo, 90);
  truncated.resize(truncated.size() / 2);
  EXPECT_NE(error_of(truncated).find("truncated"), std::string::npos) << error_of(truncated);
}

TEST(Decode, HeicFromHeifEnc) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 80, 60);
  const Bytes heic = heic_from(encode_bgr(
                                   [&] {
                                     cv::Mat bgr;
                                     cv::cvtColor(photo, bgr, cv::COLOR_RGB2BGR);
                                     return bgr;
                                   }(),
                                   ".png"),
                               ".png");
  if (heic.empty()) GTEST_SKIP() << "heif-enc (libheif-examples) is not installed";
  const auto h = im::read_header(heic);
  EXPECT_EQ(h.format, im::Format::Heif);
  EXPECT_EQ(h.width, 80);
  EXPECT_EQ(h.height, 60);
  const auto p = im::decode(heic, {});
  EXPECT_EQ(p.rgb.size(), photo.size());
  EXPECT_LT(mean_abs_diff(p.rgb, photo), 8.0);  // lossy HEVC, channel order RGB
  im::Limits small;
  small.max_pixels = 80 * 60 - 1;
  EXPECT_THROW(im::decode(heic, small), im::ImageTooLarge);
  Bytes truncated = heic;
  truncated.resize(truncated.size() - 100);
  EXPECT_THROW(im::decode(truncated, {}), im::ImageError);
}

TEST(Decode, HeicKeepsExifAndIccAndIgnoresExifOrientation) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 80, 60);
  cv::Mat copy = photo.clone();
  const im::Metadata icc_only{{}, icc_blob()};
  // heif-enc copies a JPEG's EXIF and ICC profile into the HEIC; this EXIF says Orientation 6.
  const Bytes jpeg = with_exif(im::encode(copy, false, im::OutputFormat::Jpeg, &icc_only), exif_blob(6, 80, 60));
  const Bytes heic = heic_from(jpeg, ".jpg");
  if (heic.empty()) GTEST_SKIP() << "heif-enc (libheif-examples) is not installed";
  const auto h = im::read_header(heic);
  EXPECT_EQ(h.orientation, 1);  // heif-enc 1.15 writes no irot
  const auto p = im::decode(heic, {});
  EXPECT_EQ(p.rgb.size(), photo.size());  // and the EXIF's Orientation 6 is not applied
  EXPECT_EQ(p.meta.icc, icc_only.icc);
  const auto tags = im::read_exif(p.meta.exif);
  ASSERT_TRUE(tags.has_value());
  EXPECT_EQ(tags->orientation, 6);
  EXPECT_EQ(tags->pixel_x, 80);
  EXPECT_EQ(im::read_metadata(heic).icc, icc_only.icc);
  EXPECT_EQ(im::read_metadata(heic).exif, p.meta.exif);
  // Whatever the EXIF inside said, the output's Orientation is 1 and its size the decoded one.
  cv::Mat rgb = p.rgb.clone();
  const auto out = im::encode(rgb, false, im::OutputFormat::Jpeg, &p.meta);
  const auto written = im::read_exif(im::read_metadata(out).exif);
  ASSERT_TRUE(written.has_value());
  EXPECT_EQ(written->orientation, 1);
  EXPECT_EQ(written->pixel_x, p.rgb.cols);
  EXPECT_EQ(im::read_header(out).oriented_width(), p.rgb.cols);
}

TEST(Metadata, ExifAndIccRoundTripInEveryOutputFormat) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 40, 30);
  const im::Metadata meta{exif_blob(6, 30, 40), icc_blob()};
  for (const auto f : {im::OutputFormat::Jpeg, im::OutputFormat::Png, im::OutputFormat::Webp}) {
    cv::Mat rgb = photo.clone();
    const auto bytes = im::encode(rgb, false, f, &meta);
    EXPECT_EQ(cv::norm(rgb, photo, cv::NORM_INF), 0.0) << "channel order restored";
    const auto back = im::read_metadata(bytes);
    EXPECT_EQ(back.icc, meta.icc) << im::extension(f);
    const auto tags = im::read_exif(back.exif);
    ASSERT_TRUE(tags.has_value()) << im::extension(f);
    EXPECT_EQ(tags->orientation, 1);
    EXPECT_EQ(tags->pixel_x, 40);
    EXPECT_EQ(tags->pixel_y, 30);
    EXPECT_EQ(tags->image_width, 40);
    EXPECT_EQ(tags->image_length, 30);
    EXPECT_EQ(back.exif.size(), meta.exif.size());  // rewritten in place: everything else kept
    EXPECT_NE(std::search(back.exif.begin(), back.exif.end(), meta.exif.end() - 12, meta.exif.end()), back.exif.end());
    const auto decoded = im::decode(bytes, {});
    EXPECT_EQ(decoded.meta.exif, back.exif);
    EXPECT_EQ(decoded.meta.icc, meta.icc);
    EXPECT_EQ(decoded.rgb.size(), photo.size());  // Orientation 1: not turned again
    const auto h = im::read_header(bytes);
    EXPECT_EQ(h.orientation, 1);
  }
  cv::Mat grey = photo.clone();
  const auto grey_jpeg = im::encode(grey, true, im::OutputFormat::Jpeg, &meta);
  EXPECT_EQ(im::read_header(grey_jpeg).channels, 1);
  EXPECT_EQ(im::read_metadata(grey_jpeg).icc, meta.icc);
}

TEST(Metadata, LargeIccIsChunkedInJpegAndReassembled) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 40, 30);
  const im::Metadata meta{{}, icc_blob(150'000)};
  cv::Mat rgb = photo.clone();
  const auto jpeg = im::encode(rgb, false, im::OutputFormat::Jpeg, &meta);
  int chunks = 0;
  for (std::size_t i = 0; i + 1 < jpeg.size(); ++i) chunks += jpeg[i] == 0xFF && jpeg[i + 1] == 0xE2;
  EXPECT_GE(chunks, 3);
  const auto back = im::read_metadata(jpeg);
  EXPECT_EQ(back.icc, meta.icc);
  EXPECT_TRUE(back.exif.empty());
  EXPECT_EQ(im::decode(jpeg, {}).rgb.size(), photo.size());
}

TEST(Metadata, ExifRewriteUpdatesDimensionsAndDropsWhatIsMalformed) {
  const Bytes be = exif_blob(8, 100, 50, false);
  auto tags = im::read_exif(be);
  ASSERT_TRUE(tags);
  EXPECT_EQ(tags->orientation, 8);
  EXPECT_EQ(tags->pixel_x, 100);
  const Bytes out = im::exif_for_output(be, 70'000, 3);  // PixelXDimension no longer fits its SHORT
  tags = im::read_exif(out);
  ASSERT_TRUE(tags);
  EXPECT_EQ(tags->orientation, 1);
  EXPECT_EQ(tags->pixel_x, 70'000);
  EXPECT_EQ(tags->pixel_y, 3);
  EXPECT_EQ(tags->image_width, 70'000);
  EXPECT_EQ(out.size(), be.size());
  EXPECT_EQ(Bytes(out.begin() + 8 + 2 + 60, out.begin() + 8 + 2 + 64), (Bytes{0, 0, 0, 0}));  // thumbnail IFD unlinked

  EXPECT_TRUE(im::exif_for_output(Bytes{'I', 'I', 42, 0, 0xFF, 0xFF, 0xFF, 0xFF}, 10, 10).empty());
  EXPECT_TRUE(im::exif_for_output(Bytes{'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0}, 10, 10).empty());
  EXPECT_FALSE(im::read_exif(Bytes{}).has_value());
  for (std::size_t cut = 0; cut < be.size(); ++cut) {  // every truncation: dropped or still consistent
    const Bytes part(be.begin(), be.begin() + cut);
    const Bytes rewritten = im::exif_for_output(part, 10, 20);
    if (!rewritten.empty()) {
      EXPECT_TRUE(im::read_exif(rewritten).has_value()) << cut;
    }
  }
  // Malformed EXIF is left out of the file; the ICC profile still goes in.
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 40, 30);
  const im::Metadata bad{{'M', 'M', 0, 42, 0, 0, 0, 200}, icc_blob()};
  for (const auto f : {im::OutputFormat::Jpeg, im::OutputFormat::Png, im::OutputFormat::Webp}) {
    cv::Mat rgb = photo.clone();
    const auto back = im::read_metadata(im::encode(rgb, false, f, &bad));
    EXPECT_TRUE(back.exif.empty()) << im::extension(f);
    EXPECT_EQ(back.icc, bad.icc) << im::extension(f);
  }
}

TEST(Encode, WritesWebpAndNamesEveryOutputFormat) {
  cv::Mat photo = petcam::test::photo_crop(petcam::test::kCoffee, 64, 48);
  const cv::Mat original = photo.clone();
  const auto webp = im::encode(photo, false, im::OutputFormat::Webp, nullptr, 90);
  EXPECT_EQ(im::read_header(webp).format, im::Format::Webp);
  EXPECT_LT(mean_abs_diff(im::decode(webp, {}).rgb, original), 6.0);
  EXPECT_EQ(cv::norm(photo, original, cv::NORM_INF), 0.0);
  const auto grey = im::encode(photo, true, im::OutputFormat::Webp);  // no grey WebP: RGB of grey pixels
  const auto g = im::decode(grey, {}).rgb;
  std::vector<cv::Mat> planes;
  cv::split(g, planes);
  EXPECT_LT(cv::norm(planes[0], planes[2], cv::NORM_L1) / planes[0].total(), 3.0);
  EXPECT_EQ(im::parse_output_format("jpeg"), im::OutputFormat::Jpeg);
  EXPECT_EQ(im::parse_output_format("png"), im::OutputFormat::Png);
  EXPECT_EQ(im::parse_output_format("webp"), im::OutputFormat::Webp);
  EXPECT_FALSE(im::parse_output_format("jpg").has_value());
  EXPECT_FALSE(im::parse_output_format("JPEG").has_value());
  EXPECT_EQ(im::extension(im::OutputFormat::Jpeg), std::string("jpg"));
  EXPECT_EQ(im::content_type(im::OutputFormat::Png), std::string("image/png"));
  EXPECT_EQ(im::content_type(im::OutputFormat::Webp), std::string("image/webp"));
  cv::Mat wide(1, 16384, CV_8UC3, cv::Scalar(1, 2, 3));
  EXPECT_THROW(im::encode(wide, false, im::OutputFormat::Webp), im::ImageTooLarge);
}

TEST(Resize, ExactSizesAndFitWithinNeverEnlarges) {
  const cv::Mat photo = petcam::test::photo_crop(petcam::test::kChelsea, 64, 48);
  for (const cv::Size s : {cv::Size(33, 17), cv::Size(200, 10), cv::Size(128, 96), cv::Size(1, 1)}) {
    const cv::Mat r = im::resize_to(photo, s.width, s.height);
    EXPECT_EQ(r.size(), s);
    EXPECT_EQ(r.type(), CV_8UC3);
  }
  // A flat image stays flat through either filter.
  const cv::Mat flat(30, 40, CV_8UC3, cv::Scalar(10, 200, 90));
  EXPECT_EQ(cv::norm(im::resize_to(flat, 20, 15), cv::Mat(15, 20, CV_8UC3, cv::Scalar(10, 200, 90)), cv::NORM_INF), 0);
  EXPECT_LE(cv::norm(im::resize_to(flat, 80, 60), cv::Mat(60, 80, CV_8UC3, cv::Scalar(10, 200, 90)), cv::NORM_INF), 1);

  EXPECT_EQ(im::fit_within(photo, 256).data, photo.data);  // fits: not copied, not enlarged
  EXPECT_EQ(im::fit_within(photo, 64).data, photo.data);
  EXPECT_EQ(im::fit_within(photo, 32).size(), cv::Size(32, 24));
  EXPECT_EQ(im::fit_within(photo.t(), 32).size(), cv::Size(24, 32));
  const cv::Mat strip(3, 1000, CV_8UC3, cv::Scalar(0, 0, 0));
  EXPECT_EQ(im::fit_within(strip, 10).size(), cv::Size(10, 1));
}
