// libFuzzer: the multipart/form-data parser and boundary extraction (what POST /upscale and /bestcut read).
#include <cstdint>
#include <string_view>

#include "request/multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  // First line: a Content-Type value; the rest: the body.
  const auto nl = in.find('\n');
  const auto content_type = in.substr(0, nl == std::string_view::npos ? in.size() : nl);
  const auto body = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  const auto boundary = petcam::request::multipart_boundary(content_type);
  try {
    const auto parts = petcam::request::parse_multipart(body, boundary ? *boundary : "b", 32);
    for (const auto& p : parts)  // every part must point inside the body
      if (!p.data.empty() && (p.data.data() < body.data() || p.data.data() + p.data.size() > body.data() + body.size()))
        __builtin_trap();
  } catch (const petcam::request::MultipartError&) {
  }
  return 0;
}
