// GET /openapi.json, /docs (Swagger UI) and /redoc (ReDoc), served offline. The document and the two
// pages are built into the binary; the vendor scripts come from the npm registry at setup
// (scripts/fetch-web-assets.sh) and are read into memory once at start.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace petcam::api {

struct Asset {
  std::string content_type;
  std::string body;
};

class Docs {
 public:
  // web_dir: the folder holding vendor/ (empty: ./web, then a web/ folder above the binary).
  explicit Docs(const std::string& web_dir);
  const Asset* find(std::string_view path) const;
  bool has_vendor_assets() const { return vendor_files_ > 0; }
  const std::string& openapi() const { return assets_.at("/openapi.json").body; }

 private:
  std::map<std::string, Asset, std::less<>> assets_;
  int vendor_files_ = 0;
};

}  // namespace petcam::api
