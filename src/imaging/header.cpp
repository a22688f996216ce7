// Headers read before any decoding, so a decompression bomb is refused from its first bytes.
#include <array>
#include <cstring>
#include <string>

#include "imaging/detail.h"
#include "imaging/imaging.h"

namespace petcam::imaging {

using namespace detail;

namespace {

constexpr const char* kNotAnImage = "not a JPEG, PNG, WebP or HEIC image";

bool is_sof(std::uint8_t m) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

int orientation_of(Bytes tiff) {
  const auto tags = read_exif(tiff);
  return tags && tags->orientation >= 1 && tags->orientation <= 8 ? tags->orientation : 1;
}

Header jpeg_header(Bytes b) {
  int orientation = 1;
  bool seen_exif = false;
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
    if (m == 0xE1 && !seen_exif) {  // the first Exif APP1 is the one readers use
      const Bytes body = b.subspan(i + 2, std::min(len - 2, b.size() - i - 2));
      if (starts_with(body, "Exif\0\0", 6)) {
        seen_exif = true;
        orientation = orientation_of(body.subspan(6));
      }
    }
    if (is_sof(m)) {
      if (len < 8 || i + 8 > b.size()) throw ImageError("JPEG is truncated in its frame header");
      Header h;
      h.format = Format::Jpeg;
      h.height = be16(&b[i + 3]);
      h.width = be16(&b[i + 5]);
      h.channels = b[i + 7];
      h.orientation = orientation;
      if (h.width == 0 || h.height == 0) throw ImageError("JPEG declares a zero width or height");
      if (h.channels != 1 && h.channels != 3 && h.channels != 4)
        throw ImageError("JPEG has " + std::to_string(h.channels) + " components (1, 3 or 4 are supported)");
      return h;
    }
    i += len;
  }
}

Header png_header(Bytes b) {
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
  // An eXIf chunk's orientation counts as a JPEG's does (as browsers and Pillow's exif_transpose take it).
  h.orientation = orientation_of(png_metadata(b).exif);
  return h;
}

// RIFF "WEBP", then one of: VP8X (extended: canvas size and flags), VP8 (lossy key frame), VP8L (lossless).
Header webp_header(Bytes b) {
  if (b.size() < 20) throw ImageError("WebP is truncated in its header");
  const Bytes chunk = b.subspan(20);
  Header h;
  h.format = Format::Webp;
  h.channels = 3;
  if (std::memcmp(&b[12], "VP8X", 4) == 0) {
    if (chunk.size() < 10) throw ImageError("WebP is truncated in its header");
    const std::uint8_t flags = chunk[0];
    if (flags & 0x02) throw ImageError("animated WebP is not supported; send a still image");
    h.width = static_cast<int>(le24(&chunk[4]) + 1);
    h.height = static_cast<int>(le24(&chunk[7]) + 1);
    if (flags & 0x10) h.channels = 4;
  } else if (std::memcmp(&b[12], "VP8 ", 4) == 0) {
    if (chunk.size() < 10) throw ImageError("WebP is truncated in its header");
    if (chunk[0] & 1) throw ImageError("WebP is corrupt: its image is not a key frame");
    if (chunk[3] != 0x9D || chunk[4] != 0x01 || chunk[5] != 0x2A) throw ImageError("WebP is corrupt: bad VP8 start");
    h.width = le16(&chunk[6]) & 0x3FFF;
    h.height = le16(&chunk[8]) & 0x3FFF;
  } else if (std::memcmp(&b[12], "VP8L", 4) == 0) {
    if (chunk.size() < 5) throw ImageError("WebP is truncated in its header");
    if (chunk[0] != 0x2F) throw ImageError("WebP is corrupt: bad lossless signature");
    const std::uint32_t bits = le32(&chunk[1]);
    if (bits >> 29 != 0) throw ImageError("WebP is corrupt: unknown lossless version");
    h.width = static_cast<int>((bits & 0x3FFF) + 1);
    h.height = static_cast<int>(((bits >> 14) & 0x3FFF) + 1);
    if (bits >> 28 & 1) h.channels = 4;
  } else {
    throw ImageError("WebP is corrupt: unknown first chunk");
  }
  if (h.width == 0 || h.height == 0) throw ImageError("WebP declares a zero width or height");
  h.orientation = orientation_of(webp_metadata(b).exif);
  return h;
}

// ISOBMFF boxes: 32-bit size (1: a 64-bit size follows, 0: to the end of the parent), 4-character type.
struct Box {
  std::uint32_t type = 0;
  Bytes body;
};

constexpr std::uint32_t fourcc(const char* s) {
  return static_cast<std::uint32_t>(static_cast<std::uint8_t>(s[0])) << 24 |
         static_cast<std::uint32_t>(static_cast<std::uint8_t>(s[1])) << 16 |
         static_cast<std::uint32_t>(static_cast<std::uint8_t>(s[2])) << 8 | static_cast<std::uint8_t>(s[3]);
}

// The next box of `parent` at `pos`; false at its end. Every size is checked against the parent.
bool next_box(Bytes parent, std::size_t& pos, Box& box) {
  if (pos >= parent.size()) return false;
  const std::size_t left = parent.size() - pos;
  if (left < 8) throw ImageError("HEIC is truncated in its metadata");
  std::uint64_t size = be32(&parent[pos]);
  box.type = be32(&parent[pos + 4]);
  std::size_t head = 8;
  if (size == 1) {
    if (left < 16) throw ImageError("HEIC is truncated in its metadata");
    size = static_cast<std::uint64_t>(be32(&parent[pos + 8])) << 32 | be32(&parent[pos + 12]);
    head = 16;
  } else if (size == 0) {
    size = left;
  }
  if (size < head) throw ImageError("HEIC is corrupt: a box has an invalid size");
  if (size > left) throw ImageError("HEIC is truncated in its metadata");
  box.body = parent.subspan(pos + head, static_cast<std::size_t>(size) - head);
  pos += static_cast<std::size_t>(size);
  return true;
}

// A FullBox's version (its flags are read by the callers that need them).
int version_of(const Box& box) {
  if (box.body.size() < 4) throw ImageError("HEIC is corrupt: a box is too short");
  return box.body[0];
}

bool is_heif_brand(std::uint32_t b) {
  for (const auto& s : {"heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs", "mif1", "msf1"})
    if (b == fourcc(s)) return true;
  return false;
}

// An orientation as the 2x2 matrix that maps stored to displayed coordinates (x right, y down).
using Turn = std::array<int, 4>;
constexpr std::array<Turn, 9> kOrientations = {{{1, 0, 0, 1},
                                                {1, 0, 0, 1},     // 1 identity
                                                {-1, 0, 0, 1},    // 2 mirror left-right
                                                {-1, 0, 0, -1},   // 3 180
                                                {1, 0, 0, -1},    // 4 mirror top-bottom
                                                {0, 1, 1, 0},     // 5 transpose
                                                {0, -1, 1, 0},    // 6 90 clockwise
                                                {0, -1, -1, 0},   // 7 transverse
                                                {0, 1, -1, 0}}};  // 8 90 anticlockwise

Turn then(const Turn& first, const Turn& second) {  // second x first
  return {second[0] * first[0] + second[1] * first[2], second[0] * first[1] + second[1] * first[3],
          second[2] * first[0] + second[3] * first[2], second[2] * first[1] + second[3] * first[3]};
}

int orientation_of(const Turn& t) {
  for (int o = 1; o <= 8; ++o)
    if (kOrientations[o] == t) return o;
  return 1;
}

std::uint32_t clap_size(const std::uint8_t* p) {  // a fraction N/D, rounded
  const std::uint32_t n = be32(p), d = be32(p + 4);
  return d == 0 ? 0 : static_cast<std::uint32_t>((static_cast<std::uint64_t>(n) + d / 2) / d);
}

// HEIF: ftyp, then meta -> pitm (primary item), iinf (its type), iprp -> ipco (properties) + ipma (which item
// has which): the primary item's ispe (size), irot/imir (turns, applied in association order), clap, pixi.
ParsedHeader heif_header(Bytes b) {
  std::size_t pos = 0;
  Box ftyp;
  next_box(b, pos, ftyp);
  if (ftyp.body.size() < 8) throw ImageError("HEIC is corrupt: its file type box is too short");
  bool heif = false, avif = false;
  for (std::size_t i = 0; i + 4 <= ftyp.body.size(); i += 4) {
    if (i == 4) continue;  // minor version
    const std::uint32_t brand = be32(&ftyp.body[i]);
    heif = heif || is_heif_brand(brand);
    avif = avif || brand == fourcc("avif") || brand == fourcc("avis");
  }
  if (be32(&ftyp.body[0]) == fourcc("avif") || be32(&ftyp.body[0]) == fourcc("avis") || (avif && !heif))
    throw ImageError("AVIF images are not supported; send JPEG, PNG, WebP or HEIC");
  if (!heif) throw ImageError(kNotAnImage);

  Box box, meta;
  while (meta.type == 0) {
    if (!next_box(b, pos, box)) throw ImageError("HEIC has no metadata box");
    if (box.type == fourcc("meta")) meta = box;
  }
  version_of(meta);
  std::uint32_t primary = 0;
  bool have_primary = false;
  std::uint32_t primary_type = 0;
  Bytes iinf, iprp;
  pos = 4;
  while (next_box(meta.body, pos, box)) {
    if (box.type == fourcc("pitm")) {
      const int v = version_of(box);
      if (box.body.size() < (v == 0 ? 6u : 8u)) throw ImageError("HEIC is corrupt: its primary item box is short");
      primary = v == 0 ? be16(&box.body[4]) : be32(&box.body[4]);
      have_primary = true;
    } else if (box.type == fourcc("iinf")) {
      iinf = box.body;
    } else if (box.type == fourcc("iprp")) {
      iprp = box.body;
    }
  }
  if (!have_primary) throw ImageError("HEIC has no primary image");

  if (iinf.size() < 4) throw ImageError("HEIC has no item information");
  std::size_t ipos = iinf[0] == 0 ? 6 : 8;
  if (iinf.size() < ipos) throw ImageError("HEIC is corrupt: its item information is short");
  while (next_box(iinf, ipos, box)) {
    if (box.type != fourcc("infe")) continue;
    const int v = version_of(box);
    if (v < 2) continue;  // versions 0 and 1 carry no item type
    const std::size_t id_size = v == 2 ? 2 : 4;
    if (box.body.size() < 4 + id_size + 2 + 4) throw ImageError("HEIC is corrupt: an item entry is short");
    const std::uint32_t id = v == 2 ? be16(&box.body[4]) : be32(&box.body[4]);
    if (id == primary) {
      primary_type = be32(&box.body[4 + id_size + 2]);
      break;
    }
  }
  if (primary_type == fourcc("av01")) throw ImageError("AVIF images are not supported; send JPEG, PNG, WebP or HEIC");
  if (primary_type != fourcc("hvc1") && primary_type != fourcc("grid") && primary_type != fourcc("iden") &&
      primary_type != fourcc("iovl"))
    throw ImageError("HEIC's primary image is not HEVC-coded, which is the only kind supported");

  std::vector<Box> properties;
  std::vector<std::uint16_t> associated;  // 1-based property indices of the primary item, in order
  std::size_t ppos = 0;
  while (next_box(iprp, ppos, box)) {
    if (box.type == fourcc("ipco")) {
      std::size_t cpos = 0;
      Box prop;
      while (next_box(box.body, cpos, prop)) properties.push_back(prop);
    } else if (box.type == fourcc("ipma")) {
      const int v = version_of(box);
      const bool wide = box.body[3] & 1;
      const Bytes a = box.body;
      if (a.size() < 8) throw ImageError("HEIC is corrupt: its property associations are short");
      const std::uint32_t entries = be32(&a[4]);
      std::size_t at = 8;
      for (std::uint32_t e = 0; e < entries; ++e) {
        const std::size_t id_size = v < 1 ? 2 : 4;
        if (a.size() - at < id_size + 1) throw ImageError("HEIC is corrupt: its property associations are short");
        const std::uint32_t id = v < 1 ? be16(&a[at]) : be32(&a[at]);
        const std::size_t count = a[at + id_size];
        at += id_size + 1;
        const std::size_t each = wide ? 2 : 1;
        if ((a.size() - at) / each < count) throw ImageError("HEIC is corrupt: its property associations are short");
        for (std::size_t k = 0; k < count; ++k, at += each) {
          const std::uint16_t index = wide ? be16(&a[at]) & 0x7FFF : a[at] & 0x7F;
          if (id == primary && index != 0) associated.push_back(index);
        }
      }
    }
  }

  ParsedHeader p;
  Header& h = p.header;
  h.format = Format::Heif;
  h.channels = 3;
  std::int64_t ispe_w = 0, ispe_h = 0, shown_w = 0, shown_h = 0;
  Turn turn = kOrientations[1];
  for (const std::uint16_t index : associated) {
    if (index > properties.size()) throw ImageError("HEIC is corrupt: a property index is out of range");
    const Box& prop = properties[index - 1];
    const Bytes d = prop.body;
    if (prop.type == fourcc("ispe")) {
      if (d.size() < 12) throw ImageError("HEIC is corrupt: its size property is short");
      ispe_w = shown_w = be32(&d[4]);
      ispe_h = shown_h = be32(&d[8]);
    } else if (prop.type == fourcc("pixi")) {
      if (d.size() >= 5 && (d[4] == 1 || d[4] == 3)) h.channels = d[4];
    } else if (prop.type == fourcc("irot")) {
      if (d.empty()) throw ImageError("HEIC is corrupt: its rotation property is short");
      static constexpr int kAnticlockwise[4] = {1, 8, 3, 6};
      turn = then(turn, kOrientations[kAnticlockwise[d[0] & 3]]);
      if (d[0] & 1) std::swap(shown_w, shown_h);
    } else if (prop.type == fourcc("imir")) {
      if (d.empty()) throw ImageError("HEIC is corrupt: its mirror property is short");
      // ISO/IEC 23008-12:2022: axis 0 exchanges top and bottom (EXIF 4), 1 left and right (EXIF 2).
      turn = then(turn, kOrientations[d[0] & 1 ? 2 : 4]);
    } else if (prop.type == fourcc("clap")) {
      if (d.size() < 32) throw ImageError("HEIC is corrupt: its crop property is short");
      shown_w = std::min<std::int64_t>(shown_w, clap_size(&d[0]));
      shown_h = std::min<std::int64_t>(shown_h, clap_size(&d[8]));
      p.cropped = true;
    }
  }
  if (ispe_w == 0 && ispe_h == 0) throw ImageError("HEIC's primary image has no size");
  if (ispe_w <= 0 || ispe_h <= 0 || shown_w <= 0 || shown_h <= 0 || ispe_w > 0x7FFFFFFF || ispe_h > 0x7FFFFFFF)
    throw ImageError("HEIC declares an invalid size");
  h.orientation = orientation_of(turn);
  h.width = static_cast<int>(h.turned() ? shown_h : shown_w);
  h.height = static_cast<int>(h.turned() ? shown_w : shown_h);
  p.coded_pixels = ispe_w * ispe_h;
  return p;
}

}  // namespace

