#include "api/auth_api.h"

#include <limits>

#include "api/ids.h"
#include "api/validation.h"
#include "db/repositories.h"
#include "request/form.h"

namespace petcam::api {

namespace {

constexpr auto kKnownUserTtl = std::chrono::seconds(10);
constexpr std::size_t kKnownUsersMax = 100'000;
// A deleted user's entry: above every real version, so no token matches and a racing read cannot revive it.
constexpr std::int64_t kDeletedVersion = std::numeric_limits<std::int64_t>::max();

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

}  // namespace

AuthApi::AuthApi(Context& ctx)
    : ctx_(ctx),
      known_ttl_(ctx.db.backend() == db::Backend::Sqlite ? std::chrono::steady_clock::duration(kKnownUserTtl)
                                                         : std::chrono::steady_clock::duration::zero()) {}

Response AuthApi::register_user(std::string_view json_body) {
  const auto [username, password] = registration(json_body);
  db::UserRepository users(ctx_.db);
  if (users.find_by_username(username)) throw ApiError(400, "Username already registered");
  db::User user{new_uuid(), username, auth::hash_password(password), true};
  const auto created = users.create(user, now_ms());
  if (!created) throw ApiError(400, "Username already registered");
  return json_response(200, {{"id", created->id}, {"username", created->username}, {"is_active", created->is_active}});
}

Response AuthApi::login(std::string_view content_type, std::string_view form_body) {
  // FastAPI reads Form fields only from form bodies; anything else means the fields are missing.
  const bool is_form = iequals_prefix(content_type, "application/x-www-form-urlencoded");
  const auto fields = is_form ? request::parse_urlencoded(form_body) : request::Fields{};
  const auto username = request::field(fields, "username");
  const auto password = request::field(fields, "password");
  const auto grant_type = request::field(fields, "grant_type");
  std::vector<FieldError> errors;
  if (!username) errors.push_back({{"body", "username"}, "Field required", "missing"});
  if (!password) errors.push_back({{"body", "password"}, "Field required", "missing"});
  if (grant_type && !grant_type->empty() && *grant_type != "password")
    errors.push_back({{"body", "grant_type"}, "String should match pattern '^password$'", "string_pattern_mismatch"});
  if (!errors.empty()) throw ApiError(std::move(errors));

  db::UserRepository users(ctx_.db);
  const auto user = users.find_by_username(*username);
  // Unknown users cost the same hashing time as a wrong password, so timing does not reveal them.
  if (!user) {
    auth::verify_dummy(*password);
    throw unauthorized("Incorrect username or password");
  }
  if (!auth::verify_password(*password, user->password_hash) || !user->is_active)
    throw unauthorized("Incorrect username or password");
  const auto token =
      auth::issue_token(ctx_.token_key, user->id, std::chrono::minutes(ctx_.settings.access_token_expire_minutes),
                        now_ms() / 1000, user->token_version);
  return json_response(200, {{"access_token", token}, {"token_type", "bearer"}});
}

std::string AuthApi::authenticate(std::optional<std::string_view> authorization) {
  if (!authorization || !iequals_prefix(*authorization, "bearer ")) throw unauthorized("Not authenticated");
  std::string_view token = authorization->substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) throw unauthorized("Not authenticated");
  const auto claims = auth::decode_token(ctx_.token_key, token, now_ms() / 1000);
  if (!claims || !token_current(claims->user_id, claims->version)) throw unauthorized("Could not validate credentials");
  return claims->user_id;
}

void AuthApi::password_changed(const std::string& user_id, std::int64_t new_version) {
  remember(user_id, new_version);
}

void AuthApi::account_deleted(const std::string& user_id) {
  remember(user_id, kDeletedVersion);
}

bool AuthApi::token_current(const std::string& user_id, std::int64_t version) {
  if (known_ttl_ > std::chrono::steady_clock::duration::zero()) {
    std::lock_guard lock(known_mutex_);
    const auto it = known_users_.find(user_id);
    if (it != known_users_.end() && it->second.until > std::chrono::steady_clock::now() &&
        it->second.version == version)
      return true;
  }
  // A miss or another version: the database decides (the token may be newer than what we saw).
  if (!canonical_uuid(user_id)) return false;
  const auto current = db::UserRepository(ctx_.db).token_version(user_id);
  if (!current) return false;
  remember(user_id, *current);
  return *current == version;
}

void AuthApi::remember(const std::string& user_id, std::int64_t version) {
  if (known_ttl_ <= std::chrono::steady_clock::duration::zero()) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(known_mutex_);
  if (known_users_.size() >= kKnownUsersMax) known_users_.clear();
  auto& entry = known_users_[user_id];
  entry.version = entry.until > now ? std::max(entry.version, version) : version;
  entry.until = now + known_ttl_;
}

}  // namespace petcam::api
