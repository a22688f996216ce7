#include "upscaler/ncnn_param.h"

#include <gtest/gtest.h>

#include "upscaler/upscaler.h"

using petcam::upscaler::ModelError;
using petcam::upscaler::parse_ncnn_param;

namespace {
const char* kGraph =
    "7767517\n"
    "3 3\n"
    "Input            input.1  0 1 data\n"
    "Convolution      Conv_0   1 1 data 102 0=64 1=3 4=1 5=1 6=1728 9=2 -23310=1,2.000000e-01\n"
    "PReLU            PRelu_1  1 1 102 out 0=64\n";

std::string error_of(const std::string& text) {
  try {
    parse_ncnn_param(text, "m.param");
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(NcnnParam, ParsesLayersBlobsAndParams) {
  const auto g = parse_ncnn_param(kGraph, "m.param");
  ASSERT_EQ(g.layers.size(), 3u);
  const auto& conv = g.layers[1];
  EXPECT_EQ(conv.type, "Convolution");
  EXPECT_EQ(conv.name, "Conv_0");
  EXPECT_EQ(conv.inputs, std::vector<std::string>{"data"});
  EXPECT_EQ(conv.outputs, std::vector<std::string>{"102"});
  EXPECT_EQ(conv.int_param(0, 0), 64);
  EXPECT_EQ(conv.int_param(6, 0), 1728);
  EXPECT_EQ(conv.int_param(7, -1), -1);
  EXPECT_EQ(conv.params.at(-23310), "1,2.000000e-01");
  EXPECT_EQ(g.of_type("PReLU").size(), 1u);
}

TEST(NcnnParam, RejectsWhatIsNotAGraph) {
  EXPECT_NE(error_of("").find("not an ncnn .param"), std::string::npos);
  EXPECT_NE(error_of("\x89PNG\r\n").find("not an ncnn .param"), std::string::npos);
  EXPECT_NE(error_of("7767517\n").find("missing the layer"), std::string::npos);
  EXPECT_NE(error_of("7767517\n3\n").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("7767517\n99999999 3\n").find("line 2"), std::string::npos);
}

TEST(NcnnParam, NamesTheLineOfABadLayer) {
  std::string bad = kGraph;
  bad.replace(bad.find("0=64 1=3"), 4, "0=6x");
  const auto g = parse_ncnn_param(bad, "m.param");        // values are kept as text ...
  EXPECT_THROW(g.layers[1].int_param(0, 0), ModelError);  // ... and checked when read
  EXPECT_NE(error_of("7767517\n1 1\nConvolution Conv_0 1 1\n").find("line 3"), std::string::npos);
  EXPECT_NE(error_of("7767517\n1 1\nConvolution Conv_0 0 1 x oops\n").find("bad parameter 'oops'"), std::string::npos);
}

TEST(NcnnParam, CountsLayersAgainstTheHeader) {
  std::string truncated = kGraph;
  truncated.resize(truncated.find("PReLU"));
  EXPECT_NE(error_of(truncated).find("declares 3 layers but has 2"), std::string::npos);
  EXPECT_NE(error_of(std::string(kGraph) + "PReLU x 1 1 a b\n").find("more layers"), std::string::npos);
}
