#include "auth/auth.h"

#include <gtest/gtest.h>
#include <jwt.h>

#include <cstdlib>
#include <memory>

namespace auth = petcam::auth;
using namespace std::chrono_literals;

namespace {

const auth::TokenKey kKey{"0123456789abcdef0123456789abcdef"};
constexpr std::int64_t kNow = 1'800'000'000;

std::string b64url(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  int val = 0, bits = -6;
  for (unsigned char c : in) {
    val = (val << 8) + c;
    bits += 8;
    while (bits >= 0) {
      out.push_back(t[(val >> bits) & 0x3F]);
      bits -= 6;
    }
  }
  if (bits > -6) out.push_back(t[((val << 8) >> (bits + 8)) & 0x3F]);
  return out;
}

// A token made with libjwt directly, to forge what our issuer never would.
std::string forge(jwt_alg_t alg, const std::string& secret, bool with_exp) {
  jwt_t* j = nullptr;
  jwt_new(&j);
  jwt_add_grant(j, "sub", "user-1");
  if (with_exp) jwt_add_grant_int(j, "exp", kNow + 600);
  jwt_set_alg(j, alg, reinterpret_cast<const unsigned char*>(secret.data()), static_cast<int>(secret.size()));
  std::unique_ptr<char, decltype(&std::free)> s(jwt_encode_str(j), &std::free);
  jwt_free(j);
  return s ? s.get() : "";
}

}  // namespace

TEST(Passwords, Argon2idRoundTrip) {
  const auto h = auth::hash_password("password123");
  EXPECT_EQ(h.rfind("$argon2id$", 0), 0u);
  EXPECT_TRUE(auth::verify_password("password123", h));
  EXPECT_FALSE(auth::verify_password("password124", h));
  EXPECT_NE(auth::hash_password("password123"), h);  // salted
}

TEST(Passwords, BcryptFromTheOriginalServerStillVerifies) {
  // Made with Python's crypt (libxcrypt), as passlib's bcrypt would store it.
  const char* h = "$2b$12$rPLdkF4AVjEerDIPh9hUoelaWocMNxs2XgEgtFyFGXqsHlzbyyKZK";
  EXPECT_TRUE(auth::verify_password("password123", h));
  EXPECT_FALSE(auth::verify_password("password12", h));
  EXPECT_FALSE(auth::verify_password("password123", "plaintext"));
  EXPECT_FALSE(auth::verify_password("password123", ""));
  auth::verify_dummy("anything");  // must not throw
}

TEST(Tokens, IssuedTokenVerifiesUntilItExpires) {
  const auto t = auth::issue_token(kKey, "user-1", 30min, kNow);
  EXPECT_EQ(auth::verify_token(kKey, t, kNow), "user-1");
  EXPECT_EQ(auth::verify_token(kKey, t, kNow + 30 * 60 - 1), "user-1");
  EXPECT_EQ(auth::verify_token(kKey, t, kNow + 30 * 60), std::nullopt);
}

TEST(Tokens, ForgeriesAreRefused) {
  const auto good = auth::issue_token(kKey, "user-1", 30min, kNow);
  EXPECT_EQ(auth::verify_token({"another-secret"}, good, kNow), std::nullopt) << "wrong key";
  EXPECT_EQ(auth::verify_token(kKey, forge(JWT_ALG_HS512, kKey.secret, true), kNow), std::nullopt) << "HS512";
  EXPECT_EQ(auth::verify_token(kKey, forge(JWT_ALG_HS256, kKey.secret, false), kNow), std::nullopt) << "no exp";
  EXPECT_EQ(auth::verify_token(kKey, forge(JWT_ALG_HS256, kKey.secret, true), kNow), "user-1") << "control";
  const std::string none = b64url(R"({"alg":"none","typ":"JWT"})") + "." +
                           b64url(R"({"sub":"user-1","exp":)" + std::to_string(kNow + 600) + "}") + ".";
  EXPECT_EQ(auth::verify_token(kKey, none, kNow), std::nullopt) << "alg none";
  auto tampered = good;
  const auto dot = tampered.find('.');
  tampered[dot + 5] = tampered[dot + 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(auth::verify_token(kKey, tampered, kNow), std::nullopt) << "tampered payload";
  EXPECT_EQ(auth::verify_token(kKey, "", kNow), std::nullopt);
  EXPECT_EQ(auth::verify_token(kKey, "not.a.token", kNow), std::nullopt);
  EXPECT_EQ(auth::verify_token({""}, good, kNow), std::nullopt) << "empty key must never verify";
}
