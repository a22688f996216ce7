#include "db/job_notifications.h"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>

#include "db/database.h"

namespace petcam::db {

JobNotifications::JobNotifications(std::string url, std::function<void()> on_notify)
    : url_(postgres_connection_uri(url)), on_notify_(std::move(on_notify)) {
  if (::pipe(wake_fds_) != 0) throw std::runtime_error("pipe failed");
  thread_ = std::thread([this] { run(); });
}

JobNotifications::~JobNotifications() {
  stop();
  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
}

void JobNotifications::stop() {
  if (stopping_.exchange(true)) return;
  const char b = 1;
  [[maybe_unused]] const auto n = ::write(wake_fds_[1], &b, 1);
  if (thread_.joinable()) thread_.join();
}

void JobNotifications::run() {
  auto backoff = std::chrono::milliseconds(500);
  bool warned = false;
  while (!stopping_) {
    PGconn* conn = PQconnectdb(url_.c_str());
    PGresult* res = PQstatus(conn) == CONNECTION_OK ? PQexec(conn, "LISTEN petcam_jobs") : nullptr;
    const bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (ok) {
      if (warned) spdlog::info("jobs: listening for new jobs again (LISTEN petcam_jobs)");
      warned = false;
      backoff = std::chrono::milliseconds(500);
      on_notify_();  // anything queued while we were not listening
      while (!stopping_) {
        pollfd fds[2] = {{PQsocket(conn), POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents) break;
        if (!PQconsumeInput(conn)) break;  // connection lost
        bool any = false;
        while (PGnotify* n = PQnotifies(conn)) {
          PQfreemem(n);
          any = true;
        }
        if (any) on_notify_();
      }
    }
    if (!stopping_ && !warned) {
      spdlog::warn("jobs: LISTEN connection failed or lost ({}); polling until it is back", PQerrorMessage(conn));
      warned = true;
    }
    PQfinish(conn);
    if (stopping_) break;
    pollfd wake{wake_fds_[0], POLLIN, 0};
    ::poll(&wake, 1, static_cast<int>(backoff.count()));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(10'000));
  }
}

}  // namespace petcam::db
