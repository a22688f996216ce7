// The request headers of a download: a single byte Range (RFC 9110 14.2) and If-None-Match (13.1.2).
#pragma once

#include <cstdint>
#include <string_view>

namespace petcam::request {

struct ByteRange {
  enum class Kind {
    Whole,          // no Range, or one we ignore (malformed, several ranges, another unit): send it all, 200
    Part,           // send bytes [first, last], 206
    Unsatisfiable,  // 416 with Content-Range: bytes */size
  };
  Kind kind = Kind::Whole;
  std::uint64_t first = 0;
  std::uint64_t last = 0;  // inclusive
};

// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a representation of `size` bytes.
ByteRange parse_range(std::string_view header, std::uint64_t size);

// True when If-None-Match (`*` or a list of entity tags, weak or strong) matches `etag` (a quoted strong tag)
// by the weak comparison the header uses: the answer is then 304.
bool none_match_hits(std::string_view header, std::string_view etag);

}  // namespace petcam::request
