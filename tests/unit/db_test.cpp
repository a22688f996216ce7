// The database module against SQLite (a temp file) and, when PETCAM_TEST_POSTGRES_URL is set, PostgreSQL
// (each test in a schema of its own, so test processes may share one server).
#include <gtest/gtest.h>
#include <soci/soci.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "db/database.h"
#include "db/repositories.h"

namespace db = petcam::db;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kT0 = 1'700'000'000'000;  // a fixed "now", in ms
constexpr int kMigrations = 6;                   // migrations/{sqlite,postgres}/000N_*

const char* postgres_url() {
  const char* url = std::getenv("PETCAM_TEST_POSTGRES_URL");
  return url && *url ? url : nullptr;
}

std::string with_param(const std::string& url, const std::string& param) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + param;
}

class DbTest : public ::testing::TestWithParam<std::string> {
 protected:
  virtual bool migrate_in_setup() const { return true; }

  void SetUp() override {
    if (GetParam() == "Postgres") {
      const char* base = postgres_url();
      if (!base) GTEST_SKIP() << "PETCAM_TEST_POSTGRES_URL is not set";
      static std::atomic<int> counter{0};
      schema_ = "test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
      admin_url_ = base;
      run_admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
      run_admin("CREATE SCHEMA " + schema_);
      // Its own application_name too, so the test that kills connections kills only this test's.
      url_ = with_param(with_param(base, "options=-c%20search_path%3D" + schema_), "application_name=" + schema_);
    } else {
      std::string tmpl = (fs::temp_directory_path() / "petcam-db-test-XXXXXX").string();
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
      dir_ = tmpl;
      url_ = "sqlite:///" + (dir_ / "data" / "petcam.db").string();  // absolute: sqlite:////tmp/...
    }
    db_ = open(url_);
    if (migrate_in_setup()) {
      ASSERT_EQ(db::migrate_up(*db_), kMigrations);
    }
  }

  void TearDown() override {
    db_.reset();
    if (!schema_.empty()) run_admin("DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::unique_ptr<db::Database> open(const std::string& url, std::size_t pool = 8) {
    db::Options o;
    o.url = url;
    o.pool_size = pool;
    o.lease_timeout = 5s;
    return db::Database::open(o);
  }

  void run_admin(const std::string& sql) {
    auto admin = open(admin_url_, 1);
    auto lease = admin->lease();
    lease.sql() << sql;
  }

  bool postgres() const { return GetParam() == "Postgres"; }

  // Test data: a user with `n` photos (and their jobs), created one second apart.
  db::User add_user(const std::string& name) {
    db::User u{"u-" + name, name, "$argon2id$hash-of-" + name, true};
    EXPECT_TRUE(db::UserRepository(*db_).create(u, kT0).has_value());
    return u;
  }

  db::Photo add_photo(const db::User& owner, const std::string& id, std::int64_t created_at, int max_attempts = 3) {
    db::Photo p;
    p.id = id;
    p.user_id = owner.id;
    p.original_path = "storage/originals/" + id + ".jpg";
    p.status = "queued";
    p.latitude = 37.5665;
    p.longitude = 126.978;
    p.created_at_ms = created_at;
    db::PhotoRepository(*db_).create_with_job(p, "job-" + id, max_attempts, created_at);
    return p;
  }

  std::string photo_status(const db::User& owner, const std::string& photo_id) {
    auto p = db::PhotoRepository(*db_).find(owner.id, photo_id);
    return p ? p->status : "<gone>";
  }

  std::string url_, admin_url_, schema_;
  fs::path dir_;
  std::unique_ptr<db::Database> db_;
};

class DbMigrationTest : public DbTest {
 protected:
  bool migrate_in_setup() const override { return false; }
};

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Backends, DbTest, ::testing::Values("Sqlite", "Postgres"), param_name);
INSTANTIATE_TEST_SUITE_P(Backends, DbMigrationTest, ::testing::Values("Sqlite", "Postgres"), param_name);

// ---- migrations ----

TEST_P(DbMigrationTest, UpDownAndStatusAreIdempotent) {
  auto status = db::migration_status(*db_);
  ASSERT_EQ(status.size(), std::size_t{kMigrations});
  EXPECT_EQ(status[0].version, 1);
  EXPECT_EQ(status[0].name, "init");
  EXPECT_EQ(status[1].version, 2);
  EXPECT_EQ(status[1].name, "workers");
  EXPECT_EQ(status[2].version, 3);
  EXPECT_EQ(status[2].name, "results");
  EXPECT_EQ(status[3].version, 4);
  EXPECT_EQ(status[3].name, "worker_device");
  EXPECT_EQ(status[4].version, 5);
  EXPECT_EQ(status[4].name, "accounts");
  EXPECT_EQ(status[5].version, 6);
  EXPECT_EQ(status[5].name, "jobs_events");
  EXPECT_FALSE(status[0].applied);
  EXPECT_EQ(db::migrate_down(*db_, 1), 0);  // nothing applied yet, not even the bookkeeping table

  EXPECT_EQ(db::migrate_up(*db_), kMigrations);
  EXPECT_EQ(db::migrate_up(*db_), 0);
  status = db::migration_status(*db_);
  ASSERT_EQ(status.size(), std::size_t{kMigrations});
  for (const auto& m : status) EXPECT_TRUE(m.applied) << m.name;
  EXPECT_TRUE(db::UserRepository(*db_).create({"u1", "alice", "h", true}, kT0));

  EXPECT_EQ(db::migrate_down(*db_, 2), 2);  // the newest two: 0006 and 0005
  status = db::migration_status(*db_);
  EXPECT_TRUE(status[0].applied);
  EXPECT_FALSE(status[kMigrations - 2].applied || status[kMigrations - 1].applied);
  EXPECT_TRUE(db::UserRepository(*db_).exists("u1"));
  EXPECT_THROW(db::UserRepository(*db_).token_version("u1"), std::exception);  // 0005's column is gone
  EXPECT_EQ(db::migrate_up(*db_), 2);
  EXPECT_EQ(db::UserRepository(*db_).token_version("u1"), 0);  // existing users start at version 0
  EXPECT_EQ(db::migrate_down(*db_, 1), 1);                     // the newest only

  EXPECT_EQ(db::migrate_down(*db_, 10), kMigrations - 1);
  EXPECT_EQ(db::migrate_down(*db_, 1), 0);
  EXPECT_FALSE(db::migration_status(*db_)[0].applied);
  EXPECT_THROW(db::UserRepository(*db_).exists("u1"), std::exception);  // the table is gone

  EXPECT_EQ(db::migrate_up(*db_), kMigrations);
  EXPECT_FALSE(db::UserRepository(*db_).exists("u1"));
}

