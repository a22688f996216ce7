// libFuzzer: bearer-token verification (every authenticated request). Only a token signed with the key may pass.
#include <cstdint>
#include <string>

#include "auth/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const petcam::auth::TokenKey key{"fuzz-secret-0123456789abcdef0123456789"};
  const std::string token(reinterpret_cast<const char*>(data), size);
  if (petcam::auth::verify_token(key, token, 1'800'000'000)) {
    // Random bytes that verify would mean a forged signature: only possible if the input embeds a valid one,
    // which libFuzzer cannot produce without the key.
    __builtin_trap();
  }
  return 0;
}
