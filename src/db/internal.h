// Helpers shared by the db/ sources only: how a failure is classified, and how one unit of work runs.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include "db/database.h"

struct pg_conn;  // libpq's PGconn

namespace petcam::db::internal {

// The libpq connection under a PostgreSQL session, for the few hot queries run as prepared statements.
::pg_conn* postgres_connection(soci::session& s);

// The session lost its connection in the middle of the work: the caller sees Unavailable, and work that is
// safe to repeat may be retried once on a fresh session.
class ConnectionLost : public Unavailable {
 public:
  using Unavailable::Unavailable;
};

// True when `e`, thrown while using `s`, means the connection is gone (server restarted, network cut),
// rather than that the statement was wrong.
bool connection_lost(const std::exception& e, soci::session& s, Backend backend);

// SQLite's lock wait (busy_timeout) ran out: another writer held the database too long.
bool database_busy(const std::exception& e, Backend backend);

// Runs fn(session) on a leased session outside any explicit transaction. A lost connection comes out as
// ConnectionLost; when `idempotent`, the work is first retried once on another (reconnected) session, so an
// idle session that died with a server restart costs no request.
template <class Fn>
auto with_session(Database& db, bool idempotent, Fn&& fn) -> decltype(fn(std::declval<soci::session&>())) {
  for (int attempt = 0;; ++attempt) {
    try {
      Lease lease = db.lease();
      try {
        return fn(lease.sql());
      } catch (const Unavailable&) {
        throw;
      } catch (const std::exception& e) {
        if (connection_lost(e, lease.sql(), db.backend()))
          throw ConnectionLost(std::string("database connection lost: ") + e.what());
        if (database_busy(e, db.backend())) throw Unavailable(std::string("database busy: ") + e.what());
        throw;
      }
    } catch (const ConnectionLost&) {
      // The lease went back to the pool marked broken, so the next lease reconnects it first.
      if (!idempotent || attempt > 0) throw;
    }
  }
}

}  // namespace petcam::db::internal
