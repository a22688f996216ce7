// GET /users/me, POST /users/me/password, DELETE /users/me: the authenticated user's own account.
// Argon2id, DB and file work happen here: call from the work pool, never from an I/O thread.
#pragma once

#include <string>
#include <string_view>

#include "api/auth_api.h"
#include "api/context.h"
#include "api/response.h"

namespace petcam::api {

class AccountApi {
 public:
  AccountApi(Context& ctx, AuthApi& auth) : ctx_(ctx), auth_(auth) {}

  Response me(const std::string& user_id);
  // Every token issued before the change stops counting (the user's token version goes up).
  Response change_password(const std::string& user_id, std::string_view json_body);
  // The user, their photos, files and jobs; the rows in one transaction, the files after it commits (a crash in
  // between leaves orphans that the start-up sweep removes).
  Response remove(const std::string& user_id, std::string_view json_body);

 private:
  // 400 unless `password` is the user's (Argon2id: ~80 ms on this pool thread).
  void check_password(const std::string& user_id, std::string_view password);

  Context& ctx_;
  AuthApi& auth_;
};

}  // namespace petcam::api
