#include "api/events.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "api/photo_json.h"
#include "api/response.h"

namespace petcam::api {

EventHub::EventHub(Context& ctx, EventLimits limits) : ctx_(ctx), limits_(limits) {
  link_->hub = this;
  ctx_.db.on_photo_change([link = link_](const db::PhotoChange& c) {
    std::lock_guard lock(link->mutex);
    if (link->hub) link->hub->on_change(c);
  });
  keepalive_ = std::thread([this] { keepalive_loop(); });
}

EventHub::~EventHub() {
  {
    std::lock_guard lock(link_->mutex);
    link_->hub = nullptr;
  }
  close_all();
  if (keepalive_.joinable()) keepalive_.join();
}

void EventHub::subscribe(const std::string& user_id, const std::function<std::shared_ptr<EventSink>()>& open) {
  std::lock_guard lock(mutex_);
  if (closed_) throw unavailable("The server is stopping; reconnect shortly", 2);
  if (static_cast<int>(streams_.size()) >= limits_.per_server)
    throw unavailable("Too many event streams on this server; retry later", 5);
  if (static_cast<int>(streams_.count(user_id)) >= limits_.per_user)
    throw ApiError(
        429, "Too many event streams open for this user (" + std::to_string(limits_.per_user) + "); close one first",
        {{"Retry-After", "5"}});
  auto stream = std::make_shared<Stream>();
  stream->user_id = user_id;
  stream->sink = open();
  streams_.emplace(user_id, std::move(stream));
}

void EventHub::on_change(const db::PhotoChange& change) {
  std::vector<std::shared_ptr<Stream>> mine;
  {
    std::lock_guard lock(mutex_);
    const auto [b, e] = streams_.equal_range(change.user_id);
    for (auto it = b; it != e; ++it) mine.push_back(it->second);
  }
  if (mine.empty()) return;
  std::string event, data;
  if (change.deleted) {
    event = "deleted";
    data = nlohmann::json{{"id", change.photo_id}}.dump();
  } else {
    const auto photo = db::PhotoRepository(ctx_.db).find(change.user_id, change.photo_id);
    if (!photo) return;  // deleted since: its own event follows
    event = "photo";
    append_photo(data, *photo);
  }
  std::vector<std::shared_ptr<Stream>> dead;
  for (const auto& s : mine) {
    // Ids are per stream; the hub's lock orders writers, so each stream sees its ids rise.
    std::lock_guard lock(mutex_);
    const auto text = "event: " + event + "\nid: " + std::to_string(s->next_id++) + "\ndata: " + data + "\n\n";
    if (!s->sink->send(text)) dead.push_back(s);
  }
  drop_dead(dead);
}

void EventHub::keepalive_loop() {
  std::unique_lock lock(mutex_);
  while (!closed_) {
    stop_cv_.wait_for(lock, std::chrono::seconds(limits_.keepalive_s), [&] { return closed_; });
    if (closed_) break;
    std::vector<std::shared_ptr<Stream>> dead;
    for (const auto& [user, s] : streams_)
      if (!s->sink->send(": keep-alive\n\n")) dead.push_back(s);
    erase_locked(dead);
  }
}

void EventHub::drop_dead(const std::vector<std::shared_ptr<Stream>>& dead) {
  if (dead.empty()) return;
  std::lock_guard lock(mutex_);
  erase_locked(dead);
}

void EventHub::erase_locked(const std::vector<std::shared_ptr<Stream>>& dead) {
  for (const auto& s : dead) {
    const auto [b, e] = streams_.equal_range(s->user_id);
    for (auto it = b; it != e; ++it)
      if (it->second == s) {
        s->sink->close();
        streams_.erase(it);
        break;
      }
  }
}

void EventHub::close_all() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (const auto& [user, s] : streams_) s->sink->close();
  streams_.clear();
  stop_cv_.notify_all();
}

void EventHub::close_user(const std::string& user_id) {
  std::lock_guard lock(mutex_);
  const auto [b, e] = streams_.equal_range(user_id);
  for (auto it = b; it != e; ++it) it->second->sink->close();
  streams_.erase(b, e);
}

std::size_t EventHub::open_streams() const {
  std::lock_guard lock(mutex_);
  return streams_.size();
}

}  // namespace petcam::api
