#include "config/settings.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "upscaler/upscaler.h"

extern char** environ;

namespace petcam::config {

namespace {

namespace fs = std::filesystem;

std::int64_t parse_int(const std::string& name, const std::string& value, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  const auto* end = value.data() + value.size();
  const auto [p, ec] = std::from_chars(value.data(), end, v);
  if (ec != std::errc{} || p != end || v < lo || v > hi)
    throw ConfigError(name + "=" + value + ": expected an integer in [" + std::to_string(lo) + ", " +
                      std::to_string(hi) + "]");
  return v;
}

std::vector<std::string> split_list(const std::string& value) {
  std::vector<std::string> out;
  std::stringstream ss(value);
  for (std::string item; std::getline(ss, item, ',');) {
    const auto b = item.find_first_not_of(" \t");
    if (b == std::string::npos) continue;
    const auto e = item.find_last_not_of(" \t");
    out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "petcam";
  return buf;
}

}  // namespace

std::map<std::string, std::string> merged_environment(const std::map<std::string, std::string>& dotenv) {
  auto env = dotenv;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

RateLimit parse_rate_limit(const std::string& name, const std::string& value) {
  if (value == "0" || value == "off") return {0, 60, "unlimited"};
  const auto slash = value.find('/');
  const std::string bad = name + "=" + value + ": expected N/second, N/minute or N/hour (or 0 for no limit)";
  if (slash == std::string::npos) throw ConfigError(bad);
  RateLimit r;
  try {
    r.count = static_cast<int>(parse_int(name, value.substr(0, slash), 1, 1'000'000'000));
  } catch (const ConfigError&) {
    throw ConfigError(bad);
  }
  const std::string unit = value.substr(slash + 1);
  if (unit == "second")
    r.period_s = 1;
  else if (unit == "minute")
    r.period_s = 60;
  else if (unit == "hour")
    r.period_s = 3600;
  else
    throw ConfigError(bad);
  r.text = std::to_string(r.count) + " per 1 " + unit;
  return r;
}

Settings load_settings(const std::map<std::string, std::string>& env) {
  Settings s;
  auto get = [&](const char* name) -> const std::string* {
    const auto it = env.find(name);
    return it == env.end() || it->second.empty() ? nullptr : &it->second;
  };
  auto integer = [&](const char* name, auto& field, std::int64_t lo, std::int64_t hi) {
    if (const auto* v = get(name))
      field = static_cast<std::remove_reference_t<decltype(field)>>(parse_int(name, *v, lo, hi));
  };
  auto text = [&](const char* name, std::string& field) {
    if (const auto* v = get(name)) field = *v;
  };
  auto rate = [&](const char* name, RateLimit& field) {
    if (const auto* v = get(name)) field = parse_rate_limit(name, *v);
  };

  text("HOST", s.host);
  integer("PORT", s.port, 0, 65535);
  integer("IO_THREADS", s.io_threads, 1, 256);
  integer("POOL_THREADS", s.pool_threads, 1, 1024);
  integer("POOL_QUEUE", s.pool_queue, 1, 1'000'000);
  integer("MAX_CONNECTIONS", s.max_connections, 1, 1'000'000);
  integer("READ_TIMEOUT_SECONDS", s.read_timeout_s, 1, 3600);
  integer("WRITE_TIMEOUT_SECONDS", s.write_timeout_s, 1, 3600);
  integer("HANDLE_TIMEOUT_SECONDS", s.handle_timeout_s, 1, 3600);
  if (const auto* v = get("TRUSTED_PROXIES")) s.trusted_proxies = split_list(*v);

  text("DATA_DIR", s.data_dir);
  text("STORAGE_DIR", s.storage_dir);
  if (s.storage_dir.empty()) s.storage_dir = (fs::path(s.data_dir) / "storage").string();
  text("DATABASE_URL", s.database_url);
  if (s.database_url.empty()) s.database_url = "sqlite:///" + (fs::path(s.data_dir) / "petcam.db").string();
  integer("ORPHAN_SWEEP_MIN_AGE_SECONDS", s.orphan_sweep_min_age_s, -1, 31'536'000);
  integer("DB_POOL_SIZE", s.db_pool_size, 1, 1000);
  integer("DB_TIMEOUT_MS", s.db_timeout_ms, 1, 600'000);

  text("SECRET_KEY", s.secret_key);
  integer("ACCESS_TOKEN_EXPIRE_MINUTES", s.access_token_expire_minutes, 1, 525'600);

  integer("MAX_UPLOAD_BYTES", s.max_upload_bytes, 1, std::int64_t{1} << 40);
  integer("MAX_REQUEST_BYTES", s.max_request_bytes, 1, std::int64_t{1} << 40);
  integer("MAX_IMAGE_PIXELS", s.max_image_pixels, 1, std::int64_t{1} << 40);
  integer("MAX_BESTCUT_FILES", s.max_bestcut_files, 1, 1000);
  integer("MAX_OUTPUT_PIXELS", s.max_output_pixels, 1, std::int64_t{1} << 40);
  integer("THUMBNAIL_SIZE", s.thumbnail_size, 16, 4096);
  integer("PREVIEW_SIZE", s.preview_size, 16, 16384);
  integer("EVENTS_MAX_STREAMS", s.events_max_streams, 0, 1'000'000);
  integer("EVENTS_MAX_STREAMS_PER_USER", s.events_max_streams_per_user, 0, 1'000'000);
  integer("EVENTS_KEEPALIVE_SECONDS", s.events_keepalive_s, 1, 3600);
  integer("EVENTS_BUFFER_BYTES", s.events_buffer_bytes, 1024, std::int64_t{1} << 30);

  rate("RATE_LIMIT_REGISTER", s.rate_register);
  rate("RATE_LIMIT_TOKEN", s.rate_token);
  rate("RATE_LIMIT_UPSCALE", s.rate_upscale);
  rate("RATE_LIMIT_BESTCUT", s.rate_bestcut);
  rate("RATE_LIMIT_ACCOUNT", s.rate_account);

  text("MODEL", s.model);
  text("MODELS_DIR", s.models_dir);
  if (s.models_dir.empty()) text("PETCAM_MODELS_DIR", s.models_dir);
  text("PRECISION", s.precision);
  text("DEVICE", s.device);
  text("ENGINE", s.engine);
  try {
    upscaler::parse_engine(s.engine);
  } catch (const std::invalid_argument& e) {
    throw ConfigError("ENGINE=" + s.engine + ": " + e.what());
  }
  try {
    upscaler::parse_precision(s.precision);
  } catch (const std::invalid_argument& e) {
    throw ConfigError("PRECISION=" + s.precision + ": " + e.what());
  }
  try {
    upscaler::parse_device(s.device);
  } catch (const std::invalid_argument& e) {
    throw ConfigError("DEVICE=" + s.device + ": " + e.what());
  }
  integer("TILE", s.tile, -1, 4096);
  integer("JOB_WORKERS", s.job_workers, 0, 64);
  integer("INFERENCE_THREADS", s.inference_threads, 0, 1024);
  integer("JOB_MAX_ATTEMPTS", s.job_max_attempts, 1, 100);
  integer("JOB_RETRY_BASE_SECONDS", s.job_retry_base_s, 0, 86'400);
  integer("JOB_LEASE_SECONDS", s.job_lease_s, 2, 86'400);
  integer("JOB_POLL_MS", s.job_poll_ms, 10, 600'000);
  text("INSTANCE_ID", s.instance_id);
  if (s.instance_id.empty()) s.instance_id = host_name();

  text("ROLE", s.role);
  if (s.role != "all" && s.role != "api" && s.role != "worker")
    throw ConfigError("ROLE=" + s.role + ": expected all, api or worker");
  text("WEB_DIR", s.web_dir);
  text("LOG_LEVEL", s.log_level);
  static const char* const levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (std::find(std::begin(levels), std::end(levels), s.log_level) == std::end(levels))
    throw ConfigError("LOG_LEVEL=" + s.log_level + ": expected trace, debug, info, warn, error, critical or off");
  return s;
}

std::string ensure_secret_key(const Settings& s, bool& generated) {
  generated = false;
  if (!s.secret_key.empty()) return s.secret_key;
  const auto path = fs::path(s.data_dir) / "secret_key";
  std::error_code ec;
  fs::create_directories(s.data_dir, ec);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (std::ifstream in{path}) {
      std::string key;
      std::getline(in, key);
      if (key.size() < 32) throw ConfigError(path.string() + " holds no usable key: delete it or set SECRET_KEY");
      return key;
    }
    unsigned char raw[32];
    if (::getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw))
      throw ConfigError(std::string("getrandom failed: ") + std::strerror(errno));
    std::string key;
    static const char* hex = "0123456789abcdef";
    for (unsigned char c : raw) key += hex[c >> 4], key += hex[c & 15];
    // O_EXCL: if another process made one first, read theirs on the next pass.
    const auto tmp = path.string() + ".tmp" + std::to_string(::getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw ConfigError("cannot create " + tmp + ": " + std::strerror(errno));
    const std::string line = key + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::link(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      if (ok && err == EEXIST) continue;
      throw ConfigError("cannot write " + path.string() + ": " + std::strerror(err));
    }
    ::unlink(tmp.c_str());
    generated = true;
    return key;
  }
  throw ConfigError("cannot read " + path.string());
}

}  // namespace petcam::config
