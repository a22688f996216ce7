#include "upscaler/weights.h"

#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "upscaler/ncnn_param.h"
#include "upscaler/pth_reader.h"
#include "upscaler/upscaler.h"

namespace petcam::upscaler {

namespace {

constexpr std::uint32_t kTagFp16 = 0x01306B47;
constexpr std::uint32_t kTagFp32 = 0x0002C056;
constexpr std::uintmax_t kMaxModelBytes = 1ull << 30;  // the largest Real-ESRGAN file is ~67 MB

std::vector<char> read_file(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw ModelError(path + ": cannot read model file (" + ec.message() + ")");
  if (size > kMaxModelBytes) throw ModelError(path + ": model file is over 1 GiB");
  std::ifstream in(path, std::ios::binary);
  std::vector<char> data(size);
  if (!in || !in.read(data.data(), static_cast<std::streamsize>(size)))
    throw ModelError(path + ": cannot read model file");
  return data;
}

// Reads the .bin blobs in graph order, checking each against the layer that owns it.
class BinReader {
 public:
  BinReader(std::vector<char> data, std::string path) : data_(std::move(data)), path_(std::move(path)) {}

  torch::Tensor conv_weight(const NcnnLayer& layer, std::int64_t count, at::IntArrayRef shape) {
    std::uint32_t tag = 0;
    take(layer, &tag, sizeof tag, "weight tag");
    if (tag == kTagFp16) {
      auto half = torch::empty({count}, torch::kHalf);
      take(layer, half.data_ptr(), count * 2, "fp16 weights");
      if (count % 2) skip(layer, 2, "fp16 padding");  // ncnn pads fp16 blobs to 4 bytes
      return half.to(torch::kFloat).reshape(shape);
    }
    if (tag == 0 || tag == kTagFp32) return fp32(layer, count, "fp32 weights").reshape(shape);
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08X", tag);
    throw ModelError(path_ + ": layer " + layer.name + " has weight tag " + hex +
                     " (only fp16 0x01306B47 and fp32 are supported)");
  }

  torch::Tensor fp32(const NcnnLayer& layer, std::int64_t count, const char* what) {
    auto t = torch::empty({count}, torch::kFloat);
    take(layer, t.data_ptr(), count * 4, what);
    return t;
  }

  void expect_end() const {
    if (pos_ != data_.size())
      throw ModelError(path_ + ": " + std::to_string(data_.size() - pos_) +
                       " bytes left after the last layer (the .bin does not belong to this .param)");
  }

 private:
  void skip(const NcnnLayer& layer, std::int64_t bytes, const char* what) {
    char pad[4];
    take(layer, pad, bytes, what);
  }

  void take(const NcnnLayer& layer, void* dst, std::int64_t bytes, const char* what) {
    if (bytes < 0 || pos_ + static_cast<std::size_t>(bytes) > data_.size())
      throw ModelError(path_ + ": truncated in layer " + layer.name + " (" + what + ": needs " + std::to_string(bytes) +
                       " bytes, " + std::to_string(data_.size() - pos_) + " left)");
    std::memcpy(dst, data_.data() + pos_, static_cast<std::size_t>(bytes));
    pos_ += static_cast<std::size_t>(bytes);
  }

