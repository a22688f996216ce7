// EXIF and ICC profiles: found in each container, rewritten for the output, embedded in each output format.
// Metadata is a courtesy: malformed parts are dropped, never an error.
#include <webp/mux.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "imaging/detail.h"
#include "imaging/imaging.h"

namespace petcam::imaging {

using namespace detail;

namespace {

constexpr std::size_t kMaxIcc = 16u << 20;  // a PNG's compressed profile inflates to at most this

std::vector<std::uint8_t> copy_of(Bytes b) {
  return {b.begin(), b.end()};
}

std::vector<std::uint8_t> concat(std::initializer_list<Bytes> parts) {
  std::size_t size = 0;
  for (const Bytes p : parts) size += p.size();
  std::vector<std::uint8_t> out(size);
  std::size_t at = 0;
  for (const Bytes p : parts) {
    if (!p.empty()) std::memcpy(out.data() + at, p.data(), p.size());
    at += p.size();
  }
  return out;
}

bool is_tiff(Bytes b) {
  return starts_with(b, "II*\0", 4) || starts_with(b, "MM\0*", 4);
}

// ---- EXIF (TIFF) ----

constexpr std::uint16_t kImageWidth = 0x0100, kImageLength = 0x0101, kOrientation = 0x0112, kExifIfd = 0x8769,
                        kPixelX = 0xA002, kPixelY = 0xA003;
constexpr std::uint16_t kShort = 3, kLong = 4, kIfdType = 13;

class Tiff {
 public:
  explicit Tiff(Bytes b) : b_(b), le_(b.size() >= 2 && b[0] == 'I') {}
  std::size_t size() const { return b_.size(); }
  bool little_endian() const { return le_; }
  std::uint16_t u16(std::size_t at) const { return le_ ? le16(&b_[at]) : be16(&b_[at]); }
  std::uint32_t u32(std::size_t at) const { return le_ ? le32(&b_[at]) : be32(&b_[at]); }

 private:
  Bytes b_;
  bool le_;
};

// Writes into the bytes a Tiff reads.
class TiffWriter {
 public:
  TiffWriter(std::vector<std::uint8_t>& b, bool le) : b_(b), le_(le) {}
  void put16(std::size_t at, std::uint16_t v) {
    b_[at + (le_ ? 0 : 1)] = static_cast<std::uint8_t>(v);
    b_[at + (le_ ? 1 : 0)] = static_cast<std::uint8_t>(v >> 8);
  }
  void put32(std::size_t at, std::uint32_t v) {
    for (int k = 0; k < 4; ++k) b_[at + (le_ ? k : 3 - k)] = static_cast<std::uint8_t>(v >> (8 * k));
  }

 private:
  std::vector<std::uint8_t>& b_;
  bool le_;
};

struct Ifd {
  std::size_t entries = 0;  // offset of the first 12-byte entry
  std::size_t count = 0;
  std::size_t next = 0;  // offset of the next-IFD pointer, 0 if the data ends before it
};

std::optional<Ifd> ifd_at(const Tiff& t, std::uint32_t offset) {
  if (offset < 8 || offset > t.size() || t.size() - offset < 2) return std::nullopt;
  Ifd ifd;
  ifd.count = t.u16(offset);
  ifd.entries = offset + 2;
  if ((t.size() - ifd.entries) / 12 < ifd.count) return std::nullopt;
  const std::size_t end = ifd.entries + 12 * ifd.count;
  if (t.size() - end >= 4) ifd.next = end;
  return ifd;
}

std::size_t find_tag(const Tiff& t, const Ifd& ifd, std::uint16_t tag) {  // entry offset, 0 if absent
  for (std::size_t k = 0; k < ifd.count; ++k)
    if (t.u16(ifd.entries + 12 * k) == tag) return ifd.entries + 12 * k;
  return 0;
}

std::int64_t number_at(const Tiff& t, std::size_t entry) {  // a SHORT or LONG stored in the entry, else 0
  if (entry == 0 || t.u32(entry + 4) != 1) return 0;
  const std::uint16_t type = t.u16(entry + 2);
  if (type == kShort) return t.u16(entry + 8);
  if (type == kLong) return t.u32(entry + 8);
  return 0;
}

// Entries are rewritten in place (type, count 1, the value inline), so every other offset stays valid.
void set_number(TiffWriter& t, std::size_t entry, std::uint32_t v) {
  const bool as_short = v <= 0xFFFF;
  t.put16(entry + 2, as_short ? kShort : kLong);
  t.put32(entry + 4, 1);
  t.put32(entry + 8, 0);
  if (as_short)
    t.put16(entry + 8, static_cast<std::uint16_t>(v));
  else
    t.put32(entry + 8, v);
}

struct Parsed {
  Ifd ifd0;
  std::optional<Ifd> exif;
};

std::optional<Parsed> parse_tiff(const Tiff& t, Bytes raw) {
  if (!is_tiff(raw) || raw.size() < 8) return std::nullopt;
  Parsed p;
  const auto ifd0 = ifd_at(t, t.u32(4));
  if (!ifd0) return std::nullopt;
  p.ifd0 = *ifd0;
  if (const std::size_t e = find_tag(t, p.ifd0, kExifIfd)) {
    const std::uint16_t type = t.u16(e + 2);
    if ((type != kLong && type != kIfdType) || t.u32(e + 4) != 1) return std::nullopt;
    p.exif = ifd_at(t, t.u32(e + 8));
    if (!p.exif) return std::nullopt;
  }
  return p;
}

// ---- containers ----

std::vector<std::uint8_t> inflate_bounded(Bytes in, std::size_t limit) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return {};
  std::vector<std::uint8_t> out(std::min<std::size_t>(limit, std::max<std::size_t>(in.size() * 4, 4096)));
  z.next_in = const_cast<std::uint8_t*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (z.total_out == out.size()) {
      if (out.size() == limit) break;
      out.resize(std::min(limit, out.size() * 2));
    }
    z.next_out = out.data() + z.total_out;
    z.avail_out = static_cast<uInt>(out.size() - z.total_out);
    rc = inflate(&z, Z_NO_FLUSH);
  }
  const bool ok = rc == Z_STREAM_END;
  out.resize(z.total_out);
  inflateEnd(&z);
  return ok ? out : std::vector<std::uint8_t>{};
}

