#include "http/client_ip.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <stdexcept>

namespace petcam::http {

std::optional<std::array<unsigned char, 16>> parse_ip(std::string_view text) {
  // RESTinio prints IPv6 peers as [addr]; also drop a zone.
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  if (text.empty() || text.size() > 45) return std::nullopt;
  const std::string s(text);
  std::array<unsigned char, 16> out{};
  in_addr v4{};
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out[10] = out[11] = 0xff;
    std::memcpy(out.data() + 12, &v4, 4);
    return out;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    std::memcpy(out.data(), &v6, 16);
    return out;
  }
  return std::nullopt;
}

TrustedProxies::TrustedProxies(const std::vector<std::string>& entries) {
  for (const auto& e : entries) {
    const auto slash = e.find('/');
    const auto ip = parse_ip(std::string_view(e).substr(0, slash));
    if (!ip) throw std::invalid_argument("TRUSTED_PROXIES: not an IP address or CIDR: " + e);
    const bool v4 = e.find(':') == std::string::npos;
    int bits = v4 ? 32 : 128;
    if (slash != std::string::npos) {
      const auto p = std::string_view(e).substr(slash + 1);
      const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), bits);
      if (ec != std::errc{} || end != p.data() + p.size() || bits < 0 || bits > (v4 ? 32 : 128))
        throw std::invalid_argument("TRUSTED_PROXIES: bad prefix length in " + e);
    }
    nets_.push_back({*ip, v4 ? bits + 96 : bits});
  }
}

bool TrustedProxies::contains(std::string_view address) const {
  if (nets_.empty()) return false;
  const auto ip = parse_ip(address);
  if (!ip) return false;
  for (const auto& n : nets_) {
    int bits = n.bits, i = 0;
    for (; bits >= 8; bits -= 8, ++i)
      if ((*ip)[i] != n.addr[i]) break;
    if (bits >= 8) continue;
    const unsigned char mask = static_cast<unsigned char>(0xff00 >> bits);
    if (bits == 0 || ((*ip)[i] & mask) == (n.addr[i] & mask)) return true;
  }
  return false;
}

std::string TrustedProxies::client_address(std::string_view peer, std::optional<std::string_view> xff) const {
  if (!xff || !contains(peer)) return std::string(peer);
  std::string_view list = *xff;
  // Walk from the right: each hop we trust may have appended the address it saw.
  while (!list.empty()) {
    const auto comma = list.rfind(',');
    std::string_view item = comma == std::string_view::npos ? list : list.substr(comma + 1);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!parse_ip(item)) return std::string(peer);  // garbage: do not let it pick a bucket
    if (!contains(item)) return std::string(item);
  }
  return std::string(peer);
}

}  // namespace petcam::http
