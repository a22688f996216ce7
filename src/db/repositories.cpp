#include "db/repositories.h"

#include <libpq-fe.h>
#include <soci/soci.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>

#include "db/internal.h"

namespace petcam::db {

namespace {

// ---- SQL (the same text on both backends unless named otherwise) ----
// SOCI binds placeholders by position, so a value needed twice appears under two names.

constexpr const char* kInsertUser =
    "INSERT INTO users (id, username, password_hash, is_active, created_at)"
    " VALUES (:id, :username, :password_hash, :is_active, :created_at)"
    " ON CONFLICT (username) DO NOTHING RETURNING id";
// Booleans come back as 0/1 from both backends this way (SQLite has no boolean type).
#define PETCAM_USER_COLUMNS \
  "id, username, password_hash, CASE WHEN is_active THEN 1 ELSE 0 END, created_at, token_version"
constexpr const char* kFindUserByName = "SELECT " PETCAM_USER_COLUMNS " FROM users WHERE username = :username";
constexpr const char* kFindUserById = "SELECT " PETCAM_USER_COLUMNS " FROM users WHERE id = :id";
#undef PETCAM_USER_COLUMNS
constexpr const char* kCountUserById = "SELECT COUNT(*) FROM users WHERE id = :id";
constexpr const char* kUserTokenVersion = "SELECT token_version FROM users WHERE id = :id";
constexpr const char* kCountPhotosOfUser = "SELECT COUNT(*) FROM photos WHERE user_id = :user_id";
constexpr const char* kChangePassword =
    "UPDATE users SET password_hash = :password_hash, token_version = token_version + 1 WHERE id = :id"
    " RETURNING token_version";
// Deleting an account. The user row is locked first (PostgreSQL), so no upload can add a photo meanwhile (its
// insert needs a share lock on the user); then jobs before photos, the order every other writer locks them in.
constexpr const char* kLockUserPostgres = "SELECT id FROM users WHERE id = :id FOR UPDATE";
constexpr const char* kLockUserSqlite = "SELECT id FROM users WHERE id = :id";  // BEGIN IMMEDIATE holds the lock
constexpr const char* kDeleteJobsOfUser =
    "DELETE FROM jobs WHERE photo_id IN (SELECT id FROM photos WHERE user_id = :user_id)";
constexpr const char* kDeletePhotosOfUser = "DELETE FROM photos WHERE user_id = :user_id RETURNING id";
constexpr const char* kDeleteUser = "DELETE FROM users WHERE id = :id";

#define PETCAM_PHOTO_COLUMNS                                                                                     \
  "id, user_id, original_path, upscaled_path, status, latitude, longitude, created_at, score, outscale, format," \
  " width, height, upscaled_width, upscaled_height, progress, error, started_at, completed_at"
constexpr const char* kInsertPhoto =
    "INSERT INTO photos (id, user_id, original_path, upscaled_path, status, latitude, longitude, score, created_at,"
    " outscale, format, width, height)"
    " VALUES (:id, :user_id, :original_path, :upscaled_path, 'queued', :latitude, :longitude, :score, :created_at,"
    " :outscale, :format, :width, :height)";
constexpr const char* kInsertJob =
    "INSERT INTO jobs (id, photo_id, kind, state, attempts, max_attempts, run_at, created_at, updated_at)"
    " VALUES (:id, :photo_id, 'upscale', 'queued', 0, :max_attempts, :run_at, :created_at, :updated_at)";
constexpr const char* kListPhotos = "SELECT " PETCAM_PHOTO_COLUMNS
                                    " FROM photos WHERE user_id = :user_id"
                                    " ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :skip";
constexpr const char* kFindPhoto =
    "SELECT " PETCAM_PHOTO_COLUMNS " FROM photos WHERE id = :photo_id AND user_id = :user_id";
// The job goes first, explicitly: every writer locks a job before its photo, so none waits on the other in a cycle.
constexpr const char* kDeleteJobOfPhoto =
    "DELETE FROM jobs WHERE photo_id = (SELECT id FROM photos WHERE id = :photo_id AND user_id = :user_id)";
constexpr const char* kDeletePhoto =
    "DELETE FROM photos WHERE id = :photo_id AND user_id = :user_id RETURNING " PETCAM_PHOTO_COLUMNS;
#undef PETCAM_PHOTO_COLUMNS

#define PETCAM_CLAIM_SET                                                                  \
  "UPDATE jobs SET state = 'processing', attempts = attempts + 1, lease_owner = :worker," \
  " lease_expires_at = :lease_until, updated_at = :now"                                   \
  " WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND run_at <= :runnable_at"    \
  " ORDER BY run_at, created_at LIMIT 1"
constexpr const char* kClaimJobPostgres =
    PETCAM_CLAIM_SET " FOR UPDATE SKIP LOCKED) RETURNING id, photo_id, attempts, max_attempts";
// SQLite: BEGIN IMMEDIATE already holds the only write lock.
constexpr const char* kClaimJobSqlite = PETCAM_CLAIM_SET ") RETURNING id, photo_id, attempts, max_attempts";
#undef PETCAM_CLAIM_SET
constexpr const char* kMarkPhotoProcessing =
    "UPDATE photos SET status = 'processing', progress = 0, error = NULL, started_at = :now, completed_at = NULL"
    " WHERE id = :photo_id RETURNING original_path, outscale, format, user_id";
constexpr const char* kPhotoProgress =
    "UPDATE photos SET progress = CASE WHEN progress < :progress THEN :progress2 ELSE progress END"
    " WHERE id = :photo_id RETURNING user_id, status";

#define PETCAM_OURS " WHERE id = :job_id AND lease_owner = :worker AND state = 'processing'"
constexpr const char* kRenewLease = "UPDATE jobs SET lease_expires_at = :lease_until" PETCAM_OURS " RETURNING id";
constexpr const char* kCompleteJob =
    "UPDATE jobs SET state = 'completed', lease_expires_at = NULL, completed_at = :completed_at,"
    " updated_at = :now, model = :model, duration_ms = :duration_ms" PETCAM_OURS " RETURNING photo_id";
constexpr const char* kCompletePhoto =
    "UPDATE photos SET status = 'completed', upscaled_path = :upscaled_path, upscaled_width = :upscaled_width,"
    " upscaled_height = :upscaled_height, progress = 1, error = NULL, completed_at = :now WHERE id = :photo_id"
    " RETURNING user_id";
// CASE arms see the row as it was; CASTs give PostgreSQL a type for parameters that have no column to infer from.
constexpr const char* kFailJob =
    "UPDATE jobs SET"
    " state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,"
    " run_at = CASE WHEN attempts < max_attempts THEN CAST(:retry_at AS BIGINT) ELSE run_at END,"
    " completed_at = CASE WHEN attempts < max_attempts THEN NULL ELSE CAST(:failed_at AS BIGINT) END,"
    " lease_owner = NULL, lease_expires_at = NULL, last_error = :error, updated_at = :now" PETCAM_OURS
    " RETURNING photo_id, state";
constexpr const char* kReleaseJob =
    "UPDATE jobs SET state = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = :now" PETCAM_OURS " RETURNING photo_id";
#undef PETCAM_OURS
// The photo follows its job: queued again (progress back to 0), or failed with a reason for people.
constexpr const char* kPhotoQueued =
    "UPDATE photos SET status = 'queued', progress = 0, error = NULL, completed_at = NULL WHERE id = :photo_id"
    " RETURNING user_id";
constexpr const char* kPhotoFailed =
    "UPDATE photos SET status = 'failed', error = :error, completed_at = :now WHERE id = :photo_id RETURNING user_id";
// PostgreSQL: delivered with the transaction's COMMIT to every process's listener (db/notifications.h).
constexpr const char* kNotifyPhoto = "SELECT pg_notify('petcam_photos', :payload)";
constexpr const char* kClaimKey =
    "INSERT INTO idempotency_keys (user_id, idem_key, fingerprint, owner, created_at) VALUES (:user_id, :idem_key,"
    " :fingerprint, :owner, :created_at) ON CONFLICT (user_id, idem_key) DO NOTHING RETURNING created_at";
constexpr const char* kFindKey =
    "SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE user_id = :user_id AND idem_key = :k";
constexpr const char* kReplaceExpiredKey =
    "UPDATE idempotency_keys SET fingerprint = :fingerprint, owner = :owner, status = NULL, body = NULL,"
    " created_at = :now"
    " WHERE user_id = :user_id AND idem_key = :k"
    " AND (created_at < :expired_before OR (status IS NULL AND created_at < :stale_before)) RETURNING created_at";
constexpr const char* kFinishKey =
    "UPDATE idempotency_keys SET status = :status, body = :body WHERE user_id = :user_id AND idem_key = :k";
constexpr const char* kReleaseKey =
    "DELETE FROM idempotency_keys WHERE user_id = :user_id AND idem_key = :k AND status IS NULL";
constexpr const char* kSweepKeys = "DELETE FROM idempotency_keys WHERE created_at < :expired_before";
constexpr const char* kReleaseOwnedKeys = "DELETE FROM idempotency_keys WHERE owner = :owner AND status IS NULL";
// A NULL owner pattern matches nothing, so an empty prefix recovers only expired leases.
constexpr const char* kRecoverJobs =
    "UPDATE jobs SET"
    " state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'failed' END,"
    " run_at = CASE WHEN attempts < max_attempts THEN CAST(:retry_at AS BIGINT) ELSE run_at END,"
    " completed_at = CASE WHEN attempts < max_attempts THEN NULL ELSE CAST(:failed_at AS BIGINT) END,"
    " lease_owner = NULL, lease_expires_at = NULL, last_error = 'worker lost its lease', updated_at = :now"
    " WHERE state = 'processing' AND (lease_expires_at < :expired_before OR lease_owner LIKE :owner_pattern ESCAPE '!')"
    " RETURNING photo_id, state";
// Workers are woken by this channel when a job is queued or returned (PostgreSQL only; SQLite polls).
constexpr const char* kNotifyJobs = "NOTIFY petcam_jobs";
constexpr const char* kUpsertWorker =
    "INSERT INTO workers (id, host, model, device, precision, started_at, last_heartbeat)"
    " VALUES (:id, :host, :model, :device, :precision, :started_at, :last_heartbeat)"
    " ON CONFLICT (id) DO UPDATE SET host = excluded.host, model = excluded.model, device = excluded.device,"
    " precision = excluded.precision, started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat";
constexpr const char* kWorkerHeartbeat = "UPDATE workers SET last_heartbeat = :now WHERE id = :id";
constexpr const char* kDeleteWorker = "DELETE FROM workers WHERE id = :id";
constexpr const char* kCountWorkers = "SELECT COUNT(*) FROM workers WHERE last_heartbeat >= :since";
constexpr const char* kCompletedDurations =
    "SELECT model, duration_ms FROM jobs WHERE state = 'completed' AND model IS NOT NULL AND duration_ms IS NOT NULL";
constexpr const char* kCountPhotoById = "SELECT COUNT(*) FROM photos WHERE id = :photo_id";
constexpr const char* kCountJobs =
    "SELECT COUNT(CASE WHEN state = 'queued' THEN 1 END), COUNT(CASE WHEN state = 'processing' THEN 1 END),"
    " COUNT(CASE WHEN state = 'completed' THEN 1 END), COUNT(CASE WHEN state = 'failed' THEN 1 END),"
    " MIN(CASE WHEN state = 'queued' THEN created_at END) FROM jobs";

// GET /photos is the hottest query: on PostgreSQL it runs as a statement prepared once per connection
// (parsing and planning it every time was most of the server's CPU in the benchmark).
constexpr const char* kListPhotosPreparedName = "petcam_list_photos";
constexpr const char* kListPhotosPrepared =
    "SELECT id, user_id, original_path, upscaled_path, status, latitude, longitude, created_at, score, outscale,"
    " format, width, height, upscaled_width, upscaled_height, progress, error, started_at, completed_at"
    " FROM photos WHERE user_id = $1 ORDER BY created_at DESC, "
    "id DESC LIMIT $2 OFFSET $3";

// Rows fetched per round trip when listing photos (the API's largest page).
constexpr std::int64_t kListBatch = 1000;

// One photo row, bound column by column in PETCAM_PHOTO_COLUMNS order.
struct PhotoRow {
  std::string id, user_id, original_path, upscaled_path, status, format, error;
  double latitude = 0, longitude = 0, score = 0, outscale = 4, progress = 0;
  long long created_at = 0, started_at = 0, completed_at = 0;
  int width = 0, height = 0, upscaled_width = 0, upscaled_height = 0;
  soci::indicator upscaled_ind = soci::i_null, score_ind = soci::i_null, width_ind = soci::i_null,
                  height_ind = soci::i_null, upscaled_width_ind = soci::i_null, upscaled_height_ind = soci::i_null,
                  error_ind = soci::i_null, started_ind = soci::i_null, completed_ind = soci::i_null;

