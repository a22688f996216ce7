#include "http/server.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <restinio/all.hpp>
#include <thread>

#include "api/account_api.h"
#include "api/auth_api.h"
#include "api/events.h"
#include "api/idempotency.h"
#include "api/ids.h"
#include "api/job_metrics.h"
#include "api/photo_api.h"
#include "api/routes.h"
#include "api/web_app.h"
#include "db/database.h"
#include "db/repositories.h"
#include "http/client_ip.h"
#include "http/metrics.h"
#include "http/rate_limiter.h"
#include "http/work_pool.h"
#include "request/form.h"
#include "request/multipart.h"

namespace petcam::http {

// Our own methods mapper type, so that the parser settings below apply to our server only.
struct PetcamMethods : restinio::default_http_methods_t {};

// RESTinio answers a body over its limit by dropping the connection. We want a 413 the client can
// read, so our parser callbacks stop storing the body, mark the request with this (client-proof)
// field and let it complete; the handler answers 413. Bodies far beyond the limit are still cut off.
inline constexpr std::string_view kBodyTooLarge = "X-Petcam-Body-Too-Large";

inline std::uint64_t discard_cap(std::uint64_t limit) {
  return std::max<std::uint64_t>(limit * 4, std::uint64_t{256} << 20);
}

// Requests whose bytes are still arriving, for a graceful stop: counted from their first byte until the handler
// has taken them (a request whose client vanished mid-way stays counted, hence the time of the last byte too).
// The parser callbacks cannot carry state of ours, and there is one server per process.
struct ReadingRequests {
  std::atomic<int> count{0};
  std::atomic<std::int64_t> last_byte_ns{0};
  void touch() {
    last_byte_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
};
inline ReadingRequests g_reading;

}  // namespace petcam::http

namespace restinio::impl {

template <>
inline http_parser_settings create_parser_settings<petcam::http::PetcamMethods>() noexcept {
  using petcam::http::kBodyTooLarge;
  auto s = create_parser_settings<restinio::default_http_methods_t>();
  s.on_message_begin = [](http_parser*) -> int {
    ++petcam::http::g_reading.count;
    petcam::http::g_reading.touch();
    return 0;
  };
  s.on_headers_complete = [](http_parser* p) -> int {
    petcam::http::g_reading.touch();
    auto* ctx = static_cast<http_parser_ctx_t*>(p->data);
    ctx->m_header.remove_field(kBodyTooLarge);
    const auto limit = ctx->m_limits.max_body_size();
    if (p->content_length != ULLONG_MAX && p->content_length > limit) {
      if (p->content_length > petcam::http::discard_cap(limit)) return -1;
      ctx->m_header.set_field(std::string(kBodyTooLarge), std::to_string(p->content_length));
      ctx->m_leading_headers_completed = true;
      return 0;
    }
    return restinio_headers_complete_cb(p);
  };
  s.on_body = [](http_parser* p, const char* at, size_t length) -> int {
    petcam::http::g_reading.touch();
    auto* ctx = static_cast<http_parser_ctx_t*>(p->data);
    if (ctx->m_header.has_field(kBodyTooLarge)) return 0;               // discarding
    if (ctx->m_body.size() + length > ctx->m_limits.max_body_size()) {  // chunked body grew too large
      ctx->m_header.set_field(std::string(kBodyTooLarge), "chunked");
      std::string().swap(ctx->m_body);
      return 0;
    }
    return restinio_body_cb(p, at, length);
  };
  s.on_message_complete = [](http_parser* p) -> int {
    return restinio_message_complete_cb<petcam::http::PetcamMethods>(p);
  };
  return s;
}

}  // namespace restinio::impl

namespace petcam::http {

namespace {

using Clock = std::chrono::steady_clock;
using api::Op;

struct Traits : restinio::traits_t<restinio::asio_timer_manager_t, restinio::null_logger_t> {
  using http_methods_mapper_t = PetcamMethods;
  static constexpr bool use_connection_count_limiter = true;
};

constexpr std::size_t kSmallBodyLimit = 64 * 1024;  // JSON and form bodies

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 416:
      return "Range Not Satisfiable";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

// What the request log needs, captured on the I/O thread.
struct RequestInfo {
  Clock::time_point start;
  std::size_t route = Metrics::kOtherRoute;  // index into api::kRoutes, for /metrics
  std::string method;
  std::string path;
  std::string client;
};

std::optional<std::string_view> field_of(const restinio::request_handle_t& req, restinio::http_field_t name) {
  const auto* v = req->header().try_get_field(name);
  return v ? std::optional<std::string_view>(*v) : std::nullopt;
}

// One GET /events stream: a chunked response written from any thread (the hub's), each write counted until
// RESTinio has written it; a reader that leaves more than `limit` bytes unread is dropped.
class SseSink : public api::EventSink {
 public:
  SseSink(restinio::response_builder_t<restinio::chunked_output_t> resp, std::int64_t limit,
          std::function<restinio::write_status_cb_t()> final_write)
      : resp_(std::move(resp)), limit_(limit), final_write_(std::move(final_write)) {}

