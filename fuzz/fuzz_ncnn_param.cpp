// libFuzzer: the ncnn .param graph parser (model files given by path).
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "upscaler/ncnn_param.h"
#include "upscaler/upscaler.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)petcam::upscaler::parse_ncnn_param(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const petcam::upscaler::ModelError&) {
  }
  return 0;
}
