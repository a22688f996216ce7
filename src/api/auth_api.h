// POST /register, POST /token, and the bearer-token check in front of every photo and account route.
// Hashing and DB calls happen here: call from the work pool, never from an I/O thread.
#pragma once

#include <chrono>
#include <cstdint>
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
  explicit AuthApi(Context& ctx);

  Response register_user(std::string_view json_body);
  // The OAuth2 password form (application/x-www-form-urlencoded).
  Response login(std::string_view content_type, std::string_view form_body);
  // The user id behind `Authorization: Bearer <token>`; throws ApiError 401 otherwise (also for a token
  // whose version is no longer the user's, or whose user is gone).
  std::string authenticate(std::optional<std::string_view> authorization);

  // After the change is committed: older tokens of this user stop counting here at once.
  void password_changed(const std::string& user_id, std::int64_t new_version);
  void account_deleted(const std::string& user_id);

 private:
  bool token_current(const std::string& user_id, std::int64_t version);
  void remember(const std::string& user_id, std::int64_t version);

  Context& ctx_;
  // The token version of users seen recently, to keep a DB round trip off every authenticated request. Only
  // where this process sees every change (SQLite: one process); on PostgreSQL another process may change a
  // password, so every request reads the version (ttl zero). A version only grows, so entries merge by
  // maximum: a read that raced with a change can never put the old version back.
  std::chrono::steady_clock::duration known_ttl_;
  struct KnownUser {
    std::int64_t version = 0;
    std::chrono::steady_clock::time_point until;
  };
  std::mutex known_mutex_;
  std::unordered_map<std::string, KnownUser> known_users_;
};

}  // namespace petcam::api
