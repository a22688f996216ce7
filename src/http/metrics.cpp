#include "http/metrics.h"

#include <fmt/format.h>

namespace petcam::http {

namespace {

std::string route_label(std::size_t i) {
  if (i >= api::kRoutes.size()) return "other";
  return fmt::format("{} {}", api::kRoutes[i].method, api::kRoutes[i].path);
}

}  // namespace

void Metrics::observe(std::size_t route, int status, double seconds) {
  auto& r = routes_[std::min(route, kOtherRoute)];
  std::size_t s = kStatuses.size() - 1;
  for (std::size_t i = 0; i + 1 < kStatuses.size(); ++i)
    if (kStatuses[i] == status) s = i;
  r.by_status[s].fetch_add(1, std::memory_order_relaxed);
  std::size_t b = 0;
  while (b < kBounds.size() && seconds > kBounds[b]) ++b;
  if (b < kBounds.size()) r.buckets[b].fetch_add(1, std::memory_order_relaxed);
  r.count.fetch_add(1, std::memory_order_relaxed);
  r.sum_us.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Metrics::rate_limited(std::size_t route) {
  routes_[std::min(route, kOtherRoute)].rate_limited.fetch_add(1, std::memory_order_relaxed);
}

std::string Metrics::render() const {
  std::string out;
  out += "# HELP petcam_http_requests_total HTTP requests answered, by route and status.\n";
  out += "# TYPE petcam_http_requests_total counter\n";
  for (std::size_t i = 0; i < kRouteSlots; ++i)
    for (std::size_t s = 0; s < kStatuses.size(); ++s) {
      const auto n = routes_[i].by_status[s].load(std::memory_order_relaxed);
      if (n == 0) continue;
      out += fmt::format("petcam_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", route_label(i),
                         kStatuses[s] ? std::to_string(kStatuses[s]) : std::string("other"), n);
    }
  out += "# HELP petcam_http_request_duration_seconds Time from a complete request to its response, by route.\n";
  out += "# TYPE petcam_http_request_duration_seconds histogram\n";
  for (std::size_t i = 0; i < kRouteSlots; ++i) {
    const auto& r = routes_[i];
    const auto count = r.count.load(std::memory_order_relaxed);
    if (count == 0) continue;
    const auto label = route_label(i);
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kBounds.size(); ++b) {
      cumulative += r.buckets[b].load(std::memory_order_relaxed);
      out += fmt::format("petcam_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", label,
                         kBounds[b], cumulative);
    }
    out += fmt::format("petcam_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", label, count);
    out += fmt::format("petcam_http_request_duration_seconds_sum{{route=\"{}\"}} {}\n", label,
                       static_cast<double>(r.sum_us.load(std::memory_order_relaxed)) / 1e6);
    out += fmt::format("petcam_http_request_duration_seconds_count{{route=\"{}\"}} {}\n", label, count);
  }
  out += "# HELP petcam_rate_limited_total Requests refused by a rate limit, by route.\n";
  out += "# TYPE petcam_rate_limited_total counter\n";
  for (std::size_t i = 0; i < kRouteSlots; ++i) {
    const auto n = routes_[i].rate_limited.load(std::memory_order_relaxed);
    if (n) out += fmt::format("petcam_rate_limited_total{{route=\"{}\"}} {}\n", route_label(i), n);
  }
  return out;
}

}  // namespace petcam::http
