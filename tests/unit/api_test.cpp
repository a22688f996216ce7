// Rate limits, request validation, ids, the route table against the OpenAPI document, and the web app's answers.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "api/idempotency.h"
#include "api/ids.h"
#include "api/response.h"
#include "api/routes.h"
#include "api/validation.h"
#include "api/web_app.h"
#include "api_assets.h"
#include "http/rate_limiter.h"

using namespace petcam;

TEST(RateLimiter, AllowsTheLimitThenSaysHowLongToWait) {
  http::RateLimiter limiter(config::parse_rate_limit("X", "5/minute"));
  const auto t0 = http::RateLimiter::Clock::now();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(limiter.acquire("1.2.3.4", t0), 0) << i;
  const auto wait = limiter.acquire("1.2.3.4", t0);
  EXPECT_GT(wait, 0);
  EXPECT_LE(wait, 12);
  EXPECT_EQ(limiter.acquire("5.6.7.8", t0), 0);  // another client has its own allowance
  // One request's worth of time later, exactly one more is allowed.
  EXPECT_EQ(limiter.acquire("1.2.3.4", t0 + std::chrono::seconds(12)), 0);
  EXPECT_GT(limiter.acquire("1.2.3.4", t0 + std::chrono::seconds(12)), 0);
  EXPECT_EQ(limiter.limit().text, "5 per 1 minute");
}

TEST(RateLimiter, ZeroMeansUnlimited) {
  http::RateLimiter limiter(config::parse_rate_limit("X", "0"));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(limiter.acquire("a"), 0);
  EXPECT_THROW(config::parse_rate_limit("X", "5/fortnight"), config::ConfigError);
  EXPECT_THROW(config::parse_rate_limit("X", "-1/minute"), config::ConfigError);
}

TEST(Validation, FloatsLikePydantic) {
  std::vector<api::FieldError> errors;
  EXPECT_EQ(api::float_value("37.5665", -90, 90, {"body", "lat"}, errors), 37.5665);
  EXPECT_EQ(api::float_value("-90", -90, 90, {"body", "lat"}, errors), -90.0);
  ASSERT_TRUE(errors.empty());
  for (const char* bad : {"91", "-90.5", "nan", "inf", "abc", "", "1e999"})
    EXPECT_FALSE(api::float_value(bad, -90, 90, {"body", "lat"}, errors)) << bad;
  ASSERT_EQ(errors.size(), 7u);
  EXPECT_EQ(errors[0].type, "less_than_equal");
  EXPECT_EQ(errors[1].type, "greater_than_equal");
  EXPECT_EQ(errors[2].type, "finite_number");
  EXPECT_EQ(errors[4].type, "float_parsing");
  EXPECT_EQ(errors[0].loc, nlohmann::json({"body", "lat"}));
}

TEST(Validation, JsonBodiesAndStrings) {
  EXPECT_THROW(api::parse_json_object("{bad"), api::ApiError);
  EXPECT_THROW(api::parse_json_object("[1]"), api::ApiError);
  try {
    api::parse_json_object("{\"a\":");
  } catch (const api::ApiError& e) {
    EXPECT_EQ(e.status(), 422);
    const auto body = nlohmann::json::parse(e.response().body);
    EXPECT_EQ(body["detail"][0]["type"], "json_invalid");
  }
  // Syntax the parser refuses for its range, not its grammar (found by fuzz_json_body): still a 422.
  for (const char* big : {R"({"x":1e999})", R"({"username":"abc","password":"abcdef","n":[-1e400]})"}) {
    try {
      api::parse_json_object(big);
      ADD_FAILURE() << big;
    } catch (const api::ApiError& e) {
      EXPECT_EQ(e.status(), 422) << big;
    }
  }
  std::vector<api::FieldError> errors;
  const auto obj = nlohmann::json::parse(R"({"username":"ab","password":123,"name":"한국어"})");
  EXPECT_FALSE(api::string_field(obj, "username", 3, 50, errors));
  EXPECT_FALSE(api::string_field(obj, "password", 6, 1024, errors));
  EXPECT_FALSE(api::string_field(obj, "missing", 1, 5, errors));
  EXPECT_EQ(api::string_field(obj, "name", 3, 3, errors), "한국어");  // characters, not bytes
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].type, "string_too_short");
  EXPECT_EQ(errors[1].type, "string_type");
  EXPECT_EQ(errors[2].type, "missing");
}

