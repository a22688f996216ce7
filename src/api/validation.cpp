#include "api/validation.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <limits>

#include "request/form.h"

namespace petcam::api {

namespace {

std::size_t utf8_chars(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string number(double v) {
  return v == std::floor(v) ? fmt::format("{:.0f}", v) : fmt::format("{}", v);
}

}  // namespace

nlohmann::json parse_json_object(std::string_view body) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw ApiError(
        {{{"body", static_cast<std::int64_t>(e.byte > 0 ? e.byte - 1 : 0)}, "JSON decode error", "json_invalid"}});
  } catch (const nlohmann::json::exception&) {
    // Valid syntax the parser still refuses, e.g. a number beyond double's range (1e999): found by fuzz_json_body.
    throw ApiError({{{"body", 0}, "JSON decode error: a number is out of range", "json_invalid"}});
  }
  if (!j.is_object())
    throw ApiError(
        {{{"body"}, "Input should be a valid dictionary or object to extract fields from", "model_attributes_type"}});
  return j;
}

std::optional<std::string> string_field(const nlohmann::json& obj, const char* name, std::size_t min_chars,
                                        std::size_t max_chars, std::vector<FieldError>& errors) {
  const auto it = obj.find(name);
  if (it == obj.end()) {
    errors.push_back({{"body", name}, "Field required", "missing"});
    return std::nullopt;
  }
  if (!it->is_string()) {
    errors.push_back({{"body", name}, "Input should be a valid string", "string_type"});
    return std::nullopt;
  }
  const auto& s = it->get_ref<const std::string&>();
  const auto n = utf8_chars(s);
  if (n < min_chars) {
    errors.push_back(
        {{"body", name}, fmt::format("String should have at least {} characters", min_chars), "string_too_short"});
    return std::nullopt;
  }
  if (n > max_chars) {
    errors.push_back(
        {{"body", name}, fmt::format("String should have at most {} characters", max_chars), "string_too_long"});
    return std::nullopt;
  }
  return s;
}

std::optional<double> float_value(std::string_view text, double lo, double hi, nlohmann::json loc,
                                  std::vector<FieldError>& errors) {
  const auto t = trim(text);
  double v = 0;
  // from_chars takes "nan"/"inf" too; they are refused below as pydantic's allow_inf_nan=False would.
  const auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc{} || p != t.data() + t.size()) {
    errors.push_back(
        {std::move(loc), "Input should be a valid number, unable to parse string as a number", "float_parsing"});
    return std::nullopt;
  }
  if (!std::isfinite(v)) {
    errors.push_back({std::move(loc), "Input should be a finite number", "finite_number"});
    return std::nullopt;
  }
  if (v < lo) {
    errors.push_back({std::move(loc), "Input should be greater than or equal to " + number(lo), "greater_than_equal"});
    return std::nullopt;
  }
  if (v > hi) {
    errors.push_back({std::move(loc), "Input should be less than or equal to " + number(hi), "less_than_equal"});
    return std::nullopt;
  }
  return v;
}

std::optional<std::int64_t> int_value(std::string_view text, std::int64_t lo, std::int64_t hi, nlohmann::json loc,
                                      std::vector<FieldError>& errors) {
  const auto t = trim(text);
  std::int64_t v = 0;
  const char* b = t.data();
  if (!t.empty() && t.front() == '+') ++b;
  const auto [p, ec] = std::from_chars(b, t.data() + t.size(), v);
  if (t.empty() || ec != std::errc{} || p != t.data() + t.size()) {
    errors.push_back(
        {std::move(loc), "Input should be a valid integer, unable to parse string as an integer", "int_parsing"});
    return std::nullopt;
  }
  if (v < lo) {
    errors.push_back(
        {std::move(loc), fmt::format("Input should be greater than or equal to {}", lo), "greater_than_equal"});
    return std::nullopt;
  }
  if (v > hi) {
    errors.push_back({std::move(loc), fmt::format("Input should be less than or equal to {}", hi), "less_than_equal"});
    return std::nullopt;
  }
  return v;
}

Registration registration(std::string_view json_body) {
  const auto body = parse_json_object(json_body);
  std::vector<FieldError> errors;
  auto username = string_field(body, "username", 3, 50, errors);
  auto password = string_field(body, "password", 6, 1024, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));
  return {std::move(*username), std::move(*password)};
}

namespace {
// A password being checked, not chosen: any length a request can carry (a wrong one is a 400, not a 422).
constexpr std::size_t kAnyLength = std::numeric_limits<std::size_t>::max();
}  // namespace

PasswordChange password_change(std::string_view json_body) {
  const auto body = parse_json_object(json_body);
  std::vector<FieldError> errors;
  auto current = string_field(body, "current_password", 0, kAnyLength, errors);
  auto chosen = string_field(body, "new_password", 6, 1024, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));
  return {std::move(*current), std::move(*chosen)};
}

std::string account_deletion(std::string_view json_body) {
  const auto body = parse_json_object(json_body);
  std::vector<FieldError> errors;
  auto password = string_field(body, "password", 0, kAnyLength, errors);
  if (!errors.empty()) throw ApiError(std::move(errors));
  return std::move(*password);
}

ListQuery list_query(std::string_view query) {
  const auto q = request::parse_urlencoded(query);
  std::vector<FieldError> errors;
  ListQuery out;
  if (auto v = request::field(q, "skip"))
    if (auto n = int_value(*v, 0, std::numeric_limits<std::int64_t>::max(), {"query", "skip"}, errors)) out.skip = *n;
  if (auto v = request::field(q, "limit"))
    if (auto n = int_value(*v, 1, 1000, {"query", "limit"}, errors)) out.limit = *n;
  if (!errors.empty()) throw ApiError(std::move(errors));
  return out;
}

namespace {
constexpr std::pair<DownloadType, const char*> kDownloadTypes[] = {{DownloadType::Upscaled, "upscaled"},
                                                                   {DownloadType::Original, "original"},
                                                                   {DownloadType::Thumbnail, "thumbnail"},
                                                                   {DownloadType::Preview, "preview"}};
}

const char* to_string(DownloadType t) {
  for (const auto& [type, name] : kDownloadTypes)
    if (type == t) return name;
  return "upscaled";
}

DownloadType download_type(std::string_view query, std::vector<FieldError>& errors) {
  const auto type = request::field(request::parse_urlencoded(query), "type").value_or("upscaled");
  for (const auto& [t, name] : kDownloadTypes)
    if (type == name) return t;
  errors.push_back({{"query", "type"}, "Input should be 'upscaled', 'original', 'thumbnail' or 'preview'", "enum"});
  return DownloadType::Upscaled;
}

void outscale_value(std::string_view text, UploadOptions& out, std::vector<FieldError>& errors) {
  const auto before = errors.size();
  const auto v = float_value(text, 1.0, 4.0, {"body", "outscale"}, errors);
  if (!v) return;
  if (*v <= 1.0) {
    errors.push_back({{"body", "outscale"}, "Input should be greater than 1", "greater_than"});
    return;
  }
  if (errors.size() == before) out.outscale = *v;
}

void format_value(std::string_view text, UploadOptions& out, std::vector<FieldError>& errors) {
  const auto t = trim(text);
  if (t != "jpeg" && t != "png" && t != "webp") {
    errors.push_back({{"body", "format"}, "Input should be 'jpeg', 'png' or 'webp'", "enum"});
    return;
  }
  out.format = std::string(t);
}

}  // namespace petcam::api