  // Runs `sql` (PETCAM_PHOTO_COLUMNS from one photo, by :photo_id and :user_id) into this row; false for none.
  // The statement is gone when this returns (SQLite wants a RETURNING statement finished before COMMIT).
  bool fetch(soci::session& s, const char* sql, const std::string& photo_id, const std::string& user_id) {
    soci::statement st(s);
    st.exchange(soci::use(photo_id));
    st.exchange(soci::use(user_id));
    st.exchange(soci::into(id));
    st.exchange(soci::into(this->user_id));
    st.exchange(soci::into(original_path));
    st.exchange(soci::into(upscaled_path, upscaled_ind));
    st.exchange(soci::into(status));
    st.exchange(soci::into(latitude));
    st.exchange(soci::into(longitude));
    st.exchange(soci::into(created_at));
    st.exchange(soci::into(score, score_ind));
    st.exchange(soci::into(outscale));
    st.exchange(soci::into(format));
    st.exchange(soci::into(width, width_ind));
    st.exchange(soci::into(height, height_ind));
    st.exchange(soci::into(upscaled_width, upscaled_width_ind));
    st.exchange(soci::into(upscaled_height, upscaled_height_ind));
    st.exchange(soci::into(progress));
    st.exchange(soci::into(error, error_ind));
    st.exchange(soci::into(started_at, started_ind));
    st.exchange(soci::into(completed_at, completed_ind));
    st.alloc();
    st.prepare(sql);
    st.define_and_bind();
    return st.execute(true);
  }

