// Wakes this process's job workers when another process queues a job: LISTEN petcam_jobs on a dedicated
// PostgreSQL connection (libpq), reconnecting by itself. Workers still poll, so a lost connection only
// delays jobs by up to JOB_POLL_MS. Not used on SQLite (one process; the API wakes workers directly).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace petcam::db {

class JobNotifications {
 public:
  // `url` as DATABASE_URL (postgresql://...); `on_notify` runs on the listener thread.
  JobNotifications(std::string url, std::function<void()> on_notify);
  ~JobNotifications();
  void stop();

 private:
  void run();
  std::string url_;
  std::function<void()> on_notify_;
  std::atomic<bool> stopping_{false};
  int wake_fds_[2] = {-1, -1};  // a pipe that interrupts the wait on stop
  std::thread thread_;
};

}  // namespace petcam::db
