// libFuzzer: EXIF and ICC extraction from every container, and the EXIF rewrite every output goes through
// (the input also taken as a bare TIFF structure). A rewrite is either dropped or readable, with Orientation 1
// wherever the original had one and the new sizes wherever it had them.
#include <cstdint>
#include <span>

#include "imaging/imaging.h"

namespace {

void check_rewrite(std::span<const std::uint8_t> tiff) {
  const auto before = petcam::imaging::read_exif(tiff);
  const auto out = petcam::imaging::exif_for_output(tiff, 70'000, 3);
  if (out.empty()) return;  // dropped as malformed
  const auto after = petcam::imaging::read_exif(out);
  if (!after || !before) __builtin_trap();
  if (before->orientation != 0 && after->orientation != 1) __builtin_trap();
  if (before->pixel_x != 0 && after->pixel_x != 70'000) __builtin_trap();
  if (before->image_length != 0 && after->image_length != 3) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  const auto meta = petcam::imaging::read_metadata(bytes);
  if (!meta.exif.empty()) check_rewrite(meta.exif);
  check_rewrite(bytes);
  return 0;
}
