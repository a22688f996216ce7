#include "config/dotenv.h"

#include <cctype>

namespace petcam::config {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool valid_key(std::string_view k) {
  if (k.empty() || std::isdigit(static_cast<unsigned char>(k[0]))) return false;
  for (char c : k)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

}  // namespace

std::map<std::string, std::string> parse_dotenv(std::string_view text, const std::string& source) {
  std::map<std::string, std::string> out;
  std::size_t line_no = 0;
  for (std::size_t pos = 0; pos <= text.size();) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = trim(text.substr(pos, nl - pos));
    pos = nl + 1;
    ++line_no;
    auto fail = [&](const std::string& why) {
      return ConfigError(source + " line " + std::to_string(line_no) + ": " + why);
    };
    if (line.empty() || line[0] == '#') continue;
    if (line.substr(0, 7) == "export ") line = trim(line.substr(7));
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) throw fail("expected KEY=VALUE");
    const auto key = trim(line.substr(0, eq));
    if (!valid_key(key)) throw fail("'" + std::string(key) + "' is not a valid variable name");
    auto value = trim(line.substr(eq + 1));
    if (!value.empty() && (value[0] == '"' || value[0] == '\'')) {
      const char q = value[0];
      const auto close = value.find(q, 1);
      if (close == std::string_view::npos) throw fail("unterminated quote");
      const auto rest = trim(value.substr(close + 1));
      if (!rest.empty() && rest[0] != '#') throw fail("text after the closing quote");
      value = value.substr(1, close - 1);
    } else if (const auto hash = value.find(" #"); hash != std::string_view::npos) {
      value = trim(value.substr(0, hash));  // an unquoted value ends at a comment
    }
    out[std::string(key)] = std::string(value);
  }
  return out;
}

}  // namespace petcam::config
