// Every route the server answers. The HTTP dispatcher is built from this table, and a unit test checks
// it against the OpenAPI document, so the two cannot drift apart.
#pragma once

#include <array>
#include <string_view>

namespace petcam::api {

enum class Op {
  Register,
  Token,
  Upscale,
  Bestcut,
  ListPhotos,
  GetPhoto,
  DeletePhoto,
  Health,
  Metrics,
  OpenApi,
  Docs,
  Redoc
};

struct Route {
  std::string_view method;
  std::string_view path;  // "{photo_id}" marks the one path parameter
  Op op;
  bool in_schema;  // documented in openapi.json (the docs pages themselves are not, as in FastAPI)
};

inline constexpr std::array<Route, 12> kRoutes{{
    {"POST", "/register", Op::Register, true},
    {"POST", "/token", Op::Token, true},
    {"POST", "/upscale", Op::Upscale, true},
    {"POST", "/bestcut", Op::Bestcut, true},
    {"GET", "/photos", Op::ListPhotos, true},
    {"GET", "/photos/{photo_id}", Op::GetPhoto, true},
    {"DELETE", "/photos/{photo_id}", Op::DeletePhoto, true},
    {"GET", "/health", Op::Health, true},
    {"GET", "/metrics", Op::Metrics, false},  // Prometheus text, not part of the app's API
    {"GET", "/openapi.json", Op::OpenApi, false},
    {"GET", "/docs", Op::Docs, false},
    {"GET", "/redoc", Op::Redoc, false},
}};

// Whether `path` fits the route pattern; `param` receives the {photo_id} segment.
constexpr bool route_matches(std::string_view pattern, std::string_view path, std::string_view& param) {
  const auto brace = pattern.find('{');
  if (brace == std::string_view::npos) return pattern == path;
  const auto prefix = pattern.substr(0, brace);
  if (path.substr(0, prefix.size()) != prefix) return false;
  const auto rest = path.substr(prefix.size());
  if (rest.empty() || rest.find('/') != std::string_view::npos) return false;
  param = rest;
  return true;
}

}  // namespace petcam::api
