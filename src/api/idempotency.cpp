#include "api/idempotency.h"

#include <sodium.h>

#include <cstdint>

namespace petcam::api {

bool valid_idempotency_key(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (const char c : key)
    if (c < 0x20 || c > 0x7E) return false;
  return true;
}

std::string request_fingerprint(std::string_view route, const std::vector<request::Part>& parts) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES);
  const auto add = [&](std::string_view s) {
    const std::uint64_t n = s.size();  // length first: "ab"+"c" and "a"+"bc" differ
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(&n), sizeof n);
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  };
  add(route);
  for (const auto& p : parts) {
    add(p.name);
    add(p.filename ? "f:" + *p.filename : std::string("-"));
    add(p.data);
  }
  unsigned char digest[crypto_generichash_BYTES];
  crypto_generichash_final(&state, digest, sizeof digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char b : digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

}  // namespace petcam::api
