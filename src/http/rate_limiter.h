// Per-client request limits ("5 per 1 minute") with the generic cell rate algorithm: one timestamp per
// client and route, so memory stays small whatever the limit. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "config/settings.h"

namespace petcam::http {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateLimiter(config::RateLimit limit) : limit_(std::move(limit)) {}

  // 0 when allowed (and counted); otherwise the whole seconds to wait before the next try.
  std::int64_t acquire(const std::string& client, Clock::time_point now = Clock::now());
  const config::RateLimit& limit() const { return limit_; }

 private:
  config::RateLimit limit_;
  std::mutex mutex_;
  std::unordered_map<std::string, Clock::time_point> tat_;  // theoretical arrival time per client
  std::size_t since_sweep_ = 0;
};

}  // namespace petcam::http