std::vector<std::uint8_t> deflate_all(Bytes in) {
  uLongf size = compressBound(static_cast<uLong>(in.size()));
  std::vector<std::uint8_t> out(size);
  if (compress2(out.data(), &size, in.data(), static_cast<uLong>(in.size()), Z_BEST_COMPRESSION) != Z_OK) return {};
  out.resize(size);
  return out;
}

void put_be16(std::vector<std::uint8_t>& v, std::size_t n) {
  v.push_back(static_cast<std::uint8_t>(n >> 8));
  v.push_back(static_cast<std::uint8_t>(n));
}
void put_be32(std::vector<std::uint8_t>& v, std::uint32_t n) {
  put_be16(v, n >> 16);
  put_be16(v, n & 0xFFFF);
}
void put_text(std::vector<std::uint8_t>& v, const char* s, std::size_t n) {
  v.insert(v.end(), s, s + n);
}

void png_chunk(std::vector<std::uint8_t>& out, const char* type, Bytes a, Bytes b = {}) {
  put_be32(out, static_cast<std::uint32_t>(a.size() + b.size()));
  const std::size_t crc_from = out.size();
  put_text(out, type, 4);
  out.insert(out.end(), a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  put_be32(out, static_cast<std::uint32_t>(crc32(0, out.data() + crc_from, static_cast<uInt>(out.size() - crc_from))));
}

}  // namespace

std::optional<ExifTags> read_exif(std::span<const std::uint8_t> tiff) {
  const Tiff t(tiff);
  const auto p = parse_tiff(t, tiff);
  if (!p) return std::nullopt;
  ExifTags tags;
  if (const std::size_t e = find_tag(t, p->ifd0, kOrientation); e && t.u16(e + 2) == kShort)
    tags.orientation = t.u16(e + 8);
  tags.image_width = number_at(t, find_tag(t, p->ifd0, kImageWidth));
  tags.image_length = number_at(t, find_tag(t, p->ifd0, kImageLength));
  if (p->exif) {
    tags.pixel_x = number_at(t, find_tag(t, *p->exif, kPixelX));
    tags.pixel_y = number_at(t, find_tag(t, *p->exif, kPixelY));
  }
  return tags;
}

