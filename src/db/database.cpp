#include "db/database.h"

#include <libpq-fe.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

#include "db/internal.h"

namespace petcam::db {

namespace {

// busy_timeout first, so that switching to WAL waits for a writer instead of failing.
constexpr const char* kSqliteSessionSetup =
    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";
constexpr const char* kPostgresSessionSetup = "SET TIME ZONE 'UTC'";

// ---- URL parsing ----

struct Target {
  Backend backend;
  std::string connect;  // what SOCI opens: SQLite `db="path"`, or a libpq connection URI
  std::string path;     // SQLite file ("" for :memory:)
  std::string display;  // for messages: never holds the password
  bool memory = false;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view in, std::string_view what) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    const int hi = i + 2 < in.size() ? hex_value(in[i + 1]) : -1;
    const int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
    if (hi < 0 || lo < 0) throw ConfigError("DATABASE_URL: bad percent-encoding in the " + std::string(what));
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// Everything but RFC 3986's unreserved characters, so the result holds no space, '=', '&', '@', ':' or '/'.
std::string percent_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

Target parse_sqlite(std::string_view rest) {
  // sqlite:///relative/path.db -> "relative/path.db"; sqlite:////abs/path.db -> "/abs/path.db"
  if (rest.empty() || rest.front() != '/')
    throw ConfigError("DATABASE_URL: SQLite URLs look like sqlite:///relative/path.db or sqlite:////absolute/path.db");
  std::string path(rest.substr(1));
  Target t{Backend::Sqlite, "", path, "sqlite:///" + path};
  if (path == ":memory:") {
    t.memory = true;
    t.path.clear();
    t.connect = "db=:memory:";
    return t;
  }
  if (path.empty()) throw ConfigError("DATABASE_URL: the SQLite URL names no file");
  // SOCI reads `db="..."` up to the next double quote.
  if (path.find('"') != std::string::npos) throw ConfigError("DATABASE_URL: SQLite path must not contain '\"'");
  t.connect = "db=\"" + path + "\"";
  return t;
}

// postgresql://user:pass@host:port/db?key=value -> a canonical libpq URI. SOCI 4.0.3 splits its connection
// string at spaces and rebuilds it as key=value pairs, so a classic conninfo cannot carry a value with a space
// (a password, say). A fully percent-encoded URI has no space, and always ends in "?k=v", so it passes through
// SOCI intact and libpq decodes it.
Target parse_postgres(std::string_view rest) {
  std::string_view authority = rest, path, query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    authority = rest.substr(0, q);
  }
  if (auto slash = authority.find('/'); slash != std::string_view::npos) {
    path = authority.substr(slash + 1);
    authority = authority.substr(0, slash);
  }
  std::string user, password, host, port;
  bool has_password = false;
  std::string_view hostport = authority;
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    hostport = authority.substr(at + 1);
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      user = percent_decode(userinfo.substr(0, colon), "user name");
      password = percent_decode(userinfo.substr(colon + 1), "password");
      has_password = true;
    } else {
      user = percent_decode(userinfo, "user name");
    }
  }
  std::string_view port_view;
  if (!hostport.empty() && hostport.front() == '[') {  // [IPv6]:port
    auto close = hostport.find(']');
    if (close == std::string_view::npos) throw ConfigError("DATABASE_URL: unterminated [IPv6] host");
    host = std::string(hostport.substr(0, close + 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw ConfigError("DATABASE_URL: junk after the [IPv6] host");
      port_view = after.substr(1);
    }
  } else {
    std::string_view h = hostport;
    if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
      h = hostport.substr(0, colon);
      port_view = hostport.substr(colon + 1);
    }
    host = percent_encode(percent_decode(h, "host"));
  }
  if (!port_view.empty()) {
    if (port_view.size() > 5 ||
        !std::all_of(port_view.begin(), port_view.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(std::string(port_view)) < 1 || std::stoi(std::string(port_view)) > 65535)
      throw ConfigError("DATABASE_URL: bad port '" + std::string(port_view) + "'");
    port = std::string(port_view);
  }
  const std::string dbname = percent_decode(path, "database name");

  std::vector<std::pair<std::string, std::string>> params;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0)
      throw ConfigError("DATABASE_URL: query parameters must be key=value (" + std::string(item) + ")");
    params.emplace_back(percent_decode(item.substr(0, eq), "query"), percent_decode(item.substr(eq + 1), "query"));
  }
  auto has = [&](std::string_view key) {
    return std::any_of(params.begin(), params.end(), [&](const auto& p) { return p.first == key; });
  };
  // An unreachable host must fail in seconds, not hang a request.
  if (!has("connect_timeout")) params.emplace_back("connect_timeout", "5");
  if (!has("application_name")) params.emplace_back("application_name", "petcam");

  std::string uri = "postgresql://";
  std::string shown = "postgresql://";
  if (!user.empty() || has_password) {
    uri += percent_encode(user);
    shown += percent_encode(user);
    if (has_password) {
      uri += ":" + percent_encode(password);
      shown += ":***";
    }
    uri += "@";
    shown += "@";
  }
  std::string tail = host + (port.empty() ? "" : ":" + port) + "/" + percent_encode(dbname);
  uri += tail;
  shown += tail;
  char sep = '?';
  for (const auto& [k, v] : params) {
    uri += sep + percent_encode(k) + "=" + percent_encode(v);
    sep = '&';
  }
  return Target{Backend::Postgres, uri, "", shown};
}

