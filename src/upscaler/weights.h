// Building a Network from a weight file: an ncnn .param/.bin pair or a PyTorch .pth state dict.
#pragma once

#include <memory>
#include <string>

#include "upscaler/network.h"

namespace petcam::upscaler {

// Throws ModelError naming the file and, for shape problems, the layer.
std::shared_ptr<Network> load_ncnn(const std::string& param_path, const std::string& bin_path);
std::shared_ptr<Network> load_pth(const std::string& pth_path);

// By extension: ".pth"/".pt" -> load_pth; otherwise a .param with its .bin beside it.
std::shared_ptr<Network> load_network(const std::string& path);

}  // namespace petcam::upscaler