std::vector<std::uint8_t> exif_for_output(std::span<const std::uint8_t> tiff, int width, int height) {
  std::vector<std::uint8_t> out = copy_of(tiff);
  const Tiff t(out);
  const auto p = parse_tiff(t, out);
  if (!p || width <= 0 || height <= 0) return {};
  TiffWriter put(out, t.little_endian());
  const auto w = static_cast<std::uint32_t>(width), h = static_cast<std::uint32_t>(height);
  if (const std::size_t e = find_tag(t, p->ifd0, kOrientation)) set_number(put, e, 1);
  if (const std::size_t e = find_tag(t, p->ifd0, kImageWidth)) set_number(put, e, w);
  if (const std::size_t e = find_tag(t, p->ifd0, kImageLength)) set_number(put, e, h);
  if (p->exif) {
    if (const std::size_t e = find_tag(t, *p->exif, kPixelX)) set_number(put, e, w);
    if (const std::size_t e = find_tag(t, *p->exif, kPixelY)) set_number(put, e, h);
  }
  // IFD1 holds the original's thumbnail, unturned: a viewer would show it wrongly now.
  if (p->ifd0.next) put.put32(p->ifd0.next, 0);
  // IFDs that overlap can undo one write with another: such a structure is malformed, so dropped.
  const auto before = read_exif(tiff), after = read_exif(out);
  if (!before || !after || (before->orientation && after->orientation != 1) ||
      (before->image_width && after->image_width != width) || (before->image_length && after->image_length != height) ||
      (before->pixel_x && after->pixel_x != width) || (before->pixel_y && after->pixel_y != height))
    return {};
  return out;
}

