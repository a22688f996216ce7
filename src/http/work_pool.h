// The bounded pool that runs everything an I/O thread must not: DB calls, password hashing, file I/O.
// When its queue is full, try_submit refuses and the caller answers 503 with Retry-After.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace petcam::http {

class WorkPool {
 public:
  WorkPool(std::size_t threads, std::size_t max_queued);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  bool try_submit(std::function<void()> task);
  // Runs what is queued, then joins the threads.
  void shutdown();

 private:
  void run();
  std::size_t max_queued_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace petcam::http
