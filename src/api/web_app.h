// The web gallery: GET / (the page) and its scripts and styles under /app/, built into the binary from web/app/.
// The page names its assets under /app/<version>/, a hash of all of them, so those answers are immutable and a
// new build never mixes with a browser's cached copy of the old one; /app/<name> also answers, revalidated.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "api/response.h"

namespace petcam::api {

class WebApp {
 public:
  WebApp();  // reads the embedded web/app/ files
  // The answer for a GET of `path` ("/" or "/app/..."), or nullopt when it is none of ours.
  // if_none_match: the request's If-None-Match (empty: none); a match answers 304.
  std::optional<Response> answer(std::string_view path, std::string_view if_none_match) const;
  const std::string& version() const { return version_; }

 private:
  struct File {
    std::string content_type;
    std::string body;
    std::string etag;
  };
  std::map<std::string, File, std::less<>> files_;  // "/" and "/app/<name>"
  std::string version_;
};

}  // namespace petcam::api