  Photo photo() const {
    Photo p;
    p.id = id;
    p.user_id = user_id;
    p.original_path = original_path;
    if (upscaled_ind == soci::i_ok) p.upscaled_path = upscaled_path;
    p.status = status;
    p.latitude = latitude;
    p.longitude = longitude;
    p.created_at_ms = created_at;
    if (score_ind == soci::i_ok) p.score = score;
    p.outscale = outscale;
    p.format = format;
    if (width_ind == soci::i_ok) p.width = width;
    if (height_ind == soci::i_ok) p.height = height;
    if (upscaled_width_ind == soci::i_ok) p.upscaled_width = upscaled_width;
    if (upscaled_height_ind == soci::i_ok) p.upscaled_height = upscaled_height;
    p.progress = progress;
    if (error_ind == soci::i_ok) p.error = error;
    if (started_ind == soci::i_ok) p.started_at_ms = started_at;
    if (completed_ind == soci::i_ok) p.completed_at_ms = completed_at;
    return p;
  }
};

// LIKE pattern matching names that start with `prefix` literally.
std::string starts_with_pattern(const std::string& prefix) {
  std::string out;
  for (char c : prefix) {
    if (c == '%' || c == '_' || c == '!') out.push_back('!');
    out.push_back(c);
  }
  out.push_back('%');
  return out;
}

using PgResult = std::unique_ptr<PGresult, decltype(&PQclear)>;

std::vector<Photo> list_prepared(PGconn* conn, const std::string& user_id, long long skip, long long limit) {
  if (conn == nullptr) throw std::runtime_error("listing photos: no PostgreSQL connection");
  const std::string lim = std::to_string(limit), off = std::to_string(skip);
  const char* values[3] = {user_id.c_str(), lim.c_str(), off.c_str()};
  auto run = [&] {
    return PgResult(PQexecPrepared(conn, kListPhotosPreparedName, 3, values, nullptr, nullptr, 0), PQclear);
  };
  PgResult r = run();
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    if (state == nullptr || std::string_view(state) != "26000")  // 26000: not prepared on this connection yet
      throw std::runtime_error(std::string("listing photos: ") + PQerrorMessage(conn));
    PgResult prepared(PQprepare(conn, kListPhotosPreparedName, kListPhotosPrepared, 3, nullptr), PQclear);
    if (PQresultStatus(prepared.get()) != PGRES_COMMAND_OK)
      throw std::runtime_error(std::string("preparing the photo list: ") + PQerrorMessage(conn));
    r = run();
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
      throw std::runtime_error(std::string("listing photos: ") + PQerrorMessage(conn));
  }
  const int rows = PQntuples(r.get());
  std::vector<Photo> out(static_cast<std::size_t>(rows));
  for (int i = 0; i < rows; ++i) {
    auto& p = out[static_cast<std::size_t>(i)];
    auto text = [&](int c) {
      return std::string(PQgetvalue(r.get(), i, c), static_cast<std::size_t>(PQgetlength(r.get(), i, c)));
    };
    p.id = text(0);
    p.user_id = text(1);
    p.original_path = text(2);
    if (!PQgetisnull(r.get(), i, 3)) p.upscaled_path = text(3);
    p.status = text(4);
    p.latitude = std::strtod(PQgetvalue(r.get(), i, 5), nullptr);
    p.longitude = std::strtod(PQgetvalue(r.get(), i, 6), nullptr);
    p.created_at_ms = std::strtoll(PQgetvalue(r.get(), i, 7), nullptr, 10);
    if (!PQgetisnull(r.get(), i, 8)) p.score = std::strtod(PQgetvalue(r.get(), i, 8), nullptr);
    p.outscale = std::strtod(PQgetvalue(r.get(), i, 9), nullptr);
    p.format = text(10);
    auto optional_int = [&](int c) -> std::optional<int> {
      if (PQgetisnull(r.get(), i, c)) return std::nullopt;
      return static_cast<int>(std::strtol(PQgetvalue(r.get(), i, c), nullptr, 10));
    };
    p.width = optional_int(11);
    p.height = optional_int(12);
    p.upscaled_width = optional_int(13);
    p.upscaled_height = optional_int(14);
    p.progress = std::strtod(PQgetvalue(r.get(), i, 15), nullptr);
    if (!PQgetisnull(r.get(), i, 16)) p.error = text(16);
    if (!PQgetisnull(r.get(), i, 17)) p.started_at_ms = std::strtoll(PQgetvalue(r.get(), i, 17), nullptr, 10);
    if (!PQgetisnull(r.get(), i, 18)) p.completed_at_ms = std::strtoll(PQgetvalue(r.get(), i, 18), nullptr, 10);
  }
  return out;
}

// Photo changes made inside one transaction. PostgreSQL: NOTIFY goes with the transaction (delivered at COMMIT
// to every process's listener, this one's too). SQLite: the caller delivers them once the transaction committed.
class Changes {
 public:
  explicit Changes(Database& db) : db_(db) {}
  void reset() { pending_.clear(); }  // the transaction runs again from its start
  void add(soci::session& s, PhotoChange c) {
    if (db_.backend() == Backend::Postgres) {
      const auto payload = to_payload(c);
      s << kNotifyPhoto, soci::use(payload);
    } else {
      pending_.push_back(std::move(c));
    }
  }
  void deliver() {
    for (const auto& c : pending_) db_.deliver(c);
    pending_.clear();
  }

