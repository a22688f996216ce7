// libFuzzer: JSON request bodies (POST /register): parse, then the field checks. Only ApiError 422 may escape,
// and a body that passes must hold fields within their limits.
#include <cstdint>
#include <string_view>

#include "api/validation.h"

namespace {

std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  try {
    const auto r = petcam::api::registration(in);
    const auto u = code_points(r.username), p = code_points(r.password);
    if (u < 3 || u > 50 || p < 6 || p > 1024) __builtin_trap();
  } catch (const petcam::api::ApiError& e) {
    if (e.status() != 422) __builtin_trap();
    (void)e.response();  // the error body must serialise whatever the input was
  }
  return 0;
}
