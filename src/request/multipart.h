// multipart/form-data bodies (RFC 7578) without RESTinio, so the parser can be unit-tested and fuzzed.
// Parts point into the body: keep the body alive while they are used.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace petcam::request {

class MultipartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Part {
  std::string name;                     // form field name
  std::optional<std::string> filename;  // set for file fields
  std::string content_type;             // empty when the part has none
  std::string_view data;
};

// The boundary from a Content-Type value such as `multipart/form-data; boundary="abc"`.
// nullopt when the type is not multipart/form-data or has no usable boundary.
std::optional<std::string> multipart_boundary(std::string_view content_type);

// Throws MultipartError saying what is malformed. At most max_parts parts.
std::vector<Part> parse_multipart(std::string_view body, std::string_view boundary, std::size_t max_parts);

}  // namespace petcam::request
