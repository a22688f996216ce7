// The native CPU engine: both Real-ESRGAN networks as a graph of Winograd 3x3 convolutions run in row
// strips through the whole network (each layer keeps the rows of its input the next strip needs), so no
// pixel is computed twice and the output equals whole-image inference. GEMMs through oneDNN's matmul.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "upscaler/network.h"
#include "upscaler/upscaler.h"

namespace petcam::upscaler::native {

// Whether the native engine can run `net` (one of the two architectures, built by load_network).
bool supports(const Network& net);

class NativeUpscaler : public Upscaler {
 public:
  // Bytes the engine holds to run a width x height image: each tensor's rows (planned from the schedule, exact)
  // and the threads' scratch. Large for wide images through RRDBNet: skip connections keep many rows.
  virtual std::size_t working_bytes(int width, int height) = 0;
};

// The Winograd output tile: 4, or 6 with PETCAM_WINOGRAD=6. F(6,3) does 21% fewer multiplies, but its larger
// transforms and weights made it no faster on the Xeon (x4plus 128x128 fp32: 756-805 vs 763-784 ms), and its
// larger coefficients cost precision (bf16 most).
int default_winograd();

// precision: Fp32 or Bf16. strip_rows <= 0: chosen from the image size. winograd: the output tile, 4 or 6
// (0: default_winograd).
std::unique_ptr<NativeUpscaler> make_upscaler(std::shared_ptr<Network> net, Precision precision, int threads,
                                              int strip_rows = 0, int winograd = 0);

}  // namespace petcam::upscaler::native
