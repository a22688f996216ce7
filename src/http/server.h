// The HTTP server (the only code that includes RESTinio): limits and timeouts, routing, per-IP rate
// limits, the bounded work pool, request logs, and the graceful stop on SIGTERM/SIGINT.
#pragma once

#include <functional>
#include <memory>

#include "api/context.h"
#include "api/docs.h"

namespace petcam::http {

class Server {
 public:
  Server(api::Context& ctx, const api::Docs& docs);
  ~Server();
  // Serves until SIGTERM or SIGINT, then stops accepting, answers the requests in flight and returns.
  // `on_listening` runs once the socket is bound.
  void run(const std::function<void()>& on_listening = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace petcam::http