  bool send(std::string text) override {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    if (state_->failed || state_->unwritten > limit_) {
      end();
      return false;
    }
    const auto n = static_cast<std::int64_t>(text.size());
    state_->unwritten += n;
    // Counted down when RESTinio writes the chunk, or drops it with its connection.
    auto written = std::shared_ptr<void>(nullptr, [state = state_, n](void*) { state->unwritten -= n; });
    resp_.append_chunk(std::move(text));
    resp_.flush([state = state_, written](const asio::error_code& ec) {
      if (ec) state->failed = true;
    });
    return true;
  }
  void close() override {
    std::lock_guard lock(mutex_);
    end();
  }

 private:
  struct State {
    std::atomic<std::int64_t> unwritten{0};
    std::atomic<bool> failed{false};
  };
  void end() {
    if (closed_) return;
    closed_ = true;
    resp_.done(final_write_());
  }
  std::mutex mutex_;
  restinio::response_builder_t<restinio::chunked_output_t> resp_;
  const std::int64_t limit_;
  std::function<restinio::write_status_cb_t()> final_write_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
  bool closed_ = false;
};

// A download's body. Not restinio::sendfile: in RESTinio 0.6.16 a sendfile whose first call fails (the
// client reset the connection while the headers were being written) destroys its own running operation
// from inside it, a heap-use-after-free that ASan caught in our browser tests. Small bodies are read into
// the response; larger ones are written from the file mapped into memory, so the kernel copies straight
// from the page cache and the process holds no copy however large the file (bench/bench_http.py: within a
// few % of sendfile). Our files are written once and renamed into place, never truncated, so a mapping
// stays valid, and a file deleted meanwhile stays mapped until its write is done.
constexpr std::uint64_t kReadWholeLimit = 256 * 1024;

bool read_range(const std::string& path, std::uint64_t offset, std::uint64_t length, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.resize(static_cast<std::size_t>(length));
  std::size_t got = 0;
  while (got < out.size()) {
    const auto n = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return got == out.size();
}

class MappedFile {
 public:
  // nullptr when the file cannot be opened or mapped (deleted since the lookup) or is shorter than asked.
  static std::shared_ptr<MappedFile> open(const std::string& path, std::uint64_t offset, std::uint64_t length) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < offset + length) {
      ::close(fd);
      return nullptr;
    }
    void* base = ::mmap(nullptr, static_cast<std::size_t>(offset + length), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);  // the mapping keeps the file
    if (base == MAP_FAILED) return nullptr;
    return std::shared_ptr<MappedFile>(new MappedFile(base, offset, length));
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { ::munmap(base_, static_cast<std::size_t>(offset_ + length_)); }

  const char* data() const { return static_cast<const char*>(base_) + offset_; }
  std::size_t size() const { return static_cast<std::size_t>(length_); }

 private:
  MappedFile(void* base, std::uint64_t offset, std::uint64_t length) : base_(base), offset_(offset), length_(length) {}
  void* base_;
  std::uint64_t offset_, length_;
};

}  // namespace

struct Server::Impl {
  Impl(api::Context& c, const api::Docs& d)
      : ctx(c),
        docs(d),
        s(c.settings),
        auth(c),
        accounts(c, auth),
        photos(c),
        events(c, {c.settings.events_max_streams_per_user, c.settings.events_max_streams,
                   std::max(1, std::min(c.settings.events_keepalive_s, c.settings.handle_timeout_s / 2))}),
        pool(static_cast<std::size_t>(s.pool_threads), static_cast<std::size_t>(s.pool_queue)),
        proxies(s.trusted_proxies),
        limit_register(s.rate_register),
        limit_token(s.rate_token),
        limit_upscale(s.rate_upscale),
        limit_bestcut(s.rate_bestcut),
        limit_account(s.rate_account) {
    ctx.account_deleted = [this](const std::string& user_id) { events.close_user(user_id); };
  }

