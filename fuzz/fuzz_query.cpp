// libFuzzer: URL query strings as the photo routes read them (GET /photos?skip=&limit=, GET /photos/{id}?type=).
// Only ApiError 422 may escape, and accepted values must be in range.
#include <cstdint>
#include <string_view>
#include <vector>

#include "api/validation.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  try {
    const auto q = petcam::api::list_query(in);
    if (q.skip < 0 || q.limit < 1 || q.limit > 1000) __builtin_trap();
  } catch (const petcam::api::ApiError& e) {
    if (e.status() != 422) __builtin_trap();
    (void)e.response();
  }
  std::vector<petcam::api::FieldError> errors;
  const auto type = petcam::api::download_type(in, errors);
  if (type != petcam::api::DownloadType::Upscaled && !errors.empty()) __builtin_trap();
  return 0;
}
