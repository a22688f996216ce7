#include "upscaler/model_path.h"

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "upscaler/upscaler.h"

namespace petcam::upscaler {

namespace fs = std::filesystem;

std::string resolve_model(const std::string& name, const std::string& models_dir) {
  if (name != "x4plus" && name != "x4fast") return name;
  const std::string file = "realesrgan-" + name + ".param";
  std::vector<fs::path> dirs;
  if (!models_dir.empty()) dirs.emplace_back(models_dir);
  if (const char* env = std::getenv("PETCAM_MODELS_DIR")) dirs.emplace_back(env);
  dirs.emplace_back("models");
  std::error_code ec;
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (auto d = exe.parent_path(); d.has_relative_path(); d = d.parent_path()) dirs.push_back(d / "models");
  }
  for (const auto& d : dirs)
    if (fs::exists(d / file, ec)) return (d / file).string();
  throw ModelError("model '" + name + "' not found: run scripts/fetch-models.sh, or set MODELS_DIR");
}

}  // namespace petcam::upscaler
