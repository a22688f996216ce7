#include "auth/auth.h"

#include <gtest/gtest.h>
#include <jwt.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "api/auth_api.h"
#include "db/database.h"
#include "db/repositories.h"

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

TEST(Tokens, CarryTheUsersTokenVersion) {
  const auto t = auth::issue_token(kKey, "user-1", 30min, kNow, 7);
  const auto claims = auth::decode_token(kKey, t, kNow);
  ASSERT_TRUE(claims);
  EXPECT_EQ(claims->user_id, "user-1");
  EXPECT_EQ(claims->version, 7);
  EXPECT_EQ(auth::decode_token(kKey, auth::issue_token(kKey, "user-1", 30min, kNow), kNow)->version, 0);
}

TEST(Tokens, WithoutVersionCountAsVersionZero) {
  // Issued before token versions existed (sub/exp only, as forge makes them): still valid, version 0.
  const auto claims = auth::decode_token(kKey, forge(JWT_ALG_HS256, kKey.secret, true), kNow);
  ASSERT_TRUE(claims);
  EXPECT_EQ(claims->user_id, "user-1");
  EXPECT_EQ(claims->version, 0);
}

TEST(Tokens, MalformedVersionIsRefused) {
  auto with_ver = [](const std::string& ver_json) {
    jwt_t* j = nullptr;
    jwt_new(&j);
    const std::string grants = R"({"sub":"user-1","exp":)" + std::to_string(kNow + 600) + R"(,"ver":)" + ver_json + "}";
    jwt_add_grants_json(j, grants.c_str());
    jwt_set_alg(j, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(kKey.secret.data()),
                static_cast<int>(kKey.secret.size()));
    std::unique_ptr<char, decltype(&std::free)> s(jwt_encode_str(j), &std::free);
    jwt_free(j);
    return std::string(s.get());
  };
  EXPECT_EQ(auth::decode_token(kKey, with_ver("3"), kNow)->version, 3) << "control";
  EXPECT_FALSE(auth::decode_token(kKey, with_ver("\"3\""), kNow)) << "a string";
  EXPECT_FALSE(auth::decode_token(kKey, with_ver("-1"), kNow)) << "negative";
  EXPECT_FALSE(auth::decode_token(kKey, with_ver("1.5"), kNow)) << "not an integer";
}

// The check in front of every route: a token counts only while its version is the user's.
class AuthenticateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "petcam-auth-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    petcam::db::Options o;
    o.url = "sqlite:///" + (dir_ / "petcam.db").string();
    db_ = petcam::db::Database::open(o);
    petcam::db::migrate_up(*db_);
    store_ = std::make_unique<petcam::storage::PhotoStore>((dir_ / "storage").string());
    ctx_ = std::make_unique<petcam::api::Context>(
        petcam::api::Context{settings_, *db_, *store_, kKey, nullptr, nullptr, nullptr});
    ASSERT_TRUE(petcam::db::UserRepository(*db_).create({kUser, "alice", "h", true}, kNow * 1000));
  }
  void TearDown() override {
    ctx_.reset();
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  static std::string bearer(std::int64_t version) {
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    return "Bearer " + auth::issue_token(kKey, kUser, 30min, now, version);
  }
  static int status_of(petcam::api::AuthApi& a, const std::string& header) {
    try {
      a.authenticate(header);
      return 200;
    } catch (const petcam::api::ApiError& e) {
      return e.status();
    }
  }

  static constexpr const char* kUser = "11111111-1111-4111-8111-111111111111";
  std::filesystem::path dir_;
  petcam::config::Settings settings_;
  std::unique_ptr<petcam::db::Database> db_;
  std::unique_ptr<petcam::storage::PhotoStore> store_;
  std::unique_ptr<petcam::api::Context> ctx_;
};

TEST_F(AuthenticateTest, AChangedVersionRefusesOlderTokensAtOnce) {
  petcam::api::AuthApi api(*ctx_);
  const auto old_token = bearer(0);
  EXPECT_EQ(api.authenticate(old_token), kUser);  // and now remembered
  const auto v = petcam::db::UserRepository(*db_).change_password(kUser, "h2");
  ASSERT_EQ(v, 1);
  api.password_changed(kUser, *v);
  EXPECT_EQ(status_of(api, old_token), 401);
  EXPECT_EQ(status_of(api, bearer(2)), 401) << "a version the user never had";
  EXPECT_EQ(api.authenticate(bearer(1)), kUser);
}

TEST_F(AuthenticateTest, ADeletedAccountRefusesItsTokens) {
  petcam::api::AuthApi api(*ctx_);
  const auto token = bearer(0);
  EXPECT_EQ(api.authenticate(token), kUser);
  ASSERT_TRUE(petcam::db::UserRepository(*db_).remove(kUser));
  api.account_deleted(kUser);
  EXPECT_EQ(status_of(api, token), 401);
  EXPECT_EQ(status_of(api, bearer(1)), 401);
}
