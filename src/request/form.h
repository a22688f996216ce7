// application/x-www-form-urlencoded bodies and URL query strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace petcam::request {

using Fields = std::vector<std::pair<std::string, std::string>>;

// `a=1&b=x+y&c=%41`. Malformed escapes are kept literally, as Python's parse_qsl does.
Fields parse_urlencoded(std::string_view text);

// The first value of `name`, if any.
std::optional<std::string> field(const Fields& fields, std::string_view name);

std::string percent_decode(std::string_view s, bool plus_is_space);

}  // namespace petcam::request
