// Passwords (Argon2id; bcrypt hashes from the Python original still verify) and access tokens
// (JWT HS256 with sub/iat/exp/ver). The algorithm and expiry are checked here, not trusted to libjwt.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace petcam::auth {

// Argon2id at libsodium's INTERACTIVE limits (~80 ms, 64 MiB): call it off the I/O threads.
std::string hash_password(std::string_view password);
// Argon2id ($argon2id$) or bcrypt ($2a$/$2b$/$2y$) hashes; false for anything else.
bool verify_password(std::string_view password, std::string_view stored_hash);
// The same work as a verify that fails, for unknown users, so login time does not reveal them.
void verify_dummy(std::string_view password);

struct TokenKey {
  std::string secret;  // HS256 key; never empty
};

// A signed HS256 JWT with sub = user_id, iat = now, exp = now + ttl, ver = the user's token version
// (bumped when the password changes, so every older token stops counting).
std::string issue_token(const TokenKey& key, std::string_view user_id, std::chrono::seconds ttl, std::int64_t now_unix,
                        std::int64_t version = 0);

struct TokenClaims {
  std::string user_id;
  std::int64_t version = 0;  // tokens issued before versions existed carry no `ver`: 0
};
// The claims of a valid token, or nothing: bad signature, another algorithm (none, HS512, ...),
// expired, missing sub/exp, or a `ver` that is not a non-negative integer. The caller compares the
// version with the user's.
std::optional<TokenClaims> decode_token(const TokenKey& key, std::string_view token, std::int64_t now_unix);
// decode_token's subject only.
std::optional<std::string> verify_token(const TokenKey& key, std::string_view token, std::int64_t now_unix);

}  // namespace petcam::auth