  api::Context& ctx;
  const api::Docs& docs;
  const api::WebApp web_app;
  const config::Settings& s;
  api::AuthApi auth;
  api::AccountApi accounts;
  api::PhotoApi photos;
  api::EventHub events;
  WorkPool pool;
  TrustedProxies proxies;
  RateLimiter limit_register, limit_token, limit_upscale, limit_bestcut;
  RateLimiter limit_account;  // one budget for the three account routes together
  Metrics metrics;

  std::atomic<bool> db_ok{true};
  std::atomic<int> in_flight{0};       // handed to the pool, not yet answered
  std::atomic<int> writes_pending{0};  // answered, not yet written to the socket (or failed)
  std::atomic<bool> draining{false};   // after SIGTERM: every answer closes its connection
  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stopping = false;

  // Nothing left to answer or to write, and no request arriving (or none has sent a byte for a second).
  bool drained() const {
    const auto quiet_ns = Clock::now().time_since_epoch().count() - g_reading.last_byte_ns.load();
    return in_flight == 0 && writes_pending == 0 &&
           (g_reading.count <= 0 || quiet_ns >= std::chrono::nanoseconds(std::chrono::seconds(1)).count());
  }
  // The callback for done(): counts the write until RESTinio has written it or dropped it (its write group
  // runs or destroys the callback either way).
  restinio::write_status_cb_t count_write() {
    ++writes_pending;
    auto pending = std::shared_ptr<void>(nullptr, [this](void*) { --writes_pending; });
    return [pending](const asio::error_code&) {};
  }

