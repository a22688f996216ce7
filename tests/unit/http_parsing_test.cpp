// The request parsers a client reaches: multipart, urlencoded forms and queries, client addresses.
#include <gtest/gtest.h>

#include "http/client_ip.h"
#include "request/download.h"
#include "request/form.h"
#include "request/multipart.h"

using namespace petcam::http;
using namespace petcam::request;

namespace {

std::string body_with(const std::string& boundary, const std::vector<std::string>& parts) {
  std::string b;
  for (const auto& p : parts) b += "--" + boundary + "\r\n" + p + "\r\n";
  return b + "--" + boundary + "--\r\n";
}

}  // namespace

TEST(Multipart, BoundaryFromContentType) {
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=abc123"), "abc123");
  EXPECT_EQ(multipart_boundary("Multipart/Form-Data;boundary=\"a b\""), "a b");
  EXPECT_EQ(multipart_boundary("multipart/form-data; charset=utf-8; boundary=x"), "x");
  EXPECT_FALSE(multipart_boundary("application/json"));
  EXPECT_FALSE(multipart_boundary("multipart/form-data"));
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary="));
  EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=\"unterminated"));
}

TEST(Multipart, FilesAndFields) {
  const std::string jpeg("\xFF\xD8\xFF\r\n--notboundary\r\n\xFF\xD9", 20);
  const auto body = body_with("XyZ", {
                                         "Content-Disposition: form-data; name=\"file\"; filename=\"cat.jpg\"\r\n"
                                         "Content-Type: image/jpeg\r\n\r\n" +
                                             jpeg,
                                         "Content-Disposition: form-data; name=\"lat\"\r\n\r\n37.5",
                                         "content-disposition: form-data; name=\"lng\"\r\n\r\n",
                                     });
  const auto parts = parse_multipart(body, "XyZ", 10);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].name, "file");
  EXPECT_EQ(parts[0].filename, "cat.jpg");
  EXPECT_EQ(parts[0].content_type, "image/jpeg");
  EXPECT_EQ(parts[0].data, jpeg);
  EXPECT_EQ(parts[1].name, "lat");
  EXPECT_FALSE(parts[1].filename);
  EXPECT_EQ(parts[1].data, "37.5");
  EXPECT_EQ(parts[2].data, "");
}

TEST(Multipart, MalformedBodiesAreRefused) {
  const auto ok = body_with("b", {"Content-Disposition: form-data; name=\"a\"\r\n\r\nx"});
  EXPECT_THROW(parse_multipart("", "b", 10), MultipartError);
  EXPECT_THROW(parse_multipart("garbage", "b", 10), MultipartError);
  EXPECT_THROW(parse_multipart(ok.substr(0, ok.size() - 8), "b", 10), MultipartError);  // no closing boundary
  EXPECT_THROW(parse_multipart(body_with("b", {"Content-Type: text/plain\r\n\r\nx"}), "b", 10), MultipartError);
  EXPECT_THROW(parse_multipart(body_with("b", {"Content-Disposition: attachment; name=\"a\"\r\n\r\nx"}), "b", 10),
               MultipartError);
  EXPECT_THROW(parse_multipart(body_with("b", {"Content-Disposition: form-data\r\n\r\nx"}), "b", 10), MultipartError);
  EXPECT_THROW(parse_multipart(body_with("b", {"no colon here\r\n\r\nx"}), "b", 10), MultipartError);
  EXPECT_NO_THROW(parse_multipart(ok, "b", 10));
}

TEST(Multipart, PartCountIsCapped) {
  std::vector<std::string> many(5, "Content-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\nx");
  EXPECT_EQ(parse_multipart(body_with("b", many), "b", 5).size(), 5u);
  EXPECT_THROW(parse_multipart(body_with("b", many), "b", 4), MultipartError);
}

TEST(Form, UrlencodedLikePython) {
  const auto f = parse_urlencoded("username=a%40b.c&password=p+w%2B&&grant_type=&scope&bad=%zz%4");
  EXPECT_EQ(field(f, "username"), "a@b.c");
  EXPECT_EQ(field(f, "password"), "p w+");
  EXPECT_EQ(field(f, "grant_type"), "");
  EXPECT_EQ(field(f, "scope"), "");
  EXPECT_EQ(field(f, "bad"), "%zz%4");
  EXPECT_FALSE(field(f, "missing"));
  EXPECT_EQ(percent_decode("a+b%20c", false), "a+b c");
}

