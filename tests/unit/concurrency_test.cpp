// The shared state that many threads touch at once: the rate limiter, the work pool, and the job queue
// (claims by concurrent workers, and the JobRunner's worker and heartbeat threads with wake-ups and a stop
// arriving from other threads). Run in every build, and under ThreadSanitizer by `make test-tsan`.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/settings.h"
#include "db/database.h"
#include "db/repositories.h"
#include "http/rate_limiter.h"
#include "http/work_pool.h"
#include "imaging/imaging.h"
#include "jobs/job_runner.h"
#include "storage/photo_store.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
namespace db = petcam::db;

namespace {

TEST(Concurrency, RateLimiterCountsExactlyUnderContention) {
  // 8 threads, 16 clients, one instant: each client gets exactly its burst, however the calls interleave.
  petcam::http::RateLimiter limiter({5, 60, "5 per 1 minute"});
  const auto now = petcam::http::RateLimiter::Clock::now();
  std::atomic<int> allowed[16] = {};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const int client = (i + t) % 16;
        if (limiter.acquire(std::string("10.0.0.").append(std::to_string(client)), now) == 0) ++allowed[client];
      }
    });
  for (auto& t : threads) t.join();
  for (int c = 0; c < 16; ++c) EXPECT_EQ(allowed[c].load(), 5) << "client " << c;
}

TEST(Concurrency, WorkPoolRunsEveryAcceptedTaskOnce) {
  std::atomic<int> accepted{0}, ran{0};
  {
    petcam::http::WorkPool pool(4, 64);
    std::vector<std::thread> submitters;
    for (int t = 0; t < 6; ++t)
      submitters.emplace_back([&] {
        for (int i = 0; i < 3000; ++i)
          if (pool.try_submit([&] { ++ran; })) ++accepted;
      });
    for (auto& t : submitters) t.join();
    pool.shutdown();  // runs what is queued, then joins
    EXPECT_FALSE(pool.try_submit([&] { ++ran; }));
  }
  EXPECT_GT(accepted.load(), 0);
  EXPECT_EQ(ran.load(), accepted.load());
}

// A temp dir with a SQLite database, a photo store and queued photos.
class JobQueue : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "petcam-concurrency-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    settings_.data_dir = dir_.string();
    settings_.storage_dir = (dir_ / "storage").string();
    settings_.database_url = "sqlite:///" + (dir_ / "petcam.db").string();
    settings_.models_dir = PETCAM_MODELS_DIR;
    settings_.model = "x4fast";
    settings_.job_workers = 3;
    settings_.inference_threads = 1;
    settings_.job_poll_ms = 50;
    settings_.job_lease_s = 30;
    settings_.instance_id = "concurrency-test";
    db::Options o;
    o.url = settings_.database_url;
    o.pool_size = 8;
    o.lease_timeout = 10s;
    db_ = db::Database::open(o);
    db::migrate_up(*db_);
    store_ = std::make_unique<petcam::storage::PhotoStore>(settings_.storage_dir);
    ASSERT_TRUE(db::UserRepository(*db_).create({"u1", "alice", "$argon2id$x", true}, 1).has_value());
  }

  void TearDown() override {
    db_.reset();
    fs::remove_all(dir_);
  }

  void queue_photos(int n, int width = 24, int height = 16) {
    cv::Mat rgb(height, width, CV_8UC3, cv::Scalar(40, 120, 200));
    const auto jpeg = petcam::imaging::encode(rgb, false, petcam::imaging::OutputFormat::Jpeg);
    for (int i = 0; i < n; ++i) {
      db::Photo p;
      p.id = std::string("p").append(std::to_string(i));
      p.user_id = "u1";
      p.original_path = petcam::storage::PhotoStore::original_path(p.id);
      p.status = "queued";
      p.created_at_ms = 1000 + i;
      store_->write(p.original_path, jpeg);
      db::PhotoRepository(*db_).create_with_job(p, "job-" + p.id, 3, p.created_at_ms);
    }
  }

  db::QueueCounts wait_until_done(int n, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    db::QueueCounts c;
    while (std::chrono::steady_clock::now() < deadline) {
      c = db::JobRepository(*db_).counts();
      if (c.completed + c.failed >= n) break;
      std::this_thread::sleep_for(20ms);
    }
    return c;
  }

  fs::path dir_;
  petcam::config::Settings settings_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<petcam::storage::PhotoStore> store_;
};

TEST_F(JobQueue, RunnerThreadsCompleteEveryJobOnceWhileWokenFromOtherThreads) {
  constexpr int kJobs = 12;
  queue_photos(kJobs);
  petcam::jobs::JobRunner runner(settings_, *db_, *store_);
  runner.start();
  std::atomic<bool> done{false};
  std::vector<std::thread> wakers;
  for (int t = 0; t < 2; ++t)
    wakers.emplace_back([&, t] {
      while (!done) {
        t ? runner.wake_all() : runner.wake();
        std::this_thread::sleep_for(1ms);
      }
    });
  const auto c = wait_until_done(kJobs, 300s);
  done = true;
  for (auto& t : wakers) t.join();
  runner.stop();
  EXPECT_EQ(c.completed, kJobs);
  EXPECT_EQ(c.failed + c.queued + c.processing, 0);
  for (int i = 0; i < kJobs; ++i) {
    const auto p = db::PhotoRepository(*db_).find("u1", std::string("p").append(std::to_string(i)));
    ASSERT_TRUE(p && p->upscaled_path) << i;
    const auto out = petcam::imaging::decode(store_->read(*p->upscaled_path, 1 << 20), {});
    EXPECT_EQ(out.rgb.cols, 96);
    EXPECT_EQ(out.rgb.rows, 64);
  }
}

TEST_F(JobQueue, StopFromAnotherThreadReturnsRunningJobsToTheQueue) {
  constexpr int kJobs = 30;
  queue_photos(kJobs, 160, 120);  // ~0.1 s each in a release build: most are still queued or running at the stop
  auto runner = std::make_unique<petcam::jobs::JobRunner>(settings_, *db_, *store_);
  runner->start();
  std::thread stopper([&] {
    std::this_thread::sleep_for(300ms);
    runner->stop();
  });
  stopper.join();
  const auto c = db::JobRepository(*db_).counts();
  EXPECT_EQ(c.processing, 0) << "a stopped runner leaves no job claimed";
  EXPECT_EQ(c.failed, 0);
  EXPECT_EQ(c.queued + c.completed, kJobs);
  EXPECT_GT(c.queued, 0);
  // A second runner finishes what the first returned.
  runner = std::make_unique<petcam::jobs::JobRunner>(settings_, *db_, *store_);
  runner->start();
  const auto after = wait_until_done(kJobs, 300s);
  runner->stop();
  EXPECT_EQ(after.completed, kJobs);
}

}  // namespace
