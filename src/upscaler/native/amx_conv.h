// Direct 3x3 convolution on AMX tiles for the native engine's bf16 path: bf16 activations and weights,
// fp32 accumulation, one output row per call, bias, activation and residual adds fused into the store.
// On AMX the matrix units are fast enough that Winograd's transforms (moving V and M through L2) cost more than
// the multiplies they save; a direct convolution reads each input pixel from L1 nine times and writes nothing
// in between.
// Rows are NHWC as the Winograd kernels' (pixel x at column x + 1, zero columns around it), bf16, channels a
// multiple of 32, every row 64-byte aligned and at least (width rounded up to 32) + 2 pixels long.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace petcam::upscaler::native::amx {

// The CPU has AMX-BF16 and AVX512-BF16, the OS enables tile state and grants it to this process.
bool available();

// OIHW 3x3 weights (cout x K, K the concatenated padded input channels, a multiple of 32) -> B tiles
// [tap][K / 32][N / 16][16 pairs][16 outputs][2], zero padded to N (a multiple of 16) outputs; the tiles start
// 64 bytes past aligned64(result.data()) at most (a tile load across cache lines costs twice).
std::vector<std::uint16_t> pack_weights(const float* oihw, int cout, int K, int N);
const std::uint16_t* aligned64(const std::vector<std::uint16_t>& packed);

struct RowJob {
  struct Source {
    int C = 0;                          // channels, a multiple of 32
    const std::uint16_t* rows[3] = {};  // input rows y - 1, y, y + 1 at their padded column 0
  };
  int nsrc = 0;
  Source src[6];
  int K = 0, N = 0;  // sum of src[].C; outputs, a multiple of 16
  int width = 0;
  const std::uint16_t* weights = nullptr;  // pack_weights
  const float* bias = nullptr;             // N
  const float* slope = nullptr;            // N, PReLU only
  int act = 0;                             // as winograd.h's Act
  int nres = 0;
  float res_scale[2] = {1.0f, 1.0f};
  const float* res[2] = {};           // residual rows (N channels) at pixel 0: v = v * scale + res
  float* out = nullptr;               // fp32 output row at pixel 0 (N channels), or null
  std::uint16_t* out_bf16 = nullptr;  // bf16 output row at pixel 0, or null
};

// Per thread, around a run of rows: loads the tile configuration, and releases the tile state.
void begin();
void end();
constexpr int kMaxK = 1536;  // the most input channels of one conv

// One output row. scratch: 2 x 32 x 32 floats, 64-byte aligned.
void conv_row(const RowJob& job, float* scratch);

// n floats to bf16, rounded to nearest even.
void to_bf16(const float* src, std::uint16_t* dst, std::size_t n);

}  // namespace petcam::upscaler::native::amx
