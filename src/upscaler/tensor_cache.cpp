#include "upscaler/tensor_cache.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/version.h>

#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

namespace petcam::upscaler::tensor_cache {

namespace {

constexpr std::size_t kMinCachedBlock = 1u << 20;  // small blocks: glibc's heap already reuses them
constexpr std::size_t kMaxCachedBytes = 1ull << 30;

// libtorch 2.3 made allocate() non-const and added copy_data(); 1.13 (Debian) has neither change.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define PETCAM_ALLOCATE_CONST
#define PETCAM_ALLOCATOR_COPY_DATA
#else
#define PETCAM_ALLOCATE_CONST const
#endif

class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t n) PETCAM_ALLOCATE_CONST override {
    void* p = nullptr;
    if (n >= kMinCachedBlock) p = self().take(n);
    if (!p) {
      p = c10::alloc_cpu(n);
      if (n >= kMinCachedBlock) self().track(p, n);
    }
    return {p, p, &deallocate, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &deallocate; }
#ifdef PETCAM_ALLOCATOR_COPY_DATA
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
#endif

  void release_all() {
    std::multimap<std::size_t, void*> drop;
    {
      std::lock_guard lock(mu_);
      drop.swap(free_);
      for (const auto& [size, p] : drop) sizes_.erase(p);
      cached_ = 0;
    }
    for (const auto& [size, p] : drop) c10::free_cpu(p);
  }

  std::size_t cached() {
    std::lock_guard lock(mu_);
    return cached_;
  }

  static CachingAllocator& instance() {
    static CachingAllocator a;
    return a;
  }

 private:
  CachingAllocator& self() const { return instance(); }

  // Best fit within 1.5x, so border tiles (a little smaller) reuse the blocks of inner ones.
  void* take(std::size_t n) {
    std::lock_guard lock(mu_);
    auto it = free_.lower_bound(n);
    if (it == free_.end() || it->first > n + n / 2) return nullptr;
    void* p = it->second;
    cached_ -= it->first;
    free_.erase(it);
    return p;
  }

  void track(void* p, std::size_t n) {
    std::lock_guard lock(mu_);
    sizes_[p] = n;
  }

  static void deallocate(void* p) {
    if (!p) return;
    auto& a = instance();
    {
      std::lock_guard lock(a.mu_);
      auto it = a.sizes_.find(p);
      if (it != a.sizes_.end()) {
        if (a.cached_ + it->second <= kMaxCachedBytes) {
          a.free_.emplace(it->second, p);
          a.cached_ += it->second;
          return;
        }
        a.sizes_.erase(it);
      }
    }
    c10::free_cpu(p);
  }

  std::mutex mu_;
  std::unordered_map<void*, std::size_t> sizes_;  // every large block we handed out, by address
  std::multimap<std::size_t, void*> free_;        // cached blocks, by size
  std::size_t cached_ = 0;
};

}  // namespace

void install() {
  static std::once_flag once;
  std::call_once(once, [] { c10::SetCPUAllocator(&CachingAllocator::instance(), /*priority=*/10); });
}

void release() {
  CachingAllocator::instance().release_all();
}

std::size_t cached_bytes() {
  return CachingAllocator::instance().cached();
}

}  // namespace petcam::upscaler::tensor_cache