 private:
  Database& db_;
  std::vector<PhotoChange> pending_;
};

// The photo follows its job back to the queue, or into failure.
void photo_queued(soci::session& s, Changes& changes, const std::string& photo_id) {
  std::string user_id;
  s << kPhotoQueued, soci::use(photo_id), soci::into(user_id);
  if (s.got_data()) changes.add(s, {user_id, photo_id});
}
void photo_failed(soci::session& s, Changes& changes, const std::string& photo_id, const std::string& reason,
                  long long now) {
  std::string user_id;
  s << kPhotoFailed, soci::use(reason), soci::use(now), soci::use(photo_id), soci::into(user_id);
  if (s.got_data()) changes.add(s, {user_id, photo_id});
}

}  // namespace

// ---- users ----

std::optional<User> UserRepository::create(const User& user, std::int64_t now_ms) {
  const int active = user.is_active ? 1 : 0;
  const long long created_at = now_ms;
  // Not retried on a lost connection: the first try may have inserted, and the retry would then call it taken.
  return internal::with_session(db_, false, [&](soci::session& s) -> std::optional<User> {
    std::string id;
    soci::indicator ind = soci::i_null;
    s << kInsertUser, soci::use(user.id), soci::use(user.username), soci::use(user.password_hash), soci::use(active),
        soci::use(created_at), soci::into(id, ind);
    if (!s.got_data() || ind != soci::i_ok) return std::nullopt;  // the username is taken
    return user;
  });
}