Target parse_url(const std::string& url) {
  const auto sep = url.find("://");
  if (sep == std::string::npos)
    throw ConfigError("DATABASE_URL must be sqlite:///path or postgresql://user:pass@host:port/db");
  const std::string scheme = lowercase(std::string_view(url).substr(0, sep));
  const std::string_view rest = std::string_view(url).substr(sep + 3);
  if (scheme == "sqlite" || scheme == "sqlite3") return parse_sqlite(rest);
  if (scheme == "postgresql" || scheme == "postgres") return parse_postgres(rest);
  throw ConfigError("DATABASE_URL: unsupported scheme '" + scheme + "' (use sqlite:/// or postgresql://)");
}

sqlite_api::sqlite3* sqlite_handle(soci::session& s) {
  auto* backend = static_cast<soci::sqlite3_session_backend*>(s.get_backend());
  return backend ? backend->conn_ : nullptr;
}

PGconn* postgres_handle(soci::session& s) {
  auto* backend = static_cast<soci::postgresql_session_backend*>(s.get_backend());
  return backend ? backend->conn_ : nullptr;
}

// libpq prints NOTICEs ("relation ... already exists, skipping") to stderr by default.
void ignore_notice(void*, const char*) {}

}  // namespace

std::string postgres_connection_uri(const std::string& url) {
  const auto t = parse_url(url);
  if (t.backend != Backend::Postgres) throw ConfigError("not a PostgreSQL URL: " + t.display);
  return t.connect;
}

// ---- failure classification (internal.h) ----

namespace internal {

::pg_conn* postgres_connection(soci::session& s) {
  return postgres_handle(s);
}

bool connection_lost(const std::exception& e, soci::session& s, Backend backend) {
  if (backend != Backend::Postgres) return false;  // a file does not hang up
  if (const auto* pe = dynamic_cast<const soci::postgresql_soci_error*>(&e)) {
    const std::string state = pe->sqlstate();
    // 08: connection exception; 57P01-03: the server is shutting down, crashed, or not yet up.
    if (state.rfind("08", 0) == 0 || state == "57P01" || state == "57P02" || state == "57P03") return true;
  }
  if (const auto* se = dynamic_cast<const soci::soci_error*>(&e)) {
    if (se->get_error_category() == soci::soci_error::connection_error) return true;
  }
  PGconn* conn = postgres_handle(s);
  return conn == nullptr || PQstatus(conn) != CONNECTION_OK;
}

bool database_busy(const std::exception& e, Backend backend) {
  if (backend != Backend::Sqlite) return false;
  if (const auto* se = dynamic_cast<const soci::sqlite3_soci_error*>(&e)) {
    const int code = se->result() & 0xff;
    return code == SQLITE_BUSY || code == SQLITE_LOCKED;
  }
  return false;
}

}  // namespace internal

// ---- Lease ----

Lease::Lease(Lease&& other) noexcept : db_(other.db_), pos_(other.pos_), session_(other.session_) {
  other.db_ = nullptr;
  other.session_ = nullptr;
}

