// The job workers: each claims a queued job from the database, upscales the original with its own
// model, writes the result atomically and marks the job completed. Failures retry with exponential
// backoff up to JOB_MAX_ATTEMPTS; a heartbeat renews the leases of running jobs; stop() cancels running
// jobs between tiles and returns them to the queue. A job whose photo is deleted stops between tiles and
// removes what it wrote: at once when deleted in this process (photos_deleted), else when the heartbeat's
// renewal finds the job gone. HTTP threads never touch a model.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/settings.h"
#include "db/database.h"
#include "db/repositories.h"
#include "imaging/outscale.h"
#include "storage/photo_store.h"

namespace petcam::jobs {

class JobRunner {
 public:
  JobRunner(const config::Settings& settings, db::Database& db, storage::PhotoStore& store);
  ~JobRunner();

  // Loads the model (throws upscaler::ModelError), recovers jobs this instance left processing,
  // and starts settings.job_workers threads plus the heartbeat.
  void start();
  void wake();      // a job was queued here: one worker looks
  void wake_all();  // jobs may be waiting (another process queued some): every idle worker looks
  void stop();      // cancel running jobs, return them to the queue, join
  // These photos' rows are gone: workers running a job on one of them drop it.
  void photos_deleted(const std::vector<std::string>& photo_ids);

 private:
  struct Worker;
  void work(Worker& w);
  void run_job(Worker& w, const db::ClaimedJob& job);
  bool record_completion(Worker& w, const db::ClaimedJob& job, const std::string& out_rel, std::int64_t duration_ms,
                         imaging::Size size);
  void heartbeat();

  const config::Settings& settings_;
  db::Database& db_;
  storage::PhotoStore& store_;
  std::string model_path_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::thread heartbeat_thread_;
  std::mutex mutex_;
  std::condition_variable wake_cv_;  // job workers: a job was queued, or stop
  std::condition_variable stop_cv_;  // heartbeat: stop
  std::uint64_t wakeups_ = 0;
  std::atomic<bool> stopping_{false};
};

}  // namespace petcam::jobs
