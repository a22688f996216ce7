// libFuzzer: urlencoded forms and query strings (POST /token, GET /photos, GET /photos/{id}?type=).
#include <cstdint>
#include <string_view>

#include "request/form.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto fields = petcam::request::parse_urlencoded(in);
  for (const auto& [k, v] : fields)
    if (k.size() > in.size() || v.size() > in.size()) __builtin_trap();  // decoding never grows
  (void)petcam::request::field(fields, "username");
  return 0;
}
