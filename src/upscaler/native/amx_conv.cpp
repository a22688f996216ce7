#include "upscaler/native/amx_conv.h"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "upscaler/native/winograd.h"

namespace petcam::upscaler::native::amx {

#define PETCAM_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an XSAVE feature's state
constexpr long kXfeatureTileData = 18;

struct TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// Palette 1, eight tiles of 16 rows x 64 bytes (A: 16 pixels x 32 channels, B: 16 pairs x 16 outputs,
// C: 16 pixels x 16 outputs in fp32).
constexpr TileConfig tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  return c;
}
alignas(64) const TileConfig kTiles = tiles();

std::uint16_t bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

bool probe() {
  if (!cpu_has_amx_bf16() || !cpu_has_avx512_bf16()) return false;
  // Linux hands out AMX tile state only on request (5.16+); without it the first tile instruction faults.
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureTileData) == 0;
}

// One step of the reduction: the A tile of one tap and 32 input channels (at pixel 0 of the segment) and its
// B tile (at output block 0).
struct Step {
  const std::uint16_t* a;
  long stride;  // bytes from one pixel to the next: 2 C
  const std::uint16_t* b;
};

// One 32-pixel segment of outputs [16 nb, 16 (nb + 1 + Two)) into C0/C1 (pixels 0-15) and C2/C3 (16-31), over
// `n` steps. Software pipelined: each tile register is reloaded for the next step right after its last use
// in this one, so loads overlap the products still running (reloading a tile register that a product still
// reads stalls: a 4 x 1 blocking that did so was 9-15% slower).
template <bool Two>
PETCAM_AMX void segment(const Step* steps, int n, int x0, int nb) {
  _tile_zero(0);
  _tile_zero(2);
  if constexpr (Two) {
    _tile_zero(1);
    _tile_zero(3);
  }
  const std::size_t bo = static_cast<std::size_t>(nb) * 512;
  const auto a = [&](int s) { return steps[s].a + static_cast<std::size_t>(x0) * (steps[s].stride / 2); };
  _tile_loadd(4, a(0), steps[0].stride);
  _tile_loadd(6, steps[0].b + bo, 64);
  if constexpr (Two) _tile_loadd(7, steps[0].b + bo + 512, 64);
  _tile_loadd(5, a(0) + 8 * steps[0].stride, steps[0].stride);
  for (int s = 0; s < n; ++s) {
    const int q = s + 1 < n ? s + 1 : s;  // the last step reloads its own tiles: harmless
    const std::uint16_t* an = a(q);
    const long st = steps[q].stride;
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (Two) _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(4, an, st);
    _tile_dpbf16ps(2, 5, 6);
    _tile_loadd(6, steps[q].b + bo, 64);
    if constexpr (Two) _tile_dpbf16ps(3, 5, 7);
    _tile_loadd(5, an + 8 * st, st);
    if constexpr (Two) _tile_loadd(7, steps[q].b + bo + 512, 64);
  }
}

// The products of the last segment into scratch: [32 pixels][32 outputs].
template <bool Two>
PETCAM_AMX void store(float* scratch) {
  _tile_stored(0, scratch, 128);
  _tile_stored(2, scratch + 16 * 32, 128);
  if constexpr (Two) {
    _tile_stored(1, scratch + 16, 128);
    _tile_stored(3, scratch + 16 * 32 + 16, 128);
  }
}

// Bias, activation, residuals and the stores of one segment from its products in scratch. The job's fields are
// read once into locals: the stores through float pointers could alias them, so the compiler would reload them
// for every pixel.
template <bool Two>
PETCAM_AMX void epilogue(const RowJob& j, int x0, int nb, const float* scratch) {
  const int pixels = j.width - x0 < 32 ? j.width - x0 : 32;
  const int N = j.N, nres = j.nres, act = j.act;
  const float* res0 = j.res[0];
  const float* res1 = j.res[1];
  const __m512 scale0 = _mm512_set1_ps(j.res_scale[0]), scale1 = _mm512_set1_ps(j.res_scale[1]);
  float* const out = j.out;
  std::uint16_t* const out_bf16 = j.out_bf16;
  for (int h = 0; h < (Two ? 2 : 1); ++h) {
    const int co = (nb + h) * 16;
    const __m512 bias = _mm512_loadu_ps(j.bias + co);
    const __m512 slope = act == kActPrelu ? _mm512_loadu_ps(j.slope + co) : _mm512_set1_ps(0.2f);
    for (int p = 0; p < pixels; ++p) {
      __m512 v = _mm512_add_ps(_mm512_load_ps(scratch + p * 32 + h * 16), bias);
      if (act != kActNone) {
        const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
        v = _mm512_mask_mul_ps(v, neg, v, slope);
      }
      const std::size_t px = static_cast<std::size_t>(x0 + p) * N + co;
      if (nres > 0) v = _mm512_fmadd_ps(v, scale0, _mm512_loadu_ps(res0 + px));
      if (nres > 1) v = _mm512_fmadd_ps(v, scale1, _mm512_loadu_ps(res1 + px));
      if (out) _mm512_storeu_ps(out + px, v);
      if (out_bf16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_bf16 + px), (__m256i)_mm512_cvtneps_pbh(v));
    }
  }
}

