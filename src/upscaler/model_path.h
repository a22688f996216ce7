// Model names (x4plus, x4fast) to files.
#pragma once

#include <string>

namespace petcam::upscaler {

// "x4plus" / "x4fast" are looked up in `models_dir` (when set), PETCAM_MODELS_DIR, ./models, then in a
// models/ folder above the binary; anything else is taken as a path. Throws ModelError when not found.
std::string resolve_model(const std::string& name, const std::string& models_dir = {});

}  // namespace petcam::upscaler
