#include "api/ids.h"

#include <sys/random.h>

#include <chrono>
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
  // By hand (days to civil date, after Howard Hinnant's algorithm): the photo list formats one per row,
  // and snprintf + gmtime_r were a tenth of its time.
  std::int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
  if (ms < 0) ms += 1000, --secs;
  std::int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) rem += 86400, --days;
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const std::int64_t doe = days - era * 146097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  const std::int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t year = yoe + era * 400 + (month <= 2);
  char buf[] = "0000-00-00T00:00:00.000Z";
  auto put = [&](int pos, std::int64_t v, int width) {
    for (int i = pos + width - 1; i >= pos; --i, v /= 10) buf[i] = static_cast<char>('0' + v % 10);
  };
  if (year < 0 || year > 9999) return "1970-01-01T00:00:00.000Z";
  put(0, year, 4);
  put(5, month, 2);
  put(8, day, 2);
  put(11, rem / 3600, 2);
  put(14, rem / 60 % 60, 2);
  put(17, rem % 60, 2);
  put(20, ms, 3);
  return std::string(buf, sizeof buf - 1);
}

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace petcam::api
