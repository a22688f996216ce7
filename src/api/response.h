// What a handler gives back, and the one place client errors become status codes and bodies.
// Plain C++: no HTTP library here.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace petcam::api {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;
};

Response json_response(int status, const nlohmann::json& body, Headers headers = {});

// One FastAPI-style validation error: loc (e.g. ["body","username"]), msg, type.
struct FieldError {
  nlohmann::json loc;
  std::string msg;
  std::string type;
};

// A request the client must fix (or may retry): its status, its `detail` and any headers. Handlers
// throw it; the HTTP layer turns it into the response.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string detail, Headers headers = {});
  explicit ApiError(std::vector<FieldError> errors);  // 422
  Response response() const;
  int status() const { return status_; }

 private:
  int status_;
  nlohmann::json detail_;
  Headers headers_;
};

// 401 with WWW-Authenticate: Bearer, as FastAPI's OAuth2PasswordBearer answers.
ApiError unauthorized(const std::string& detail);
// 503 with Retry-After.
ApiError unavailable(const std::string& detail, int retry_after_s = 1);

}  // namespace petcam::api