TEST_P(DbMigrationTest, ConcurrentStartsApplyEachMigrationOnce) {
  std::vector<std::unique_ptr<db::Database>> dbs;
  for (int i = 0; i < 4; ++i) dbs.push_back(open(url_, 2));
  std::atomic<int> applied{0};
  std::vector<std::thread> threads;
  for (auto& d : dbs) threads.emplace_back([&, p = d.get()] { applied += db::migrate_up(*p); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(applied.load(), kMigrations);
  EXPECT_TRUE(db::migration_status(*db_)[kMigrations - 1].applied);
}

// ---- users ----

TEST_P(DbTest, UserCreateFindAndDuplicate) {
  db::UserRepository users(*db_);
  const db::User alice{"11111111-1111-4111-8111-111111111111", "alice", "$argon2id$v=19$abc", true};
  auto created = users.create(alice, kT0);
  ASSERT_TRUE(created);
  EXPECT_EQ(created->id, alice.id);

  const db::User again{"22222222-2222-4222-8222-222222222222", "alice", "other", true};
  EXPECT_FALSE(users.create(again, kT0 + 1));  // taken: nullopt, not an exception
  EXPECT_FALSE(users.exists(again.id));

  auto found = users.find_by_username("alice");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, alice.id);
  EXPECT_EQ(found->password_hash, alice.password_hash);
  EXPECT_TRUE(found->is_active);
  EXPECT_FALSE(users.find_by_username("Alice"));
  EXPECT_FALSE(users.find_by_username("bob"));
  EXPECT_TRUE(users.exists(alice.id));
  EXPECT_FALSE(users.exists("nobody"));

  ASSERT_TRUE(users.create({"u-carol", "carol", "h", false}, kT0));
  EXPECT_FALSE(users.find_by_username("carol")->is_active);
}

TEST_P(DbTest, UserFieldsAndPasswordChangeBumpsTheTokenVersion) {
  db::UserRepository users(*db_);
  const auto alice = add_user("alice");
  auto found = users.find(alice.id);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->username, "alice");
  EXPECT_EQ(found->created_at_ms, kT0);
  EXPECT_EQ(found->token_version, 0);
  EXPECT_EQ(users.token_version(alice.id), 0);
  EXPECT_EQ(users.token_version("nobody"), std::nullopt);
  EXPECT_FALSE(users.find("nobody"));

  EXPECT_EQ(users.change_password(alice.id, "$argon2id$new"), 1);
  EXPECT_EQ(users.change_password(alice.id, "$argon2id$newer"), 2);
  EXPECT_EQ(users.token_version(alice.id), 2);
  EXPECT_EQ(users.find_by_username("alice")->password_hash, "$argon2id$newer");
  EXPECT_EQ(users.find_by_username("alice")->token_version, 2);
  EXPECT_EQ(users.change_password("nobody", "h"), std::nullopt);
}

