// POST /register, POST /token, and the bearer-token check in front of every photo route.
// Hashing and DB calls happen here: call from the work pool, never from an I/O thread.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "api/context.h"
#include "api/response.h"

namespace petcam::api {

class AuthApi {
 public:
  explicit AuthApi(Context& ctx) : ctx_(ctx) {}

  Response register_user(std::string_view json_body);
  // The OAuth2 password form (application/x-www-form-urlencoded).
  Response login(std::string_view content_type, std::string_view form_body);
  // The user id behind `Authorization: Bearer <token>`; throws ApiError 401 otherwise.
  std::string authenticate(std::optional<std::string_view> authorization);

 private:
  bool user_exists(const std::string& id);

  Context& ctx_;
  // Users never disappear through the API, so a confirmed id is remembered briefly; this keeps a DB
  // round trip off every authenticated request.
  std::mutex known_mutex_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> known_users_;
};

}  // namespace petcam::api
