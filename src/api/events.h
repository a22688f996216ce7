// GET /events: live Server-Sent Events of a user's photo changes. The hub hears every change through the
// database (Database::on_photo_change: from this process, or from others through PostgreSQL NOTIFY), renders
// `event: photo` (the photo's JSON) or `event: deleted`, and writes them to that user's open streams, with a
// keep-alive comment between. Streams are bounded per user and per server, and a stream whose reader falls too
// far behind is dropped rather than let anyone wait. Plain C++: the HTTP layer provides the sink.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/context.h"

namespace petcam::api {

// One open stream, written by the HTTP layer. send() queues text and answers false once the stream is gone
// (the client left, or it fell too far behind and was dropped); close() ends the response cleanly.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual bool send(std::string text) = 0;
  virtual void close() = 0;
};

struct EventLimits {
  int per_user = 8;
  int per_server = 256;
  int keepalive_s = 15;
};

class EventHub {
 public:
  EventHub(Context& ctx, EventLimits limits);  // listens to the database's photo changes from here on
  ~EventHub();

  // Opens a stream for the user through `open` (which starts the response) and keeps it, or throws ApiError:
  // 429 when the user has per_user streams open, 503 when the server has per_server; both with Retry-After.
  void subscribe(const std::string& user_id, const std::function<std::shared_ptr<EventSink>()>& open);
  // Every stream ends (SIGTERM); no new ones are taken.
  void close_all();
  // The user's streams end (their account is gone).
  void close_user(const std::string& user_id);
  std::size_t open_streams() const;

 private:
  struct Stream {
    std::string user_id;
    std::shared_ptr<EventSink> sink;
    std::uint64_t next_id = 1;
  };
  void on_change(const db::PhotoChange& change);
  void keepalive_loop();
  void drop_dead(const std::vector<std::shared_ptr<Stream>>& dead);
  void erase_locked(const std::vector<std::shared_ptr<Stream>>& dead);  // closes and forgets them

  // What the database's listener reaches; cleared when the hub goes, as job workers may outlive it.
  struct Link {
    std::mutex mutex;
    EventHub* hub = nullptr;
  };
  std::shared_ptr<Link> link_ = std::make_shared<Link>();
  Context& ctx_;
  const EventLimits limits_;
  mutable std::mutex mutex_;
  std::unordered_multimap<std::string, std::shared_ptr<Stream>> streams_;  // by user id
  bool closed_ = false;
  std::condition_variable stop_cv_;
  std::thread keepalive_;
};

}  // namespace petcam::api
