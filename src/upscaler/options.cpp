// The upscaler's option names, parsed in one place. No libtorch here: settings validation links this alone.
#include <charconv>

#include "upscaler/upscaler.h"

namespace petcam::upscaler {

const char* to_string(Precision p) {
  switch (p) {
    case Precision::Auto:
      return "auto";
    case Precision::Fp32:
      return "fp32";
    case Precision::Fp16:
      return "fp16";
    case Precision::Bf16:
      return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& s) {
  if (s == "auto") return Precision::Auto;
  if (s == "fp32") return Precision::Fp32;
  if (s == "fp16") return Precision::Fp16;
  if (s == "bf16") return Precision::Bf16;
  throw std::invalid_argument("precision must be auto, fp32, fp16 or bf16, not '" + s + "'");
}

const char* to_string(Engine e) {
  switch (e) {
    case Engine::Auto:
      return "auto";
    case Engine::Native:
      return "native";
    case Engine::Libtorch:
      return "libtorch";
  }
  return "?";
}

Engine parse_engine(const std::string& s) {
  if (s == "auto") return Engine::Auto;
  if (s == "native") return Engine::Native;
  if (s == "libtorch") return Engine::Libtorch;
  throw std::invalid_argument("engine must be auto, native or libtorch, not '" + s + "'");
}

std::string to_string(const Device& d) {
  switch (d.kind) {
    case DeviceKind::Auto:
      return "auto";
    case DeviceKind::Cpu:
      return "cpu";
    case DeviceKind::Cuda:
      return d.index < 0 ? "cuda" : "cuda:" + std::to_string(d.index);
  }
  return "?";
}

Device parse_device(const std::string& s) {
  if (s == "auto") return {DeviceKind::Auto, -1};
  if (s == "cpu") return {DeviceKind::Cpu, -1};
  if (s == "cuda") return {DeviceKind::Cuda, -1};
  if (s.starts_with("cuda:") && s.size() > 5) {
    int index = -1;
    const char* b = s.data() + 5;
    const char* e = s.data() + s.size();
    const auto [p, ec] = std::from_chars(b, e, index);
    // Digits only: no sign, no spaces, no "cuda:1x".
    if (ec == std::errc{} && p == e && *b != '-' && *b != '+' && index >= 0 && index < 1024)
      return {DeviceKind::Cuda, index};
  }
  throw std::invalid_argument("device must be auto, cpu, cuda or cuda:N (N a GPU index), not '" + s + "'");
}

}  // namespace petcam::upscaler