Lease::~Lease() {
  if (db_) db_->give_back(pos_);
}

// ---- Database ----

Database::Database(Backend backend, std::unique_ptr<soci::connection_pool> pool, Options options)
    : backend_(backend),
      pool_(std::move(pool)),
      options_(std::move(options)),
      broken_(options_.pool_size, 0),
      checked_at_(options_.pool_size, 0) {}

Database::~Database() = default;

std::unique_ptr<Database> Database::open(const Options& options) {
  Options opts = options;
  const Target target = parse_url(opts.url);
  if (opts.pool_size == 0) throw ConfigError("database pool size must be at least 1");
  if (opts.lease_timeout.count() < 0) throw ConfigError("database lease timeout must not be negative");

  if (target.backend == Backend::Sqlite) {
    // Every connection to ":memory:" is a database of its own: one connection, then.
    if (target.memory) opts.pool_size = 1;
    if (!target.memory) {
      const auto parent = std::filesystem::path(target.path).parent_path();
      std::error_code ec;
      if (!parent.empty()) std::filesystem::create_directories(parent, ec);
      if (ec) throw ConfigError("cannot create the database directory " + parent.string() + ": " + ec.message());
    }
  }

  auto pool = std::make_unique<soci::connection_pool>(opts.pool_size);
  std::unique_ptr<Database> db(new Database(target.backend, std::move(pool), opts));
  for (std::size_t i = 0; i < opts.pool_size; ++i) {
    soci::session& s = db->pool_->at(i);
    try {
      if (target.backend == Backend::Sqlite)
        s.open(soci::sqlite3, target.connect);
      else
        s.open(soci::postgresql, target.connect);
      db->prepare_session(s);
    } catch (const std::exception& e) {
      if (target.backend == Backend::Sqlite)
        throw ConfigError("cannot open the SQLite database " + target.display + ": " + e.what());
      throw Unavailable("cannot connect to " + target.display + ": " + e.what());
    }
  }
  return db;
}

