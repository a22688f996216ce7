// UUIDs and timestamps as the wire shows them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace petcam::api {

std::string new_uuid();  // random (version 4), lowercase, hyphenated
// Any spelling Python's uuid.UUID takes for a path id (hyphenated or 32 hex digits, either case,
// optional braces or urn:uuid:), as the canonical lowercase hyphenated form; nullopt otherwise.
std::optional<std::string> canonical_uuid(std::string_view text);
std::string iso8601_utc(std::int64_t unix_ms);  // 2026-01-27T10:30:00.123Z
std::int64_t now_ms();

}  // namespace petcam::api