namespace detail {

std::vector<std::uint8_t> tiff_from(Bytes d) {
  if (starts_with(d, "Exif\0\0", 6)) d = d.subspan(6);
  if (is_tiff(d)) return copy_of(d);
  if (d.size() >= 4) {  // HEIF: a 4-byte offset from its end to the TIFF header
    const std::uint32_t skip = be32(d.data());
    if (skip <= d.size() - 4) {
      d = d.subspan(4 + skip);
      if (starts_with(d, "Exif\0\0", 6)) d = d.subspan(6);
      if (is_tiff(d)) return copy_of(d);
    }
  }
  return {};
}

Metadata jpeg_metadata(Bytes b) {
  Metadata meta;
  std::map<int, Bytes> icc_chunks;
  int icc_count = 0;
  bool icc_bad = false;
  std::size_t i = 2;
  while (i + 4 <= b.size() && b[i] == 0xFF) {
    const std::uint8_t m = b[i + 1];
    if (m == 0xFF) {
      ++i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
      i += 2;
      continue;
    }
    if (m == 0xDA || m == 0xD9) break;
    const std::size_t len = be16(&b[i + 2]);
    if (len < 2 || len > b.size() - i - 2) break;
    const Bytes body = b.subspan(i + 4, len - 2);
    if (m == 0xE1 && meta.exif.empty() && starts_with(body, "Exif\0\0", 6) && is_tiff(body.subspan(6))) {
      meta.exif = copy_of(body.subspan(6));
    } else if (m == 0xE2 && starts_with(body, "ICC_PROFILE\0", 12) && body.size() >= 14) {
      const int seq = body[12], count = body[13];
      if (icc_count == 0) icc_count = count;
      if (seq < 1 || seq > count || count != icc_count || icc_chunks.count(seq)) icc_bad = true;
      icc_chunks[seq] = body.subspan(14);
    }
    i += 2 + len;
  }
  if (!icc_bad && icc_count > 0 && static_cast<int>(icc_chunks.size()) == icc_count)
    for (const auto& [seq, chunk] : icc_chunks) meta.icc.insert(meta.icc.end(), chunk.begin(), chunk.end());
  return meta;
}

Metadata png_metadata(Bytes b) {
  Metadata meta;
  std::size_t i = 8;
  while (i <= b.size() && b.size() - i >= 12) {  // length, type, data, CRC
    const std::size_t len = be32(&b[i]);
    if (len > b.size() - i - 12) break;
    const Bytes type = b.subspan(i + 4, 4), data = b.subspan(i + 8, len);
    if (starts_with(type, "IEND", 4)) break;
    if (starts_with(type, "eXIf", 4) && meta.exif.empty() && is_tiff(data)) {
      meta.exif = copy_of(data);
    } else if (starts_with(type, "iCCP", 4) && meta.icc.empty()) {
      // name (1-79 bytes), NUL, compression method 0, zlib stream
      const auto nul = std::find(data.begin(), data.begin() + std::min<std::size_t>(data.size(), 80), 0);
      const std::size_t at = static_cast<std::size_t>(nul - data.begin());
      if (at >= 1 && at < data.size() && data.size() - at >= 2 && data[at + 1] == 0)
        meta.icc = inflate_bounded(data.subspan(at + 2), kMaxIcc);
    }
    i += 12 + len;
  }
  return meta;
}

Metadata webp_metadata(Bytes b) {
  Metadata meta;
  if (b.size() < 20 || !starts_with(b.subspan(12), "VP8X", 4)) return meta;  // only the extended format has any
  std::size_t i = 12;
  while (i <= b.size() && b.size() - i >= 8) {
    const std::size_t len = le32(&b[i + 4]);
    if (len > b.size() - i - 8) break;
    const Bytes type = b.subspan(i, 4), data = b.subspan(i + 8, len);
    if (starts_with(type, "EXIF", 4) && meta.exif.empty()) meta.exif = tiff_from(data);
    if (starts_with(type, "ICCP", 4) && meta.icc.empty()) meta.icc = copy_of(data);
    i += 8 + len + (len & 1);
    if (i > b.size()) break;
  }
  return meta;
}

std::vector<std::uint8_t> jpeg_with_metadata(Bytes jpeg, Bytes exif, Bytes icc) {
  constexpr std::size_t kSegment = 65535 - 2;  // payload of one marker segment
  std::vector<std::uint8_t> add;
  if (!exif.empty() && exif.size() <= kSegment - 6) {
    put_be16(add, 0xFFE1);
    put_be16(add, 2 + 6 + exif.size());
    put_text(add, "Exif\0\0", 6);
    add.insert(add.end(), exif.begin(), exif.end());
  }
  constexpr std::size_t kChunk = kSegment - 14;
  const std::size_t chunks = (icc.size() + kChunk - 1) / kChunk;
  if (chunks >= 1 && chunks <= 255) {
    for (std::size_t k = 0; k < chunks; ++k) {
      const Bytes part = icc.subspan(k * kChunk, std::min(kChunk, icc.size() - k * kChunk));
      put_be16(add, 0xFFE2);
      put_be16(add, 2 + 14 + part.size());
      put_text(add, "ICC_PROFILE\0", 12);
      add.push_back(static_cast<std::uint8_t>(k + 1));
      add.push_back(static_cast<std::uint8_t>(chunks));
      add.insert(add.end(), part.begin(), part.end());
    }
  }
  // After SOI and the encoder's JFIF APP0, if any.
  std::size_t at = 2;
  if (jpeg.size() >= 6 && jpeg[2] == 0xFF && jpeg[3] == 0xE0)
    at = std::min(jpeg.size(), 4 + std::size_t{be16(&jpeg[4])});
  return concat({jpeg.first(at), add, jpeg.subspan(at)});
}

std::vector<std::uint8_t> png_with_metadata(Bytes png, Bytes exif, Bytes icc) {
  std::vector<std::uint8_t> add;
  if (!icc.empty()) {
    const auto z = deflate_all(icc);
    static constexpr std::uint8_t kName[] = {'I', 'C', 'C', ' ', 'p', 'r', 'o', 'f', 'i', 'l', 'e', 0, 0};
    if (!z.empty()) png_chunk(add, "iCCP", kName, z);
  }
  if (!exif.empty()) png_chunk(add, "eXIf", exif);
  constexpr std::size_t kAfterIhdr = 8 + 12 + 13;  // both must come before the image data
  if (png.size() < kAfterIhdr) throw std::runtime_error("PNG encoding failed");
  return concat({png.first(kAfterIhdr), add, png.subspan(kAfterIhdr)});
}

std::vector<std::uint8_t> webp_with_metadata(Bytes webp, Bytes exif, Bytes icc) {
  const std::unique_ptr<WebPMux, decltype(&WebPMuxDelete)> mux(WebPMuxNew(), WebPMuxDelete);
  if (!mux) throw std::bad_alloc();
  const WebPData image{webp.data(), webp.size()};
  if (WebPMuxSetImage(mux.get(), &image, 0) != WEBP_MUX_OK) throw std::runtime_error("WebP muxing failed");
  const WebPData exif_data{exif.data(), exif.size()}, icc_data{icc.data(), icc.size()};
  if (!exif.empty() && WebPMuxSetChunk(mux.get(), "EXIF", &exif_data, 0) != WEBP_MUX_OK)
    throw std::runtime_error("WebP muxing failed");
  if (!icc.empty() && WebPMuxSetChunk(mux.get(), "ICCP", &icc_data, 0) != WEBP_MUX_OK)
    throw std::runtime_error("WebP muxing failed");
  WebPData out{};
  if (WebPMuxAssemble(mux.get(), &out) != WEBP_MUX_OK) throw std::runtime_error("WebP muxing failed");
  std::vector<std::uint8_t> bytes(out.bytes, out.bytes + out.size);
  WebPDataClear(&out);
  return bytes;
}

}  // namespace detail

}  // namespace petcam::imaging
