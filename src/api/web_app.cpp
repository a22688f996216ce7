#include "api/web_app.h"

#include <fmt/format.h>

#include <cstdint>

#include "request/download.h"
#include "web_assets.h"

namespace petcam::api {

namespace {

// Every page answer: the page runs only our own files (no inline script or style), talks only to us, and is
// never framed.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

constexpr std::string_view kAssetPrefix = "/app/";

std::string content_type_of(std::string_view name) {
  const auto dot = name.rfind('.');
  const auto ext = dot == std::string_view::npos ? std::string_view{} : name.substr(dot);
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  return "application/octet-stream";
}

// FNV-1a, 64 bits: a fingerprint of the bytes for ETags and the asset version, not a security measure.
std::uint64_t fingerprint(std::string_view bytes, std::uint64_t h = 14695981039346656037ull) {
  for (const unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

}  // namespace

WebApp::WebApp() {
  std::uint64_t all = fingerprint("");
  std::string page;
  for (const auto& f : web_assets::files()) {
    const auto slash = f.path.rfind('/');
    const auto name = f.path.substr(slash + 1);
    all = fingerprint(f.path, fingerprint(f.contents, all));
    if (name == "index.html") {
      page = std::string(f.contents);
      continue;
    }
    File file{content_type_of(name), std::string(f.contents), {}};
    file.etag = fmt::format("\"{:016x}\"", fingerprint(file.body));
    files_.emplace(std::string(kAssetPrefix) + std::string(name), std::move(file));
  }
  version_ = fmt::format("{:012x}", all >> 16);
  // The page asks for /app/<version>/<name>; relative imports inside the modules then stay in that version.
  page = replace_all(std::move(page), "\"/app/", fmt::format("\"/app/{}/", version_));
  File index{"text/html; charset=utf-8", std::move(page), {}};
  index.etag = fmt::format("\"{:016x}\"", fingerprint(index.body));
  files_.emplace("/", std::move(index));
}

std::optional<Response> WebApp::answer(std::string_view path, std::string_view if_none_match) const {
  bool immutable = false;
  std::string key(path);
  if (path.starts_with(kAssetPrefix)) {
    const auto rest = path.substr(kAssetPrefix.size());
    if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
      if (rest.substr(0, slash) != version_) return std::nullopt;  // another build's assets: not ours to answer
      key = std::string(kAssetPrefix) + std::string(rest.substr(slash + 1));
      immutable = true;
    }
  } else if (path != "/") {
    return std::nullopt;
  }
  const auto it = files_.find(key);
  if (it == files_.end()) return std::nullopt;
  const auto& file = it->second;

  Response r{200, file.content_type, file.body, {}};
  r.headers = {{"Content-Security-Policy", std::string(kContentSecurityPolicy)},
               {"X-Content-Type-Options", "nosniff"},
               {"Referrer-Policy", "no-referrer"},
               {"ETag", file.etag}};
  if (immutable)
    r.headers.emplace_back("Cache-Control", "public, max-age=31536000, immutable");
  else if (key == "/")
    r.headers.emplace_back("Cache-Control", "no-cache");  // always revalidated: it names the current assets
  else
    r.headers.emplace_back("Cache-Control", "public, max-age=3600");
  if (!if_none_match.empty() && request::none_match_hits(if_none_match, file.etag)) {
    r.status = 304;
    r.body.clear();
  }
  return r;
}

}  // namespace petcam::api
