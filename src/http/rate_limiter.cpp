#include "http/rate_limiter.h"

namespace petcam::http {

std::int64_t RateLimiter::acquire(const std::string& client, Clock::time_point now) {
  if (limit_.count <= 0) return 0;
  using std::chrono::nanoseconds;
  const nanoseconds period = std::chrono::seconds(limit_.period_s);
  const nanoseconds interval = period / limit_.count;
  std::lock_guard lock(mutex_);
  // Forget clients whose allowance is full again, so the table holds only recent clients.
  if (++since_sweep_ >= 4096) {
    since_sweep_ = 0;
    std::erase_if(tat_, [&](const auto& e) { return e.second <= now; });
  }
  auto [it, inserted] = tat_.try_emplace(client, now);
  const auto tat = std::max(it->second, now);
  const auto next = tat + interval;
  if (next - now > period) {
    const auto wait = next - period - now;
    return std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::seconds>(wait).count());
  }
  it->second = next;
  return 0;
}

}  // namespace petcam::http
