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
  PhotoInfo,
  DeletePhoto,
  Events,
  Me,
  ChangePassword,
  DeleteAccount,
  Health,
  Metrics,
  OpenApi,
  Docs,
  Redoc,
  WebApp
};

struct Route {
  std::string_view method;
  std::string_view path;  // "{photo_id}" marks the one path parameter
  Op op;
  bool in_schema;  // documented in openapi.json (the docs pages themselves are not, as in FastAPI)
};

inline constexpr std::array<Route, 18> kRoutes{{
    {"POST", "/register", Op::Register, true},
    {"POST", "/token", Op::Token, true},
    {"POST", "/upscale", Op::Upscale, true},
    {"POST", "/bestcut", Op::Bestcut, true},
    {"GET", "/photos", Op::ListPhotos, true},
    {"GET", "/photos/{photo_id}", Op::GetPhoto, true},
    {"GET", "/photos/{photo_id}/info", Op::PhotoInfo, true},
    {"DELETE", "/photos/{photo_id}", Op::DeletePhoto, true},
    {"GET", "/events", Op::Events, true},
    {"GET", "/users/me", Op::Me, true},
    {"POST", "/users/me/password", Op::ChangePassword, true},
    {"DELETE", "/users/me", Op::DeleteAccount, true},
    {"GET", "/health", Op::Health, true},
    {"GET", "/metrics", Op::Metrics, false},  // Prometheus text, not part of the app's API
    {"GET", "/openapi.json", Op::OpenApi, false},
    {"GET", "/docs", Op::Docs, false},
    {"GET", "/redoc", Op::Redoc, false},
    {"GET", "/", Op::WebApp, false},  // the web gallery's page; its /app/ assets are answered beside the docs assets
}};

// Whether `path` fits the route pattern; `param` receives the {photo_id} segment.
constexpr bool route_matches(std::string_view pattern, std::string_view path, std::string_view& param) {
  const auto brace = pattern.find('{');
  if (brace == std::string_view::npos) return pattern == path;
  const auto prefix = pattern.substr(0, brace);
  const auto suffix = pattern.substr(pattern.find('}') + 1);
  if (path.size() < prefix.size() + suffix.size() || path.substr(0, prefix.size()) != prefix ||
      path.substr(path.size() - suffix.size()) != suffix)
    return false;
  const auto segment = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  if (segment.empty() || segment.find('/') != std::string_view::npos) return false;
  param = segment;
  return true;
}

}  // namespace petcam::api
