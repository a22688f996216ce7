// libFuzzer: the JPEG/PNG header reader and the end-of-image check that run on every upload before any decode.
#include <cstdint>
#include <span>

#include "imaging/imaging.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    const auto h = petcam::imaging::check_header(bytes, {});
    if (h.width <= 0 || h.height <= 0) __builtin_trap();
    (void)petcam::imaging::jpeg_is_complete(bytes);
  } catch (const petcam::imaging::ImageError&) {
  }
  return 0;
}
