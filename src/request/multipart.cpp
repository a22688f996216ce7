#include "request/multipart.h"

#include <algorithm>
#include <cctype>

namespace petcam::request {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parameters of a header value: `type; a=b; c="d"`. Returns the value of `key`, unquoted.
std::optional<std::string> header_param(std::string_view value, std::string_view key) {
  std::size_t pos = value.find(';');
  while (pos != std::string_view::npos) {
    std::string_view rest = value.substr(pos + 1);
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const auto name = trim(rest.substr(0, eq));
    rest = rest.substr(eq + 1);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    std::string out;
    std::size_t consumed = 0;
    if (!rest.empty() && rest.front() == '"') {
      std::size_t i = 1;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        out += rest[i];
      }
      if (i >= rest.size()) return std::nullopt;  // unterminated quote
      consumed = i + 1;
    } else {
      consumed = std::min(rest.find(';'), rest.size());
      out = std::string(trim(rest.substr(0, consumed)));
    }
    if (iequals(name, key)) return out;
    const auto next = rest.find(';', consumed);
    if (next == std::string_view::npos) return std::nullopt;
    pos = static_cast<std::size_t>(rest.data() + next - value.data());
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> multipart_boundary(std::string_view content_type) {
  const auto semi = content_type.find(';');
  if (!iequals(trim(content_type.substr(0, semi)), "multipart/form-data")) return std::nullopt;
  auto b = header_param(content_type, "boundary");
  if (!b || b->empty() || b->size() > 70) return std::nullopt;
  return b;
}

std::vector<Part> parse_multipart(std::string_view body, std::string_view boundary, std::size_t max_parts) {
  const std::string delim = "--" + std::string(boundary);
  const std::string next_delim = "\r\n" + delim;
  // The body starts with the first delimiter (a preamble before it is allowed and ignored).
  std::size_t pos = body.substr(0, delim.size()) == delim ? 0 : body.find(next_delim);
  if (pos == std::string_view::npos) throw MultipartError("multipart body has no boundary line");
  pos += pos == 0 ? delim.size() : next_delim.size();

  std::vector<Part> parts;
  for (;;) {
    if (body.substr(pos, 2) == "--") return parts;  // closing delimiter
    // Transport padding, then CRLF.
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != "\r\n") throw MultipartError("multipart boundary line is not followed by CRLF");
    pos += 2;
    const auto headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string_view::npos) throw MultipartError("multipart part headers are not terminated");
    if (parts.size() == max_parts)
      throw MultipartError("too many multipart parts (the limit is " + std::to_string(max_parts) + ")");

    Part part;
    bool has_disposition = false;
    std::string_view headers = body.substr(pos, headers_end - pos);
    while (!headers.empty()) {
      const auto eol = std::min(headers.find("\r\n"), headers.size());
      const std::string_view line = headers.substr(0, eol);
      headers.remove_prefix(std::min(eol + 2, headers.size()));
      const auto colon = line.find(':');
      if (colon == std::string_view::npos) throw MultipartError("malformed multipart part header");
      const auto name = trim(line.substr(0, colon));
      const auto value = trim(line.substr(colon + 1));
      if (iequals(name, "Content-Disposition")) {
        if (!iequals(trim(value.substr(0, value.find(';'))), "form-data"))
          throw MultipartError("multipart part is not form-data");
        auto field = header_param(value, "name");
        if (!field) throw MultipartError("multipart part has no field name");
        part.name = std::move(*field);
        part.filename = header_param(value, "filename");
        has_disposition = true;
      } else if (iequals(name, "Content-Type")) {
        part.content_type = std::string(value);
      }
    }
    if (!has_disposition) throw MultipartError("multipart part has no Content-Disposition");

    const auto data_begin = headers_end + 4;
    const auto data_end = body.find(next_delim, data_begin);
    if (data_end == std::string_view::npos) throw MultipartError("multipart body ends without its closing boundary");
    part.data = body.substr(data_begin, data_end - data_begin);
    parts.push_back(std::move(part));
    pos = data_end + next_delim.size();
  }
}

}  // namespace petcam::request