// One user by `sql` (PETCAM_USER_COLUMNS, one parameter).
static std::optional<User> find_user(Database& db, const char* sql, const std::string& key) {
  return internal::with_session(db, true, [&](soci::session& s) -> std::optional<User> {
    User u;
    int active = 0;
    long long created_at = 0, version = 0;
    s << sql, soci::use(key), soci::into(u.id), soci::into(u.username), soci::into(u.password_hash), soci::into(active),
        soci::into(created_at), soci::into(version);
    if (!s.got_data()) return std::nullopt;
    u.is_active = active != 0;
    u.created_at_ms = created_at;
    u.token_version = version;
    return u;
  });
}

std::optional<User> UserRepository::find_by_username(const std::string& username) {
  return find_user(db_, kFindUserByName, username);
}

std::optional<User> UserRepository::find(const std::string& id) {
  return find_user(db_, kFindUserById, id);
}

std::optional<std::int64_t> UserRepository::token_version(const std::string& id) {
  return internal::with_session(db_, true, [&](soci::session& s) -> std::optional<std::int64_t> {
    long long version = 0;
    s << kUserTokenVersion, soci::use(id), soci::into(version);
    if (!s.got_data()) return std::nullopt;
    return version;
  });
}

std::int64_t UserRepository::photo_count(const std::string& id) {
  return internal::with_session(db_, true, [&](soci::session& s) {
    long long n = 0;
    s << kCountPhotosOfUser, soci::use(id), soci::into(n);
    return static_cast<std::int64_t>(n);
  });
}

std::optional<std::int64_t> UserRepository::change_password(const std::string& id, const std::string& password_hash) {
  std::optional<std::int64_t> version;
  db_.transaction([&](soci::session& s) {
    version.reset();
    long long v = 0;
    s << kChangePassword, soci::use(password_hash), soci::use(id), soci::into(v);
    if (s.got_data()) version = v;
  });
  return version;
}

std::optional<std::vector<std::string>> UserRepository::remove(const std::string& id) {
  std::optional<std::vector<std::string>> removed;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    removed.reset();
    changes.reset();
    std::string locked;
    s << (db_.backend() == Backend::Postgres ? kLockUserPostgres : kLockUserSqlite), soci::use(id), soci::into(locked);
    if (!s.got_data()) return;
    s << kDeleteJobsOfUser, soci::use(id);
    std::vector<std::string> photos;
    {
      std::string photo_id;
      soci::statement st = (s.prepare << kDeletePhotosOfUser, soci::use(id), soci::into(photo_id));
      st.execute();
      while (st.fetch()) photos.push_back(photo_id);
    }  // SQLite: the RETURNING statement is finished before the next statement and COMMIT
    s << kDeleteUser, soci::use(id);
    for (const auto& photo_id : photos) changes.add(s, {id, photo_id, true});
    removed = std::move(photos);
  });
  changes.deliver();
  return removed;
}

// Whether `count_sql` (a COUNT(*) by one id) finds a row.
static bool row_exists(Database& db, const char* count_sql, const std::string& id) {
  return internal::with_session(db, true, [&](soci::session& s) {
    long long n = 0;
    s << count_sql, soci::use(id), soci::into(n);
    return n > 0;
  });
}

bool UserRepository::exists(const std::string& id) {
  return row_exists(db_, kCountUserById, id);
}

// ---- photos ----

void PhotoRepository::create_with_job(const Photo& photo, const std::string& job_id, int max_attempts,
                                      std::int64_t now_ms, const Answer* idempotency) {
  const long long now = now_ms;
  const long long created_at = photo.created_at_ms != 0 ? photo.created_at_ms : now_ms;
  const std::string upscaled = photo.upscaled_path.value_or("");
  soci::indicator upscaled_ind = photo.upscaled_path ? soci::i_ok : soci::i_null;
  const double score = photo.score.value_or(0.0);
  soci::indicator score_ind = photo.score ? soci::i_ok : soci::i_null;
  const int width = photo.width.value_or(0), height = photo.height.value_or(0);
  soci::indicator width_ind = photo.width ? soci::i_ok : soci::i_null;
  soci::indicator height_ind = photo.height ? soci::i_ok : soci::i_null;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    changes.reset();
    s << kInsertPhoto, soci::use(photo.id), soci::use(photo.user_id), soci::use(photo.original_path),
        soci::use(upscaled, upscaled_ind), soci::use(photo.latitude), soci::use(photo.longitude),
        soci::use(score, score_ind), soci::use(created_at), soci::use(photo.outscale), soci::use(photo.format),
        soci::use(width, width_ind), soci::use(height, height_ind);
    s << kInsertJob, soci::use(job_id), soci::use(photo.id), soci::use(max_attempts), soci::use(now), soci::use(now),
        soci::use(now);
    if (idempotency)
      s << kFinishKey, soci::use(idempotency->status), soci::use(idempotency->body), soci::use(photo.user_id),
          soci::use(idempotency->key);
    changes.add(s, {photo.user_id, photo.id});
    if (db_.backend() == Backend::Postgres) s << kNotifyJobs;  // delivered at COMMIT
  });
  changes.deliver();
}

