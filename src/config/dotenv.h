// `.env` files: KEY=VALUE lines, '#' comments, optional `export `, single or double quotes.
// Torch-free and HTTP-free so it can be fuzzed.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <string_view>

namespace petcam::config {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws ConfigError naming `source` and the line of the first malformed entry.
std::map<std::string, std::string> parse_dotenv(std::string_view text, const std::string& source);

}  // namespace petcam::config
