// Users, photos and jobs. Times are Unix milliseconds (UTC) from the caller's clock; ids are UUID strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.h"

namespace petcam::db {

struct User {
  std::string id;
  std::string username;
  std::string password_hash;
  bool is_active = true;
  std::int64_t created_at_ms = 0;  // filled by reads (create takes its time separately)
  std::int64_t token_version = 0;  // a token counts only while its `ver` equals this
};

struct Photo {
  std::string id;
  std::string user_id;
  std::string original_path;                 // storage-relative, e.g. storage/originals/<id>.jpg
  std::optional<std::string> upscaled_path;  // set when the job completes
  std::string status;                        // queued | processing | completed | failed
  double latitude = 0.0;
  double longitude = 0.0;
  std::int64_t created_at_ms = 0;
  std::optional<double> score;       // best cut's sharpness, when chosen by /bestcut
  double outscale = 4.0;             // the result is round(width x outscale) x round(height x outscale)
  std::string format = "jpeg";       // of the result: jpeg | png | webp
  std::optional<int> width, height;  // the oriented original; unknown for rows before 0003
  std::optional<int> upscaled_width, upscaled_height;  // set when completed
  double progress = 0.0;                               // 0 queued, rising while processing, 1 completed
  std::optional<std::string> error;                    // for failed: a reason a person can act on
  std::optional<std::int64_t> started_at_ms;           // the latest attempt's start
  std::optional<std::int64_t> completed_at_ms;         // completed or failed
};

class UserRepository {
 public:
  explicit UserRepository(Database& db) : db_(db) {}
  // nullopt when the username is taken (unique constraint), never a duplicate row.
  std::optional<User> create(const User& user, std::int64_t now_ms);
  std::optional<User> find_by_username(const std::string& username);
  std::optional<User> find(const std::string& id);
  bool exists(const std::string& id);
  // The user's token version; nullopt when there is no such user.
  std::optional<std::int64_t> token_version(const std::string& id);
  std::int64_t photo_count(const std::string& id);
  // New hash and token version + 1 (every token issued before stops counting); the new version, or
  // nullopt when the user is gone.
  std::optional<std::int64_t> change_password(const std::string& id, const std::string& password_hash);
  // The user, their photos and jobs in one transaction; the ids of the photos that were deleted (the caller
  // removes their files after this returns), or nullopt when there is no such user.
  std::optional<std::vector<std::string>> remove(const std::string& id);

 private:
  Database& db_;
};

// Idempotency-Key records: the first request with a key claims it, then stores its answer; requests with the
// same key from the same user within the retention get that answer again.
struct IdempotencyRecord {
  std::string fingerprint;
  std::optional<int> status;  // nullopt: the first request is still being handled
  std::string body;
  std::int64_t created_at_ms = 0;
};

class IdempotencyRepository {
 public:
  explicit IdempotencyRepository(Database& db) : db_(db) {}
  // Claims the key for this request (nullopt), or gives the record already there. Records older than
  // `expired_before_ms`, and in-flight ones older than `stale_before_ms` (their process died before it
  // committed anything), count as absent and are taken over.
  // `owner`: this process's INSTANCE_ID, so that its next life frees what it left in flight.
  std::optional<IdempotencyRecord> claim(const std::string& user_id, const std::string& key,
                                         const std::string& fingerprint, const std::string& owner, std::int64_t now_ms,
                                         std::int64_t expired_before_ms, std::int64_t stale_before_ms);
  void finish(const std::string& user_id, const std::string& key, int status, const std::string& body);
  void release(const std::string& user_id, const std::string& key);  // the request failed: the key is free again
  int sweep(std::int64_t expired_before_ms);                         // removes expired records; returns how many
  // At start: the keys a previous life of this instance left in flight (it died before committing) are free.
  int release_owned(const std::string& owner);

 private:
  Database& db_;
};

class PhotoRepository {
 public:
  explicit PhotoRepository(Database& db) : db_(db) {}
  // Photo (status queued) and its job in one transaction; with `idempotency`, that key's record is finished
  // with this answer in the same transaction, so a crash cannot leave a photo whose key says "in flight".
  struct Answer {
    std::string key;
    int status = 200;
    std::string body;
  };
  void create_with_job(const Photo& photo, const std::string& job_id, int max_attempts, std::int64_t now_ms,
                       const Answer* idempotency = nullptr);
  // The owner's photos, newest first (created_at DESC, id DESC).
  std::vector<Photo> list(const std::string& user_id, std::int64_t skip, std::int64_t limit);
  std::optional<Photo> find(const std::string& user_id, const std::string& photo_id);
  // Deletes the row (its job goes with it, ON DELETE CASCADE) and returns it, so the caller removes files.
  std::optional<Photo> remove(const std::string& user_id, const std::string& photo_id);

