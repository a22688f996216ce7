// A caching CPU allocator for libtorch. Every op of a forward pass allocates its output afresh;
// large blocks come from mmap and go back with munmap, so each tile pays page faults and
// kernel zeroing for every activation (the cost grows with the tile and dominates above ~400 px).
// Tiles repeat the same shapes, so keeping freed large blocks and handing them out again removes
// that cost. Blocks are held only until release() or until the cap would be exceeded.
#pragma once

#include <cstddef>

namespace petcam::upscaler::tensor_cache {

// Installs the allocator for the process (once; later calls do nothing).
void install();
// Returns every cached block to the system; call when a batch of tiles is done.
void release();
// Bytes currently cached (not in use).
std::size_t cached_bytes();

}  // namespace petcam::upscaler::tensor_cache