TEST(Ids, UuidsAndTimestamps) {
  const auto id = api::new_uuid();
  ASSERT_EQ(id.size(), 36u);
  EXPECT_EQ(id[14], '4');
  EXPECT_NE(id, api::new_uuid());
  EXPECT_EQ(api::canonical_uuid(id), id);
  EXPECT_EQ(api::canonical_uuid("550E8400E29B41D4A716446655440000"), "550e8400-e29b-41d4-a716-446655440000");
  EXPECT_EQ(api::canonical_uuid("{550e8400-e29b-41d4-a716-446655440000}"), "550e8400-e29b-41d4-a716-446655440000");
  for (const char* bad :
       {"", "not-a-uuid", "550e8400-e29b-41d4-a716-44665544000", "550e8400e29b-41d4-a716-446655440000x",
        "../../etc/passwd", "550e8400-e29b-41d4-a716-4466554400zz"})
    EXPECT_FALSE(api::canonical_uuid(bad)) << bad;
  EXPECT_EQ(api::iso8601_utc(1769509800123), "2026-01-27T10:30:00.123Z");
  EXPECT_EQ(api::iso8601_utc(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(api::iso8601_utc(951782400000), "2000-02-29T00:00:00.000Z");  // leap days, as Python prints them
  EXPECT_EQ(api::iso8601_utc(1709164800000), "2024-02-29T00:00:00.000Z");
  EXPECT_EQ(api::iso8601_utc(4102444799999), "2099-12-31T23:59:59.999Z");
}

TEST(Routes, MatchPatterns) {
  std::string_view param;
  EXPECT_TRUE(api::route_matches("/photos/{photo_id}", "/photos/abc", param));
  EXPECT_EQ(param, "abc");
  EXPECT_FALSE(api::route_matches("/photos/{photo_id}", "/photos/", param));
  EXPECT_FALSE(api::route_matches("/photos/{photo_id}", "/photos/a/b", param));
  EXPECT_TRUE(api::route_matches("/photos", "/photos", param));
  EXPECT_FALSE(api::route_matches("/photos", "/photos/", param));
  EXPECT_TRUE(api::route_matches("/photos/{photo_id}/info", "/photos/abc/info", param));
  EXPECT_EQ(param, "abc");
  EXPECT_FALSE(api::route_matches("/photos/{photo_id}/info", "/photos/abc", param));
  EXPECT_FALSE(api::route_matches("/photos/{photo_id}/info", "/photos//info", param));
  EXPECT_FALSE(api::route_matches("/photos/{photo_id}", "/photos/abc/info", param));
}

TEST(Idempotency, KeysAndRequestFingerprints) {
  EXPECT_TRUE(api::valid_idempotency_key("a"));
  EXPECT_TRUE(api::valid_idempotency_key("8e03978e-40d5-43e8-bc93-6894a57f9324 ~!"));
  EXPECT_TRUE(api::valid_idempotency_key(std::string(255, 'k')));
  EXPECT_FALSE(api::valid_idempotency_key(""));
  EXPECT_FALSE(api::valid_idempotency_key(std::string(256, 'k')));
  EXPECT_FALSE(api::valid_idempotency_key("tab\there"));
  EXPECT_FALSE(api::valid_idempotency_key("caf\xc3\xa9"));

  using petcam::request::Part;
  const std::vector<Part> a{{"file", "cat.jpg", "image/jpeg", "JPEGBYTES"}, {"lat", std::nullopt, "", "1.5"}};
  auto same = a;
  same[0].content_type = "application/octet-stream";  // not part of the request's meaning
  auto other_bytes = a;
  other_bytes[0].data = "JPEGBYTEZ";
  auto other_name = a;
  other_name[0].filename = "dog.jpg";
  // Lengths are part of the digest: moving bytes between parts changes it.
  const std::vector<Part> shifted{{"file", "cat.jpg", "", "JPEGBYTES1"}, {"lat", std::nullopt, "", ".5"}};
  const auto fp = api::request_fingerprint("upscale", a);
  EXPECT_EQ(fp.size(), 64u);
  EXPECT_EQ(fp, api::request_fingerprint("upscale", same));
  EXPECT_NE(fp, api::request_fingerprint("bestcut", a));
  EXPECT_NE(fp, api::request_fingerprint("upscale", other_bytes));
  EXPECT_NE(fp, api::request_fingerprint("upscale", other_name));
  EXPECT_NE(fp, api::request_fingerprint("upscale", shifted));
}

// The router and the document must agree: every documented operation is routed, every routed API
// operation is documented.
TEST(Routes, AgreeWithTheOpenApiDocument) {
  nlohmann::json doc;
  for (const auto& f : api::assets::files())
    if (f.path == "src/api/openapi.json") doc = nlohmann::json::parse(f.contents);
  ASSERT_TRUE(doc.is_object());
  std::set<std::string> documented, routed;
  for (const auto& [path, ops] : doc["paths"].items())
    for (const auto& [method, op] : ops.items()) {
      if (method == "parameters") continue;
      std::string m = method;
      for (auto& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(m + " " + path);
    }
  for (const auto& r : api::kRoutes)
    if (r.in_schema) routed.insert(std::string(r.method) + " " + std::string(r.path));
  EXPECT_EQ(documented, routed);
}

namespace {

std::string header_of(const api::Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return {};
}

}  // namespace

TEST(Routes, TheWebAppPageIsRoutedButNotDocumented) {
  const auto it = std::find_if(api::kRoutes.begin(), api::kRoutes.end(), [](const auto& r) { return r.path == "/"; });
  ASSERT_NE(it, api::kRoutes.end());
  EXPECT_EQ(it->method, "GET");
  EXPECT_EQ(it->op, api::Op::WebApp);
  EXPECT_FALSE(it->in_schema);
}

TEST(WebApp, ThePageRunsOnlyItsOwnFilesAndNamesThemByVersion) {
  const api::WebApp app;
  const auto page = app.answer("/", "");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->content_type, "text/html; charset=utf-8");
  const auto csp = header_of(*page, "Content-Security-Policy");
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("default-src 'self'"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe-eval"), std::string::npos) << csp;
  EXPECT_EQ(header_of(*page, "X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(header_of(*page, "Cache-Control"), "no-cache");
  ASSERT_EQ(app.version().size(), 12u);
  EXPECT_NE(page->body.find("\"/app/" + app.version() + "/main.js\""), std::string::npos);
  EXPECT_EQ(page->body.find("\"/app/main.js\""), std::string::npos);  // every asset reference was versioned
  EXPECT_EQ(page->body.find("<script>"), std::string::npos);          // no inline script
  EXPECT_EQ(page->body.find("<style"), std::string::npos);            // no inline style
  EXPECT_EQ(page->body.find(" style="), std::string::npos);
}

TEST(WebApp, AssetsAreCachedAndRevalidated) {
  const api::WebApp app;
  const auto versioned = app.answer("/app/" + app.version() + "/main.js", "");
  ASSERT_TRUE(versioned);
  EXPECT_EQ(versioned->status, 200);
  EXPECT_EQ(versioned->content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(header_of(*versioned, "Cache-Control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(header_of(*versioned, "X-Content-Type-Options"), "nosniff");
  const auto etag = header_of(*versioned, "ETag");
  EXPECT_EQ(etag.size(), 18u) << etag;  // a quoted 64-bit fingerprint

  const auto plain = app.answer("/app/main.js", "");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->body, versioned->body);
  EXPECT_EQ(header_of(*plain, "Cache-Control"), "public, max-age=3600");
  EXPECT_EQ(header_of(*plain, "ETag"), etag);
  const auto again = app.answer("/app/main.js", etag);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 304);
  EXPECT_TRUE(again->body.empty());
  EXPECT_EQ(app.answer("/app/main.js", "\"other\"")->status, 200);

  const auto css = app.answer("/app/style.css", "");
  ASSERT_TRUE(css);
  EXPECT_EQ(css->content_type, "text/css; charset=utf-8");
  for (const char* none :
       {"/app/0123456789ab/main.js", "/app/nothing.js", "/app/index.html", "/index.html", "/docs", "/app/", "/app"})
    EXPECT_FALSE(app.answer(none, "")) << none;
}