 private:
  Database& db_;
};

struct ClaimedJob {
  std::string id;
  std::string photo_id;
  std::string user_id;
  std::string original_path;
  double outscale = 4.0;
  std::string format = "jpeg";
  int attempts = 0;  // including this claim
  int max_attempts = 0;
};

enum class FailOutcome { Retrying, Failed, LeaseLost };

struct QueueCounts {
  std::int64_t queued = 0, processing = 0, completed = 0, failed = 0;
  std::optional<std::int64_t> oldest_queued_ms;  // created_at of the oldest queued job
};

class JobRepository {
 public:
  explicit JobRepository(Database& db) : db_(db) {}
  // Takes the oldest runnable job (state queued, run_at <= now): state processing, attempts + 1,
  // lease_owner = worker, lease_expires_at = lease_until; the photo becomes processing. Atomic against
  // other workers: FOR UPDATE SKIP LOCKED on PostgreSQL, one UPDATE ... RETURNING on SQLite.
  std::optional<ClaimedJob> claim(const std::string& worker, std::int64_t now_ms, std::int64_t lease_until_ms);
  // Extends the lease while the job runs; false when the job is no longer ours (lost or deleted).
  bool renew(const std::string& job_id, const std::string& worker, std::int64_t lease_until_ms);
  // Only if still ours and processing: job completed, photo completed with its upscaled_path. False
  // otherwise (the photo was deleted or the lease went to another worker): the caller removes its file.
  // `model` and `duration_ms` are kept on the job for /metrics; the result's size (0: unknown) on the photo.
  bool complete(const std::string& job_id, const std::string& worker, const std::string& upscaled_path,
                std::int64_t now_ms, const std::string& model = {}, std::int64_t duration_ms = 0,
                int upscaled_width = 0, int upscaled_height = 0);
  // attempts < max_attempts: back to queued with run_at = retry_at_ms, photo queued; otherwise job and
  // photo failed, the photo's `error` = `reason` (for people; `error` is for the log). last_error kept either way.
  FailOutcome fail(const std::string& job_id, const std::string& worker, const std::string& error, std::int64_t now_ms,
                   std::int64_t retry_at_ms, const std::string& reason = "Processing failed");
  // The processing photo's progress (0..1, never lowered); false when the photo is gone (deleted).
  bool progress(const std::string& photo_id, double progress);
  // Back to queued without spending the attempt (graceful stop).
  bool release(const std::string& job_id, const std::string& worker, std::int64_t now_ms);
  // Jobs left processing by a crash: those whose lease expired, plus any held by a worker name starting
  // with owner_prefix (this instance's previous life). Requeued, or failed when out of attempts.
  // Returns how many were recovered.
  int recover(std::int64_t now_ms, const std::string& owner_prefix);
  QueueCounts counts();
  // Completed jobs' durations per model, bucketed (cumulative counts per upper bound, as Prometheus wants).
  struct DurationHistogram {
    std::string model;
    std::vector<std::int64_t> cumulative;  // one per bound
    std::int64_t count = 0;
    double sum_s = 0;
  };
  std::vector<DurationHistogram> durations(const std::vector<double>& bounds_s);
  // Whether the photo row is still there (a job whose complete() failed removes its output only if not).
  bool photo_exists(const std::string& photo_id);

 private:
  Database& db_;
};

struct WorkerInfo {
  std::string id;  // <INSTANCE_ID>/<thread>
  std::string host;
  std::string model;
  std::string device;     // where it runs: "cpu", "cuda:0", ...
  std::string precision;  // "fp16", "bf16", "fp32"
};

// Job workers announce themselves, beat while alive and leave on a clean stop.
class WorkerRepository {
 public:
  explicit WorkerRepository(Database& db) : db_(db) {}
  void announce(const WorkerInfo& w, std::int64_t now_ms);  // insert or refresh
  void heartbeat(const std::string& id, std::int64_t now_ms);
  void remove(const std::string& id);
  // Workers whose last heartbeat is at or after `since_ms`.
  std::int64_t count_alive(std::int64_t since_ms);

 private:
  Database& db_;
};

}  // namespace petcam::db
