#include "upscaler/tiling.h"

#include <gtest/gtest.h>

#include <vector>

using petcam::upscaler::TileGrid;

TEST(TileGrid, CoresCoverTheImageExactlyOnce) {
  for (auto [w, h, tile] :
       std::vector<std::tuple<int, int, int>>{{451, 300, 128}, {7, 5, 3}, {512, 512, 444}, {100, 1, 1}}) {
    const TileGrid grid(w, h, tile, 10);
    std::vector<int> hits(static_cast<std::size_t>(w) * h, 0);
    for (int i = 0; i < grid.count(); ++i) {
      const auto t = grid.at(i);
      EXPECT_LE(t.core.w, tile);
      EXPECT_LE(t.core.h, tile);
      for (int y = t.core.y; y < t.core.y + t.core.h; ++y)
        for (int x = t.core.x; x < t.core.x + t.core.w; ++x) ++hits[static_cast<std::size_t>(y) * w + x];
    }
    for (int v : hits) ASSERT_EQ(v, 1) << w << "x" << h << " tile " << tile;
  }
}

TEST(TileGrid, PaddingIsClippedToTheImage) {
  const TileGrid grid(300, 200, 100, 34);
  EXPECT_EQ(grid.count(), 6);
  for (int i = 0; i < grid.count(); ++i) {
    const auto t = grid.at(i);
    EXPECT_GE(t.padded.x, 0);
    EXPECT_GE(t.padded.y, 0);
    EXPECT_LE(t.padded.x + t.padded.w, 300);
    EXPECT_LE(t.padded.y + t.padded.h, 200);
    EXPECT_LE(t.padded.x, t.core.x);
    EXPECT_GE(t.padded.x + t.padded.w, t.core.x + t.core.w);
  }
  const auto middle = grid.at(1);
  EXPECT_EQ(middle.core.x - middle.padded.x, 34);
}

TEST(TileGrid, BalancesTileSizes) {
  // 512 px with 444 px tiles: two cores of 256, not 444 + 68.
  const TileGrid grid(512, 512, 444, 0);
  EXPECT_EQ(grid.count(), 4);
  EXPECT_EQ(grid.at(0).core.w, 256);
  EXPECT_EQ(grid.at(1).core.w, 256);
}

TEST(TileGrid, ZeroTileMeansWholeImage) {
  const TileGrid grid(640, 480, 0, 10);
  ASSERT_EQ(grid.count(), 1);
  EXPECT_EQ(grid.at(0).core.w, 640);
  EXPECT_EQ(grid.at(0).padded.h, 480);
}
