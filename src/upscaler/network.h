// The two Real-ESRGAN architectures as libtorch modules, with basicsr's parameter names so a
// PyTorch state dict loads by name, and their convolutions listed in ncnn graph order.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace petcam::upscaler {

struct ConvSpec {
  torch::nn::Conv2d conv;
  bool leaky_relu;  // followed by LeakyReLU(0.2); ncnn fuses it into the conv as 9=2
};

// The last fixed step of a network, which the upscaler fuses with the conversion to 8-bit RGB
// (one pass over the 4x output instead of five or six tensor ops).
enum class Tail {
  None,                  // forward() is the image: 3 x 4H x 4W
  PixelShuffleAddInput,  // image = pixel_shuffle(forward(x), s) + nearest_upsample(x, s)
};

class Network : public torch::nn::Module {
 public:
  // The network up to its tail(); the upscaler applies the tail while writing 8-bit RGB.
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  virtual Tail tail() const = 0;
  virtual int scale() const = 0;
  virtual std::string describe() const = 0;
  virtual int default_tile() const = 0;
  virtual int default_tile_pad() const = 0;

  // Convolutions and PReLU slopes in the order their blobs appear in the ncnn .bin.
  const std::vector<ConvSpec>& convs() const { return convs_; }
  const std::vector<torch::nn::PReLU>& prelus() const { return prelus_; }
  std::int64_t macs_per_input_pixel() const;

  // Blocks create their layers through these, in forward order, so the lists above match ncnn's.
  // `pixels_per_input_pixel` is how many positions the conv runs at per input pixel (1, 4, 16).
  torch::nn::Conv2d make_conv(int in, int out, bool leaky, int pixels_per_input_pixel);
  torch::nn::PReLU make_prelu(int channels);

 private:
  std::vector<ConvSpec> convs_;
  std::vector<torch::nn::PReLU> prelus_;
  std::int64_t macs_ = 0;
};

struct RrdbConfig {
  int num_feat = 64;
  int num_block = 23;
  int num_grow = 32;
};

struct SrvggConfig {
  int num_feat = 64;
  int num_conv = 32;
  int upscale = 4;
};

std::shared_ptr<Network> make_rrdbnet(const RrdbConfig& cfg);
std::shared_ptr<Network> make_srvgg(const SrvggConfig& cfg);

}  // namespace petcam::upscaler
