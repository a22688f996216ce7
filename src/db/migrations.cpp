// Schema migrations: migrations/<backend>/NNNN_name.{up,down}.sql, embedded at build time (cmake/Embed.cmake).
#include <libpq-fe.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string_view>

#include "db/database.h"
#include "db/migrations_embedded.h"

namespace petcam::db {

namespace {

constexpr const char* kCreateMigrationsTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";
constexpr const char* kSqliteMigrationsTableExists =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'";
constexpr const char* kPostgresMigrationsTableExists =
    "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'";
// Two processes migrating one PostgreSQL database take turns; the lock ends with the transaction.
constexpr const char* kPostgresMigrationLock = "SELECT 1 FROM (SELECT pg_advisory_xact_lock(7365804651938279013)) AS l";
constexpr const char* kIsApplied = "SELECT COUNT(*) FROM schema_migrations WHERE version = :version";
constexpr const char* kRecordApplied =
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :applied_at)";
constexpr const char* kNewestApplied = "SELECT MAX(version) FROM schema_migrations";
constexpr const char* kForgetApplied = "DELETE FROM schema_migrations WHERE version = :version";
constexpr const char* kListApplied = "SELECT version, name FROM schema_migrations ORDER BY version";

struct Migration {
  int version = 0;
  std::string name;
  std::optional<std::string_view> up, down;
};

// The migrations compiled in for this backend, by version.
std::map<int, Migration> known_migrations(Backend backend) {
  const std::string_view prefix = backend == Backend::Sqlite ? "sqlite/" : "postgres/";
  std::map<int, Migration> out;
  for (const auto& file : embedded_migrations::files()) {
    if (file.path.substr(0, prefix.size()) != prefix) continue;
    const std::string_view base = file.path.substr(prefix.size());
    const bool up = base.ends_with(".up.sql"), down = base.ends_with(".down.sql");
    const auto underscore = base.find('_');
    const bool digits =
        underscore != std::string_view::npos && underscore > 0 &&
        std::all_of(base.begin(), base.begin() + underscore, [](char c) { return c >= '0' && c <= '9'; });
    if ((!up && !down) || !digits)
      throw std::logic_error("migration file not named NNNN_name.up.sql / .down.sql: " + std::string(file.path));
    const int version = std::stoi(std::string(base.substr(0, underscore)));
    const std::string_view suffix = up ? ".up.sql" : ".down.sql";
    const std::string_view name = base.substr(underscore + 1, base.size() - underscore - 1 - suffix.size());
    Migration& m = out[version];
    if (m.version != 0 && m.name != name)
      throw std::logic_error("two migrations numbered " + std::to_string(version) + " for " + std::string(prefix));
    m.version = version;
    m.name = std::string(name);
    (up ? m.up : m.down) = file.contents;
  }
  for (const auto& [version, m] : out) {
    if (!m.up || !m.down)
      throw std::logic_error("migration " + std::to_string(version) + " lacks its " + (m.up ? "down" : "up") + " file");
  }
  return out;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A script of several statements. SOCI prepares one statement at a time (SQLite silently ignores the rest),
// so scripts go straight to the driver, inside the transaction the session already holds.
void run_script(soci::session& s, Backend backend, std::string_view sql, const std::string& what) {
  const std::string text(sql);
  if (backend == Backend::Sqlite) {
    auto* h = static_cast<soci::sqlite3_session_backend*>(s.get_backend())->conn_;
    char* err = nullptr;
    const int rc = sqlite_api::sqlite3_exec(h, text.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite_api::sqlite3_free(err);
      throw soci::sqlite3_soci_error(what + " failed: " + msg, rc);
    }
    return;
  }
  PGconn* conn = static_cast<soci::postgresql_session_backend*>(s.get_backend())->conn_;
  PGresult* r = PQexec(conn, text.c_str());
  const ExecStatusType status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY) {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string msg = what + " failed: " + (r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
    PQclear(r);
    throw soci::postgresql_soci_error(msg, state ? state : (PQstatus(conn) == CONNECTION_OK ? "XX000" : "08000"));
  }
  PQclear(r);
}

void lock_migrations(soci::session& s, Backend backend) {
  if (backend != Backend::Postgres) return;  // BEGIN IMMEDIATE already holds SQLite's write lock
  int one = 0;
  s << kPostgresMigrationLock, soci::into(one);
}

bool migrations_table_exists(Database& db) {
  Lease lease = db.lease();
  long long n = 0;
  lease.sql() << (db.backend() == Backend::Sqlite ? kSqliteMigrationsTableExists : kPostgresMigrationsTableExists),
      soci::into(n);
  return n > 0;
}

void create_migrations_table(Database& db) {
  db.transaction([&](soci::session& s) {
    lock_migrations(s, db.backend());  // two concurrent CREATE TABLE IF NOT EXISTS can still collide
    s << kCreateMigrationsTable;
  });
}

bool is_applied(soci::session& s, int version) {
  long long n = 0;
  s << kIsApplied, soci::use(version), soci::into(n);
  return n > 0;
}

}  // namespace

int migrate_up(Database& db) {
  const auto migrations = known_migrations(db.backend());
  create_migrations_table(db);
  int applied = 0;
  for (const auto& [version, m] : migrations) {
    bool did = false;
    db.transaction([&](soci::session& s) {
      lock_migrations(s, db.backend());
      if (is_applied(s, version)) return;  // another process got here first
      run_script(s, db.backend(), *m.up, "migration " + std::to_string(version) + "_" + m.name);
      const std::int64_t at = now_ms();
      s << kRecordApplied, soci::use(version), soci::use(m.name), soci::use(at);
      did = true;
    });
    if (did) ++applied;
  }
  return applied;
}

int migrate_down(Database& db, int steps) {
  if (steps <= 0 || !migrations_table_exists(db)) return 0;
  const auto migrations = known_migrations(db.backend());
  int reverted = 0;
  for (int i = 0; i < steps; ++i) {
    bool did = false;
    db.transaction([&](soci::session& s) {
      lock_migrations(s, db.backend());
      int newest = 0;
      soci::indicator ind = soci::i_null;
      s << kNewestApplied, soci::into(newest, ind);
      if (ind == soci::i_null) return;
      const auto it = migrations.find(newest);
      if (it == migrations.end())
        throw std::runtime_error("cannot revert migration " + std::to_string(newest) +
                                 ": this build does not know it (it came from a newer version)");
      run_script(s, db.backend(), *it->second.down, "reverting migration " + std::to_string(newest));
      s << kForgetApplied, soci::use(newest);
      did = true;
    });
    if (!did) break;
    ++reverted;
  }
  return reverted;
}

std::vector<MigrationState> migration_status(Database& db) {
  std::map<int, MigrationState> states;
  for (const auto& [version, m] : known_migrations(db.backend())) states[version] = {version, m.name, false};
  if (migrations_table_exists(db)) {
    Lease lease = db.lease();
    int version = 0;
    std::string name;
    soci::statement st = (lease.sql().prepare << kListApplied, soci::into(version), soci::into(name));
    st.execute();
    while (st.fetch()) {
      auto& state = states[version];
      if (state.name.empty()) state = {version, name, true};  // applied by a newer build
      state.applied = true;
    }
  }
  std::vector<MigrationState> out;
  for (auto& [version, st] : states) out.push_back(std::move(st));
  return out;
}

}  // namespace petcam::db
