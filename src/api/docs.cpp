#include "api/docs.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "api_assets.h"

namespace petcam::api {

namespace fs = std::filesystem;

namespace {

std::string content_type_of(const fs::path& p) {
  const auto ext = p.extension().string();
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".png") return "image/png";
  if (ext == ".map") return "application/json";
  return "application/octet-stream";
}

fs::path find_web_dir(const std::string& configured) {
  if (!configured.empty()) return configured;
  std::error_code ec;
  if (fs::is_directory("web/vendor", ec)) return "web";
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (auto d = exe.parent_path(); d.has_relative_path(); d = d.parent_path())
      if (fs::is_directory(d / "web" / "vendor", ec)) return d / "web";
  return "web";
}

}  // namespace

Docs::Docs(const std::string& web_dir) {
  for (const auto& f : assets::files()) {
    const std::string body(f.contents);
    if (f.path == "src/api/openapi.json") assets_["/openapi.json"] = {"application/json", body};
    if (f.path == "web/docs.html") assets_["/docs"] = {"text/html; charset=utf-8", body};
    if (f.path == "web/redoc.html") assets_["/redoc"] = {"text/html; charset=utf-8", body};
  }
  const auto dir = find_web_dir(web_dir);
  const std::pair<const char*, const char*> mounts[] = {{"/docs/assets/", "vendor/swagger-ui"},
                                                        {"/redoc/assets/", "vendor/redoc"}};
  for (const auto& [prefix, sub] : mounts) {
    std::error_code ec;
    for (fs::directory_iterator it(dir / sub, ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      std::ifstream in(it->path(), std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      assets_[prefix + it->path().filename().string()] = {content_type_of(it->path()), ss.str()};
      ++vendor_files_;
    }
  }
  // Swagger UI's OAuth2 redirect page (and the script it loads from beside itself) at /docs/.
  for (const char* name : {"oauth2-redirect.html", "oauth2-redirect.js"})
    if (const auto it = assets_.find(std::string("/docs/assets/") + name); it != assets_.end())
      assets_[std::string("/docs/") + name] = it->second;
  if (vendor_files_ == 0)
    spdlog::warn("docs: no Swagger UI / ReDoc files in {}/vendor: run scripts/fetch-web-assets.sh (or make setup)",
                 dir.string());
}

const Asset* Docs::find(std::string_view path) const {
  const auto it = assets_.find(path);
  return it == assets_.end() ? nullptr : &it->second;
}

}  // namespace petcam::api
