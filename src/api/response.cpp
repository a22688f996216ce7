#include "api/response.h"

namespace petcam::api {

Response json_response(int status, const nlohmann::json& body, Headers headers) {
  return {status, "application/json", body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
          std::move(headers)};
}

ApiError::ApiError(int status, std::string detail, Headers headers)
    : std::runtime_error(detail), status_(status), detail_(std::move(detail)), headers_(std::move(headers)) {}

ApiError::ApiError(std::vector<FieldError> errors) : std::runtime_error("validation error"), status_(422) {
  detail_ = nlohmann::json::array();
  for (auto& e : errors) detail_.push_back({{"loc", std::move(e.loc)}, {"msg", e.msg}, {"type", e.type}});
}

Response ApiError::response() const {
  return json_response(status_, {{"detail", detail_}}, headers_);
}

ApiError unauthorized(const std::string& detail) {
  return ApiError(401, detail, {{"WWW-Authenticate", "Bearer"}});
}

ApiError unavailable(const std::string& detail, int retry_after_s) {
  return ApiError(503, detail, {{"Retry-After", std::to_string(retry_after_s)}});
}

}  // namespace petcam::api
