// How an image is cut into tiles: evenly sized cores, each grown by `pad` on every side
// (clipped to the image), as Real-ESRGAN's tile_process but with balanced core sizes.
#pragma once

#include <algorithm>

namespace petcam::upscaler {

struct Rect {
  int x = 0, y = 0, w = 0, h = 0;
};

struct Tile {
  Rect core;    // the input pixels this tile is responsible for
  Rect padded;  // what the model sees: core plus context
};

class TileGrid {
 public:
  // tile <= 0 means one tile for the whole image.
  TileGrid(int width, int height, int tile, int pad)
      : w_(width),
        h_(height),
        pad_(std::max(0, pad)),
        nx_(tile > 0 ? (width + tile - 1) / tile : 1),
        ny_(tile > 0 ? (height + tile - 1) / tile : 1) {}

  int count() const { return nx_ * ny_; }

  Tile at(int i) const {
    const int tx = i % nx_, ty = i / nx_;
    Tile t;
    t.core.x = split(w_, nx_, tx);
    t.core.w = split(w_, nx_, tx + 1) - t.core.x;
    t.core.y = split(h_, ny_, ty);
    t.core.h = split(h_, ny_, ty + 1) - t.core.y;
    t.padded.x = std::max(0, t.core.x - pad_);
    t.padded.y = std::max(0, t.core.y - pad_);
    t.padded.w = std::min(w_, t.core.x + t.core.w + pad_) - t.padded.x;
    t.padded.h = std::min(h_, t.core.y + t.core.h + pad_) - t.padded.y;
    return t;
  }

 private:
  static int split(int n, int parts, int k) { return static_cast<int>(static_cast<long long>(n) * k / parts); }

  int w_, h_, pad_, nx_, ny_;
};

}  // namespace petcam::upscaler
