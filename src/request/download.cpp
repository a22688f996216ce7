#include "request/download.h"

#include <charconv>

namespace petcam::request {

namespace {

constexpr bool is_space(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// A non-empty run of digits that fits in 64 bits, and nothing else.
bool digits(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;
  return true;
}

}  // namespace

ByteRange parse_range(std::string_view header, std::uint64_t size) {
  using Kind = ByteRange::Kind;
  header = trim(header);
  const auto eq = header.find('=');
  if (eq == std::string_view::npos || !iequals(trim(header.substr(0, eq)), "bytes")) return {};
  const auto spec = trim(header.substr(eq + 1));
  if (spec.find(',') != std::string_view::npos) return {};  // several ranges: we answer the whole file
  const auto dash = spec.find('-');
  if (dash == std::string_view::npos) return {};
  const auto a = trim(spec.substr(0, dash)), b = trim(spec.substr(dash + 1));
  std::uint64_t first = 0, last = 0;
  if (a.empty()) {  // suffix: the last n bytes
    if (!digits(b, last)) return {};
    if (last == 0 || size == 0) return {Kind::Unsatisfiable};
    return {Kind::Part, last >= size ? 0 : size - last, size - 1};
  }
  if (!digits(a, first)) return {};
  if (b.empty()) {
    last = size == 0 ? 0 : size - 1;
  } else if (!digits(b, last) || last < first) {
    return {};
  }
  if (first >= size) return {Kind::Unsatisfiable};
  return {Kind::Part, first, std::min(last, size - 1)};
}

bool none_match_hits(std::string_view header, std::string_view etag) {
  const auto opaque = [](std::string_view tag) {
    if (tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/') tag.remove_prefix(2);
    return tag;
  };
  const auto want = opaque(etag);
  header = trim(header);
  if (header == "*") return true;
  while (!header.empty()) {
    const auto comma = header.find(',');
    const auto tag = trim(header.substr(0, comma));
    if (!tag.empty() && opaque(tag) == want) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace petcam::request
