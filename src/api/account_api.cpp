#include "api/account_api.h"

#include "api/ids.h"
#include "api/validation.h"
#include "db/repositories.h"

namespace petcam::api {

namespace {

// The account went away between the token check and now (deleted by a concurrent request).
ApiError account_gone() {
  return unauthorized("Could not validate credentials");
}

}  // namespace

Response AccountApi::me(const std::string& user_id) {
  db::UserRepository users(ctx_.db);
  const auto user = users.find(user_id);
  if (!user) throw account_gone();
  return json_response(200, {{"id", user->id},
                             {"username", user->username},
                             {"is_active", user->is_active},
                             {"created_at", iso8601_utc(user->created_at_ms)},
                             {"photo_count", users.photo_count(user_id)}});
}

void AccountApi::check_password(const std::string& user_id, std::string_view password) {
  const auto user = db::UserRepository(ctx_.db).find(user_id);
  if (!user) throw account_gone();
  if (!auth::verify_password(password, user->password_hash)) throw ApiError(400, "Incorrect password");
}

Response AccountApi::change_password(const std::string& user_id, std::string_view json_body) {
  const auto [current, chosen] = password_change(json_body);
  check_password(user_id, current);
  const auto version = db::UserRepository(ctx_.db).change_password(user_id, auth::hash_password(chosen));
  if (!version) throw account_gone();
  auth_.password_changed(user_id, *version);
  return json_response(200, {{"message", "Password changed"}});
}

Response AccountApi::remove(const std::string& user_id, std::string_view json_body) {
  const auto password = account_deletion(json_body);
  check_password(user_id, password);
  const auto photos = db::UserRepository(ctx_.db).remove(user_id);
  if (!photos) throw account_gone();
  auth_.account_deleted(user_id);
  if (ctx_.account_deleted) ctx_.account_deleted(user_id);
  if (ctx_.photos_deleted) ctx_.photos_deleted(*photos);
  for (const auto& id : *photos) ctx_.store.remove_photo(id);
  return json_response(200, {{"message", "Deleted successfully"}});
}

}  // namespace petcam::api
