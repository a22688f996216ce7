// Photos in and out: header checks before decoding (JPEG, PNG, WebP, HEIC), decode with orientation applied,
// EXIF and ICC metadata kept, resizing, JPEG/PNG/WebP encode, and the best-cut sharpness score.
// The only module besides upscaler that knows pixels.
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace petcam::imaging {

// Input a caller can fix: not an image, truncated, too large. The message says what is wrong.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The image is valid but larger than the limits allow (or than the output format can hold).
class ImageTooLarge : public ImageError {
 public:
  using ImageError::ImageError;
};

enum class Format { Jpeg, Png, Webp, Heif };
const char* extension(Format);     // "jpg" "png" "webp" "heic"
const char* content_type(Format);  // "image/jpeg" "image/png" "image/webp" "image/heic"

struct Header {
  Format format = Format::Jpeg;
  int width = 0;  // as stored (before orientation)
  int height = 0;
  int channels = 0;     // as stored: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha
  int orientation = 1;  // EXIF orientation 1..8 (JPEG APP1 Exif, PNG eXIf, WebP EXIF; HEIC: irot/imir mapped)
  bool turned() const { return orientation >= 5; }  // a quarter turn: width and height swap
  int oriented_width() const { return turned() ? height : width; }
  int oriented_height() const { return turned() ? width : height; }
};

struct Limits {
  std::int64_t max_pixels = 16'000'000;  // width x height of the input
  int max_side = 16'375;                 // 4x must stay within JPEG's 65,500 px
};

// Reads only the header (JPEG segments up to SOFn, PNG IHDR, WebP's first chunk, HEIC's meta box); never
// decodes. Throws ImageError; anything else than the four types: "not a JPEG, PNG, WebP or HEIC image".
Header read_header(std::span<const std::uint8_t> bytes);
// read_header plus the limits; throws ImageTooLarge saying the size and the limit.
Header check_header(std::span<const std::uint8_t> bytes, const Limits& limits);

// A JPEG whose first scan reaches its end-of-image marker; false for a truncated upload.
bool jpeg_is_complete(std::span<const std::uint8_t> bytes);

struct Metadata {
  std::vector<std::uint8_t> exif;  // a TIFF structure ("II*\0" or "MM\0*" first), no "Exif\0\0"; empty if none
  std::vector<std::uint8_t> icc;   // the ICC profile; empty if none
};

struct Photo {
  cv::Mat rgb;             // CV_8UC3, orientation applied, alpha dropped
  bool grayscale = false;  // stored as grey: encode the result as grey too
  Metadata meta;
};

// Any of the four types; checks the header against the limits first, and the decoded size against the header.
Photo decode(std::span<const std::uint8_t> bytes, const Limits& limits);

// decode() at the smallest size whose longest side is still at least `min_side`, for previews: JPEG through
// libjpeg's DCT scaling (each side divided by 2, 4 or 8, rounded up), which is several times cheaper; the other
// types at full size.
Photo decode_reduced(std::span<const std::uint8_t> bytes, const Limits& limits, int min_side);

// The EXIF and ICC profile of an image without decoding its pixels; empty parts where there are none
// (or the container is malformed).
Metadata read_metadata(std::span<const std::uint8_t> bytes);

// The tags of an EXIF TIFF structure that encoding rewrites; 0 where a tag is absent.
struct ExifTags {
  int orientation = 0;
  std::int64_t image_width = 0, image_length = 0;  // IFD0
  std::int64_t pixel_x = 0, pixel_y = 0;           // the Exif IFD
};
// nullopt if the structure is malformed (bad header, an IFD outside the data).
std::optional<ExifTags> read_exif(std::span<const std::uint8_t> tiff);
// A copy for an image of width x height whose pixels are already turned: Orientation 1, pixel dimensions (and
// ImageWidth/ImageLength where present) updated, the thumbnail IFD unlinked. Empty if `tiff` is malformed.
std::vector<std::uint8_t> exif_for_output(std::span<const std::uint8_t> tiff, int width, int height);

enum class OutputFormat { Jpeg, Png, Webp };
const char* extension(OutputFormat);                                     // "jpg" "png" "webp"
const char* content_type(OutputFormat);                                  // "image/jpeg" "image/png" "image/webp"
std::optional<OutputFormat> parse_output_format(std::string_view name);  // "jpeg" | "png" | "webp"
int max_output_side(OutputFormat);  // JPEG 65,500, PNG 2^31 - 1, WebP 16,383: larger throws ImageTooLarge

// Encodes RGB (or grey when `grayscale`; WebP has no grey and writes RGB). With `meta`, its EXIF is written
// through exif_for_output (dropped if malformed or, in JPEG, over 64 KiB) and its ICC profile embedded:
// JPEG APP1 Exif + APP2 ICC_PROFILE chunks, PNG eXIf + iCCP, WebP VP8X with ICCP and EXIF chunks.
// `rgb` is reordered in place while encoding (to save a copy of a large photo) and restored before returning.
std::vector<std::uint8_t> encode(cv::Mat& rgb, bool grayscale, OutputFormat format, const Metadata* meta = nullptr,
                                 int quality = 95);

// Exactly width x height: INTER_AREA when shrinking both ways, Lanczos otherwise; a shallow copy if already so.
cv::Mat resize_to(const cv::Mat& rgb, int width, int height);
// Longest side at most `longest_side`, aspect kept; never enlarges (a shallow copy if it already fits).
cv::Mat fit_within(const cv::Mat& rgb, int longest_side);

// Variance of the Laplacian of the grey image: the original server's sharpness measure.
double sharpness(const cv::Mat& rgb);

}  // namespace petcam::imaging
