// Every setting of the service, read once at start from the environment and an optional .env file
// (the environment wins). Names follow the original server (SECRET_KEY, DATABASE_URL,
// ACCESS_TOKEN_EXPIRE_MINUTES) plus our own; .env.example documents each one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/dotenv.h"

namespace petcam::config {

struct RateLimit {
  int count = 0;  // 0 = unlimited
  int period_s = 60;
  std::string text;  // "5 per 1 minute", as the original's slowapi says it
};

struct Settings {
  // HTTP
  std::string host = "0.0.0.0";
  int port = 8000;
  int io_threads = 2;
  int pool_threads = 4;  // DB, hashing, files: never on I/O threads
  int pool_queue = 256;  // waiting tasks before 503
  int max_connections = 1024;
  int read_timeout_s = 30;  // to receive one whole request (headers and body)
  int write_timeout_s = 60;
  int handle_timeout_s = 60;
  std::vector<std::string> trusted_proxies;  // IPs or CIDRs whose X-Forwarded-For is believed

  // Storage and database
  std::string data_dir = "data";
  std::string storage_dir;  // default: <data_dir>/storage
  // The start-up sweep removes storage files no photo owns once they are this old; -1: 0 on SQLite (one
  // process), 3600 on PostgreSQL (another process may be between its file write and its commit).
  int orphan_sweep_min_age_s = -1;
  std::string database_url;  // default: sqlite:///<data_dir>/petcam.db
  int db_pool_size = 8;
  int db_timeout_ms = 2000;

  // Auth
  std::string secret_key;  // empty: generated once into <data_dir>/secret_key
  int access_token_expire_minutes = 30;

  // Upload limits
  std::int64_t max_upload_bytes = 20ll << 20;   // per file
  std::int64_t max_request_bytes = 64ll << 20;  // whole body
  std::int64_t max_image_pixels = 16'000'000;
  int max_bestcut_files = 10;
  std::int64_t max_output_pixels = 268'435'456;  // width x height of a result (16384²)

  // Previews: longest side in px (never larger than their source)
  int thumbnail_size = 256;  // from the original, at upload
  int preview_size = 2048;   // from the result, by the job

  // GET /events (Server-Sent Events)
  int events_max_streams = 256;                // per server: 503 above
  int events_max_streams_per_user = 8;         // 429 above
  int events_keepalive_s = 15;                 // a comment line at least this often
  std::int64_t events_buffer_bytes = 1 << 20;  // unwritten bytes a slow reader may leave: its stream is dropped above

  // Rate limits per client IP
  RateLimit rate_register{5, 60, "5 per 1 minute"};
  RateLimit rate_token{10, 60, "10 per 1 minute"};
  RateLimit rate_upscale{10, 60, "10 per 1 minute"};
  RateLimit rate_bestcut{10, 60, "10 per 1 minute"};
  RateLimit rate_account{10, 60, "10 per 1 minute"};  // GET /users/me, POST /users/me/password, DELETE /users/me

  // Jobs
  std::string model = "x4fast";    // x4fast, x4plus, or a path to .param / .pth
  std::string models_dir;          // where x4fast/x4plus are looked up (also PETCAM_MODELS_DIR)
  std::string precision = "auto";  // auto (fp16 on CUDA, bf16 or fp32 on the CPU), fp32, fp16 (CUDA), bf16
  std::string device = "auto";     // auto (CUDA if available), cpu, cuda (workers spread over GPUs), cuda:N
  std::string engine = "auto";     // CPU engine: auto (native where measured faster), native, libtorch
  int tile = -1;
  int job_workers = 1;
  int inference_threads = 0;  // 0 = all cores
  int job_max_attempts = 3;
  int job_retry_base_s = 5;  // backoff: base * 2^(attempt-1)
  int job_lease_s = 60;
  int job_poll_ms = 1000;
  std::string instance_id;  // default: the host name; names this process's job claims

  std::string role = "all";  // all | api (HTTP, queues jobs) | worker (runs jobs only)
  std::string web_dir;       // Swagger UI / ReDoc pages and assets
  std::string log_level = "info";
};

// The process environment overlaid on `dotenv` (values already in the environment win).
std::map<std::string, std::string> merged_environment(const std::map<std::string, std::string>& dotenv);

// Validates every value; throws ConfigError naming the variable and what it accepts.
Settings load_settings(const std::map<std::string, std::string>& env);

// "5/minute", "10/second", "100/hour", "0" (off). Throws ConfigError.
RateLimit parse_rate_limit(const std::string& name, const std::string& value);

// SECRET_KEY when set; otherwise the key in <data_dir>/secret_key, created once (mode 0600, 32 random
// bytes in hex). `generated` tells the caller to log that it made one.
std::string ensure_secret_key(const Settings& s, bool& generated);

}  // namespace petcam::config
