#include "db/notifications.h"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>

#include "db/database.h"

namespace petcam::db {

Notifications::Notifications(std::string url, std::function<void()> on_jobs,
                             std::function<void(std::string_view)> on_photo)
    : url_(postgres_connection_uri(url)), on_jobs_(std::move(on_jobs)), on_photo_(std::move(on_photo)) {
  if (::pipe(wake_fds_) != 0) throw std::runtime_error("pipe failed");
  thread_ = std::thread([this] { run(); });
}

Notifications::~Notifications() {
  stop();
  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
}

void Notifications::stop() {
  if (stopping_.exchange(true)) return;
  const char b = 1;
  [[maybe_unused]] const auto n = ::write(wake_fds_[1], &b, 1);
  if (thread_.joinable()) thread_.join();
}

void Notifications::run() {
  auto backoff = std::chrono::milliseconds(500);
  bool warned = false;
  while (!stopping_) {
    PGconn* conn = PQconnectdb(url_.c_str());
    PGresult* res =
        PQstatus(conn) == CONNECTION_OK ? PQexec(conn, "LISTEN petcam_jobs; LISTEN petcam_photos") : nullptr;
    const bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (ok) {
      if (warned) spdlog::info("listening to other processes again (LISTEN petcam_jobs, petcam_photos)");
      warned = false;
      backoff = std::chrono::milliseconds(500);
      if (on_jobs_) on_jobs_();  // anything queued while we were not listening
      while (!stopping_) {
        pollfd fds[2] = {{PQsocket(conn), POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents) break;
        if (!PQconsumeInput(conn)) break;  // connection lost
        bool jobs = false;
        while (PGnotify* n = PQnotifies(conn)) {
          if (std::string_view(n->relname) == "petcam_photos") {
            if (on_photo_) on_photo_(n->extra);
          } else {
            jobs = true;
          }
          PQfreemem(n);
        }
        if (jobs && on_jobs_) on_jobs_();
      }
    }
    if (!stopping_ && !warned) {
      spdlog::warn("LISTEN connection failed or lost ({}); jobs are polled until it is back", PQerrorMessage(conn));
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
