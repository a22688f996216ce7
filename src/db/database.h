// The database: a pool of SOCI sessions on SQLite (embedded, the default) or PostgreSQL, chosen by URL.
// Callers lease a session for one unit of work; SQL lives only in this folder.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace soci {
class session;
class connection_pool;
}  // namespace soci

namespace petcam::db {

enum class Backend { Sqlite, Postgres };

// The database cannot be reached, or no session came free in time: the caller answers 503.
class Unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A URL or setting we cannot use (bad scheme, unreadable path, ...): a startup error.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string url;                                // sqlite:///abs/or/rel/path.db | postgresql://user:pass@host:port/db
  std::size_t pool_size = 8;                      // sessions
  std::chrono::milliseconds lease_timeout{2000};  // waiting for a free session, then Unavailable
};

class Database;

// One of a user's photos changed (status, progress) or was deleted. Every process hears of it: PostgreSQL
// carries it with NOTIFY petcam_photos from the writing transaction to each process's listener
// (db/notifications.h); on SQLite, one process, the writer hands it on after its commit.
struct PhotoChange {
  std::string user_id;
  std::string photo_id;
  bool deleted = false;
};
std::string to_payload(const PhotoChange& c);  // "<user_id> <photo_id> <p|d>"
bool from_payload(std::string_view payload, PhotoChange& out);
using PhotoListener = std::function<void(const PhotoChange&)>;

// One pooled session for the duration of a scope. Returned to the pool on destruction; a session that
// saw a connection error is reconnected before its next use.
class Lease {
 public:
  Lease(Lease&&) noexcept;
  Lease& operator=(Lease&&) = delete;
  ~Lease();
  soci::session& sql() const { return *session_; }

 private:
  friend class Database;
  Lease(Database* db, std::size_t pos, soci::session* s) : db_(db), pos_(pos), session_(s) {}
  Database* db_;
  std::size_t pos_;
  soci::session* session_;
};

class Database {
 public:
  // Opens the pool. SQLite: creates the file's directory, WAL, busy_timeout, foreign_keys=ON.
  // PostgreSQL: sessions pinned to UTC. Throws ConfigError for a bad URL, Unavailable if unreachable.
  static std::unique_ptr<Database> open(const Options& options);
  ~Database();

  Backend backend() const { return backend_; }
  Lease lease();  // throws Unavailable after options.lease_timeout
  bool ping();    // SELECT 1 on a leased session; false instead of throwing

  // Runs fn(session) inside one transaction (BEGIN IMMEDIATE on SQLite) and commits; rolls back and
  // rethrows on any exception. Connection-level failures come out as Unavailable.
  void transaction(const std::function<void(soci::session&)>& fn);

  // Listeners of photo changes (kept for the database's life); called on the thread that delivers.
  void on_photo_change(PhotoListener listener);
  void deliver(const PhotoChange& change) const;

 private:
  friend class Lease;
  Database(Backend backend, std::unique_ptr<soci::connection_pool> pool, Options options);
  void begin(soci::session& s);
  void commit(soci::session& s);
  void rollback(soci::session& s) noexcept;
  void give_back(std::size_t pos);
  void prepare_session(soci::session& s);        // per-connection settings (pragmas, time zone)
  bool still_usable(soci::session& s) noexcept;  // after use: connected, and no transaction left open
  void reconnect(std::size_t pos);               // throws Unavailable

  Backend backend_;
  std::unique_ptr<soci::connection_pool> pool_;
  Options options_;
  // Per pool position; each is touched only by the position's holder (the pool's lock orders the holders).
  std::vector<char> broken_;               // saw its connection die: reconnect before the next use
  std::vector<std::uint64_t> checked_at_;  // value of losses_ when the connection was last known good
  std::atomic<std::uint64_t> losses_{0};   // connections seen dying so far: others may be dead too
  mutable std::mutex listeners_mutex_;
  std::vector<std::shared_ptr<const PhotoListener>> photo_listeners_;
};

// The libpq connection URI for a postgresql:// DATABASE_URL (for connections outside the pool, such as
// LISTEN); throws ConfigError for any other URL.
std::string postgres_connection_uri(const std::string& url);

// Migrations: numbered SQL files under migrations/<backend>/NNNN_name.{up,down}.sql, embedded in the
// binary at build time, recorded in table schema_migrations(version, name, applied_at).
struct MigrationState {
  int version;
  std::string name;
  bool applied;
};
int migrate_up(Database& db);               // applies all pending, each in its own transaction; returns count
int migrate_down(Database& db, int steps);  // reverts the newest `steps`; returns count
std::vector<MigrationState> migration_status(Database& db);

}  // namespace petcam::db
