#include "upscaler/native/winograd.h"

#include <cpuid.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace petcam::upscaler::native {

// The helpers pass 64-byte vectors between static inline functions of one instruction set: no ABI crosses.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
namespace avx512 {
#define PETCAM_KT __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#include "upscaler/native/winograd_kernels.inc"
#undef PETCAM_KT
}  // namespace avx512

namespace avx2 {
#define PETCAM_KT __attribute__((target("avx2,fma")))
#include "upscaler/native/winograd_kernels.inc"
#undef PETCAM_KT
}  // namespace avx2

namespace generic {
#define PETCAM_KT
#include "upscaler/native/winograd_kernels.inc"
#undef PETCAM_KT
}  // namespace generic
#pragma GCC diagnostic pop

namespace {

unsigned long long xgetbv0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

struct Cpuid {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  bool ok = false;
};

Cpuid leaf(unsigned l, unsigned sub) {
  Cpuid c;
  c.ok = __get_cpuid_count(l, sub, &c.eax, &c.ebx, &c.ecx, &c.edx);
  return c;
}

// The OS saves YMM (and with avx512, opmask and ZMM) state.
bool os_avx(bool avx512) {
  const Cpuid one = leaf(1, 0);
  if (!one.ok || !(one.ecx & bit_OSXSAVE)) return false;
  const auto mask = avx512 ? 0xe6ull : 0x06ull;
  return (xgetbv0() & mask) == mask;
}

}  // namespace

const char* to_string(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    case Isa::Generic:
      return "sse2";
  }
  return "?";
}

Isa detect_isa() {
  const Cpuid one = leaf(1, 0), seven = leaf(7, 0);
  if (!one.ok || !seven.ok) return Isa::Generic;
  const bool fma = one.ecx & bit_FMA;
  const bool avx2 = seven.ebx & bit_AVX2;
  const bool f = seven.ebx & bit_AVX512F, dq = seven.ebx & bit_AVX512DQ, bw = seven.ebx & bit_AVX512BW,
             vl = seven.ebx & bit_AVX512VL;
  Isa isa = Isa::Generic;
  if (f && dq && bw && vl && fma && os_avx(true))
    isa = Isa::Avx512;
  else if (avx2 && fma && os_avx(false))
    isa = Isa::Avx2;
  // PETCAM_CPU_ISA=avx2|sse2 lowers it (never raises it): to run an AVX2 machine's kernels on an AVX-512 one.
  const char* cap = std::getenv("PETCAM_CPU_ISA");
  if (cap && std::strcmp(cap, "avx2") == 0 && isa == Isa::Avx512) isa = Isa::Avx2;
  if (cap && std::strcmp(cap, "sse2") == 0) isa = Isa::Generic;
  return isa;
}

bool cpu_has_amx_bf16() {
  const Cpuid seven = leaf(7, 0);
  // AMX tile state must be enabled by the OS too (XCR0 bits 17, 18).
  return seven.ok && (seven.edx & (1u << 22)) && os_avx(true) && ((xgetbv0() >> 17) & 3) == 3;
}

bool cpu_has_avx512_bf16() {
  const Cpuid sub1 = leaf(7, 1);
  return sub1.ok && (sub1.eax & (1u << 5)) && detect_isa() == Isa::Avx512;
}

Kernels kernels_for(Isa isa, int m) {
  if (m != 4 && m != 6) throw std::invalid_argument("winograd: the output tile must be 4 or 6");
  const bool six = m == 6;
  switch (isa) {
    case Isa::Avx512:
      return {isa, m, six ? avx512::input_transform<6> : avx512::input_transform<4>,
              six ? avx512::output_transform<6> : avx512::output_transform<4>};
    case Isa::Avx2:
      return {isa, m, six ? avx2::input_transform<6> : avx2::input_transform<4>,
              six ? avx2::output_transform<6> : avx2::output_transform<4>};
    case Isa::Generic:
      break;
  }
  return {Isa::Generic, m, six ? generic::input_transform<6> : generic::input_transform<4>,
          six ? generic::output_transform<6> : generic::output_transform<4>};
}

std::vector<float> transform_weights(const float* oihw, int cout, int cin, int kp, int np, int m) {
  // G ((m + 2) x 3); its rows match B^T's and A^T's points in winograd_kernels.inc.
  static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                  {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                  {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                  {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                  {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                  {0, 0, 1}};
  static const double G6[8][3] = {{1, 0, 0},
                                  {-2.0 / 9, -2.0 / 9, -2.0 / 9},
                                  {-2.0 / 9, 2.0 / 9, -2.0 / 9},
                                  {1.0 / 90, 1.0 / 45, 2.0 / 45},
                                  {1.0 / 90, -1.0 / 45, 2.0 / 45},
                                  {32.0 / 45, 16.0 / 45, 8.0 / 45},
                                  {32.0 / 45, -16.0 / 45, 8.0 / 45},
                                  {0, 0, 1}};
  if (m != 4 && m != 6) throw std::invalid_argument("winograd: the output tile must be 4 or 6");
  const int n = m + 2;
  const auto G = [&](int a, int k) { return m == 4 ? G4[a][k] : G6[a][k]; };
  std::vector<float> u(static_cast<std::size_t>(points(m)) * kp * np, 0.0f);
  for (int o = 0; o < cout; ++o)
    for (int i = 0; i < cin; ++i) {
      const float* g = oihw + (static_cast<std::size_t>(o) * cin + i) * 9;
      double gg[8][3];  // G g
      for (int a = 0; a < n; ++a)
        for (int x = 0; x < 3; ++x) gg[a][x] = G(a, 0) * g[x] + G(a, 1) * g[3 + x] + G(a, 2) * g[6 + x];
      for (int a = 0; a < n; ++a)
        for (int b = 0; b < n; ++b) {
          const double v = gg[a][0] * G(b, 0) + gg[a][1] * G(b, 1) + gg[a][2] * G(b, 2);
          u[(static_cast<std::size_t>(a * n + b) * kp + i) * np + o] = static_cast<float>(v);
        }
    }
  return u;
}

}  // namespace petcam::upscaler::native
