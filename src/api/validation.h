// Request values checked the way FastAPI/pydantic check them, so clients see the same 422 shapes.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/response.h"

namespace petcam::api {

// A JSON object body, or ApiError 422 (json_invalid / model_attributes_type).
nlohmann::json parse_json_object(std::string_view body);

// A string member of `obj` with min..max characters (Unicode code points); adds a FieldError at
// ["body", name] and returns nullopt when missing or invalid.
std::optional<std::string> string_field(const nlohmann::json& obj, const char* name, std::size_t min_chars,
                                        std::size_t max_chars, std::vector<FieldError>& errors);

// A finite float in [lo, hi] from a form value; `loc` e.g. {"body","lat"}.
std::optional<double> float_value(std::string_view text, double lo, double hi, nlohmann::json loc,
                                  std::vector<FieldError>& errors);

// An integer in [lo, hi] from a query value.
std::optional<std::int64_t> int_value(std::string_view text, std::int64_t lo, std::int64_t hi, nlohmann::json loc,
                                      std::vector<FieldError>& errors);

// The body of POST /register: {"username": 3..50 chars, "password": 6..1024 chars}, or ApiError 422.
struct Registration {
  std::string username;
  std::string password;
};
Registration registration(std::string_view json_body);

// The body of POST /users/me/password: {"current_password", "new_password": 6..1024 chars as at
// registration}, or ApiError 422.
struct PasswordChange {
  std::string current_password;
  std::string new_password;
};
PasswordChange password_change(std::string_view json_body);

// The body of DELETE /users/me: {"password"}, or ApiError 422.
std::string account_deletion(std::string_view json_body);

// GET /photos?skip=&limit= (skip >= 0, limit 1..1000, default 100), or ApiError 422.
struct ListQuery {
  std::int64_t skip = 0;
  std::int64_t limit = 100;
};
ListQuery list_query(std::string_view query);

// GET /photos/{id}?type=upscaled|original|thumbnail|preview (default upscaled); adds a FieldError otherwise.
enum class DownloadType { Upscaled, Original, Thumbnail, Preview };
DownloadType download_type(std::string_view query, std::vector<FieldError>& errors);
const char* to_string(DownloadType t);

// The optional multipart fields of POST /upscale and /bestcut beside the file(s): `outscale`, 1 < s <= 4
// (default 4), and `format`, jpeg | png | webp (default jpeg). Bad values add FieldErrors at ["body", name].
struct UploadOptions {
  double outscale = 4.0;
  std::string format = "jpeg";
};
void outscale_value(std::string_view text, UploadOptions& out, std::vector<FieldError>& errors);
void format_value(std::string_view text, UploadOptions& out, std::vector<FieldError>& errors);

}  // namespace petcam::api
