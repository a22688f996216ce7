// Shared inside the imaging module only: byte readers and the per-container pieces.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "imaging/imaging.h"

namespace petcam::imaging::detail {

using Bytes = std::span<const std::uint8_t>;

inline std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
inline std::uint32_t be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | p[3];
}
inline std::uint16_t le16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[1] << 8 | p[0]);
}
inline std::uint32_t le24(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[1]) << 8 | p[0];
}
inline std::uint32_t le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[3]) << 24 | le24(p);
}

inline bool starts_with(Bytes b, const char* s, std::size_t n) {
  if (b.size() < n) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != static_cast<std::uint8_t>(s[i])) return false;
  return true;
}

// A header plus what only decoding needs: the limits apply to the size the decoder allocates, which for a
// HEIC with a clean-aperture crop is larger than the image.
struct ParsedHeader {
  Header header;
  std::int64_t coded_pixels = 0;
  bool cropped = false;  // HEIC clap: the decoded size may differ from width x height by rounding
};
ParsedHeader parse_header(Bytes bytes);
ParsedHeader checked_header(Bytes bytes, const Limits& limits);  // check_header's work

Metadata jpeg_metadata(Bytes jpeg);
Metadata png_metadata(Bytes png);
Metadata webp_metadata(Bytes webp);

// Encoded files with the metadata added (parts that cannot be stored are dropped).
std::vector<std::uint8_t> jpeg_with_metadata(Bytes jpeg, Bytes exif, Bytes icc);
std::vector<std::uint8_t> png_with_metadata(Bytes png, Bytes exif, Bytes icc);
std::vector<std::uint8_t> webp_with_metadata(Bytes webp, Bytes exif, Bytes icc);

// The TIFF structure inside a HEIC Exif item (4-byte offset first) or a WebP EXIF chunk ("Exif\0\0" sometimes
// first); empty unless it starts with a TIFF header.
std::vector<std::uint8_t> tiff_from(Bytes data);

}  // namespace petcam::imaging::detail
