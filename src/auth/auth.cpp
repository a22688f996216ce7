#include "auth/auth.h"

#include <crypt.h>
#include <jwt.h>
#include <sodium.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace petcam::auth {

namespace {

void init_sodium() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  });
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

bool verify_bcrypt(std::string_view password, std::string_view stored) {
  // crypt_rn, not crypt_r: ASan's crypt_r interceptor jumps to a null pointer with libxcrypt.
  auto data = std::make_unique<crypt_data>();
  const std::string pw(password), hash(stored);
  const char* out = crypt_rn(pw.c_str(), hash.c_str(), data.get(), static_cast<int>(sizeof(crypt_data)));
  if (!out) return false;
  const std::string_view computed(out);
  return computed.size() == stored.size() && sodium_memcmp(computed.data(), stored.data(), stored.size()) == 0;
}

struct JwtDeleter {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using Jwt = std::unique_ptr<jwt_t, JwtDeleter>;

}  // namespace

std::string hash_password(std::string_view password) {
  init_sodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, password.data(), password.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
    throw std::runtime_error("password hashing ran out of memory");
  return out;
}

bool verify_password(std::string_view password, std::string_view stored_hash) {
  init_sodium();
  if (starts_with(stored_hash, "$argon2id$")) {
    const std::string hash(stored_hash);  // libsodium wants it NUL-terminated
    return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
  }
  if (starts_with(stored_hash, "$2a$") || starts_with(stored_hash, "$2b$") || starts_with(stored_hash, "$2y$"))
    return verify_bcrypt(password, stored_hash);
  return false;
}

void verify_dummy(std::string_view password) {
  // Hashed once per process with the same limits as real ones, so verifying costs the same.
  static const std::string dummy = hash_password("petcam-dummy-password");
  (void)verify_password(password, dummy);
}

std::string issue_token(const TokenKey& key, std::string_view user_id, std::chrono::seconds ttl, std::int64_t now_unix,
                        std::int64_t version) {
  if (key.secret.empty()) throw std::invalid_argument("token secret is empty");
  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0) throw std::runtime_error("jwt_new failed");
  Jwt jwt(raw);
  const std::string sub(user_id);
  if (jwt_add_grant(jwt.get(), "sub", sub.c_str()) != 0 || jwt_add_grant_int(jwt.get(), "iat", now_unix) != 0 ||
      jwt_add_grant_int(jwt.get(), "exp", now_unix + ttl.count()) != 0 ||
      jwt_add_grant_int(jwt.get(), "ver", version) != 0 ||
      jwt_set_alg(jwt.get(), JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(key.secret.data()),
                  static_cast<int>(key.secret.size())) != 0)
    throw std::runtime_error("building the token failed");
  std::unique_ptr<char, decltype(&std::free)> encoded(jwt_encode_str(jwt.get()), &std::free);
  if (!encoded) throw std::runtime_error("signing the token failed");
  return encoded.get();
}

std::optional<TokenClaims> decode_token(const TokenKey& key, std::string_view token, std::int64_t now_unix) {
  // libjwt skips the signature when the key is NULL (alg "none" passes): never call it without one.
  if (key.secret.empty() || token.empty() || token.size() > 4096) return std::nullopt;
  const std::string t(token);
  jwt_t* raw = nullptr;
  if (jwt_decode(&raw, t.c_str(), reinterpret_cast<const unsigned char*>(key.secret.data()),
                 static_cast<int>(key.secret.size())) != 0)
    return std::nullopt;
  Jwt jwt(raw);
  // libjwt verifies with whatever algorithm the token names (HS512 with our key passes): pin HS256.
  if (jwt_get_alg(jwt.get()) != JWT_ALG_HS256) return std::nullopt;
  // libjwt does not check exp at all.
  errno = 0;
  const long exp = jwt_get_grant_int(jwt.get(), "exp");
  if (errno != 0 || exp <= now_unix) return std::nullopt;
  const char* sub = jwt_get_grant(jwt.get(), "sub");
  if (!sub || !*sub) return std::nullopt;
  TokenClaims claims{sub, 0};
  // libjwt reads a string or a fraction as the integer 0: read the claim's JSON text instead (digits only).
  std::unique_ptr<char, decltype(&std::free)> ver(jwt_get_grants_json(jwt.get(), "ver"), &std::free);
  if (ver) {
    const std::string_view text(ver.get());
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), claims.version);
    if (text.empty() || text.front() == '-' || ec != std::errc{} || end != text.data() + text.size())
      return std::nullopt;
  }
  return claims;
}

std::optional<std::string> verify_token(const TokenKey& key, std::string_view token, std::int64_t now_unix) {
  auto claims = decode_token(key, token, now_unix);
  if (!claims) return std::nullopt;
  return std::move(claims->user_id);
}

}  // namespace petcam::auth
