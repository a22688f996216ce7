#include "imaging/imaging.h"

#include <libheif/heif.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "imaging/detail.h"

namespace petcam::imaging {

using namespace detail;

namespace {

// libpng's simplified API reports problems in image.message instead of printing to stderr
// (OpenCV's PNG reader lets libpng print), and gives RGBA whatever the stored colour type.
cv::Mat decode_png_rgb(Bytes bytes) {
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

// Turns stored pixels to display them as EXIF orientation `o` says.
cv::Mat oriented(const cv::Mat& m, int o) {
  cv::Mat out;
  switch (o) {
    case 2:
      cv::flip(m, out, 1);
      return out;
    case 3:
      cv::rotate(m, out, cv::ROTATE_180);
      return out;
    case 4:
      cv::flip(m, out, 0);
      return out;
    case 5:
      cv::transpose(m, out);
      return out;
    case 6:
      cv::rotate(m, out, cv::ROTATE_90_CLOCKWISE);
      return out;
    case 7:
      cv::rotate(m, out, cv::ROTATE_90_CLOCKWISE);
      cv::flip(out, out, 0);
      return out;
    case 8:
      cv::rotate(m, out, cv::ROTATE_90_COUNTERCLOCKWISE);
      return out;
    default:
      return m;
  }
}

// `reduce`: 1, 2, 4 or 8, libjpeg's DCT scaling (each side divided, rounded up).
cv::Mat decode_jpeg(Bytes bytes, int orientation, int reduce = 1) {
  if (!jpeg_is_complete(bytes)) throw ImageError("JPEG is truncated: its image data has no end marker");
  const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<std::uint8_t*>(bytes.data()));
  const int scale = reduce == 8   ? cv::IMREAD_REDUCED_COLOR_8
                    : reduce == 4 ? cv::IMREAD_REDUCED_COLOR_4
                    : reduce == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                  : cv::IMREAD_COLOR;
  // The orientation is the header's, so the decoded size always matches what the header said.
  cv::Mat rgb = cv::imdecode(raw, scale | cv::IMREAD_IGNORE_ORIENTATION);
  if (rgb.empty()) throw ImageError("the JPEG data is corrupt and cannot be decoded");
  swap_red_blue(rgb);
  return oriented(rgb, orientation);
}

cv::Mat decode_webp(Bytes bytes, const Header& h) {
  WebPBitstreamFeatures f;
  if (WebPGetFeatures(bytes.data(), bytes.size(), &f) != VP8_STATUS_OK) throw ImageError("WebP is corrupt");
  if (f.has_animation) throw ImageError("animated WebP is not supported; send a still image");
  if (f.width != h.width || f.height != h.height) throw ImageError("WebP is corrupt: its sizes disagree");
  cv::Mat rgb(h.height, h.width, CV_8UC3);
  if (!WebPDecodeRGBInto(bytes.data(), bytes.size(), rgb.data, rgb.step * rgb.rows, static_cast<int>(rgb.step)))
    throw ImageError("WebP is corrupt or truncated and cannot be decoded");
  return rgb;
}

struct HeifContext {
  heif_context* ctx = nullptr;
  heif_image_handle* handle = nullptr;
  HeifContext() {
    static const bool initialised = [] {
      heif_init(nullptr);  // reference counted; never undone, as plugins may be in use until exit
      return true;
    }();
    (void)initialised;
    ctx = heif_context_alloc();
    if (!ctx) throw std::bad_alloc();
  }
  ~HeifContext() {
    if (handle) heif_image_handle_release(handle);
    heif_context_free(ctx);
  }
  HeifContext(const HeifContext&) = delete;
  HeifContext& operator=(const HeifContext&) = delete;

  // False (or ImageError when `strict`) if libheif cannot read the file.
  bool open(Bytes bytes, int max_side, bool strict) {
    heif_context_set_maximum_image_size_limit(ctx, max_side);
    heif_error e = heif_context_read_from_memory_without_copy(ctx, bytes.data(), bytes.size(), nullptr);
    if (e.code == heif_error_Ok) e = heif_context_get_primary_image_handle(ctx, &handle);
    if (e.code != heif_error_Ok && strict) throw ImageError(std::string("HEIC is corrupt: ") + e.message);
    return e.code == heif_error_Ok;
  }