  restinio::request_handling_status_t handle(const restinio::request_handle_t& req);
  void dispatch(const restinio::request_handle_t& req, const api::Route& route, std::string param, RequestInfo info);
  api::Response run_op(const restinio::request_handle_t& req, const api::Route& route, const std::string& param,
                       const RequestInfo& info);
  void send(const restinio::request_handle_t& req, const api::Response& r, const RequestInfo& info);
  void send_file(const restinio::request_handle_t& req, const api::FileResponse& f, const RequestInfo& info);
  void open_events(const restinio::request_handle_t& req, const RequestInfo& info);
  void log(const RequestInfo& info, int status);
  void watch_database();
};

void Server::Impl::log(const RequestInfo& info, int status) {
  const double secs = std::chrono::duration<double>(Clock::now() - info.start).count();
  metrics.observe(info.route, status, secs);
  spdlog::info("{} {} {} {:.1f}ms {}", info.method, info.path, status, secs * 1000, info.client);
}

void Server::Impl::send(const restinio::request_handle_t& req, const api::Response& r, const RequestInfo& info) {
  auto resp = req->create_response(restinio::http_status_line_t{
      restinio::http_status_code_t{static_cast<std::uint16_t>(r.status)}, reason(r.status)});
  resp.append_header(restinio::http_field::content_type, r.content_type);
  for (const auto& [name, value] : r.headers) resp.append_header(name, value);
  resp.set_body(r.body);
  if (draining) resp.connection_close();
  resp.done(count_write());
  log(info, r.status);
}

void Server::Impl::send_file(const restinio::request_handle_t& req, const api::FileResponse& f,
                             const RequestInfo& info) {
  auto resp = req->create_response(restinio::http_status_line_t{
      restinio::http_status_code_t{static_cast<std::uint16_t>(f.status)}, reason(f.status)});
  for (const auto& [name, value] : f.headers) resp.append_header(name, value);
  if (!f.path.empty() && f.length > 0) {
    // Opened here, on the pool thread. A photo deleted since the lookup is simply not found.
    if (f.length <= kReadWholeLimit) {
      std::string body;
      if (!read_range(f.path, f.offset, f.length, body)) throw api::ApiError(404, "Photo not found");
      resp.set_body(std::move(body));
    } else {
      auto file = MappedFile::open(f.path, f.offset, f.length);
      if (!file) throw api::ApiError(404, "Photo not found");
      resp.set_body(std::move(file));
    }
  }
  if (draining) resp.connection_close();
  resp.done(count_write());
  log(info, f.status);
}

void Server::Impl::open_events(const restinio::request_handle_t& req, const RequestInfo& info) {
  const auto user = auth.authenticate(field_of(req, restinio::http_field::authorization));
  events.subscribe(user, [&] {
    auto resp = req->create_response<restinio::chunked_output_t>();
    resp.append_header(restinio::http_field::content_type, "text/event-stream; charset=utf-8");
    resp.append_header(restinio::http_field::cache_control, "no-cache");
    resp.append_header("X-Accel-Buffering", "no");  // a proxy in front must not hold the stream back
    resp.append_chunk(std::string("retry: 3000\n: connected\n\n"));
    resp.flush();
    return std::make_shared<SseSink>(std::move(resp), s.events_buffer_bytes, [this] { return count_write(); });
  });
  log(info, 200);
}

restinio::request_handling_status_t Server::Impl::handle(const restinio::request_handle_t& req) {
  // Every path below answers (a write counted) or dispatches (in flight) before this request stops counting
  // as being read, so a graceful stop always finds it in one of the counts.
  struct Taken {
    ~Taken() { --g_reading.count; }
  } taken;
  const auto& h = req->header();
  RequestInfo info{Clock::now(), Metrics::kOtherRoute, std::string(h.method().c_str()), std::string(h.path()), {}};
  const auto* xff = h.try_get_field("X-Forwarded-For");
  info.client = proxies.client_address(req->remote_endpoint().address().to_string(),
                                       xff ? std::optional<std::string_view>(*xff) : std::nullopt);

  const api::Route* route = nullptr;
  std::string_view param;
  std::string allow;
  for (const auto& r : api::kRoutes) {
    std::string_view p;
    if (!api::route_matches(r.path, info.path, p)) continue;
    allow += allow.empty() ? "" : ", ";
    allow += r.method;
    if (r.method == info.method) route = &r, param = p, info.route = static_cast<std::size_t>(&r - api::kRoutes.data());
  }
  const auto if_none_match = [&req] { return field_of(req, restinio::http_field::if_none_match).value_or(""); };
  if (!route) {
    const bool get = info.method == "GET";
    const auto* asset = get ? docs.find(info.path) : nullptr;
    if (auto app = get ? web_app.answer(info.path, if_none_match()) : std::nullopt)
      send(req, *app, info);
    else if (asset)
      send(req, {200, asset->content_type, asset->body, {{"Cache-Control", "public, max-age=86400"}}}, info);
    else if (!allow.empty())
      send(req, api::json_response(405, {{"detail", "Method Not Allowed"}}, {{"Allow", allow}}), info);
    else
      send(req, api::json_response(404, {{"detail", "Not Found"}}), info);
    return restinio::request_accepted();
  }
  if (h.has_field(kBodyTooLarge)) {
    send(req,
         api::json_response(413,
                            {{"detail", "Request body too large: the limit is " + std::to_string(s.max_request_bytes) +
                                            " bytes (MAX_REQUEST_BYTES)"}},
                            {}),
         info);
    return restinio::request_accepted();
  }

  RateLimiter* limiter = nullptr;
  bool small_body = true;
  switch (route->op) {
    case Op::Health:
      if (db_ok)
        send(req, api::json_response(200, {{"status", "ok"}, {"version", "1.0.0"}}), info);
      else
        send(req, api::unavailable("Database unavailable").response(), info);
      return restinio::request_accepted();
    case Op::OpenApi:
    case Op::Docs:
    case Op::Redoc:
      if (const auto* asset = docs.find(info.path))
        send(req, {200, asset->content_type, asset->body, {}}, info);
      else
        send(req, api::json_response(404, {{"detail", "Not Found"}}), info);
      return restinio::request_accepted();
    case Op::WebApp:
      send(req, web_app.answer(info.path, if_none_match()).value(), info);
      return restinio::request_accepted();
    case Op::Register:
      limiter = &limit_register;
      break;
    case Op::Token:
      limiter = &limit_token;
      break;
    case Op::Upscale:
      limiter = &limit_upscale, small_body = false;
      break;
    case Op::Bestcut:
      limiter = &limit_bestcut, small_body = false;
      break;
    case Op::Me:
    case Op::ChangePassword:
    case Op::DeleteAccount:
      limiter = &limit_account;
      break;
    default:
      break;
  }
  if (limiter) {
    if (const auto wait = limiter->acquire(info.client)) {
      metrics.rate_limited(info.route);
      send(req,
           api::json_response(429, {{"detail", "Rate limit exceeded: " + limiter->limit().text}},
                              {{"Retry-After", std::to_string(wait)}}),
           info);
      return restinio::request_accepted();
    }
  }
  if (small_body && req->body().size() > kSmallBodyLimit) {
    send(req,
         api::json_response(413, {{"detail", "Request body too large: the limit for this route is " +
                                                 std::to_string(kSmallBodyLimit) + " bytes"}}),
         info);
    return restinio::request_accepted();
  }
  dispatch(req, *route, request::percent_decode(param, false), std::move(info));
  return restinio::request_accepted();
}

void Server::Impl::dispatch(const restinio::request_handle_t& req, const api::Route& route, std::string param,
                            RequestInfo info) {
  ++in_flight;
  auto task = [this, req, &route, param = std::move(param), info]() {
    try {
      if (route.op == Op::Events) {
        open_events(req, info);
      } else if (route.op == Op::GetPhoto) {
        const auto user = auth.authenticate(field_of(req, restinio::http_field::authorization));
        send_file(req,
                  photos.download(user, param, req->header().query(),
                                  {field_of(req, restinio::http_field::if_none_match).value_or(""),
                                   field_of(req, restinio::http_field::range).value_or("")}),
                  info);
      } else {
        send(req, run_op(req, route, param, info), info);
      }
    } catch (const api::ApiError& e) {
      send(req, e.response(), info);
    } catch (const db::Unavailable& e) {
      spdlog::error("{} {}: database unavailable: {}", info.method, info.path, e.what());
      db_ok = false;
      send(req, api::unavailable("Database unavailable, retry shortly").response(), info);
    } catch (const std::exception& e) {
      spdlog::error("{} {}: {}", info.method, info.path, e.what());
      send(req, api::json_response(500, {{"detail", "Internal Server Error"}}), info);
    }
    if (--in_flight == 0) {
      std::lock_guard lock(stop_mutex);
      stop_cv.notify_all();
    }
  };
  if (!pool.try_submit(std::move(task))) {
    send(req, api::unavailable("Server busy, retry shortly").response(), info);
    if (--in_flight == 0) {
      std::lock_guard lock(stop_mutex);
      stop_cv.notify_all();
    }
  }
}

api::Response Server::Impl::run_op(const restinio::request_handle_t& req, const api::Route& route,
                                   const std::string& param, const RequestInfo&) {
  const auto& h = req->header();
  auto header = [&](restinio::http_field_t f) -> std::optional<std::string_view> {
    const auto* v = h.try_get_field(f);
    return v ? std::optional<std::string_view>(*v) : std::nullopt;
  };
  switch (route.op) {
    case Op::Metrics:
      return {200, "text/plain; version=0.0.4; charset=utf-8", metrics.render() + api::job_metrics(ctx), {}};
    case Op::Register:
      return auth.register_user(req->body());
    case Op::Token:
      return auth.login(header(restinio::http_field::content_type).value_or(""), req->body());
    default:
      break;
  }
  const auto user = auth.authenticate(header(restinio::http_field::authorization));
  switch (route.op) {
    case Op::Upscale:
    case Op::Bestcut: {
      // As FastAPI: a body that is not multipart has no form fields, so the handler reports `file`
      // (or `files`) missing with a 422; a multipart body we cannot parse is a 400.
      std::vector<request::Part> parts;
      if (const auto boundary = request::multipart_boundary(header(restinio::http_field::content_type).value_or(""))) {
        try {
          parts = request::parse_multipart(req->body(), *boundary, static_cast<std::size_t>(s.max_bestcut_files) + 16);
        } catch (const request::MultipartError& e) {
          throw api::ApiError(400, std::string("There was an error parsing the multipart body: ") + e.what());
        }
      }
      const auto* key_field = h.try_get_field("Idempotency-Key");
      const auto key = key_field ? std::optional<std::string_view>(*key_field) : std::nullopt;
      return route.op == Op::Upscale ? photos.upscale(user, parts, key) : photos.bestcut(user, parts, key);
    }
    case Op::ListPhotos:
      return photos.list(user, h.query());
    case Op::PhotoInfo:
      return photos.info(user, param);
    case Op::DeletePhoto:
      return photos.remove(user, param);
    case Op::Me:
      return accounts.me(user);
    case Op::ChangePassword:
      return accounts.change_password(user, req->body());
    case Op::DeleteAccount:
      return accounts.remove(user, req->body());
    default:
      throw std::logic_error("route without a handler");
  }
}

void Server::Impl::watch_database() {
  // Also sweeps expired Idempotency-Key records: at start, then hourly.
  auto next_sweep = Clock::now();
  std::unique_lock lock(stop_mutex);
  while (!stopping) {
    lock.unlock();
    const bool ok = ctx.db.ping();
    if (ok != db_ok.exchange(ok)) {
      if (ok)
        spdlog::info("database reachable again");
      else
        spdlog::error("database unreachable: /health answers 503");
    }
    if (ok && Clock::now() >= next_sweep) {
      next_sweep = Clock::now() + std::chrono::hours(1);
      try {
        if (const int n = db::IdempotencyRepository(ctx.db).sweep(api::now_ms() - api::kIdempotencyRetentionMs))
          spdlog::info("idempotency: removed {} expired key(s)", n);
      } catch (const std::exception& e) {
        spdlog::warn("idempotency: sweeping expired keys failed: {}", e.what());
      }
    }
    lock.lock();
    stop_cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; });
  }
}

