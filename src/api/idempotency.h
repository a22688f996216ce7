// Idempotency-Key on uploads (SPEC.md): the key's form, and what makes two requests "the same request".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "request/multipart.h"

namespace petcam::api {

// How long a key's answer is kept and replayed.
inline constexpr std::int64_t kIdempotencyRetentionMs = 24ll * 3600 * 1000;

// 1..255 printable ASCII characters (space to tilde).
bool valid_idempotency_key(std::string_view key);

// A digest of the route and every form part (name, file name, bytes) in order; not of the multipart framing,
// which a client retrying the same upload may change (a new boundary).
std::string request_fingerprint(std::string_view route, const std::vector<request::Part>& parts);

}  // namespace petcam::api
