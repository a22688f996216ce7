#include "serve.h"

#include <pthread.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "api/context.h"
#include "api/docs.h"
#include "config/settings.h"
#include "db/database.h"
#include "db/notifications.h"
#include "db/repositories.h"
#include "http/server.h"
#include "jobs/job_runner.h"
#include "storage/photo_store.h"
#include "upscaler/upscaler.h"

namespace petcam {

namespace {

namespace fs = std::filesystem;

// The environment over an optional .env: `env_file` when given (it must exist), else ./.env if present.
config::Settings settings_from(const std::string& env_file) {
  std::map<std::string, std::string> dotenv;
  const std::string path = env_file.empty() ? ".env" : env_file;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    dotenv = config::parse_dotenv(ss.str(), path);
  } else if (!env_file.empty()) {
    throw config::ConfigError("env file not found: " + env_file);
  }
  return config::load_settings(config::merged_environment(dotenv));
}

void setup_logging(const config::Settings& s) {
  auto logger = spdlog::stdout_logger_mt("petcam");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::from_str(s.log_level));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  spdlog::flush_every(std::chrono::seconds(1));
}

// The URL without its password, for logs.
std::string redacted(const std::string& url) {
  const auto scheme = url.find("://");
  const auto at = url.rfind('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

db::Options db_options(const config::Settings& s) {
  db::Options o;
  o.url = s.database_url;
  o.pool_size = static_cast<std::size_t>(s.db_pool_size);
  o.lease_timeout = std::chrono::milliseconds(s.db_timeout_ms);
  return o;
}

// Every connection is a descriptor, besides the database's, the log's and the photos being read or written:
// raise the soft limit (often 1024) to the hard one, and say so when even that leaves too few, since a server
// out of descriptors cannot accept anyone.
void raise_open_file_limit(int max_connections) {
  const rlim_t wanted = static_cast<rlim_t>(max_connections) + 256;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < wanted && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, lim.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < wanted)
    spdlog::warn(
        "open files limited to {} (ulimit -n): less than MAX_CONNECTIONS={} + 256; raise the limit or lower "
        "MAX_CONNECTIONS",
        static_cast<unsigned long long>(lim.rlim_cur), max_connections);
}

}  // namespace

int run_serve(const std::string& env_file, const std::string& role, const std::string& device) {
  auto settings = settings_from(env_file);
  if (!role.empty()) settings.role = role;
  if (!device.empty()) {
    try {
      upscaler::parse_device(device);
    } catch (const std::invalid_argument& e) {
      throw config::ConfigError(std::string("--device: ") + e.what());
    }
    settings.device = device;
  }
  const bool serves_http = settings.role != "worker";
  const bool runs_jobs = settings.role != "api";
  if (!runs_jobs) settings.job_workers = 0;
  if (!serves_http && settings.job_workers <= 0)
    throw config::ConfigError("ROLE=worker with JOB_WORKERS=0 has nothing to do");
  setup_logging(settings);
  spdlog::info("petcam 1.0.0 starting as {}: database {}, storage {}", settings.role, redacted(settings.database_url),
               settings.storage_dir);
  if (serves_http) raise_open_file_limit(settings.max_connections);

  // A worker-only process has no HTTP to stop it: it waits for these, so they are blocked in every thread
  // (threads inherit the mask) and taken with sigwait below.
  sigset_t stop_signals;
  // Clients reset connections at any time: a write that meets one must fail with EPIPE and end that
  // connection, not the process. (sendfile(2), which downloads used, has no MSG_NOSIGNAL: a phone dropping
  // a download killed the server with SIGPIPE.)
  std::signal(SIGPIPE, SIG_IGN);
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  if (!serves_http) pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto db = db::Database::open(db_options(settings));
  if (const int n = db::migrate_up(*db)) spdlog::info("database: applied {} migration(s)", n);
  storage::PhotoStore store(settings.storage_dir);

  // Files a crash left without a row (written, then the insert never committed; or deleted rows whose
  // files were not yet removed). SQLite means this is the only process; on PostgreSQL another process may
  // be between its write and its commit, so only old files are considered there unless the operator knows
  // better (ORPHAN_SWEEP_MIN_AGE_SECONDS, e.g. 0 for a single process).
  if (serves_http) {
    // Upload keys this instance's previous life was handling when it died: nothing of theirs was committed.
    if (const int n = db::IdempotencyRepository(*db).release_owned(settings.instance_id))
      spdlog::info("idempotency: freed {} key(s) left in flight by this instance's previous run", n);
    db::JobRepository jobs(*db);
    const int min_age_s = settings.orphan_sweep_min_age_s >= 0   ? settings.orphan_sweep_min_age_s
                          : db->backend() == db::Backend::Sqlite ? 0
                                                                 : 3600;
    if (const int n = store.sweep([&](const std::string& id) { return jobs.photo_exists(id); }, min_age_s))
      spdlog::warn("storage: removed {} file(s) that no photo owns", n);
  }

  jobs::JobRunner runner(settings, *db, store);
  runner.start();
  // Through PostgreSQL, other processes' uploads wake this one's workers (polling covers the gaps), and their
  // photo changes reach this one's event streams.
  std::unique_ptr<db::Notifications> notifications;
  if (db->backend() == db::Backend::Postgres) {
    std::function<void()> on_jobs;
    if (runs_jobs) on_jobs = [&runner] { runner.wake_all(); };
    std::function<void(std::string_view)> on_photo;
    if (serves_http)
      on_photo = [&db = *db](std::string_view payload) {
        db::PhotoChange change;
        if (db::from_payload(payload, change)) db.deliver(change);
      };
    notifications = std::make_unique<db::Notifications>(settings.database_url, on_jobs, on_photo);
  }

  if (serves_http) {
    bool generated = false;
    const auto secret = config::ensure_secret_key(settings, generated);
    if (generated)
      spdlog::warn("SECRET_KEY is not set: generated a random key into {}/secret_key (mode 0600); keep that file",
                   settings.data_dir);
    api::Context ctx{settings,
                     *db,
                     store,
                     auth::TokenKey{secret},
                     [&runner] { runner.wake(); },
                     [&runner](const std::vector<std::string>& ids) { runner.photos_deleted(ids); },
                     nullptr};  // account_deleted: set by the HTTP server, which holds the event streams
    api::Docs docs(settings.web_dir);
    http::Server server(ctx, docs);
    server.run([&] { spdlog::info("listening on http://{}:{}", settings.host, settings.port); });
    spdlog::info("HTTP stopped; stopping job workers");
  } else {
    int signo = 0;
    sigwait(&stop_signals, &signo);
    spdlog::info("received {}: stopping job workers", signo == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  if (notifications) notifications->stop();
  runner.stop();
  spdlog::info("stopped");
  spdlog::shutdown();
  return 0;
}

int run_migrate(const std::string& action, int steps, const std::string& env_file) {
  const auto settings = settings_from(env_file);
  auto db = db::Database::open(db_options(settings));
  if (action == "up") {
    std::cout << "applied " << db::migrate_up(*db) << " migration(s)\n";
  } else if (action == "down") {
    std::cout << "reverted " << db::migrate_down(*db, steps) << " migration(s)\n";
  } else {
    for (const auto& m : db::migration_status(*db))
      std::cout << (m.applied ? "applied  " : "pending  ") << m.version << " " << m.name << "\n";
  }
  return 0;
}

}  // namespace petcam