namespace detail {

ParsedHeader parse_header(Bytes b) {
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  ParsedHeader p;
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    p.header = jpeg_header(b);
  } else if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) {
    p.header = png_header(b);
  } else if (b.size() >= 12 && starts_with(b, "RIFF", 4) && std::memcmp(&b[8], "WEBP", 4) == 0) {
    p.header = webp_header(b);
  } else if (b.size() >= 12 && std::memcmp(&b[4], "ftyp", 4) == 0) {
    p = heif_header(b);
  } else if (b.empty()) {
    throw ImageError("the file is empty");
  } else {
    throw ImageError(kNotAnImage);
  }
  if (p.coded_pixels == 0) p.coded_pixels = static_cast<std::int64_t>(p.header.width) * p.header.height;
  return p;
}

ParsedHeader checked_header(Bytes bytes, const Limits& limits) {
  ParsedHeader p = parse_header(bytes);
  const Header& h = p.header;
  const std::int64_t pixels = std::max(static_cast<std::int64_t>(h.width) * h.height, p.coded_pixels);
  if (pixels > limits.max_pixels || h.width > limits.max_side || h.height > limits.max_side)
    throw ImageTooLarge("image is " + std::to_string(h.oriented_width()) + "x" + std::to_string(h.oriented_height()) +
                        "; the limit is " + std::to_string(limits.max_pixels) + " pixels and " +
                        std::to_string(limits.max_side) + " px per side");
  return p;
}

}  // namespace detail

Header read_header(std::span<const std::uint8_t> bytes) {
  return parse_header(bytes).header;
}

Header check_header(std::span<const std::uint8_t> bytes, const Limits& limits) {
  return checked_header(bytes, limits).header;
}

// libjpeg fills a truncated scan with grey and only warns, so look for the end-of-image marker
// after the first scan: inside entropy-coded data 0xFF is always stuffed, so FF D9 is the marker.
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

const char* extension(Format f) {
  switch (f) {
    case Format::Jpeg:
      return "jpg";
    case Format::Png:
      return "png";
    case Format::Webp:
      return "webp";
    case Format::Heif:
      return "heic";
  }
  return "bin";
}

const char* content_type(Format f) {
  switch (f) {
    case Format::Jpeg:
      return "image/jpeg";
    case Format::Png:
      return "image/png";
    case Format::Webp:
      return "image/webp";
    case Format::Heif:
      return "image/heic";
  }
  return "application/octet-stream";
}

}  // namespace petcam::imaging