  Metadata metadata() const {
    Metadata meta;
    heif_item_id id = 0;
    if (heif_image_handle_get_list_of_metadata_block_IDs(handle, "Exif", &id, 1) == 1) {
      std::vector<std::uint8_t> block(heif_image_handle_get_metadata_size(handle, id));
      if (!block.empty() && heif_image_handle_get_metadata(handle, id, block.data()).code == heif_error_Ok)
        meta.exif = tiff_from(block);
    }
    const heif_color_profile_type type = heif_image_handle_get_color_profile_type(handle);
    if (type == heif_color_profile_type_prof || type == heif_color_profile_type_rICC) {
      meta.icc.resize(heif_image_handle_get_raw_color_profile_size(handle));
      if (meta.icc.empty() || heif_image_handle_get_raw_color_profile(handle, meta.icc.data()).code != heif_error_Ok)
        meta.icc.clear();
    }
    return meta;
  }
};

cv::Mat decode_heif(Bytes bytes, const ParsedHeader& p, const Limits& limits, Metadata& meta) {
  if (!heif_have_decoder_for_format(heif_compression_HEVC))
    throw std::runtime_error("libheif has no HEVC decoder: install libheif's libde265 plugin");
  HeifContext heif;
  heif.open(bytes, std::max(limits.max_side, std::max(p.header.width, p.header.height)), true);
  // libheif applies irot/imir/clap by default: the EXIF orientation inside a HEIC is not what counts.
  heif_image* image = nullptr;
  const heif_error e =
      heif_decode_image(heif.handle, &image, heif_colorspace_RGB, heif_chroma_interleaved_RGB, nullptr);
  if (e.code != heif_error_Ok) throw ImageError(std::string("HEIC cannot be decoded: ") + e.message);
  const std::unique_ptr<heif_image, decltype(&heif_image_release)> owned(image, heif_image_release);
  const int w = heif_image_get_width(image, heif_channel_interleaved);
  const int h = heif_image_get_height(image, heif_channel_interleaved);
  const int ow = p.header.oriented_width(), oh = p.header.oriented_height();
  const bool fits = p.cropped ? w > 0 && h > 0 && w <= ow + 1 && h <= oh + 1 : w == ow && h == oh;
  if (!fits) throw ImageError("HEIC is corrupt: its image size disagrees with its header");
  int stride = 0;
  const std::uint8_t* plane = heif_image_get_plane_readonly(image, heif_channel_interleaved, &stride);
  if (!plane) throw ImageError("HEIC cannot be decoded");
  cv::Mat rgb(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    std::memcpy(rgb.ptr(y), plane + static_cast<std::size_t>(y) * stride, static_cast<std::size_t>(w) * 3);
  meta = heif.metadata();
  return rgb;
}

// Restores the channel order of the caller's matrix whatever happens while encoding.
struct SwappedForOpenCv {
  cv::Mat& m;
  explicit SwappedForOpenCv(cv::Mat& mat) : m(mat) { swap_red_blue(m); }
  ~SwappedForOpenCv() { swap_red_blue(m); }
  SwappedForOpenCv(const SwappedForOpenCv&) = delete;
  SwappedForOpenCv& operator=(const SwappedForOpenCv&) = delete;
};

std::vector<std::uint8_t> encode_webp(const cv::Mat& rgb, int quality) {
  WebPConfig config;
  WebPPicture pic;
  if (!WebPConfigPreset(&config, WEBP_PRESET_PHOTO, static_cast<float>(quality)) || !WebPPictureInit(&pic))
    throw std::runtime_error("libwebp version mismatch");
  // Method 4 (libwebp's default) grows faster than the pixel count: 71 ms/MP at 12 MP but 218 at 48 MP on one
  // Xeon core, while method 2 stays near 30 ms/MP with files within 1% of the size (bench/bench_imaging).
  if (static_cast<std::int64_t>(rgb.cols) * rgb.rows > 8'000'000) config.method = 2;
  config.thread_level = 1;
  pic.use_argb = 0;
  pic.width = rgb.cols;
  pic.height = rgb.rows;
  WebPMemoryWriter writer;
  WebPMemoryWriterInit(&writer);
  pic.writer = WebPMemoryWrite;
  pic.custom_ptr = &writer;
  const bool ok = WebPPictureImportRGB(&pic, rgb.data, static_cast<int>(rgb.step)) && WebPEncode(&config, &pic);
  WebPPictureFree(&pic);
  std::vector<std::uint8_t> out(writer.mem, writer.mem + writer.size);
  WebPMemoryWriterClear(&writer);
  if (!ok) throw std::runtime_error("WebP encoding failed");
  return out;
}

}  // namespace

Photo decode(std::span<const std::uint8_t> bytes, const Limits& limits) {
  const ParsedHeader p = checked_header(bytes, limits);
  const Header& h = p.header;
  Photo photo;
  photo.grayscale = h.channels <= 2;
  switch (h.format) {
    case Format::Jpeg:
      photo.rgb = decode_jpeg(bytes, h.orientation);
      photo.meta = jpeg_metadata(bytes);
      break;
    case Format::Png:
      photo.rgb = oriented(decode_png_rgb(bytes), h.orientation);
      photo.meta = png_metadata(bytes);
      break;
    case Format::Webp:
      photo.grayscale = false;
      photo.rgb = oriented(decode_webp(bytes, h), h.orientation);
      photo.meta = webp_metadata(bytes);
      break;
    case Format::Heif:
      photo.rgb = decode_heif(bytes, p, limits, photo.meta);
      break;
  }
  if (h.format != Format::Heif && (photo.rgb.cols != h.oriented_width() || photo.rgb.rows != h.oriented_height()))
    throw ImageError("the image is corrupt: its decoded size disagrees with its header");
  return photo;
}

Photo decode_reduced(std::span<const std::uint8_t> bytes, const Limits& limits, int min_side) {
  const Header h = checked_header(bytes, limits).header;
  if (h.format != Format::Jpeg) return decode(bytes, limits);
  const int longest = std::max(h.width, h.height);
  int reduce = 8;
  while (reduce > 1 && (longest + reduce - 1) / reduce < min_side) reduce /= 2;
  Photo photo;
  photo.grayscale = h.channels <= 2;
  photo.rgb = decode_jpeg(bytes, h.orientation, reduce);
  photo.meta = jpeg_metadata(bytes);
  if (photo.rgb.cols != (h.oriented_width() + reduce - 1) / reduce ||
      photo.rgb.rows != (h.oriented_height() + reduce - 1) / reduce)
    throw ImageError("the image is corrupt: its decoded size disagrees with its header");
  return photo;
}

Metadata read_metadata(std::span<const std::uint8_t> bytes) {
  Format format;
  try {
    format = read_header(bytes).format;
  } catch (const ImageError&) {
    return {};
  }
  switch (format) {
    case Format::Jpeg:
      return jpeg_metadata(bytes);
    case Format::Png:
      return png_metadata(bytes);
    case Format::Webp:
      return webp_metadata(bytes);
    case Format::Heif: {
      HeifContext heif;
      return heif.open(bytes, Limits{}.max_side, false) ? heif.metadata() : Metadata{};
    }
  }
  return {};
}

const char* extension(OutputFormat f) {
  switch (f) {
    case OutputFormat::Jpeg:
      return "jpg";
    case OutputFormat::Png:
      return "png";
    case OutputFormat::Webp:
      return "webp";
  }
  return "bin";
}

const char* content_type(OutputFormat f) {
  switch (f) {
    case OutputFormat::Jpeg:
      return "image/jpeg";
    case OutputFormat::Png:
      return "image/png";
    case OutputFormat::Webp:
      return "image/webp";
  }
  return "application/octet-stream";
}

std::optional<OutputFormat> parse_output_format(std::string_view name) {
  if (name == "jpeg") return OutputFormat::Jpeg;
  if (name == "png") return OutputFormat::Png;
  if (name == "webp") return OutputFormat::Webp;
  return std::nullopt;
}

int max_output_side(OutputFormat f) {
  switch (f) {
    case OutputFormat::Jpeg:
      return 65'500;
    case OutputFormat::Png:
      return 0x7FFFFFFF;
    case OutputFormat::Webp:
      return WEBP_MAX_DIMENSION;
  }
  return 0;
}

std::vector<std::uint8_t> encode(cv::Mat& rgb, bool grayscale, OutputFormat format, const Metadata* meta, int quality) {
  if (rgb.type() != CV_8UC3 || rgb.empty()) throw std::invalid_argument("encode wants a non-empty CV_8UC3 image");
  const int limit = max_output_side(format);
  if (rgb.cols > limit || rgb.rows > limit)
    throw ImageTooLarge(std::string(extension(format)) + " output is limited to " + std::to_string(limit) +
                        " px per side; the result would be " + std::to_string(rgb.cols) + "x" +
                        std::to_string(rgb.rows));
  std::vector<std::uint8_t> buf;
  if (format == OutputFormat::Webp && grayscale) {  // no grey WebP: grey pixels in RGB
    cv::Mat gray, rgb_of_gray;
    cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
    cv::cvtColor(gray, rgb_of_gray, cv::COLOR_GRAY2RGB);
    buf = encode_webp(rgb_of_gray, quality);
  } else if (format == OutputFormat::Webp) {
    buf = encode_webp(rgb, quality);
  } else {
    const char* ext = format == OutputFormat::Jpeg ? ".jpg" : ".png";
    std::vector<int> opts;
    if (format == OutputFormat::Jpeg) opts = {cv::IMWRITE_JPEG_QUALITY, quality};
    bool ok = false;
    if (grayscale) {
      cv::Mat gray;
      cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
      ok = cv::imencode(ext, gray, buf, opts);
    } else {
      const SwappedForOpenCv bgr(rgb);  // OpenCV writes BGR; in place, as a 4x photo is large
      ok = cv::imencode(ext, rgb, buf, opts);
    }
    if (!ok) throw std::runtime_error("image encoding failed");
  }
  if (!meta || (meta->exif.empty() && meta->icc.empty())) return buf;
  const std::vector<std::uint8_t> exif =
      meta->exif.empty() ? std::vector<std::uint8_t>{} : exif_for_output(meta->exif, rgb.cols, rgb.rows);
  switch (format) {
    case OutputFormat::Jpeg:
      return jpeg_with_metadata(buf, exif, meta->icc);
    case OutputFormat::Png:
      return png_with_metadata(buf, exif, meta->icc);
    case OutputFormat::Webp:
      return webp_with_metadata(buf, exif, meta->icc);
  }
  return buf;
}

cv::Mat resize_to(const cv::Mat& rgb, int width, int height) {
  if (width <= 0 || height <= 0) throw std::invalid_argument("resize_to wants a positive size");
  if (width == rgb.cols && height == rgb.rows) return rgb;
  const bool shrinking = width <= rgb.cols && height <= rgb.rows;
  cv::Mat out;
  cv::resize(rgb, out, cv::Size(width, height), 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LANCZOS4);
  return out;
}

cv::Mat fit_within(const cv::Mat& rgb, int longest_side) {
  if (longest_side <= 0) throw std::invalid_argument("fit_within wants a positive size");
  const int longest = std::max(rgb.cols, rgb.rows);
  if (longest <= longest_side) return rgb;
  const double scale = static_cast<double>(longest_side) / longest;
  const int w = rgb.cols >= rgb.rows ? longest_side : std::max(1, static_cast<int>(std::lround(rgb.cols * scale)));
  const int h = rgb.rows > rgb.cols ? longest_side : std::max(1, static_cast<int>(std::lround(rgb.rows * scale)));
  return resize_to(rgb, std::min(w, longest_side), std::min(h, longest_side));
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
