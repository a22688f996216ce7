// libFuzzer: the Range and If-None-Match headers of a download. A range, when taken, lies inside the file.
#include <cstdint>
#include <string_view>

#include "request/download.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint64_t file_size = data[0] * 257u + data[1];
  const std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  const auto r = petcam::request::parse_range(in, file_size);
  if (r.kind == petcam::request::ByteRange::Kind::Part && (r.first > r.last || r.last >= file_size)) __builtin_trap();
  (void)petcam::request::none_match_hits(in, "\"3ff-18ed0f5d745a06c3\"");
  return 0;
}
