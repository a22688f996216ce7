// libFuzzer: the .env parser (operators' files).
#include <cstdint>
#include <string_view>

#include "config/dotenv.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)petcam::config::parse_dotenv(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const petcam::config::ConfigError&) {
  }
  return 0;
}
