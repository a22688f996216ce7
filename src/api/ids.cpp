#include "api/ids.h"

#include <sys/random.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <stdexcept>

namespace petcam::api {

std::string new_uuid() {
  unsigned char b[16];
  for (std::size_t got = 0; got < sizeof b;) {
    const auto n = ::getrandom(b + got, sizeof b - got, 0);
    if (n < 0) throw std::runtime_error("getrandom failed");
    got += static_cast<std::size_t>(n);
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += hex[b[i] >> 4];
    out += hex[b[i] & 15];
  }
  return out;
}

std::optional<std::string> canonical_uuid(std::string_view t) {
  if (t.substr(0, 9) == "urn:uuid:") t.remove_prefix(9);
  if (t.size() >= 2 && t.front() == '{' && t.back() == '}') t = t.substr(1, t.size() - 2);
  std::string digits;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '-') {
      if (t.size() != 36 || (i != 8 && i != 13 && i != 18 && i != 23)) return std::nullopt;
      continue;
    }
    if (c >= '0' && c <= '9')
      digits += c;
    else if (c >= 'a' && c <= 'f')
      digits += c;
    else if (c >= 'A' && c <= 'F')
      digits += static_cast<char>(c - 'A' + 'a');
    else
      return std::nullopt;
  }
  if (digits.size() != 32 || (t.size() != 32 && t.size() != 36)) return std::nullopt;
  return digits.substr(0, 8) + "-" + digits.substr(8, 4) + "-" + digits.substr(12, 4) + "-" + digits.substr(16, 4) +
         "-" + digits.substr(20);
}

std::string iso8601_utc(std::int64_t unix_ms) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000 - (unix_ms % 1000 < 0 ? 1 : 0));
  const int ms = static_cast<int>(((unix_ms % 1000) + 1000) % 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace petcam::api