std::vector<Photo> PhotoRepository::list(const std::string& user_id, std::int64_t skip, std::int64_t limit) {
  std::vector<Photo> out;
  if (limit <= 0) return out;
  skip = std::max<std::int64_t>(skip, 0);
  if (db_.backend() == Backend::Postgres)
    return internal::with_session(db_, true, [&](soci::session& s) {
      return list_prepared(internal::postgres_connection(s), user_id, skip, limit);
    });
  // One round trip per batch: bulk fetch into column vectors.
  while (limit > 0) {
    const long long batch = std::min(limit, kListBatch);
    const long long offset = skip;
    const std::size_t got = internal::with_session(db_, true, [&](soci::session& s) -> std::size_t {
      // SOCI 4.0.3's SQLite backend fetches nothing into vectors of size 1; LIMIT still bounds the rows.
      const auto n = static_cast<std::size_t>(std::max(batch, 2LL));
      std::vector<std::string> ids(n), users(n), originals(n), upscaled(n), statuses(n), formats(n), errors(n);
      std::vector<double> lats(n), lngs(n), scores(n), outscales(n), progresses(n);
      std::vector<long long> created(n), started(n), completed(n);
      std::vector<int> widths(n), heights(n), up_widths(n), up_heights(n);
      std::vector<soci::indicator> upscaled_ind(n), score_ind(n), width_ind(n), height_ind(n), up_width_ind(n),
          up_height_ind(n), error_ind(n), started_ind(n), completed_ind(n);
      s << kListPhotos, soci::use(user_id), soci::use(batch), soci::use(offset), soci::into(ids), soci::into(users),
          soci::into(originals), soci::into(upscaled, upscaled_ind), soci::into(statuses), soci::into(lats),
          soci::into(lngs), soci::into(created), soci::into(scores, score_ind), soci::into(outscales),
          soci::into(formats), soci::into(widths, width_ind), soci::into(heights, height_ind),
          soci::into(up_widths, up_width_ind), soci::into(up_heights, up_height_ind), soci::into(progresses),
          soci::into(errors, error_ind), soci::into(started, started_ind), soci::into(completed, completed_ind);
      if (!s.got_data()) return 0;
      const std::size_t rows = ids.size();
      out.reserve(out.size() + rows);
      for (std::size_t i = 0; i < rows; ++i) {
        Photo& p = out.emplace_back();
        p.id = std::move(ids[i]);
        p.user_id = std::move(users[i]);
        p.original_path = std::move(originals[i]);
        if (upscaled_ind[i] == soci::i_ok) p.upscaled_path = std::move(upscaled[i]);
        p.status = std::move(statuses[i]);
        p.latitude = lats[i];
        p.longitude = lngs[i];
        p.created_at_ms = created[i];
        if (score_ind[i] == soci::i_ok) p.score = scores[i];
        p.outscale = outscales[i];
        p.format = std::move(formats[i]);
        if (width_ind[i] == soci::i_ok) p.width = widths[i];
        if (height_ind[i] == soci::i_ok) p.height = heights[i];
        if (up_width_ind[i] == soci::i_ok) p.upscaled_width = up_widths[i];
        if (up_height_ind[i] == soci::i_ok) p.upscaled_height = up_heights[i];
        p.progress = progresses[i];
        if (error_ind[i] == soci::i_ok) p.error = std::move(errors[i]);
        if (started_ind[i] == soci::i_ok) p.started_at_ms = started[i];
        if (completed_ind[i] == soci::i_ok) p.completed_at_ms = completed[i];
      }
      return rows;
    });
    if (got < static_cast<std::size_t>(batch)) break;
    limit -= batch;
    skip += batch;
  }
  return out;
}

std::optional<Photo> PhotoRepository::find(const std::string& user_id, const std::string& photo_id) {
  return internal::with_session(db_, true, [&](soci::session& s) -> std::optional<Photo> {
    PhotoRow r;
    if (!r.fetch(s, kFindPhoto, photo_id, user_id)) return std::nullopt;
    return r.photo();
  });
}

std::optional<Photo> PhotoRepository::remove(const std::string& user_id, const std::string& photo_id) {
  std::optional<Photo> removed;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    removed.reset();
    changes.reset();
    s << kDeleteJobOfPhoto, soci::use(photo_id), soci::use(user_id);
    PhotoRow r;
    if (r.fetch(s, kDeletePhoto, photo_id, user_id)) removed = r.photo();
    if (removed) changes.add(s, {user_id, photo_id, true});
  });
  changes.deliver();
  return removed;
}

// ---- jobs ----

std::optional<ClaimedJob> JobRepository::claim(const std::string& worker, std::int64_t now_ms,
                                               std::int64_t lease_until_ms) {
  const long long now = now_ms, until = lease_until_ms;
  const char* sql = db_.backend() == Backend::Postgres ? kClaimJobPostgres : kClaimJobSqlite;
  std::optional<ClaimedJob> claimed;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    claimed.reset();
    changes.reset();
    ClaimedJob job;
    // Each statement ends with its full expression: on SQLite a RETURNING statement must be gone before COMMIT.
    s << sql, soci::use(worker), soci::use(until), soci::use(now), soci::use(now), soci::into(job.id),
        soci::into(job.photo_id), soci::into(job.attempts), soci::into(job.max_attempts);
    if (!s.got_data()) return;
    s << kMarkPhotoProcessing, soci::use(now), soci::use(job.photo_id), soci::into(job.original_path),
        soci::into(job.outscale), soci::into(job.format), soci::into(job.user_id);
    if (!s.got_data()) throw std::runtime_error("job " + job.id + " has no photo " + job.photo_id);
    changes.add(s, {job.user_id, job.photo_id});
    claimed = std::move(job);
  });
  changes.deliver();
  return claimed;
}

