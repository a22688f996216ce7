#include "upscaler/ncnn_param.h"

#include <charconv>
#include <sstream>

#include "upscaler/upscaler.h"

namespace petcam::upscaler {

namespace {

constexpr int kMagic = 7767517;
constexpr int kMaxLayers = 100000;  // a real model has ~1,000; refuse absurd counts before reserving

std::vector<std::string_view> split_ws(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

bool to_int(std::string_view s, int& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

int NcnnLayer::int_param(int key, int fallback) const {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  int v = 0;
  if (!to_int(it->second, v))
    throw ModelError("layer " + name + ": parameter " + std::to_string(key) + "=" + it->second + " is not an integer");
  return v;
}

std::vector<const NcnnLayer*> NcnnGraph::of_type(std::string_view type) const {
  std::vector<const NcnnLayer*> out;
  for (const auto& l : layers)
    if (l.type == type) out.push_back(&l);
  return out;
}

NcnnGraph parse_ncnn_param(std::string_view text, const std::string& source) {
  std::vector<std::string_view> lines;
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  auto fail = [&](std::size_t line_no, const std::string& why) -> ModelError {
    return ModelError(source + " line " + std::to_string(line_no) + ": " + why);
  };
  int magic = 0;
  if (lines.empty() || !to_int(split_ws(lines[0]).empty() ? "" : split_ws(lines[0])[0], magic) || magic != kMagic)
    throw fail(1, "not an ncnn .param file (first line must be 7767517)");
  if (lines.size() < 2) throw fail(2, "missing the layer and blob counts");
  auto counts = split_ws(lines[1]);
  int layer_count = 0, blob_count = 0;
  if (counts.size() != 2 || !to_int(counts[0], layer_count) || !to_int(counts[1], blob_count) || layer_count <= 0 ||
      layer_count > kMaxLayers || blob_count <= 0)
    throw fail(2, "expected '<layer count> <blob count>'");

  NcnnGraph graph;
  graph.layers.reserve(static_cast<std::size_t>(layer_count));
  for (std::size_t ln = 2; ln < lines.size(); ++ln) {
    auto tok = split_ws(lines[ln]);
    if (tok.empty()) continue;
    if (static_cast<int>(graph.layers.size()) == layer_count)
      throw fail(ln + 1, "more layers than the declared " + std::to_string(layer_count));
    int n_in = 0, n_out = 0;
    if (tok.size() < 4 || !to_int(tok[2], n_in) || !to_int(tok[3], n_out) || n_in < 0 || n_out < 0 ||
        tok.size() < 4 + static_cast<std::size_t>(n_in) + n_out)
      throw fail(ln + 1, "expected '<type> <name> <inputs> <outputs> <blobs...> <k=v...>'");
    NcnnLayer layer;
    layer.type = tok[0];
    layer.name = tok[1];
    std::size_t i = 4;
    for (int k = 0; k < n_in; ++k) layer.inputs.emplace_back(tok[i++]);
    for (int k = 0; k < n_out; ++k) layer.outputs.emplace_back(tok[i++]);
    for (; i < tok.size(); ++i) {
      auto eq = tok[i].find('=');
      int key = 0;
      if (eq == std::string_view::npos || !to_int(tok[i].substr(0, eq), key))
        throw fail(ln + 1, "layer " + layer.name + ": bad parameter '" + std::string(tok[i]) + "'");
      layer.params[key] = std::string(tok[i].substr(eq + 1));
    }
    graph.layers.push_back(std::move(layer));
  }
  if (static_cast<int>(graph.layers.size()) != layer_count)
    throw ModelError(source + ": declares " + std::to_string(layer_count) + " layers but has " +
                     std::to_string(graph.layers.size()) + " (truncated?)");
  return graph;
}

}  // namespace petcam::upscaler
