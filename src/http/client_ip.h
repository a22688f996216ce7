// The client address for rate limits and logs: the socket peer, or the X-Forwarded-For address the
// peer reports when the peer is one of TRUSTED_PROXIES.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace petcam::http {

class TrustedProxies {
 public:
  // Entries are IPv4/IPv6 addresses or CIDRs; throws std::invalid_argument naming a bad one.
  explicit TrustedProxies(const std::vector<std::string>& entries);
  bool contains(std::string_view address) const;
  // peer when it is not trusted or there is no header; otherwise the right-most X-Forwarded-For entry
  // that is not itself a trusted proxy.
  std::string client_address(std::string_view peer, std::optional<std::string_view> forwarded_for) const;

 private:
  struct Net {
    std::array<unsigned char, 16> addr{};
    int bits = 0;
  };
  std::vector<Net> nets_;
};

// Parses an IPv4 or IPv6 address into 16 bytes (IPv4 mapped into ::ffff:0:0/96).
std::optional<std::array<unsigned char, 16>> parse_ip(std::string_view text);

}  // namespace petcam::http
