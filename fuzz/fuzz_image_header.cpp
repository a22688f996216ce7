// libFuzzer: the header readers of every accepted type (JPEG, PNG, WebP, HEIC), which run on every upload
// before any decode, and what they promise: a positive size and an orientation 1..8.
#include <cstdint>
#include <span>

#include "imaging/imaging.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    const auto h = petcam::imaging::read_header(bytes);
    if (h.width <= 0 || h.height <= 0 || h.orientation < 1 || h.orientation > 8) __builtin_trap();
    if (h.oriented_width() * static_cast<std::int64_t>(h.oriented_height()) !=
        h.width * static_cast<std::int64_t>(h.height))
      __builtin_trap();
    (void)petcam::imaging::check_header(bytes, {});
  } catch (const petcam::imaging::ImageError&) {
  }
  return 0;
}