void finish(const RowJob& j, int x0, int nb, bool two, const float* scratch) {
  if (two)
    epilogue<true>(j, x0, nb, scratch);
  else
    epilogue<false>(j, x0, nb, scratch);
}

}  // namespace

bool available() {
  static const bool ok = probe();
  return ok;
}

const std::uint16_t* aligned64(const std::vector<std::uint16_t>& packed) {
  const auto p = reinterpret_cast<std::uintptr_t>(packed.data());
  return reinterpret_cast<const std::uint16_t*>((p + 63) & ~std::uintptr_t{63});
}

std::vector<std::uint16_t> pack_weights(const float* oihw, int cout, int K, int N) {
  const int KB = K / 32, NB = N / 16;
  std::vector<std::uint16_t> packed(static_cast<std::size_t>(9) * K * N + 32, 0);
  auto* w = const_cast<std::uint16_t*>(aligned64(packed));
  for (int tap = 0; tap < 9; ++tap)
    for (int kb = 0; kb < KB; ++kb)
      for (int nb = 0; nb < NB; ++nb)
        for (int pair = 0; pair < 16; ++pair)
          for (int n = 0; n < 16; ++n)
            for (int e = 0; e < 2; ++e) {
              const int k = kb * 32 + pair * 2 + e, o = nb * 16 + n;
              if (o >= cout) continue;
              const std::size_t at =
                  ((((static_cast<std::size_t>(tap) * KB + kb) * NB + nb) * 16 + pair) * 16 + n) * 2 + e;
              w[at] = bf16(oihw[(static_cast<std::size_t>(o) * K + k) * 9 + tap]);
            }
  return packed;
}

PETCAM_AMX void begin() {
  // A static object: GCC's _tile_loadconfig tells the compiler it reads only a pointer's worth of the
  // configuration, so a local one could be left half-written.
  _tile_loadconfig(&kTiles);
}

PETCAM_AMX void end() {
  _tile_release();
}

void conv_row(const RowJob& job, float* scratch) {
  const int NB = job.N / 16;
  Step steps[9 * kMaxK / 32];
  int n = 0;
  const std::uint16_t* b = job.weights;
  for (int tap = 0; tap < 9; ++tap)
    for (int s = 0; s < job.nsrc; ++s) {
      const int C = job.src[s].C;
      const std::uint16_t* a = job.src[s].rows[tap / 3] + static_cast<std::size_t>(tap % 3) * C;
      for (int k = 0; k < C; k += 32, b += static_cast<std::size_t>(NB) * 512) steps[n++] = {a + k, 2L * C, b};
    }
  // Segment i's products are stored after segment i - 1's epilogue: the vector work of one runs while the
  // tile unit still multiplies the other (two scratch buffers).
  struct Item {
    int x0, nb;
    bool two;
  } prev{0, 0, false};
  int i = 0;
  for (int x0 = 0; x0 < job.width; x0 += 32)
    for (int nb = 0; nb < NB; nb += 2, ++i) {
      const bool two = nb + 1 < NB;
      float* buf = scratch + (i & 1) * 32 * 32;
      if (two)
        segment<true>(steps, n, x0, nb);
      else
        segment<false>(steps, n, x0, nb);
      if (i > 0) finish(job, prev.x0, prev.nb, prev.two, scratch + ((i - 1) & 1) * 32 * 32);
      if (two)
        store<true>(buf);
      else
        store<false>(buf);
      prev = {x0, nb, two};
    }
  if (i > 0) finish(job, prev.x0, prev.nb, prev.two, scratch + ((i - 1) & 1) * 32 * 32);
}

PETCAM_AMX void to_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
  for (; i < n; ++i) dst[i] = bf16(src[i]);
}

}  // namespace petcam::upscaler::native::amx
