#include "api/job_metrics.h"

#include <fmt/format.h>

#include "api/ids.h"
#include "db/repositories.h"

namespace petcam::api {

std::string job_metrics(Context& ctx) {
  db::JobRepository jobs(ctx.db);
  const auto counts = jobs.counts();
  const auto now = now_ms();
  std::string out;
  out += "# HELP petcam_jobs Jobs by state.\n# TYPE petcam_jobs gauge\n";
  out += fmt::format("petcam_jobs{{state=\"queued\"}} {}\n", counts.queued);
  out += fmt::format("petcam_jobs{{state=\"processing\"}} {}\n", counts.processing);
  out += fmt::format("petcam_jobs{{state=\"completed\"}} {}\n", counts.completed);
  out += fmt::format("petcam_jobs{{state=\"failed\"}} {}\n", counts.failed);
  out += "# HELP petcam_queue_depth Jobs waiting to run.\n# TYPE petcam_queue_depth gauge\n";
  out += fmt::format("petcam_queue_depth {}\n", counts.queued);
  out += "# HELP petcam_queue_oldest_age_seconds Age of the oldest queued job (0 when none).\n";
  out += "# TYPE petcam_queue_oldest_age_seconds gauge\n";
  out += fmt::format("petcam_queue_oldest_age_seconds {}\n",
                     counts.oldest_queued_ms ? static_cast<double>(now - *counts.oldest_queued_ms) / 1000.0 : 0.0);

  static const std::vector<double> bounds{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800};
  out += "# HELP petcam_job_duration_seconds Run time of completed jobs (their last attempt), by model.\n";
  out += "# TYPE petcam_job_duration_seconds histogram\n";
  for (const auto& h : jobs.durations(bounds)) {
    for (std::size_t i = 0; i < bounds.size(); ++i)
      out += fmt::format("petcam_job_duration_seconds_bucket{{model=\"{}\",le=\"{}\"}} {}\n", h.model, bounds[i],
                         h.cumulative[i]);
    out += fmt::format("petcam_job_duration_seconds_bucket{{model=\"{}\",le=\"+Inf\"}} {}\n", h.model, h.count);
    out += fmt::format("petcam_job_duration_seconds_sum{{model=\"{}\"}} {}\n", h.model, h.sum_s);
    out += fmt::format("petcam_job_duration_seconds_count{{model=\"{}\"}} {}\n", h.model, h.count);
  }
  // A worker is alive while it beats; three missed beats (a lease) and it is not counted.
  const auto since = now - static_cast<std::int64_t>(ctx.settings.job_lease_s) * 1000;
  out += "# HELP petcam_workers Job workers with a heartbeat within one lease.\n# TYPE petcam_workers gauge\n";
  out += fmt::format("petcam_workers {}\n", db::WorkerRepository(ctx.db).count_alive(since));
  return out;
}

}  // namespace petcam::api