  std::vector<char> data_;
  std::string path_;
  std::size_t pos_ = 0;
};

// Sizes read from a file decide what gets allocated: keep them to what a Real-ESRGAN model can be.
std::shared_ptr<Network> checked_rrdbnet(const RrdbConfig& c, const std::string& path) {
  if (c.num_feat < 1 || c.num_feat > 1024 || c.num_grow < 1 || c.num_grow > 1024 || c.num_block < 1 || c.num_block > 64)
    throw ModelError(path + ": implausible RRDBNet (" + std::to_string(c.num_block) + " blocks, " +
                     std::to_string(c.num_feat) + " feat, " + std::to_string(c.num_grow) + " grow)");
  return make_rrdbnet(c);
}

std::shared_ptr<Network> checked_srvgg(const SrvggConfig& c, const std::string& path) {
  if (c.upscale != 4) throw ModelError(path + ": only x4 models are supported");
  if (c.num_feat < 1 || c.num_feat > 1024 || c.num_conv < 1 || c.num_conv > 256)
    throw ModelError(path + ": implausible SRVGGNetCompact (" + std::to_string(c.num_feat) + " feat, " +
                     std::to_string(c.num_conv) + " conv)");
  return make_srvgg(c);
}

std::shared_ptr<Network> network_for_graph(const NcnnGraph& g, const std::string& path) {
  auto convs = g.of_type("Convolution");
  if (convs.size() < 3) throw ModelError(path + ": not a Real-ESRGAN graph (too few convolutions)");
  const int feat = convs[0]->int_param(0, 0);
  auto shuffles = g.of_type("PixelShuffle");
  if (!shuffles.empty()) {
    SrvggConfig cfg;
    cfg.num_feat = feat;
    cfg.num_conv = static_cast<int>(convs.size()) - 2;
    cfg.upscale = shuffles[0]->int_param(0, 0);
    return checked_srvgg(cfg, path);
  }
  if (convs.size() < 21 || (convs.size() - 6) % 15 != 0 || g.of_type("Interp").size() != 2)
    throw ModelError(path + ": neither an x4 RRDBNet nor an SRVGGNetCompact graph");
  RrdbConfig cfg;
  cfg.num_feat = feat;
  cfg.num_block = static_cast<int>((convs.size() - 6) / 15);
  cfg.num_grow = convs[1]->int_param(0, 0);
  return checked_rrdbnet(cfg, path);
}

std::string shape_str(const torch::Tensor& t) {
  std::string s;
  for (auto d : t.sizes()) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

void copy_into(torch::Tensor param, const torch::Tensor& value) {
  torch::NoGradGuard no_grad;
  param.copy_(value);
}

}  // namespace

std::shared_ptr<Network> load_ncnn(const std::string& param_path, const std::string& bin_path) {
  const auto text = read_file(param_path);
  const auto graph = parse_ncnn_param(std::string_view(text.data(), text.size()), param_path);
  auto net = network_for_graph(graph, param_path);
  BinReader bin(read_file(bin_path), bin_path);

  std::size_t ci = 0, pi = 0;
  for (const auto& layer : graph.layers) {
    if (layer.type == "Convolution") {
      if (ci == net->convs().size())
        throw ModelError(param_path + ": layer " + layer.name + ": more convolutions than " + net->describe());
      auto conv = net->convs()[ci++];
      auto& w = conv.conv->weight;
      const auto out = w.size(0), in = w.size(1), k = w.size(2);
      const int p_out = layer.int_param(0, 0), p_k = layer.int_param(1, 0);
      const int p_count = layer.int_param(6, 0), p_bias = layer.int_param(5, 0);
      const bool p_leaky = layer.int_param(9, 0) == 2;
      if (p_out != out || p_k != k || p_count != out * in * k * k || p_bias != 1 || p_leaky != conv.leaky_relu)
        throw ModelError(param_path + ": layer " + layer.name + " does not fit " + net->describe() + ": expected " +
                         std::to_string(out) + "x" + std::to_string(in) + "x" + std::to_string(k) + "x" +
                         std::to_string(k) + " weights with bias" + (conv.leaky_relu ? " and LeakyReLU" : "") +
                         ", the graph says 0=" + std::to_string(p_out) + " 1=" + std::to_string(p_k) +
                         " 6=" + std::to_string(p_count) + " 5=" + std::to_string(p_bias) +
                         " 9=" + std::to_string(layer.int_param(9, 0)));
      copy_into(w, bin.conv_weight(layer, p_count, w.sizes()));
      copy_into(conv.conv->bias, bin.fp32(layer, out, "bias"));
    } else if (layer.type == "PReLU") {
      if (pi == net->prelus().size())
        throw ModelError(param_path + ": layer " + layer.name + ": more PReLU layers than " + net->describe());
      auto& slope = net->prelus()[pi++]->weight;
      if (layer.int_param(0, 0) != slope.size(0))
        throw ModelError(param_path + ": layer " + layer.name + " has " + std::to_string(layer.int_param(0, 0)) +
                         " slopes, " + net->describe() + " expects " + std::to_string(slope.size(0)));
      copy_into(slope, bin.fp32(layer, slope.size(0), "PReLU slopes"));
    }
  }
  if (ci != net->convs().size() || pi != net->prelus().size())
    throw ModelError(param_path + ": fewer layers than " + net->describe());
  bin.expect_end();
  net->eval();
  return net;
}

namespace {

// Real-ESRGAN's releases wrap the weights as {"params_ema": ...} or {"params": ...}; others are plain.
std::map<std::string, torch::Tensor> state_dict_of(const std::map<std::string, torch::Tensor>& all) {
  for (const std::string wrapper : {"params_ema/", "params/"}) {
    std::map<std::string, torch::Tensor> inner;
    for (const auto& [k, v] : all)
      if (k.rfind(wrapper, 0) == 0) inner[k.substr(wrapper.size())] = v;
    if (!inner.empty()) return inner;
  }
  std::map<std::string, torch::Tensor> plain;
  for (const auto& [k, v] : all)
    if (k.find('/') == std::string::npos) plain[k] = v;
  return plain;
}

int count_matching(const std::map<std::string, torch::Tensor>& sd, const std::regex& re) {
  int n = 0;
  for (const auto& [k, v] : sd) n += std::regex_match(k, re);
  return n;
}

std::shared_ptr<Network> network_for_state(const std::map<std::string, torch::Tensor>& sd, const std::string& path) {
  auto at = [&](const std::string& key) -> const torch::Tensor& {
    auto it = sd.find(key);
    if (it == sd.end()) throw ModelError(path + ": missing " + key);
    return it->second;
  };
  if (sd.count("conv_first.weight")) {
    if (at("conv_first.weight").size(1) != 3)
      throw ModelError(path + ": only x4 RRDBNet is supported (conv_first takes " +
                       std::to_string(at("conv_first.weight").size(1)) + " channels)");
    RrdbConfig cfg;
    cfg.num_feat = static_cast<int>(at("conv_first.weight").size(0));
    cfg.num_grow = static_cast<int>(at("body.0.rdb1.conv1.weight").size(0));
    cfg.num_block = count_matching(sd, std::regex(R"(body\.\d+\.rdb1\.conv1\.weight)"));
    return checked_rrdbnet(cfg, path);
  }
  if (sd.count("body.0.weight")) {
    SrvggConfig cfg;
    cfg.num_feat = static_cast<int>(at("body.0.weight").size(0));
    const int convs = count_matching(sd, std::regex(R"(body\.\d+\.bias)"));
    cfg.num_conv = convs - 2;
    const auto& last = at("body." + std::to_string(2 * (convs - 1)) + ".weight");
    cfg.upscale = static_cast<int>(std::lround(std::sqrt(last.size(0) / 3.0)));
    return checked_srvgg(cfg, path);
  }
  throw ModelError(path + ": neither an RRDBNet nor an SRVGGNetCompact state dict");
}

}  // namespace

std::shared_ptr<Network> load_pth(const std::string& pth_path) {
  const auto sd = state_dict_of(read_pth(pth_path));
  auto net = network_for_state(sd, pth_path);
  std::size_t used = 0;
  for (auto& p : net->named_parameters()) {
    auto it = sd.find(p.key());
    if (it == sd.end()) throw ModelError(pth_path + ": missing " + p.key() + " for " + net->describe());
    if (!it->second.sizes().equals(p.value().sizes()))
      throw ModelError(pth_path + ": " + p.key() + " is " + shape_str(it->second) + ", " + net->describe() +
                       " expects " + shape_str(p.value()));
    copy_into(p.value(), it->second.to(torch::kFloat));
    ++used;
  }
  if (used != sd.size())
    throw ModelError(pth_path + ": has " + std::to_string(sd.size() - used) + " entries " + net->describe() +
                     " does not use");
  net->eval();
  return net;
}

std::shared_ptr<Network> load_network(const std::string& path) {
  const auto ext = std::filesystem::path(path).extension().string();
  if (ext == ".pth" || ext == ".pt") return load_pth(path);
  auto bin = std::filesystem::path(path).replace_extension(".bin").string();
  return load_ncnn(path, bin);
}

}  // namespace petcam::upscaler
