#include "upscaler/network.h"

#include <string>

namespace petcam::upscaler {

namespace F = torch::nn::functional;

torch::nn::Conv2d Network::make_conv(int in, int out, bool leaky, int pixels_per_input_pixel) {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(in, out, 3).stride(1).padding(1).bias(true));
  convs_.push_back({conv, leaky});
  macs_ += static_cast<std::int64_t>(in) * out * 9 * pixels_per_input_pixel;
  return conv;
}

torch::nn::PReLU Network::make_prelu(int channels) {
  torch::nn::PReLU prelu(torch::nn::PReLUOptions().num_parameters(channels));
  prelus_.push_back(prelu);
  return prelu;
}

std::int64_t Network::macs_per_input_pixel() const {
  return macs_;
}

namespace {

torch::Tensor lrelu(torch::Tensor x) {
  return torch::leaky_relu_(x, 0.2);
}

class ResidualDenseBlock : public torch::nn::Module {
 public:
  ResidualDenseBlock(Network& net, int feat, int grow) {
    for (int i = 0; i < 5; ++i) {
      const int in = feat + i * grow;
      const int out = i < 4 ? grow : feat;
      convs_[i] = register_module("conv" + std::to_string(i + 1), net.make_conv(in, out, i < 4, 1));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto x1 = lrelu(convs_[0]->forward(x));
    auto x2 = lrelu(convs_[1]->forward(torch::cat({x, x1}, 1)));
    auto x3 = lrelu(convs_[2]->forward(torch::cat({x, x1, x2}, 1)));
    auto x4 = lrelu(convs_[3]->forward(torch::cat({x, x1, x2, x3}, 1)));
    auto x5 = convs_[4]->forward(torch::cat({x, x1, x2, x3, x4}, 1));
    return x5.mul_(0.2).add_(x);
  }

 private:
  torch::nn::Conv2d convs_[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
};

class RRDB : public torch::nn::Module {
 public:
  RRDB(Network& net, int feat, int grow) {
    for (int i = 0; i < 3; ++i)
      rdb_[i] = register_module("rdb" + std::to_string(i + 1), std::make_shared<ResidualDenseBlock>(net, feat, grow));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = rdb_[2]->forward(rdb_[1]->forward(rdb_[0]->forward(x)));
    return out.mul_(0.2).add_(x);
  }

 private:
  std::shared_ptr<ResidualDenseBlock> rdb_[3];
};

class RRDBNet : public Network {
 public:
  explicit RRDBNet(const RrdbConfig& cfg) : cfg_(cfg) {
    conv_first_ = register_module("conv_first", make_conv(3, cfg.num_feat, false, 1));
    body_ = register_module("body", torch::nn::ModuleList());
    for (int i = 0; i < cfg.num_block; ++i) {
      auto block = std::make_shared<RRDB>(*this, cfg.num_feat, cfg.num_grow);
      body_->push_back(block);
      blocks_.push_back(block);
    }
    conv_body_ = register_module("conv_body", make_conv(cfg.num_feat, cfg.num_feat, false, 1));
    conv_up1_ = register_module("conv_up1", make_conv(cfg.num_feat, cfg.num_feat, true, 4));
    conv_up2_ = register_module("conv_up2", make_conv(cfg.num_feat, cfg.num_feat, true, 16));
    conv_hr_ = register_module("conv_hr", make_conv(cfg.num_feat, cfg.num_feat, true, 16));
    conv_last_ = register_module("conv_last", make_conv(cfg.num_feat, 3, false, 16));
  }

  torch::Tensor forward(torch::Tensor x) override {
    auto feat = conv_first_->forward(x);
    auto body = feat;
    for (auto& b : blocks_) body = b->forward(body);
    feat = conv_body_->forward(body).add_(feat);
    feat = lrelu(conv_up1_->forward(upsample2(feat)));
    feat = lrelu(conv_up2_->forward(upsample2(feat)));
    return conv_last_->forward(lrelu(conv_hr_->forward(feat)));
  }
  Tail tail() const override { return Tail::None; }

  int scale() const override { return 4; }
  std::string describe() const override {
    return "RRDBNet(" + std::to_string(cfg_.num_block) + " blocks, " + std::to_string(cfg_.num_feat) + " feat, " +
           std::to_string(cfg_.num_grow) + " grow)";
  }
  int default_tile() const override { return 256; }
  // Its receptive field is ~348 px, but beyond 64 px the difference is <= 2 levels (65.7 dB).
  int default_tile_pad() const override { return 64; }

 private:
  static torch::Tensor upsample2(const torch::Tensor& x) {
    return F::interpolate(
        x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  }

  RrdbConfig cfg_;
  torch::nn::Conv2d conv_first_{nullptr}, conv_body_{nullptr}, conv_up1_{nullptr}, conv_up2_{nullptr},
      conv_hr_{nullptr}, conv_last_{nullptr};
  torch::nn::ModuleList body_{nullptr};
  std::vector<std::shared_ptr<RRDB>> blocks_;
};

class SRVGGNetCompact : public Network {
 public:
  explicit SRVGGNetCompact(const SrvggConfig& cfg) : cfg_(cfg) {
    body_ = register_module("body", torch::nn::ModuleList());
    int in = 3;
    for (int i = 0; i <= cfg.num_conv; ++i) {
      body_->push_back(convs_.emplace_back(make_conv(in, cfg.num_feat, false, 1)));
      body_->push_back(acts_.emplace_back(make_prelu(cfg.num_feat)));
      in = cfg.num_feat;
    }
    body_->push_back(convs_.emplace_back(make_conv(cfg.num_feat, 3 * cfg.upscale * cfg.upscale, false, 1)));
  }

  torch::Tensor forward(torch::Tensor x) override {
    auto out = x;
    for (std::size_t i = 0; i < acts_.size(); ++i) out = acts_[i]->forward(convs_[i]->forward(out));
    return convs_.back()->forward(out);
  }
  Tail tail() const override { return Tail::PixelShuffleAddInput; }

  int scale() const override { return cfg_.upscale; }
  std::string describe() const override {
    return "SRVGGNetCompact(" + std::to_string(cfg_.num_feat) + " feat, " + std::to_string(cfg_.num_conv) + " conv, x" +
           std::to_string(cfg_.upscale) + ")";
  }
  int default_tile() const override { return 444; }
  // Every 3x3 conv runs at input resolution: num_conv + 2 of them see exactly that many px.
  int default_tile_pad() const override { return cfg_.num_conv + 2; }

 private:
  SrvggConfig cfg_;
  torch::nn::ModuleList body_{nullptr};
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::PReLU> acts_;
};

}  // namespace

std::shared_ptr<Network> make_rrdbnet(const RrdbConfig& cfg) {
  return std::make_shared<RRDBNet>(cfg);
}
std::shared_ptr<Network> make_srvgg(const SrvggConfig& cfg) {
  return std::make_shared<SRVGGNetCompact>(cfg);
}

}  // namespace petcam::upscaler