void Database::prepare_session(soci::session& s) {
  if (backend_ == Backend::Sqlite) {
    char* err = nullptr;
    if (sqlite_api::sqlite3_exec(sqlite_handle(s), kSqliteSessionSetup, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite_api::sqlite3_free(err);
      throw std::runtime_error("SQLite session setup failed: " + msg);
    }
  } else {
    PQsetNoticeProcessor(postgres_handle(s), ignore_notice, nullptr);
    s << kPostgresSessionSetup;
  }
}

void Database::reconnect(std::size_t pos) {
  soci::session& s = pool_->at(pos);
  try {
    s.reconnect();
    prepare_session(s);
    broken_[pos] = 0;
    checked_at_[pos] = losses_.load();
  } catch (const std::exception& e) {
    broken_[pos] = 1;
    throw Unavailable(std::string("database unreachable: ") + e.what());
  }
}

Lease Database::lease() {
  std::size_t pos = 0;
  const auto ms = options_.lease_timeout.count();
  if (!pool_->try_lease(pos, static_cast<int>(std::min<decltype(ms)>(ms, INT_MAX))))
    throw Unavailable("no database session came free within " + std::to_string(ms) + " ms");
  try {
    soci::session& s = pool_->at(pos);
    if (broken_[pos]) {
      reconnect(pos);
    } else if (const auto losses = losses_.load(); checked_at_[pos] != losses) {
      // Another session saw its connection die since this one was last known good (a server restart
      // drops them all): one round trip now rather than a failed request later.
      if (!s.is_connected()) reconnect(pos);
      checked_at_[pos] = losses;
    }
  } catch (...) {
    pool_->give_back(pos);
    throw;
  }
  return Lease(this, pos, &pool_->at(pos));
}

bool Database::still_usable(soci::session& s) noexcept {
  try {
    if (backend_ == Backend::Postgres) {
      PGconn* conn = postgres_handle(s);
      if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) return false;
      switch (PQtransactionStatus(conn)) {
        case PQTRANS_IDLE:
          return true;
        case PQTRANS_INTRANS:
        case PQTRANS_INERROR: {  // a transaction left open by an exception: never hand it to the next user
          PGresult* r = PQexec(conn, "ROLLBACK");
          const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
          PQclear(r);
          return ok && PQstatus(conn) == CONNECTION_OK;
        }
        default:  // a command still running, or unknown: start afresh
          return false;
      }
    }
    sqlite_api::sqlite3* h = sqlite_handle(s);
    if (h == nullptr) return false;
    if (sqlite_api::sqlite3_get_autocommit(h) == 0)
      return sqlite_api::sqlite3_exec(h, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK;
    return true;
  } catch (...) {
    return false;
  }
}

void Database::give_back(std::size_t pos) {
  if (!broken_[pos] && !still_usable(pool_->at(pos))) {
    broken_[pos] = 1;
    losses_.fetch_add(1);
  }
  pool_->give_back(pos);
}

bool Database::ping() {
  try {
    return internal::with_session(*this, true, [](soci::session& s) {
      int one = 0;
      s << "SELECT 1", soci::into(one);
      return one == 1;
    });
  } catch (...) {
    return false;
  }
}

void Database::begin(soci::session& s) {
  // IMMEDIATE takes the write lock up front (waiting up to busy_timeout): a deferred transaction that reads
  // and then writes fails at once with SQLITE_BUSY when another writer got there first.
  if (backend_ == Backend::Sqlite)
    s << "BEGIN IMMEDIATE";
  else
    s << "BEGIN";
}

void Database::commit(soci::session& s) {
  s << "COMMIT";
}

void Database::rollback(soci::session& s) noexcept {
  try {
    s << "ROLLBACK";
  } catch (...) {
    // A dead connection has rolled back by itself; give_back() notices the state either way.
  }
}

void Database::transaction(const std::function<void(soci::session&)>& fn) {
  // A connection found dead at BEGIN has done nothing yet: retry that once on a reconnected session.
  for (int attempt = 0;; ++attempt) {
    Lease lease = this->lease();
    soci::session& s = lease.sql();
    try {
      begin(s);
    } catch (const std::exception& e) {
      if (internal::connection_lost(e, s, backend_)) {
        if (attempt == 0) continue;  // the lease goes back marked broken
        throw internal::ConnectionLost(std::string("database connection lost: ") + e.what());
      }
      if (internal::database_busy(e, backend_)) throw Unavailable(std::string("database busy: ") + e.what());
      throw;
    }
    try {
      fn(s);
      commit(s);
      return;
    } catch (const Unavailable&) {
      rollback(s);
      throw;
    } catch (const std::exception& e) {
      rollback(s);
      if (internal::connection_lost(e, s, backend_))
        throw internal::ConnectionLost(std::string("database connection lost: ") + e.what());
      if (internal::database_busy(e, backend_)) throw Unavailable(std::string("database busy: ") + e.what());
      throw;
    } catch (...) {
      rollback(s);
      throw;
    }
  }
}

void Database::on_photo_change(PhotoListener listener) {
  std::lock_guard lock(listeners_mutex_);
  photo_listeners_.push_back(std::make_shared<const PhotoListener>(std::move(listener)));
}

void Database::deliver(const PhotoChange& change) const {
  std::vector<std::shared_ptr<const PhotoListener>> listeners;
  {
    std::lock_guard lock(listeners_mutex_);
    listeners = photo_listeners_;
  }
  for (const auto& listener : listeners) {
    try {
      (*listener)(change);
    } catch (const std::exception& e) {
      spdlog::warn("photo {}: a listener of its change failed: {}", change.photo_id, e.what());
    }
  }
}

std::string to_payload(const PhotoChange& c) {
  return c.user_id + " " + c.photo_id + (c.deleted ? " d" : " p");
}

bool from_payload(std::string_view payload, PhotoChange& out) {
  const auto a = payload.find(' ');
  const auto b = a == std::string_view::npos ? a : payload.find(' ', a + 1);
  if (b == std::string_view::npos || payload.size() != b + 2 || (payload[b + 1] != 'p' && payload[b + 1] != 'd'))
    return false;
  out.user_id = std::string(payload.substr(0, a));
  out.photo_id = std::string(payload.substr(a + 1, b - a - 1));
  out.deleted = payload[b + 1] == 'd';
  return !out.user_id.empty() && !out.photo_id.empty();
}

}  // namespace petcam::db
