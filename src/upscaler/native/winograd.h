// Winograd F(m x m, 3x3), m = 4 or 6, for the native engine: the weight transform (once, at load) and the
// input/output transforms of one chunk of m x m output tiles (hand-written, one kernel per instruction set and
// m, picked at run time).
// Activations are NHWC rows whose channels are padded to a multiple of 16; every row has one zero column on
// the left (the convolution's padding) and zero columns on the right up to a whole number of tiles plus one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace petcam::upscaler::native {

constexpr int kBlock = 16;  // channels are padded to this; the kernels work on 16-channel blocks
// F(m x m, 3x3) reads (m + 2)^2 input pixels per tile and multiplies at as many transformed positions, one GEMM
// each: 36 for m = 4 (2.25 per output pixel, 4x fewer than direct), 64 for m = 6 (1.78, 5.1x fewer).
constexpr int points(int m) {
  return (m + 2) * (m + 2);
}

enum Act { kActNone = 0, kActLeaky = 1, kActPrelu = 2 };

enum class Isa { Generic, Avx2, Avx512 };
const char* to_string(Isa isa);
// cpuid + xgetbv: AVX-512F/BW/DQ/VL, else AVX2+FMA, else SSE2; PETCAM_CPU_ISA=avx2|sse2 lowers it.
Isa detect_isa();
bool cpu_has_amx_bf16();
bool cpu_has_avx512_bf16();

struct InputJob {
  struct Source {
    int C = 0;                           // padded channels of this source (a part of the concatenated input)
    const float* const* rows = nullptr;  // rows[k]: input row (first - 1 + k), at its padded column 0
  };
  int nsrc = 0;
  Source src[6];
  int n_tx = 0;   // tiles per row
  int K = 0;      // sum of src[].C
  int ld = 0;     // V's row stride in elements (>= K; 0: K)
  int first = 0;  // sources before it are in V already (a dense block's earlier convs made them): skipped
};

struct OutputJob {
  int N = 0;  // padded output channels
  int n_tx = 0;
  int rows = 0;   // output rows in this call (the last tile row may be partial)
  int width = 0;  // output columns (the last tile column may be partial)
  const float* bias = nullptr;
  const float* slope = nullptr;  // PReLU slopes, kActPrelu only
  int act = kActNone;
  int nres = 0;
  float res_scale[2] = {1.0f, 1.0f};
  const float* const* res_rows[2] = {nullptr, nullptr};  // [row] at pixel 0
  float* const* out_rows = nullptr;                      // [row] at pixel 0
};

using InputFn = void (*)(const InputJob&, int t0, int count, int T, void* v, bool bf16);
using OutputFn = void (*)(const OutputJob&, int t0, int count, int T, const float* m);

struct Kernels {
  Isa isa;
  int m;  // output tile side
  InputFn input;
  OutputFn output;
};
Kernels kernels_for(Isa isa, int m);

// OIHW 3x3 weights (cout x cin) -> U[points(m)][kp][np] (zero padded to kp x np), computed in double.
std::vector<float> transform_weights(const float* oihw, int cout, int cin, int kp, int np, int m);

}  // namespace petcam::upscaler::native