Server::Server(api::Context& ctx, const api::Docs& docs) : impl_(std::make_unique<Impl>(ctx, docs)) {}
Server::~Server() = default;

void Server::run(const std::function<void()>& on_listening) {
  auto& im = *impl_;
  const auto& s = im.s;
  // The io_context and the server are left alive on purpose when run() returns (the process exits next):
  // connections still owned by pending handlers point into the server (its connection counter), and the
  // server's strands point into the io_context, so no destruction order is safe in RESTinio 0.6.
  auto& io = *new asio::io_context;

  restinio::server_settings_t<Traits> settings;
  settings.address(s.host)
      .port(static_cast<std::uint16_t>(s.port))
      .request_handler([&im](restinio::request_handle_t req) { return im.handle(req); })
      .read_next_http_message_timelimit(std::chrono::seconds(s.read_timeout_s))
      .write_http_response_timelimit(std::chrono::seconds(s.write_timeout_s))
      .handle_request_timeout(std::chrono::seconds(s.handle_timeout_s))
      .max_parallel_connections(static_cast<std::size_t>(s.max_connections))
      // Some answers leave in more than one write (event streams, one write per event): with Nagle on, a
      // small segment sent while an earlier one is unacknowledged waits for the client's delayed ACK, ~40 ms.
      .socket_options_setter([](restinio::socket_options_t& o) { o.set_option(asio::ip::tcp::no_delay{true}); })
      .incoming_http_msg_limits(restinio::incoming_http_msg_limits_t{}
                                    .max_url_size(8 * 1024)
                                    .max_field_name_size(1024)
                                    .max_field_value_size(16 * 1024)
                                    .max_field_count(100)
                                    .max_body_size(static_cast<std::uint64_t>(s.max_request_bytes)));
  auto& server = *new restinio::http_server_t<Traits>{restinio::external_io_context(io), std::move(settings)};

  auto signals = std::make_unique<asio::signal_set>(io, SIGINT, SIGTERM);
  std::atomic<bool> signalled{false};
  signals->async_wait([&](const asio::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received {}: no new connections; finishing requests in flight",
                 signo == SIGTERM ? "SIGTERM" : "SIGINT");
    signalled = true;
    im.draining = true;
    im.events.close_all();
    server.close_async([] {}, [](std::exception_ptr) {});
    std::lock_guard lock(im.stop_mutex);
    im.stopping = true;
    im.stop_cv.notify_all();
  });

  server.open_sync();  // binds now, so a taken port fails here
  if (on_listening) on_listening();
  std::thread db_watch([&im] { im.watch_database(); });

  std::vector<std::thread> io_threads;
  for (int i = 0; i < s.io_threads; ++i) io_threads.emplace_back([&io] { io.run(); });

  {
    // Stop only once every request that has begun has been answered and its answer written (bounded by
    // HANDLE_TIMEOUT_SECONDS): answers from now on close their connections, so keep-alive clients drain.
    std::unique_lock lock(im.stop_mutex);
    im.stop_cv.wait(lock, [&] { return im.stopping; });
    const auto deadline = Clock::now() + std::chrono::seconds(s.handle_timeout_s);
    while (!im.drained() && Clock::now() < deadline) im.stop_cv.wait_for(lock, std::chrono::milliseconds(20));
    if (!im.drained())
      spdlog::warn("stopping with requests unfinished after {} s (HANDLE_TIMEOUT_SECONDS)", s.handle_timeout_s);
  }
  io.stop();
  for (auto& t : io_threads) t.join();
  im.pool.shutdown();  // tasks still running finish first: they hold requests, hence connections
  db_watch.join();
  server.close_sync();
  signals.reset();
}

}  // namespace petcam::http
