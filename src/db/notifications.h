// What other processes tell this one through PostgreSQL: LISTEN petcam_jobs (a job was queued: wake the
// workers) and petcam_photos (a photo changed: Database::deliver, for the live event streams), on a dedicated
// connection (libpq) that reconnects by itself. Workers still poll, so a lost connection only delays jobs by up
// to JOB_POLL_MS (event streams miss what happens meanwhile). Not used on SQLite: one process, told directly.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace petcam::db {

class Notifications {
 public:
  // `url` as DATABASE_URL (postgresql://...); the callbacks run on the listener thread; either may be empty.
  Notifications(std::string url, std::function<void()> on_jobs, std::function<void(std::string_view)> on_photo);
  ~Notifications();
  void stop();

 private:
  void run();
  std::string url_;
  std::function<void()> on_jobs_;
  std::function<void(std::string_view)> on_photo_;
  std::atomic<bool> stopping_{false};
  int wake_fds_[2] = {-1, -1};  // a pipe that interrupts the wait on stop
  std::thread thread_;
};

}  // namespace petcam::db