bool JobRepository::renew(const std::string& job_id, const std::string& worker, std::int64_t lease_until_ms) {
  const long long until = lease_until_ms;
  return internal::with_session(db_, true, [&](soci::session& s) {
    std::string id;
    s << kRenewLease, soci::use(until), soci::use(job_id), soci::use(worker), soci::into(id);
    return s.got_data();
  });
}

bool JobRepository::complete(const std::string& job_id, const std::string& worker, const std::string& upscaled_path,
                             std::int64_t now_ms, const std::string& model, std::int64_t duration_ms,
                             int upscaled_width, int upscaled_height) {
  const long long now = now_ms, duration = duration_ms;
  soci::indicator size_ind = upscaled_width > 0 && upscaled_height > 0 ? soci::i_ok : soci::i_null;
  bool done = false;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    done = false;
    changes.reset();
    std::string photo_id, user_id;
    s << kCompleteJob, soci::use(now), soci::use(now), soci::use(model), soci::use(duration), soci::use(job_id),
        soci::use(worker), soci::into(photo_id);
    if (!s.got_data()) return;  // deleted, or no longer ours
    s << kCompletePhoto, soci::use(upscaled_path), soci::use(upscaled_width, size_ind),
        soci::use(upscaled_height, size_ind), soci::use(now), soci::use(photo_id), soci::into(user_id);
    if (s.got_data()) changes.add(s, {user_id, photo_id});
    done = true;
  });
  changes.deliver();
  return done;
}

FailOutcome JobRepository::fail(const std::string& job_id, const std::string& worker, const std::string& error,
                                std::int64_t now_ms, std::int64_t retry_at_ms, const std::string& reason) {
  const long long now = now_ms, retry_at = retry_at_ms;
  FailOutcome outcome = FailOutcome::LeaseLost;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    outcome = FailOutcome::LeaseLost;
    changes.reset();
    std::string photo_id, state;
    s << kFailJob, soci::use(retry_at), soci::use(now), soci::use(error), soci::use(now), soci::use(job_id),
        soci::use(worker), soci::into(photo_id), soci::into(state);
    if (!s.got_data()) return;
    if (state == "failed")
      photo_failed(s, changes, photo_id, reason, now);
    else
      photo_queued(s, changes, photo_id);
    outcome = state == "failed" ? FailOutcome::Failed : FailOutcome::Retrying;
  });
  changes.deliver();
  return outcome;
}

bool JobRepository::release(const std::string& job_id, const std::string& worker, std::int64_t now_ms) {
  const long long now = now_ms;
  bool released = false;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    released = false;
    changes.reset();
    std::string photo_id;
    s << kReleaseJob, soci::use(now), soci::use(job_id), soci::use(worker), soci::into(photo_id);
    if (!s.got_data()) return;
    photo_queued(s, changes, photo_id);
    if (db_.backend() == Backend::Postgres) s << kNotifyJobs;  // another process may take it now
    released = true;
  });
  changes.deliver();
  return released;
}

int JobRepository::recover(std::int64_t now_ms, const std::string& owner_prefix) {
  const long long now = now_ms;
  const std::string pattern = starts_with_pattern(owner_prefix);
  soci::indicator pattern_ind = owner_prefix.empty() ? soci::i_null : soci::i_ok;
  int recovered = 0;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    changes.reset();
    std::vector<std::pair<std::string, std::string>> photos;  // photo id, the job's new state
    {
      std::string photo_id, state;
      soci::statement st = (s.prepare << kRecoverJobs, soci::use(now), soci::use(now), soci::use(now), soci::use(now),
                            soci::use(pattern, pattern_ind), soci::into(photo_id), soci::into(state));
      st.execute();
      while (st.fetch()) photos.emplace_back(photo_id, state);
    }  // SQLite: the RETURNING statement is finished before the next statement and COMMIT
    for (const auto& [photo_id, state] : photos) {
      if (state == "failed")
        photo_failed(s, changes, photo_id, "Processing stopped too many times (its worker was lost); upload it again",
                     now);
      else
        photo_queued(s, changes, photo_id);
    }
    recovered = static_cast<int>(photos.size());
    if (recovered > 0 && db_.backend() == Backend::Postgres) s << kNotifyJobs;
  });
  changes.deliver();
  return recovered;
}

QueueCounts JobRepository::counts() {
  return internal::with_session(db_, true, [&](soci::session& s) {
    QueueCounts c;
    long long queued = 0, processing = 0, completed = 0, failed = 0, oldest = 0;
    soci::indicator oldest_ind = soci::i_null;
    s << kCountJobs, soci::into(queued), soci::into(processing), soci::into(completed), soci::into(failed),
        soci::into(oldest, oldest_ind);
    c.queued = queued;
    c.processing = processing;
    c.completed = completed;
    c.failed = failed;
    if (oldest_ind == soci::i_ok) c.oldest_queued_ms = oldest;
    return c;
  });
}

