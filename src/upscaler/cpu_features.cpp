#include <cpuid.h>

#include <cstdlib>
#include <string_view>

#include "upscaler/upscaler.h"

namespace petcam::upscaler {

namespace {
unsigned long long xgetbv0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
}  // namespace

bool cpu_has_fast_bf16() {
  // PETCAM_CPU_ISA=avx2|sse2: behave as a CPU without AVX-512 (native/winograd.h).
  if (const char* cap = std::getenv("PETCAM_CPU_ISA");
      cap && (std::string_view(cap) == "avx2" || std::string_view(cap) == "sse2"))
    return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE)) return false;
  // The OS must save opmask, ZMM and YMM state, or AVX-512 instructions fault.
  if ((xgetbv0() & 0xe6) != 0xe6) return false;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_bf16 = edx & (1u << 22);
  const bool avx512f = ebx & (1u << 16);
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return amx_bf16;
  const bool avx512_bf16 = eax & (1u << 5);
  return avx512f && (amx_bf16 || avx512_bf16);
}

}  // namespace petcam::upscaler
