// POST /upscale, POST /bestcut, GET /photos, GET /photos/{id}, GET /photos/{id}/info, DELETE /photos/{id}.
// Every method takes the authenticated user's id; another user's photo answers 404.
// DB and file work happen here: call from the work pool, never from an I/O thread.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/context.h"
#include "api/response.h"
#include "api/validation.h"
#include "imaging/imaging.h"
#include "request/multipart.h"

namespace petcam::api {

// A download: the status, the part of the file to send (the HTTP layer reads or maps it) and its
// headers. No path: no body (304).
struct FileResponse {
  int status = 200;  // 200, 206 or 304
  std::string path;
  std::uint64_t offset = 0, length = 0;
  Headers headers;
};

// The request headers a download honours (empty when absent).
struct DownloadHeaders {
  std::string_view if_none_match;
  std::string_view range;
};

class PhotoApi {
 public:
  explicit PhotoApi(Context& ctx) : ctx_(ctx) {}

  // `idempotency_key`: the Idempotency-Key header, when the request has one.
  Response upscale(const std::string& user_id, const std::vector<request::Part>& parts,
                   std::optional<std::string_view> idempotency_key = {});
  Response bestcut(const std::string& user_id, const std::vector<request::Part>& parts,
                   std::optional<std::string_view> idempotency_key = {});
  Response list(const std::string& user_id, std::string_view query);
  FileResponse download(const std::string& user_id, std::string_view photo_id, std::string_view query,
                        const DownloadHeaders& headers = {});
  Response info(const std::string& user_id, std::string_view photo_id);
  Response remove(const std::string& user_id, std::string_view photo_id);

 private:
  struct Coordinates {
    double lat = 0.0, lng = 0.0;
  };
  // lat, lng, outscale and format from the form fields; every bad value as a FieldError.
  Coordinates fields(const std::vector<request::Part>& parts, UploadOptions& options,
                     std::vector<FieldError>& errors) const;
  // An upload's header and its pixels: in full (best cut scores them), or only as large as the thumbnail needs.
  struct Checked {
    imaging::Header header;
    imaging::Photo photo;
  };
  // Size and type limits from the header, then the decoded photo (400/413 for what the client must fix).
  Checked check_and_decode(const request::Part& file, const std::string& what, bool full_size) const;
  // 413 when the result at `options` would be over MAX_OUTPUT_PIXELS (or the format's largest side).
  void check_output(const imaging::Header& header, const UploadOptions& options) const;
  // Writes the original and its thumbnail, then the photo and its job in one transaction; on any failure
  // nothing stays.
  // With `key`, that Idempotency-Key's record gets the answer in the photo's transaction.
  Response store(const std::string& user_id, const request::Part& file, Checked& upload, Coordinates where,
                 const UploadOptions& options, std::optional<double> score, const std::string* key);
  // Runs `handle` once per Idempotency-Key (SPEC.md): replays a finished answer, 409 while the first is in
  // flight, 422 for the same key on another request. No key: just `handle(nullptr)`.
  Response once(const std::string& user_id, std::optional<std::string_view> key, std::string_view route,
                const std::vector<request::Part>& parts, const std::function<Response(const std::string*)>& handle);

  Context& ctx_;
};

}  // namespace petcam::api
