// Request metrics for GET /metrics (Prometheus text format): requests by route and status, a latency
// histogram by route, and rate-limit rejections. Lock-free counters: observed on every request.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "api/routes.h"

namespace petcam::http {

class Metrics {
 public:
  // `route` is an index into api::kRoutes, or kOtherRoute for anything unrouted (404s, docs assets).
  static constexpr std::size_t kOtherRoute = api::kRoutes.size();
  void observe(std::size_t route, int status, double seconds);
  void rate_limited(std::size_t route);
  std::string render() const;

 private:
  static constexpr std::array<int, 11> kStatuses{200, 400, 401, 404, 405, 413, 422, 429, 500, 503, 0};  // 0: other
  static constexpr std::array<double, 14> kBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  static constexpr std::size_t kRouteSlots = api::kRoutes.size() + 1;
  struct PerRoute {
    std::array<std::atomic<std::uint64_t>, kStatuses.size()> by_status{};
    std::array<std::atomic<std::uint64_t>, kBounds.size()> buckets{};  // not cumulative; summed on render
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> sum_us{0};
    std::atomic<std::uint64_t> rate_limited{0};
  };
  std::array<PerRoute, kRouteSlots> routes_{};
};

}  // namespace petcam::http
