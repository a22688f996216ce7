// Reads a PyTorch state dict saved by torch.save (the zip format of torch >= 1.6).
// libtorch's own unpickler turns collections.OrderedDict into None and lacks SETITEM, so
// Real-ESRGAN's .pth files need this small interpreter. It understands only what a state
// dict pickles to (dicts, tuples, tensors from storages) and refuses any other global.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace petcam::upscaler {

// The top-level dict: name -> tensor, or name -> nested dict (e.g. {"params_ema": {...}}).
// Nested dicts come back flattened with their key as prefix and a '/' separator.
// Throws ModelError.
std::map<std::string, torch::Tensor> read_pth(const std::string& path);

}  // namespace petcam::upscaler