TEST(ClientIp, ForwardedForOnlyFromTrustedProxies) {
  const TrustedProxies none({});
  EXPECT_EQ(none.client_address("127.0.0.1", "10.0.0.1"), "127.0.0.1");

  const TrustedProxies proxies({"127.0.0.50", "10.1.0.0/16", "::1"});
  EXPECT_TRUE(proxies.contains("10.1.200.3"));
  EXPECT_FALSE(proxies.contains("10.2.0.1"));
  EXPECT_TRUE(proxies.contains("[::1]"));
  EXPECT_EQ(proxies.client_address("127.0.0.50", "10.0.0.1"), "10.0.0.1");
  EXPECT_EQ(proxies.client_address("127.0.0.50", std::nullopt), "127.0.0.50");
  // A client cannot pick its bucket by prepending addresses: the right-most untrusted entry counts.
  EXPECT_EQ(proxies.client_address("127.0.0.50", "1.2.3.4, 203.0.113.9, 10.1.0.7"), "203.0.113.9");
  EXPECT_EQ(proxies.client_address("127.0.0.50", "not-an-ip"), "127.0.0.50");
  EXPECT_EQ(proxies.client_address("127.0.0.9", "10.0.0.1"), "127.0.0.9");
  EXPECT_THROW(TrustedProxies({"10.0.0.0/33"}), std::invalid_argument);
  EXPECT_THROW(TrustedProxies({"example.com"}), std::invalid_argument);
}

TEST(Range, OneRangeInEveryForm) {
  using Kind = ByteRange::Kind;
  const auto part = [](std::string_view h, std::uint64_t size) {
    const auto r = parse_range(h, size);
    return r.kind == Kind::Part ? std::to_string(r.first) + "-" + std::to_string(r.last) : std::string("none");
  };
  EXPECT_EQ(part("bytes=0-99", 1000), "0-99");
  EXPECT_EQ(part("bytes=100-", 1000), "100-999");
  EXPECT_EQ(part("bytes=-50", 1000), "950-999");
  EXPECT_EQ(part("bytes=-5000", 1000), "0-999");       // a suffix longer than the file: all of it
  EXPECT_EQ(part("bytes=990-2000", 1000), "990-999");  // the end clamps to the last byte
  EXPECT_EQ(part("Bytes = 5-5", 1000), "5-5");
  EXPECT_EQ(parse_range("bytes=1000-", 1000).kind, Kind::Unsatisfiable);
  EXPECT_EQ(parse_range("bytes=5000-6000", 1000).kind, Kind::Unsatisfiable);
  EXPECT_EQ(parse_range("bytes=-0", 1000).kind, Kind::Unsatisfiable);
  EXPECT_EQ(parse_range("bytes=0-", 0).kind, Kind::Unsatisfiable);
  // Ignored (the whole file is sent): malformed, several ranges, another unit.
  for (const char* h : {"bytes=abc", "bytes=0-1,3-4", "items=0-1", "bytes=5-2", "bytes=", "bytes=-", "bytes 0-1",
                        "bytes=99999999999999999999-", "bytes=+1-2", "bytes=0x1-2"})
    EXPECT_EQ(parse_range(h, 1000).kind, Kind::Whole) << h;
}

TEST(IfNoneMatch, WeakComparisonOverAList) {
  const std::string_view tag = "\"3ff-18ed\"";
  EXPECT_TRUE(none_match_hits("\"3ff-18ed\"", tag));
  EXPECT_TRUE(none_match_hits("W/\"3ff-18ed\"", tag));
  EXPECT_TRUE(none_match_hits("\"x\", \"3ff-18ed\"", tag));
  EXPECT_TRUE(none_match_hits(" * ", tag));
  EXPECT_FALSE(none_match_hits("\"3ff-18ee\"", tag));
  EXPECT_FALSE(none_match_hits("3ff-18ed", tag));  // unquoted: not the tag
  EXPECT_FALSE(none_match_hits("", tag));
  EXPECT_FALSE(none_match_hits(",,,", tag));
}
