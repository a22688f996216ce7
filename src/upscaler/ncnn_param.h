// The text graph of an ncnn model (.param). Torch-free so it can be fuzzed and tested cheaply.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace petcam::upscaler {

struct NcnnLayer {
  std::string type;
  std::string name;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::map<int, std::string> params;  // "k=v" pairs as written; arrays keep their comma list

  int int_param(int key, int fallback) const;  // throws ModelError when present but not an integer
};

struct NcnnGraph {
  std::vector<NcnnLayer> layers;
  std::vector<const NcnnLayer*> of_type(std::string_view type) const;
};

// Throws ModelError naming `source` and the line on any malformed input.
NcnnGraph parse_ncnn_param(std::string_view text, const std::string& source);

}  // namespace petcam::upscaler
