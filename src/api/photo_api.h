// POST /upscale, POST /bestcut, GET /photos, GET /photos/{id}, DELETE /photos/{id}.
// Every method takes the authenticated user's id; another user's photo answers 404.
// DB and file work happen here: call from the work pool, never from an I/O thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/context.h"
#include "api/response.h"
#include "http/multipart.h"

namespace petcam::api {

// A download: the file to send and its headers (the HTTP layer streams it with sendfile).
struct FileResponse {
  std::string path;
  Headers headers;
};

class PhotoApi {
 public:
  explicit PhotoApi(Context& ctx) : ctx_(ctx) {}

  Response upscale(const std::string& user_id, const std::vector<http::Part>& parts);
  Response bestcut(const std::string& user_id, const std::vector<http::Part>& parts);
  Response list(const std::string& user_id, std::string_view query);
  FileResponse download(const std::string& user_id, std::string_view photo_id, std::string_view query);
  Response remove(const std::string& user_id, std::string_view photo_id);

 private:
  struct Coordinates {
    double lat = 0.0, lng = 0.0;
  };
  Coordinates coordinates(const std::vector<http::Part>& parts, std::vector<FieldError>& errors) const;
  void check_file(const http::Part& file, const std::string& what) const;
  // Writes the original, then the photo and its job in one transaction; on any failure nothing stays.
  std::string store(const std::string& user_id, const http::Part& file, Coordinates where, std::optional<double> score);

  Context& ctx_;
};

}  // namespace petcam::api