TEST_P(DbTest, DeletedUserTakesPhotosAndJobsAlong) {
  db::UserRepository users(*db_);
  const auto alice = add_user("alice");
  const auto bob = add_user("bob");
  add_photo(alice, "a1", kT0);
  add_photo(alice, "a2", kT0 + 1000);
  add_photo(bob, "b1", kT0 + 2000);
  db::JobRepository jobs(*db_);
  auto running = jobs.claim("w1", kT0 + 5000, kT0 + 60'000);  // a1's job, the oldest
  ASSERT_TRUE(running);
  EXPECT_EQ(running->photo_id, "a1");
  EXPECT_EQ(users.photo_count(alice.id), 2);

  auto removed = users.remove(alice.id);
  ASSERT_TRUE(removed);
  std::sort(removed->begin(), removed->end());
  EXPECT_EQ(*removed, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_FALSE(users.exists(alice.id));
  EXPECT_FALSE(users.find_by_username("alice"));
  EXPECT_EQ(users.photo_count(alice.id), 0);
  EXPECT_FALSE(jobs.photo_exists("a1"));
  EXPECT_FALSE(jobs.photo_exists("a2"));
  EXPECT_FALSE(jobs.renew(running->id, "w1", kT0 + 90'000));  // the running job is gone with its photo
  EXPECT_FALSE(jobs.complete(running->id, "w1", "storage/upscaled/a1.jpg", kT0 + 6000));
  const auto c = jobs.counts();
  EXPECT_EQ(c.queued + c.processing, 1);  // bob's only
  EXPECT_EQ(users.photo_count(bob.id), 1);
  EXPECT_EQ(photo_status(bob, "b1"), "queued");

  EXPECT_EQ(users.remove(alice.id), std::nullopt);
  // The username is free again.
  EXPECT_TRUE(users.create({"u-alice-2", "alice", "h", true}, kT0 + 10'000));
  EXPECT_EQ(users.photo_count("u-alice-2"), 0);
}

// ---- photos ----

TEST_P(DbTest, PhotoListIsNewestFirstWithSkipAndLimit) {
  const auto alice = add_user("alice"), bob = add_user("bob");
  for (int i = 0; i < 5; ++i) add_photo(alice, "a" + std::to_string(i), kT0 + i * 1000);
  add_photo(alice, "a5", kT0 + 4000);  // same time as a4: id breaks the tie, descending
  add_photo(bob, "b0", kT0 + 10'000);

  db::PhotoRepository photos(*db_);
  auto all = photos.list(alice.id, 0, 100);
  std::vector<std::string> ids;
  for (const auto& p : all) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a5", "a4", "a3", "a2", "a1", "a0"}));

  const auto& first = all.front();
  EXPECT_EQ(first.user_id, alice.id);
  EXPECT_EQ(first.original_path, "storage/originals/a5.jpg");
  EXPECT_FALSE(first.upscaled_path);
  EXPECT_EQ(first.status, "queued");
  EXPECT_DOUBLE_EQ(first.latitude, 37.5665);
  EXPECT_DOUBLE_EQ(first.longitude, 126.978);
  EXPECT_EQ(first.created_at_ms, kT0 + 4000);
  EXPECT_FALSE(first.score);

  auto page = photos.list(alice.id, 2, 3);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].id, "a3");
  EXPECT_EQ(page[2].id, "a1");
  EXPECT_EQ(photos.list(alice.id, 5, 10).size(), 1u);
  page = photos.list(alice.id, 1, 1);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, "a4");
  EXPECT_TRUE(photos.list(alice.id, 6, 10).empty());
  EXPECT_TRUE(photos.list(alice.id, 0, 0).empty());
  EXPECT_TRUE(photos.list("nobody", 0, 100).empty());
  ASSERT_EQ(photos.list(bob.id, 0, 100).size(), 1u);
}

TEST_P(DbTest, PhotoListPagesBeyondOneBatch) {
  const auto alice = add_user("alice");
  db::PhotoRepository photos(*db_);
  db_->transaction([&](soci::session& s) {
    for (int i = 0; i < 1205; ++i) {
      std::string id = std::string("p").append(std::to_string(10000 + i));
      long long at = kT0 + i;
      s << "INSERT INTO photos (id, user_id, original_path, status, latitude, longitude, created_at)"
           " VALUES (:id, :u, 'x', 'queued', 0, 0, :at)",
          soci::use(id), soci::use(alice.id), soci::use(at);
    }
  });
  auto all = photos.list(alice.id, 3, 1500);
  ASSERT_EQ(all.size(), 1202u);
  EXPECT_EQ(all.front().id, "p11201");
  EXPECT_EQ(all.back().id, "p10000");
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end(),
                             [](const auto& a, const auto& b) { return a.created_at_ms > b.created_at_ms; }));
}

// Progress, error and times follow the job; every change is announced (SQLite: in this process, after commit).
TEST_P(DbTest, ProgressErrorsTimesAndChangesFollowTheJob) {
  std::vector<db::PhotoChange> heard;
  std::mutex heard_mutex;
  if (!postgres())  // PostgreSQL delivers through LISTEN, which the service tests cover
    db_->on_photo_change([&](const db::PhotoChange& c) {
      std::lock_guard lock(heard_mutex);
      heard.push_back(c);
    });
  const auto alice = add_user("alice");
  add_photo(alice, "p1", kT0, 1);
  db::JobRepository jobs(*db_);
  db::PhotoRepository photos(*db_);
  auto p = photos.find(alice.id, "p1");
  ASSERT_TRUE(p);
  EXPECT_DOUBLE_EQ(p->progress, 0.0);
  EXPECT_FALSE(p->started_at_ms || p->completed_at_ms || p->error);

  const auto job = jobs.claim("w1", kT0 + 10, kT0 + 60'000);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->user_id, alice.id);
  EXPECT_TRUE(jobs.progress("p1", 0.5));
  EXPECT_TRUE(jobs.progress("p1", 0.25));  // never lowered
  p = photos.find(alice.id, "p1");
  EXPECT_DOUBLE_EQ(p->progress, 0.5);
  EXPECT_EQ(p->started_at_ms, kT0 + 10);
  EXPECT_FALSE(jobs.progress("no-such-photo", 0.5));

  EXPECT_EQ(
      jobs.fail(job->id, "w1", "decode: libjpeg said X at /tmp/x", kT0 + 20, kT0 + 30, "Image could not be decoded"),
      db::FailOutcome::Failed);
  p = photos.find(alice.id, "p1");
  EXPECT_EQ(p->status, "failed");
  EXPECT_EQ(p->error, "Image could not be decoded");
  EXPECT_EQ(p->completed_at_ms, kT0 + 20);

  add_photo(alice, "p2", kT0 + 1);
  const auto job2 = jobs.claim("w1", kT0 + 40, kT0 + 60'000);
  ASSERT_TRUE(job2);
  EXPECT_TRUE(jobs.complete(job2->id, "w1", "storage/upscaled/p2.jpg", kT0 + 50, "x4fast", 10, 8, 8));
  p = photos.find(alice.id, "p2");
  EXPECT_DOUBLE_EQ(p->progress, 1.0);
  EXPECT_EQ(p->completed_at_ms, kT0 + 50);
  EXPECT_FALSE(p->error);
  ASSERT_TRUE(photos.remove(alice.id, "p2"));

  if (!postgres()) {
    std::lock_guard lock(heard_mutex);
    std::vector<std::string> seen;
    for (const auto& c : heard) seen.push_back(c.photo_id + (c.deleted ? "-" : "+"));
    // p1: created, claimed, progress twice (even when not raised), failed; p2: created, claimed, completed, deleted.
    EXPECT_EQ(seen, (std::vector<std::string>{"p1+", "p1+", "p1+", "p1+", "p1+", "p2+", "p2+", "p2+", "p2-"}));
    for (const auto& c : heard) EXPECT_EQ(c.user_id, alice.id);
  }
}

TEST(PhotoChange, PayloadRoundTrip) {
  db::PhotoChange c{"u-1", "p-2", true}, back;
  EXPECT_EQ(db::to_payload(c), "u-1 p-2 d");
  ASSERT_TRUE(db::from_payload(db::to_payload(c), back));
  EXPECT_EQ(back.user_id, "u-1");
  EXPECT_EQ(back.photo_id, "p-2");
  EXPECT_TRUE(back.deleted);
  for (const char* bad : {"", "u p", "u p x", "u p pp", " p p", "u  p", "u p p extra"})
    EXPECT_FALSE(db::from_payload(bad, back)) << bad;
}

TEST_P(DbTest, IdempotencyKeysClaimReplayExpireAndSweep) {
  const auto alice = add_user("alice"), bob = add_user("bob");
  db::IdempotencyRepository keys(*db_);
  const auto day = 24ll * 3600 * 1000;
  EXPECT_FALSE(keys.claim(alice.id, "k", "fp1", "i1", kT0, kT0 - day, kT0 - 120'000));  // ours
  auto seen = keys.claim(alice.id, "k", "fp1", "i1", kT0 + 1, kT0 + 1 - day, kT0 - 120'000);
  ASSERT_TRUE(seen);  // in flight
  EXPECT_EQ(seen->fingerprint, "fp1");
  EXPECT_FALSE(seen->status);
  EXPECT_FALSE(keys.claim(bob.id, "k", "fp9", "i1", kT0, kT0 - day, kT0 - 120'000));  // another user: another key

  keys.finish(alice.id, "k", 200, R"({"id":"x"})");
  seen = keys.claim(alice.id, "k", "fp2", "i1", kT0 + 2, kT0 + 2 - day, kT0 - 120'000);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->status, 200);
  EXPECT_EQ(seen->body, R"({"id":"x"})");
  EXPECT_EQ(seen->fingerprint, "fp1");  // the caller answers 422 for fp2

  // Released (the request failed): free again. A stale in-flight record: taken over.
  keys.release(bob.id, "k");
  EXPECT_FALSE(keys.claim(bob.id, "k", "fp9", "i1", kT0 + 3, kT0 + 3 - day, kT0 - 120'000));
  EXPECT_FALSE(keys.claim(bob.id, "k", "fp8", "i1", kT0 + 200'000, kT0 - day, kT0 + 200'000 - 120'000));
  // Past the retention the finished record counts as absent; the sweep removes what is old.
  EXPECT_FALSE(keys.claim(alice.id, "k", "fp3", "i1", kT0 + day + 10, kT0 + 10, kT0 - 120'000));
  // A restart of the instance that held a key in flight frees it; finished ones stay.
  EXPECT_FALSE(keys.claim(bob.id, "k2", "fp7", "i2", kT0 + 4, kT0 + 4 - day, kT0 - 120'000));
  EXPECT_EQ(keys.release_owned("i2"), 1);
  EXPECT_FALSE(keys.claim(bob.id, "k2", "fp7", "i3", kT0 + 5, kT0 + 5 - day, kT0 - 120'000));
  keys.finish(bob.id, "k2", 200, "{}");
  EXPECT_EQ(keys.release_owned("i3"), 0);   // finished: kept
  EXPECT_EQ(keys.release_owned("i1"), 2);   // alice's and bob's "k", both still in flight under i1
  EXPECT_EQ(keys.sweep(kT0 + 100'000), 1);  // bob's k2, created at kT0 + 5
  EXPECT_EQ(keys.sweep(kT0 + day + 11), 0);
}

// Version 2's photo fields travel from the upload through the claim to the completed row, in every read path.
TEST_P(DbTest, PhotoResultFieldsRoundTrip) {
  const auto alice = add_user("alice");
  db::Photo p;
  p.id = "p2";
  p.user_id = alice.id;
  p.original_path = "storage/originals/p2.heic";
  p.created_at_ms = kT0;
  p.outscale = 2.5;
  p.format = "webp";
  p.width = 4032;
  p.height = 3024;
  db::PhotoRepository photos(*db_);
  photos.create_with_job(p, "job-p2", 3, kT0);

  db::JobRepository jobs(*db_);
  const auto job = jobs.claim("w1", kT0, kT0 + 60'000);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->original_path, "storage/originals/p2.heic");
  EXPECT_DOUBLE_EQ(job->outscale, 2.5);
  EXPECT_EQ(job->format, "webp");
  auto listed = photos.list(alice.id, 0, 10);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_FALSE(listed[0].upscaled_width);
  ASSERT_TRUE(jobs.complete(job->id, "w1", "storage/upscaled/p2.webp", kT0 + 1, "x4fast", 5, 10080, 7560));

  for (const auto& got : {*photos.find(alice.id, "p2"), photos.list(alice.id, 0, 10).at(0)}) {
    EXPECT_DOUBLE_EQ(got.outscale, 2.5);
    EXPECT_EQ(got.format, "webp");
    EXPECT_EQ(got.width, 4032);
    EXPECT_EQ(got.height, 3024);
    EXPECT_EQ(got.upscaled_width, 10080);
    EXPECT_EQ(got.upscaled_height, 7560);
    EXPECT_EQ(got.upscaled_path, "storage/upscaled/p2.webp");
  }
  const auto removed = photos.remove(alice.id, "p2");
  ASSERT_TRUE(removed);
  EXPECT_EQ(removed->format, "webp");

  // The seed's defaults for a photo stored without the new fields.
  db::Photo old;
  old.id = "p1";
  old.user_id = alice.id;
  old.original_path = "storage/originals/p1.jpg";
  old.created_at_ms = kT0;
  photos.create_with_job(old, "job-p1", 3, kT0);
  const auto got = photos.find(alice.id, "p1");
  ASSERT_TRUE(got);
  EXPECT_DOUBLE_EQ(got->outscale, 4.0);
  EXPECT_EQ(got->format, "jpeg");
  EXPECT_FALSE(got->width);
  EXPECT_FALSE(got->upscaled_height);
}

TEST_P(DbTest, PhotoScoreAndOwnership) {
  const auto alice = add_user("alice"), bob = add_user("bob");
  db::Photo p;
  p.id = "best";
  p.user_id = alice.id;
  p.original_path = "storage/originals/best.jpg";
  p.latitude = -33.8688;
  p.longitude = 151.2093;
  p.created_at_ms = kT0;
  p.score = 1234.5;
  db::PhotoRepository photos(*db_);
  photos.create_with_job(p, "job-best", 3, kT0);

  auto found = photos.find(alice.id, "best");
  ASSERT_TRUE(found);
  ASSERT_TRUE(found->score);
  EXPECT_DOUBLE_EQ(*found->score, 1234.5);
  EXPECT_DOUBLE_EQ(found->latitude, -33.8688);

  // Another user's id looks exactly like a missing one.
  EXPECT_FALSE(photos.find(bob.id, "best"));
  EXPECT_FALSE(photos.remove(bob.id, "best"));
  EXPECT_TRUE(photos.find(alice.id, "best"));
  EXPECT_EQ(db::JobRepository(*db_).counts().queued, 1);

  auto removed = photos.remove(alice.id, "best");
  ASSERT_TRUE(removed);
  EXPECT_EQ(removed->original_path, "storage/originals/best.jpg");
  EXPECT_FALSE(photos.find(alice.id, "best"));
  EXPECT_FALSE(photos.remove(alice.id, "best"));
  EXPECT_EQ(db::JobRepository(*db_).counts().queued, 0);  // the job went with it
}

TEST_P(DbTest, FailedTransactionLeavesNothing) {
  const auto alice = add_user("alice");
  add_photo(alice, "dup", kT0);
  db::Photo p;
  p.id = "fresh";
  p.user_id = alice.id;
  p.original_path = "x";
  // The job id is taken: the photo insert before it must be rolled back too.
  EXPECT_THROW(db::PhotoRepository(*db_).create_with_job(p, "job-dup", 3, kT0), std::exception);
  EXPECT_FALSE(db::PhotoRepository(*db_).find(alice.id, "fresh"));
  EXPECT_THROW(db_->transaction([](soci::session&) { throw std::runtime_error("boom"); }), std::runtime_error);
  EXPECT_TRUE(db_->ping());
  EXPECT_EQ(db::PhotoRepository(*db_).list(alice.id, 0, 10).size(), 1u);
}

// ---- jobs ----

TEST_P(DbTest, ClaimTakesTheOldestRunnableJob) {
  const auto alice = add_user("alice");
  add_photo(alice, "second", kT0 + 2000);
  add_photo(alice, "first", kT0 + 1000);
  add_photo(alice, "later", kT0 + 500);
  db::JobRepository jobs(*db_);
  // "later" may only run at T0 + 60 s (as a retry would be scheduled).
  db_->transaction([](soci::session& s) { s << "UPDATE jobs SET run_at = 1700000060000 WHERE id = 'job-later'"; });

  const std::int64_t now = kT0 + 5000;
  auto j1 = jobs.claim("w1", now, now + 30'000);
  ASSERT_TRUE(j1);
  EXPECT_EQ(j1->id, "job-first");
  EXPECT_EQ(j1->photo_id, "first");
  EXPECT_EQ(j1->original_path, "storage/originals/first.jpg");
  EXPECT_EQ(j1->attempts, 1);
  EXPECT_EQ(j1->max_attempts, 3);
  EXPECT_EQ(photo_status(alice, "first"), "processing");

  auto j2 = jobs.claim("w2", now, now + 30'000);
  ASSERT_TRUE(j2);
  EXPECT_EQ(j2->id, "job-second");
  EXPECT_FALSE(jobs.claim("w3", now, now + 30'000));  // "later" is not due yet

  auto j3 = jobs.claim("w3", kT0 + 60'000, kT0 + 90'000);
  ASSERT_TRUE(j3);
  EXPECT_EQ(j3->id, "job-later");

  const auto c = jobs.counts();
  EXPECT_EQ(c.queued, 0);
  EXPECT_EQ(c.processing, 3);
  EXPECT_FALSE(c.oldest_queued_ms);
}

TEST_P(DbTest, ConcurrentClaimersNeverShareAJob) {
  const auto alice = add_user("alice");
  constexpr int kJobs = 50;
  for (int i = 0; i < kJobs; ++i) add_photo(alice, std::string("p").append(std::to_string(100 + i)), kT0 + i);

  std::mutex mu;
  std::map<std::string, int> claimed;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      db::JobRepository jobs(*db_);
      const std::string worker = "w" + std::to_string(t);
      try {
        while (auto job = jobs.claim(worker, kT0 + 100'000, kT0 + 200'000)) {
          EXPECT_TRUE(jobs.complete(job->id, worker, "storage/upscaled/" + job->photo_id + ".jpg", kT0 + 100'001));
          std::lock_guard lock(mu);
          ++claimed[job->id];
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << worker << ": " << e.what();
        ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(claimed.size(), static_cast<std::size_t>(kJobs));
  for (const auto& [id, n] : claimed) EXPECT_EQ(n, 1) << id;
  const auto c = db::JobRepository(*db_).counts();
  EXPECT_EQ(c.completed, kJobs);
  EXPECT_EQ(c.queued + c.processing + c.failed, 0);
}

TEST_P(DbTest, CompleteOnlyByTheLeaseHolder) {
  const auto alice = add_user("alice");
  add_photo(alice, "p", kT0);
  db::JobRepository jobs(*db_);
  auto job = jobs.claim("w1", kT0 + 1, kT0 + 30'000);
  ASSERT_TRUE(job);

  EXPECT_FALSE(jobs.complete(job->id, "w2", "storage/upscaled/p.jpg", kT0 + 2));
  EXPECT_EQ(photo_status(alice, "p"), "processing");
  EXPECT_TRUE(jobs.renew(job->id, "w1", kT0 + 60'000));
  EXPECT_FALSE(jobs.renew(job->id, "w2", kT0 + 60'000));

  EXPECT_TRUE(jobs.complete(job->id, "w1", "storage/upscaled/p.jpg", kT0 + 3));
  auto p = db::PhotoRepository(*db_).find(alice.id, "p");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, "completed");
  EXPECT_EQ(p->upscaled_path, "storage/upscaled/p.jpg");

  EXPECT_FALSE(jobs.complete(job->id, "w1", "storage/upscaled/p.jpg", kT0 + 4));  // exactly once
  EXPECT_FALSE(jobs.renew(job->id, "w1", kT0 + 60'000));
  EXPECT_EQ(jobs.fail(job->id, "w1", "late", kT0 + 5, kT0 + 6), db::FailOutcome::LeaseLost);
  EXPECT_EQ(jobs.counts().completed, 1);
}

TEST_P(DbTest, FailRetriesThenGivesUp) {
  const auto alice = add_user("alice");
  add_photo(alice, "p", kT0, /*max_attempts=*/2);
  db::JobRepository jobs(*db_);

  auto job = jobs.claim("w1", kT0, kT0 + 30'000);
  ASSERT_TRUE(job);
  EXPECT_EQ(jobs.fail(job->id, "w2", "not mine", kT0 + 1, kT0 + 10'000), db::FailOutcome::LeaseLost);
  EXPECT_EQ(jobs.fail(job->id, "w1", "decoder fell over", kT0 + 1, kT0 + 10'000), db::FailOutcome::Retrying);
  EXPECT_EQ(photo_status(alice, "p"), "queued");
  auto c = jobs.counts();
  EXPECT_EQ(c.queued, 1);
  EXPECT_EQ(c.oldest_queued_ms, kT0);

  EXPECT_FALSE(jobs.claim("w1", kT0 + 9'999, kT0 + 40'000));  // backoff: not before retry_at
  job = jobs.claim("w1", kT0 + 10'000, kT0 + 40'000);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->attempts, 2);
  EXPECT_EQ(jobs.fail(job->id, "w1", "out of memory", kT0 + 10'001, kT0 + 20'000), db::FailOutcome::Failed);
  EXPECT_EQ(photo_status(alice, "p"), "failed");
  EXPECT_FALSE(jobs.claim("w1", kT0 + 100'000, kT0 + 130'000));
  c = jobs.counts();
  EXPECT_EQ(c.failed, 1);
  EXPECT_EQ(c.queued + c.processing + c.completed, 0);

  auto lease = db_->lease();
  std::string last_error;
  lease.sql() << "SELECT last_error FROM jobs WHERE id = :id", soci::use(job->id), soci::into(last_error);
  EXPECT_EQ(last_error, "out of memory");
}

TEST_P(DbTest, ReleaseRequeuesWithoutSpendingTheAttempt) {
  const auto alice = add_user("alice");
  add_photo(alice, "p", kT0, 1);
  db::JobRepository jobs(*db_);
  auto job = jobs.claim("w1", kT0, kT0 + 30'000);
  ASSERT_TRUE(job);
  EXPECT_FALSE(jobs.release(job->id, "w2", kT0 + 1));
  EXPECT_TRUE(jobs.release(job->id, "w1", kT0 + 1));
  EXPECT_FALSE(jobs.release(job->id, "w1", kT0 + 2));
  EXPECT_EQ(photo_status(alice, "p"), "queued");
  job = jobs.claim("w2", kT0 + 2, kT0 + 30'000);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_TRUE(jobs.complete(job->id, "w2", "up.jpg", kT0 + 3));
}

TEST_P(DbTest, RecoverExpiredLeasesAndOurPreviousLife) {
  const auto alice = add_user("alice");
  add_photo(alice, "expired", kT0);
  add_photo(alice, "mine", kT0 + 1);
  add_photo(alice, "alive", kT0 + 2);
  add_photo(alice, "lookalike", kT0 + 3);
  add_photo(alice, "spent", kT0 + 4, 1);
  db::JobRepository jobs(*db_);
  const std::int64_t now = kT0 + 100'000;
  auto claim = [&](const std::string& worker, std::int64_t until) {
    auto j = jobs.claim(worker, now, until);
    EXPECT_TRUE(j);
    return j ? j->id : std::string();
  };
  claim("host-b/w0", now + 10);                     // expired
  claim("host_a/w0", now + 1'000'000);              // this instance's previous life
  claim("host-c/w0", now + 1'000'000);              // alive elsewhere
  claim("hostxa/w0", now + 1'000'000);              // '_' in the prefix is not a wildcard
  const auto spent = claim("host-b/w1", now + 10);  // expired, and out of attempts

  EXPECT_EQ(jobs.recover(now + 5, ""), 0);  // nothing expired yet, no prefix
  EXPECT_EQ(jobs.recover(now + 20, "host_a/"), 3);
  EXPECT_EQ(photo_status(alice, "expired"), "queued");
  EXPECT_EQ(photo_status(alice, "mine"), "queued");
  EXPECT_EQ(photo_status(alice, "alive"), "processing");
  EXPECT_EQ(photo_status(alice, "lookalike"), "processing");
  EXPECT_EQ(photo_status(alice, "spent"), "failed");
  auto c = jobs.counts();
  EXPECT_EQ(c.queued, 2);
  EXPECT_EQ(c.processing, 2);
  EXPECT_EQ(c.failed, 1);

  // The old owner's late answers are refused; the requeued jobs run again now.
  EXPECT_FALSE(jobs.complete(spent, "host-b/w1", "x.jpg", now + 30));
  auto again = jobs.claim("host_a/w0", now + 20, now + 60'000);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, "job-expired");
  EXPECT_EQ(again->attempts, 2);
  EXPECT_EQ(jobs.recover(now + 21, ""), 0);
}

TEST_P(DbTest, DeletedPhotoTakesItsJobAlong) {
  const auto alice = add_user("alice");
  add_photo(alice, "p", kT0);
  db::JobRepository jobs(*db_);
  auto job = jobs.claim("w1", kT0, kT0 + 30'000);
  ASSERT_TRUE(job);
  EXPECT_TRUE(jobs.photo_exists("p"));
  ASSERT_TRUE(db::PhotoRepository(*db_).remove(alice.id, "p"));
  EXPECT_FALSE(jobs.photo_exists("p"));
  EXPECT_EQ(jobs.counts().processing, 0);
  EXPECT_FALSE(jobs.renew(job->id, "w1", kT0 + 60'000));
  EXPECT_FALSE(jobs.complete(job->id, "w1", "storage/upscaled/p.jpg", kT0 + 1));  // the caller drops its file
  EXPECT_EQ(jobs.fail(job->id, "w1", "x", kT0 + 1, kT0 + 2), db::FailOutcome::LeaseLost);
  EXPECT_FALSE(jobs.release(job->id, "w1", kT0 + 1));
}

TEST_P(DbTest, WorkersAnnounceBeatAndLeave) {
  db::WorkerRepository workers(*db_);
  workers.announce({"host-a/0", "host-a", "x4fast", "cpu", "bf16"}, kT0);
  workers.announce({"host-b/0", "host-b", "x4plus", "cuda:1", "fp16"}, kT0);
  workers.announce({"host-a/0", "host-a", "x4fast", "cpu", "bf16"}, kT0 + 10);  // a restart refreshes, no duplicate
  EXPECT_EQ(workers.count_alive(kT0), 2);
  workers.heartbeat("host-b/0", kT0 + 60'000);
  EXPECT_EQ(workers.count_alive(kT0 + 30'000), 1);  // host-a stopped beating
  workers.remove("host-b/0");
  EXPECT_EQ(workers.count_alive(kT0), 1);
}

TEST_P(DbTest, CompletedJobsKeepModelAndDurationForMetrics) {
  const auto alice = add_user("alice");
  add_photo(alice, "p1", kT0);
  add_photo(alice, "p2", kT0 + 1);
  db::JobRepository jobs(*db_);
  for (std::int64_t ms : {1500, 7000}) {
    auto job = jobs.claim("w1", kT0 + 10, kT0 + 30'000);
    ASSERT_TRUE(job);
    ASSERT_TRUE(jobs.complete(job->id, "w1", "storage/upscaled/" + job->photo_id + ".jpg", kT0 + 20, "x4fast", ms));
  }
  const auto hist = jobs.durations({1, 2, 10});
  ASSERT_EQ(hist.size(), 1u);
  EXPECT_EQ(hist[0].model, "x4fast");
  EXPECT_EQ(hist[0].cumulative, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(hist[0].count, 2);
  EXPECT_DOUBLE_EQ(hist[0].sum_s, 8.5);
}

// ---- the pool ----

TEST_P(DbTest, ExhaustedPoolAnswersUnavailable) {
  db::Options o;
  o.url = url_;
  o.pool_size = 1;
  o.lease_timeout = 100ms;
  auto small = db::Database::open(o);
  {
    auto held = small->lease();
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(small->lease(), db::Unavailable);
    EXPECT_THROW(db::UserRepository(*small).exists("x"), db::Unavailable);
    EXPECT_FALSE(small->ping());
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  }
  EXPECT_TRUE(small->ping());
  EXPECT_FALSE(db::UserRepository(*small).exists("x"));
}

TEST_P(DbTest, LeaseLeftInATransactionComesBackClean) {
  const auto alice = add_user("alice");
  db::Options o;
  o.url = url_;
  o.pool_size = 1;
  auto one = db::Database::open(o);
  try {
    auto lease = one->lease();
    lease.sql() << "BEGIN";
    lease.sql() << "DELETE FROM users";
    throw std::runtime_error("caller bails out");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(db::UserRepository(*one).exists(alice.id));  // rolled back when the lease went home
  EXPECT_TRUE(db::UserRepository(*db_).exists(alice.id));
}

TEST_P(DbTest, LostConnectionsAreReplacedWithoutFailingRequests) {
  if (!postgres()) GTEST_SKIP() << "a SQLite file cannot hang up";
  const auto alice = add_user("alice");
  add_photo(alice, "p", kT0);
  ASSERT_TRUE(db_->ping());
  // What a server restart does to every pooled connection.
  {
    auto admin = open(admin_url_, 1);
    auto lease = admin->lease();
    lease.sql() << "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                   " AND application_name = :app",
        soci::use(schema_);
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(db::PhotoRepository(*db_).list(alice.id, 0, 10).size(), 1u);  // retried on a fresh connection
  auto job = db::JobRepository(*db_).claim("w1", kT0, kT0 + 1000);        // BEGIN retried likewise
  ASSERT_TRUE(job);
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(db_->ping());
  EXPECT_TRUE(db::JobRepository(*db_).complete(job->id, "w1", "u.jpg", kT0 + 1));
}

// ---- URLs ----

TEST(DbUrl, RejectsWhatItCannotUse) {
  auto open = [](const std::string& url) {
    db::Options o;
    o.url = url;
    return db::Database::open(o);
  };
  EXPECT_THROW(open("mysql://u:p@localhost/db"), db::ConfigError);
  EXPECT_THROW(open("petcam.db"), db::ConfigError);
  EXPECT_THROW(open("sqlite://relative.db"), db::ConfigError);
  EXPECT_THROW(open("sqlite:///"), db::ConfigError);
  EXPECT_THROW(open("postgresql://u:p@localhost:99999/db"), db::ConfigError);
  EXPECT_THROW(open("postgresql://u:p%zz@localhost/db"), db::ConfigError);
  try {
    open("mysql://u:p@localhost/db");
  } catch (const db::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("mysql"), std::string::npos);
  }
  // Nobody listens on port 1: unreachable, quickly, and the password stays out of the message.
  try {
    open("postgresql://petcam:s3cret@127.0.0.1:1/petcam");
    ADD_FAILURE() << "connected to port 1?";
  } catch (const db::Unavailable& e) {
    EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos) << e.what();
  }
}

TEST(DbUrl, SqliteRelativePathCreatesItsDirectoryAndMemoryWorks) {
  std::string tmpl = (fs::temp_directory_path() / "petcam-db-url-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const fs::path dir = tmpl;
  const auto cwd = fs::current_path();
  fs::current_path(dir);
  {
    db::Options o;
    o.url = "sqlite:///nested/dir/petcam.db";
    auto d = db::Database::open(o);
    EXPECT_EQ(d->backend(), db::Backend::Sqlite);
    EXPECT_EQ(db::migrate_up(*d), kMigrations);
    auto lease = d->lease();
    std::string mode;
    int fk = 0;
    lease.sql() << "PRAGMA journal_mode", soci::into(mode);
    lease.sql() << "PRAGMA foreign_keys", soci::into(fk);
    EXPECT_EQ(mode, "wal");
    EXPECT_EQ(fk, 1);
  }
  EXPECT_TRUE(fs::exists(dir / "nested" / "dir" / "petcam.db"));
  fs::current_path(cwd);
  fs::remove_all(dir);

  db::Options o;
  o.url = "sqlite:///:memory:";
  auto mem = db::Database::open(o);
  EXPECT_EQ(db::migrate_up(*mem), kMigrations);
  EXPECT_TRUE(db::UserRepository(*mem).create({"u", "alice", "h", true}, kT0));
  EXPECT_TRUE(db::UserRepository(*mem).exists("u"));
}

TEST(DbUrl, PostgresUrlWithEncodedCredentials) {
  const char* base = postgres_url();
  if (!base) GTEST_SKIP() << "PETCAM_TEST_POSTGRES_URL is not set";
  // The test server trusts everyone, so any password works: what matters is that odd characters survive.
  std::string url = base;
  const auto at = url.find('@');
  ASSERT_NE(at, std::string::npos);
  url.insert(at, ":p%40ss%20w%3Ard%27%5C");
  url.replace(0, url.find("://"), "postgres");
  db::Options o;
  o.url = with_param(url, "application_name=petcam%20test");
  auto d = db::Database::open(o);
  EXPECT_EQ(d->backend(), db::Backend::Postgres);
  auto lease = d->lease();
  std::string tz, app;
  lease.sql() << "SHOW TIME ZONE", soci::into(tz);
  lease.sql() << "SHOW application_name", soci::into(app);
  EXPECT_EQ(tz, "UTC");
  EXPECT_EQ(app, "petcam test");
}