bool JobRepository::progress(const std::string& photo_id, double progress) {
  bool found = false;
  Changes changes(db_);
  db_.transaction([&](soci::session& s) {
    changes.reset();
    std::string user_id, status;
    s << kPhotoProgress, soci::use(progress), soci::use(progress), soci::use(photo_id), soci::into(user_id),
        soci::into(status);
    found = s.got_data();
    if (found) changes.add(s, {user_id, photo_id});
  });
  changes.deliver();
  return found;
}

bool JobRepository::photo_exists(const std::string& photo_id) {
  return row_exists(db_, kCountPhotoById, photo_id);
}

std::vector<JobRepository::DurationHistogram> JobRepository::durations(const std::vector<double>& bounds_s) {
  return internal::with_session(db_, true, [&](soci::session& s) {
    std::vector<DurationHistogram> out;
    std::string model;
    long long ms = 0;
    soci::statement st = (s.prepare << kCompletedDurations, soci::into(model), soci::into(ms));
    st.execute();
    while (st.fetch()) {
      auto it = std::find_if(out.begin(), out.end(), [&](const auto& h) { return h.model == model; });
      if (it == out.end()) {
        out.push_back({model, std::vector<std::int64_t>(bounds_s.size(), 0), 0, 0});
        it = std::prev(out.end());
      }
      const double secs = static_cast<double>(ms) / 1000.0;
      for (std::size_t i = 0; i < bounds_s.size(); ++i)
        if (secs <= bounds_s[i]) ++it->cumulative[i];
      ++it->count;
      it->sum_s += secs;
    }
    return out;
  });
}

// ---- idempotency keys ----

std::optional<IdempotencyRecord> IdempotencyRepository::claim(const std::string& user_id, const std::string& key,
                                                              const std::string& fingerprint, const std::string& owner,
                                                              std::int64_t now_ms, std::int64_t expired_before_ms,
                                                              std::int64_t stale_before_ms) {
  const long long now = now_ms, expired_before = expired_before_ms, stale_before = stale_before_ms;
  std::optional<IdempotencyRecord> existing;
  db_.transaction([&](soci::session& s) {
    existing.reset();
    long long created = 0;
    s << kClaimKey, soci::use(user_id), soci::use(key), soci::use(fingerprint), soci::use(owner), soci::use(now),
        soci::into(created);
    if (s.got_data()) return;  // ours now
    s << kReplaceExpiredKey, soci::use(fingerprint), soci::use(owner), soci::use(now), soci::use(user_id),
        soci::use(key), soci::use(expired_before), soci::use(stale_before), soci::into(created);
    if (s.got_data()) return;  // an expired record, taken over
    IdempotencyRecord r;
    int status = 0;
    long long created_at = 0;
    soci::indicator status_ind = soci::i_null, body_ind = soci::i_null;
    s << kFindKey, soci::use(user_id), soci::use(key), soci::into(r.fingerprint), soci::into(status, status_ind),
        soci::into(r.body, body_ind), soci::into(created_at);
    if (!s.got_data()) throw std::runtime_error("idempotency key vanished while claiming it");
    if (status_ind == soci::i_ok) r.status = status;
    r.created_at_ms = created_at;
    existing = std::move(r);
  });
  return existing;
}

void IdempotencyRepository::finish(const std::string& user_id, const std::string& key, int status,
                                   const std::string& body) {
  internal::with_session(db_, true, [&](soci::session& s) {
    s << kFinishKey, soci::use(status), soci::use(body), soci::use(user_id), soci::use(key);
  });
}

void IdempotencyRepository::release(const std::string& user_id, const std::string& key) {
  internal::with_session(db_, true, [&](soci::session& s) { s << kReleaseKey, soci::use(user_id), soci::use(key); });
}

int IdempotencyRepository::release_owned(const std::string& owner) {
  return internal::with_session(db_, true, [&](soci::session& s) {
    soci::statement st = (s.prepare << kReleaseOwnedKeys, soci::use(owner));
    st.execute(true);
    return static_cast<int>(st.get_affected_rows());
  });
}

int IdempotencyRepository::sweep(std::int64_t expired_before_ms) {
  const long long before = expired_before_ms;
  return internal::with_session(db_, true, [&](soci::session& s) {
    soci::statement st = (s.prepare << kSweepKeys, soci::use(before));
    st.execute(true);
    return static_cast<int>(st.get_affected_rows());
  });
}

// ---- workers ----

void WorkerRepository::announce(const WorkerInfo& w, std::int64_t now_ms) {
  const long long now = now_ms;
  internal::with_session(db_, true, [&](soci::session& s) {
    s << kUpsertWorker, soci::use(w.id), soci::use(w.host), soci::use(w.model), soci::use(w.device),
        soci::use(w.precision), soci::use(now), soci::use(now);
  });
}

void WorkerRepository::heartbeat(const std::string& id, std::int64_t now_ms) {
  const long long now = now_ms;
  internal::with_session(db_, true, [&](soci::session& s) { s << kWorkerHeartbeat, soci::use(now), soci::use(id); });
}

void WorkerRepository::remove(const std::string& id) {
  internal::with_session(db_, true, [&](soci::session& s) { s << kDeleteWorker, soci::use(id); });
}

std::int64_t WorkerRepository::count_alive(std::int64_t since_ms) {
  const long long since = since_ms;
  return internal::with_session(db_, true, [&](soci::session& s) {
    long long n = 0;
    s << kCountWorkers, soci::use(since), soci::into(n);
    return static_cast<std::int64_t>(n);
  });
}

}  // namespace petcam::db
