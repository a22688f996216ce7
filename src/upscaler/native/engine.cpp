#include "upscaler/native/engine.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <exception>
#include <limits>
#include <map>
#include <new>
#include <sstream>
#include <stdexcept>

#include "upscaler/native/amx_conv.h"
#include "upscaler/native/winograd.h"

namespace petcam::upscaler::native {

namespace {

constexpr int kChunkTiles = 64;  // most tiles per GEMM: V, M and the weights of one conv stay in L2
constexpr int kChunkStep = 16;   // GEMMs come in M = 16, 32, 48, 64 tiles, so a conv's chunks can be cut evenly
constexpr int kChunkSizes = kChunkTiles / kChunkStep;

// f(thread) on `threads` OpenMP threads (this file is built with -fopenmp: libtorch's inline at::parallel_for
// is serial in a TU built without it). oneDNN, called inside, sees the region and runs on its caller's thread.
// An exception from any thread is rethrown here, never let out of the region.
template <class F>
void on_threads(int threads, const F& f) {
  if (threads <= 1) {
    f(0);
    return;
  }
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    try {
      f(omp_get_thread_num());
    } catch (...) {
#pragma omp critical(petcam_native_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// Rows [b, e) split into `threads` contiguous parts.
template <class F>
void rows_on_threads(int threads, int b, int e, const F& f) {
  const int n = e - b, parts = std::max(1, std::min(threads, n));
  on_threads(parts, [&](int t) {
    const int lo = b + static_cast<int>(static_cast<long long>(n) * t / parts);
    const int hi = b + static_cast<int>(static_cast<long long>(n) * (t + 1) / parts);
    for (int r = lo; r < hi; ++r) f(r);
  });
}

int pad16(int c) {
  return (c + kBlock - 1) / kBlock * kBlock;
}

std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>(u);
}

// One activation: rows [base, avail) of an H x W x C tensor (C padded to 16), held in a ring of `cap` rows in
// the run's arena. Each row is (W + pad) pixels: pixel x at column x + 1, zero columns around it (the
// convolution's padding).
struct Buf {
  int C = 0, H = 0, W = 0, Wp = 0;
  int base = 0, avail = 0, cap = 0;
  float* data = nullptr;
  bool f32 = true;      // the fp32 rows (a tensor that only direct convs read has only bf16 ones)
  bool mirror = false;  // a bf16 copy of every row follows the fp32 ring (direct AMX convs read it)
  std::uint16_t* h = nullptr;
  bool live = false;                    // its rows have started (the arena block is its own from then on)
  int peak = 0, first = -1, last = -1;  // planning: most rows held; the steps it starts and ends at

  // m: rows are padded to a whole number of m pixels (the Winograd output tile, or 32 for AMX's segments).
  void init(int c, int h, int w, int m) {
    C = c, H = h, W = w;
    Wp = (w + m - 1) / m * m + 2;
    base = avail = cap = peak = 0;
    first = last = -1;
    data = nullptr;
    live = false;
  }
  std::size_t row_floats() const { return static_cast<std::size_t>(Wp) * C; }
  std::size_t ring_bytes(int rows) const {
    return static_cast<std::size_t>(rows) * row_floats() * ((f32 ? sizeof(float) : 0) + (mirror ? 2 : 0));
  }
  float* row(int r) { return data + static_cast<std::size_t>(r % cap) * row_floats(); }
  float* pixels(int r) { return row(r) + C; }  // pixel 0 of row r
  std::uint16_t* hrow(int r) { return h + static_cast<std::size_t>(r % cap) * row_floats(); }
  std::uint16_t* hpixels(int r) { return hrow(r) + C; }
  bool dead() const { return base >= H; }
};

// The rings of one run: a single anonymous mapping (zero pages from the kernel, huge pages where the kernel
// allows them, so a large image costs few page faults). A small one is kept for the next image (recycled():
// its pages hold the last image's rows), a large one unmapped when the run ends.
class Arena {
 public:
  static constexpr std::size_t kKeep = 256u << 20;
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { reset(); }
  float* map(std::size_t bytes) {
    recycled_ = base_ && bytes <= bytes_;
    if (recycled_) return static_cast<float*>(base_);
    reset();
    if (bytes == 0) return nullptr;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without it the run is the same, with more faults
    base_ = p;
    bytes_ = bytes;
    return static_cast<float*>(p);
  }
  void reset() {
    if (base_) munmap(base_, bytes_);
    base_ = nullptr;
    bytes_ = 0;
    recycled_ = false;
  }
  // After a run: keeps a mapping of at most kKeep bytes (the page faults of a fresh one were ~5-10% of a
  // small image's time), unmaps a larger one.
  void done() {
    if (bytes_ > kKeep) reset();
  }
  bool recycled() const { return recycled_; }

 private:
  void* base_ = nullptr;
  std::size_t bytes_ = 0;
  bool recycled_ = false;
};

struct Conv {
  std::vector<int> in;  // concatenated along channels, in order
  int out = -1;
  int K = 0, N = 0;
  int ld = 0;  // V's row stride: K, or a dense block's K of all five convs (they share its transformed input)
  int group = -1, fresh = 0;  // dense block; its first source that no earlier conv of the block transformed
  int act = kActNone;
  std::vector<float> bias, slope;  // N
  int nres = 0;
  int res[2] = {-1, -1};
  float res_scale[2] = {1.0f, 1.0f};
  int prim = -1;         // index into the matmul primitives
  dnnl::memory weights;  // U in the primitive's preferred layout
  bool direct = false;   // a direct conv on AMX tiles (bf16 sources), with these weights:
  std::vector<std::uint16_t> packed;
  std::vector<const float*> rows[6];
  std::vector<float*> out_rows;
  std::vector<const float*> res_rows[2];
};

struct Upsample {
  int in = -1, out = -1;
};

struct Node {
  bool is_conv = true;
  Conv conv;
  Upsample up;
};

// One GEMM shape (K x N) at each chunk size (M = 16..64 tiles). The weights are packed once, in M = 64's
// layout; a size whose kernel wants them packed otherwise is not used (its chunks run as the next size up).
struct Matmul {
  int K = 0, N = 0, ld = 0;
  struct Shape {
    dnnl::matmul prim;
    dnnl::memory::desc src, dst, scratch;
    bool ok = false;
  } at[kChunkSizes];  // at[M / 16 - 1]
  dnnl::memory::desc wei;
};

class Engine final : public NativeUpscaler {
 public:
  Engine(std::shared_ptr<Network> net, Precision precision, int threads, int strip_rows, int winograd)
      : net_(std::move(net)),
        precision_(precision),
        bf16_(precision == Precision::Bf16),
        m_(winograd),
        P_(points(winograd)),
        kernels_(kernels_for(detect_isa(), winograd)),
        threads_(std::max(1, threads)),
        strip_rows_(strip_rows),
        eng_(dnnl::engine::kind::cpu, 0) {
    if (bf16_ && kernels_.isa != Isa::Avx512)
      throw std::runtime_error("bf16 needs an AVX-512 CPU (oneDNN 2.6 has no bf16 matmul below it); use fp32");
    const char* amx_env = std::getenv("PETCAM_AMX");
    direct_ = bf16_ && m_ == 4 && amx::available() && !(amx_env && std::strcmp(amx_env, "0") == 0);
    pad_ = direct_ ? 32 : m_;
    if (net_->tail() == Tail::PixelShuffleAddInput)
      build_srvgg();
    else
      build_rrdb();
    std::ostringstream d;
    int direct = 0, convs = 0;
    for (const auto& node : nodes_)
      if (node.is_conv) direct += node.conv.direct, ++convs;
    if (direct == convs) {
      d << "native: direct 3x3 on AMX tiles (bf16) for all " << convs << " convs, NHWC bf16 activations (fp32 where "
        << "a residual or the output reads them) in row strips, " << threads_
        << (threads_ == 1 ? " thread" : " threads");
    } else {
      d << "native: ";
      if (direct > 0) d << "direct 3x3 on AMX tiles (bf16) for " << direct << " of " << convs << " convs, the rest ";
      d << "winograd F(" << m_ << ",3) " << to_string(kernels_.isa) << " transforms, NHWC16 fp32 activations"
        << (direct > 0 ? " (+ bf16 copies)" : "") << " in row strips, "
        << "oneDNN " << dnnl_version()->major << "." << dnnl_version()->minor << " matmul " << (bf16_ ? "bf16" : "fp32")
        << " (" << impl_ << "), " << threads_ << (threads_ == 1 ? " thread" : " threads");
    }
    describe_ = d.str();
    arch_ = net_->describe();
    macs_ = net_->macs_per_input_pixel();
    rrdb_ = net_->tail() == Tail::None;
    users_.assign(bufs_.size(), {});
    for (std::size_t n = 0; n < nodes_.size(); ++n) {
      std::vector<int> reads = nodes_[n].is_conv ? nodes_[n].conv.in : std::vector<int>{nodes_[n].up.in};
      if (nodes_[n].is_conv) reads.insert(reads.end(), nodes_[n].conv.res, nodes_[n].conv.res + nodes_[n].conv.nres);
      for (int t : reads)
        if (std::find(users_[t].begin(), users_[t].end(), static_cast<int>(n)) == users_[t].end())
          users_[t].push_back(static_cast<int>(n));
    }
    // A tensor a direct conv or an upsample makes, that only direct convs read (as input, not a residual) or
    // upsamples whose results are bf16 only, needs no fp32 rows (nodes come in order: readers after makers).
    f32_.assign(bufs_.size(), true);
    for (auto n = nodes_.size(); n-- > 0;) {
      const Node& node = nodes_[n];
      if (node.is_conv && !node.conv.direct) continue;
      const int t = node.is_conv ? node.conv.out : node.up.out;
      if (t == final_ || users_[t].empty()) continue;
      bool only = true;
      for (int r : users_[t]) {
        const Node& u = nodes_[r];
        only = only && (u.is_conv ? u.conv.direct &&
                                        std::find(u.conv.res, u.conv.res + u.conv.nres, t) == u.conv.res + u.conv.nres
                                  : !f32_[u.up.out]);
      }
      f32_[t] = !only;
      if (only) mirror_[t] = true;
    }
    net_.reset();  // the transformed weights are all we need; the libtorch copy would double the memory
  }

  int scale() const override { return 4; }
  Precision precision() const override { return precision_; }
  Device device() const override { return {DeviceKind::Cpu, -1}; }
  int fp32_redos() const override { return 0; }
  std::string architecture() const override { return arch_; }
  std::string engine() const override { return describe_; }
  int tile() const override { return 0; }
  int tile_pad() const override { return 0; }
  std::int64_t macs_per_input_pixel() const override { return macs_; }
  int tile_count(int width, int height) const override {
    const int s = strip_for(width, height);
    return (height + s - 1) / s;
  }

  void process(ConstImageView in, ImageView out, const Progress& progress) override {
    if (in.width <= 0 || in.height <= 0 || out.width != in.width * 4 || out.height != in.height * 4)
      throw std::invalid_argument("output must be exactly 4x the input size");
    try {
      run(in, out, progress);
    } catch (const std::bad_alloc&) {
      release();
      throw std::runtime_error("out of memory running the native engine on a " + std::to_string(in.width) + "x" +
                               std::to_string(in.height) + " image");
    } catch (const dnnl::error& e) {
      release();
      throw std::runtime_error(std::string("inference failed (oneDNN): ") + e.what());
    } catch (...) {
      release();
      throw;
    }
    release(true);
  }

 private:
  // ---- graph ---------------------------------------------------------------------------------------

  int tensor(int c, int res) {
    bufs_.emplace_back();
    res_.push_back(res);
    chan_.push_back(pad16(c));
    mirror_.push_back(false);
    return static_cast<int>(bufs_.size()) - 1;
  }

  // The image, RGB in [0, 1]: channels padded to 16, or to 32 where the first conv runs on AMX tiles too.
  int input_tensor() {
    const int t = tensor(3, 1);
    if (direct_) chan_[t] = 32;
    return t;
  }

  // A 3x3 conv of the channel concatenation of `in` from network conv `index`.
  int conv(std::initializer_list<int> in, std::size_t index, int act, const torch::nn::PReLU* prelu = nullptr,
           int ld = 0) {
    const auto& spec = net_->convs().at(index);
    auto w = spec.conv->weight.detach().to(torch::kFloat).contiguous();
    auto b = spec.conv->bias.detach().to(torch::kFloat).contiguous();
    const int cout = static_cast<int>(w.size(0)), cin = static_cast<int>(w.size(1));
    Node node;
    Conv& c = node.conv;
    c.in = in;
    for (int t : c.in) c.K += chan_[t];
    c.N = pad16(cout);
    c.ld = std::max(ld, c.K);
    c.out = tensor(cout, res_[c.in[0]]);
    c.act = act;
    c.bias.assign(c.N, 0.0f);
    std::memcpy(c.bias.data(), b.data_ptr<float>(), sizeof(float) * cout);
    if (act == kActPrelu) {
      auto s = (*prelu)->weight.detach().to(torch::kFloat).contiguous();
      if (s.numel() != cout) throw ModelError("native engine: PReLU slopes do not match conv " + std::to_string(index));
      c.slope.assign(c.N, 0.0f);
      std::memcpy(c.slope.data(), s.data_ptr<float>(), sizeof(float) * cout);
    }
    // Transformed weights, rows laid out as the concatenated padded input channels.
    std::vector<float> oihw(static_cast<std::size_t>(cout) * c.K * 9, 0.0f);
    {
      const float* src = w.data_ptr<float>();
      int real = 0, padded = 0;
      for (int t : c.in) {
        const int creal = t == input_ ? 3 : chan_[t];
        for (int k = 0; k < creal; ++k)
          for (int o = 0; o < cout; ++o)
            std::memcpy(&oihw[(static_cast<std::size_t>(o) * c.K + padded + k) * 9],
                        src + (static_cast<std::size_t>(o) * cin + real + k) * 9, 9 * sizeof(float));
        real += creal;
        padded += chan_[t];
      }
      if (real != cin) throw ModelError("native engine: conv " + std::to_string(index) + " input channels mismatch");
    }
    c.direct = direct_ && c.K <= amx::kMaxK &&
               std::all_of(c.in.begin(), c.in.end(), [&](int t) { return chan_[t] % 32 == 0; });
    if (c.direct) {
      c.packed = amx::pack_weights(oihw.data(), cout, c.K, c.N);
      for (int t : c.in) mirror_[t] = true;
      nodes_.push_back(std::move(node));
      return c.out;
    }
    const auto u = transform_weights(oihw.data(), cout, c.K, c.K, c.N, m_);
    c.prim = matmul_for(c.K, c.N, c.ld);
    const Matmul& mm = mms_[c.prim];
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc user({P_, c.K, c.N}, bf16_ ? dt::bf16 : dt::f32, dnnl::memory::format_tag::abc);
    dnnl::memory user_mem(user, eng_);
    if (bf16_) {
      auto* p = static_cast<std::uint16_t*>(user_mem.get_data_handle());
      for (std::size_t i = 0; i < u.size(); ++i) p[i] = to_bf16(u[i]);
    } else {
      std::memcpy(user_mem.get_data_handle(), u.data(), u.size() * sizeof(float));
    }
    c.weights = dnnl::memory(mm.wei, eng_);
    dnnl::stream s(eng_);
    dnnl::reorder(user_mem, c.weights).execute(s, user_mem, c.weights);
    s.wait();
    nodes_.push_back(std::move(node));
    return c.out;
  }

  int upsample(int in) {
    Node node;
    node.is_conv = false;
    node.up.in = in;
    node.up.out = tensor(chan_[in], res_[in] * 2);
    const int out = node.up.out;
    nodes_.push_back(std::move(node));
    return out;
  }

  // The last conv added ends with v = v * s + t.
  void residual(float s, int t) {
    Conv& c = nodes_.back().conv;
    c.res[c.nres] = t;
    c.res_scale[c.nres] = s;
    ++c.nres;
  }

  int matmul_for(int K, int N, int ld) {
    for (std::size_t i = 0; i < mms_.size(); ++i)
      if (mms_[i].K == K && mms_[i].N == N && mms_[i].ld == ld) return static_cast<int>(i);
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    Matmul m;
    m.K = K, m.N = N, m.ld = ld;
    const dnnl::memory::desc wei({P_, K, N}, bf16_ ? dt::bf16 : dt::f32, tag::any);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    for (int i = kChunkSizes - 1; i >= 0; --i) {
      const int M = (i + 1) * kChunkStep;
      auto& at = m.at[i];
      at.src = dnnl::memory::desc({P_, M, K}, bf16_ ? dt::bf16 : dt::f32, {M * ld, ld, 1});
      at.dst = dnnl::memory::desc({P_, M, N}, dt::f32, tag::abc);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(at.src, wei, at.dst), attr, eng_);
      if (M == kChunkTiles) {
        m.wei = pd.weights_desc();
        impl_ = pd.impl_info_str();
      } else if (pd.weights_desc() != m.wei) {
        continue;
      }
      at.ok = true;
      at.scratch = pd.scratchpad_desc();
      scratch_bytes_ = std::max(scratch_bytes_, pd.scratchpad_desc().get_size());
      at.prim = dnnl::matmul(pd);
    }
    mms_.push_back(std::move(m));
    return static_cast<int>(mms_.size()) - 1;
  }

  void build_srvgg() {
    const auto& convs = net_->convs();
    const auto& prelus = net_->prelus();
    input_ = input_tensor();
    int x = input_;
    for (std::size_t i = 0; i + 1 < convs.size(); ++i) x = conv({x}, i, kActPrelu, &prelus.at(i));
    final_ = conv({x}, convs.size() - 1, kActNone);
    if (chan_[final_] != 48) throw ModelError("native engine: SRVGGNetCompact's last conv must give 48 channels");
  }

  void build_rrdb() {
    const std::size_t blocks = (net_->convs().size() - 6) / 15;
    std::size_t k = 0;
    input_ = input_tensor();
    const int feat = conv({input_}, k++, kActNone);
    int cur = feat;
    for (std::size_t b = 0; b < blocks; ++b) {
      const int rrdb_in = cur;
      int x = cur;
      for (int r = 0; r < 3; ++r) {
        // The five convs of a dense block read x, x1, ... x4 concatenated: one V of the block's full width,
        // each conv adding its new source's part (where the tiles of all five are the same, one strip).
        const int g = groups_++;
        const int ld = chan_[x] + 4 * pad16(static_cast<int>(net_->convs().at(k).conv->weight.size(0)));
        const auto dense = [&](std::initializer_list<int> in, int act) {
          const int t = conv(in, k++, act, nullptr, ld);
          nodes_.back().conv.group = g;
          nodes_.back().conv.fresh = static_cast<int>(in.size()) - 1;
          return t;
        };
        const int x1 = dense({x}, kActLeaky);
        const int x2 = dense({x, x1}, kActLeaky);
        const int x3 = dense({x, x1, x2}, kActLeaky);
        const int x4 = dense({x, x1, x2, x3}, kActLeaky);
        const int x5 = dense({x, x1, x2, x3, x4}, kActNone);
        residual(0.2f, x);                    // rdb: x5 * 0.2 + x
        if (r == 2) residual(0.2f, rrdb_in);  // rrdb: rdb3 * 0.2 + its input
        x = x5;
      }
      cur = x;
    }
    conv({cur}, k++, kActNone);
    residual(1.0f, feat);  // conv_body(body) + feat
    const int body = nodes_.back().conv.out;
    const int u1 = conv({upsample(body)}, k++, kActLeaky);
    const int u2 = conv({upsample(u1)}, k++, kActLeaky);
    const int hr = conv({u2}, k++, kActLeaky);
    final_ = conv({hr}, k++, kActNone);
    if (k != net_->convs().size()) throw ModelError("native engine: RRDBNet conv count does not match its graph");
  }

  // ---- execution -----------------------------------------------------------------------------------

  // Rows per step of every layer but RRDBNet's trunk (trunk_for: the same, or the whole image).
  int strip_for(int width, int height) const {
    if (strip_rows_ > 0) return strip_rows_;
    // A small SRVGGNetCompact image runs as one strip: every layer's rows at once, so each tensor dies after its
    // last reader and the few live ones are reused from cache (Xeon, 2 threads, one strip vs strips: x4fast
    // 384x384 405-417 vs 422-434 ms, 512x512 757 vs 743).
    if (!rrdb_ && static_cast<long long>(width) * height <= 384 * 384) return height;
    // A strip of about this many pixels per layer keeps a layer's input and output in L2 (measured on the
    // Xeon, 2 threads: x4fast 2048 px, x4plus 4096 px ran 1.4-1.8x faster than 4x that), whole tile rows, at
    // least 8 rows.
    const int px = rrdb_ ? 4096 : 2048;
    const int rows = std::max((px + width - 1) / width, 8);
    return std::min((rows + m_ - 1) / m_ * m_, 256);
  }

  // Rows per step of RRDBNet's trunk (its layers at the input's resolution). A small image's trunk runs as one
  // strip: each tensor dies after its last reader, and a dense block's five convs share one transformed input
  // (in strips each conv's tiles lie a row below the last one's, so each transforms all its sources). The tail
  // at 2x and 4x still runs in strips, so its large tensors are never whole. Xeon, 2 threads, x4plus, ms and peak
  // RSS, interleaved, this vs everything as one strip up to 192x192 and in strips above: fp32 128x128 724-785 vs
  // 735-802 (607 vs 710 MB), 192x192 1952-1999 vs 1891-2182 (670 vs 976 MB); bf16 (transforms weigh more there)
  // 128x128 398-407 vs 409-431, 256x256 1775-1784 vs 2284-2308, 320x320 3290-3511 vs 4272-4284 (586 vs 776 MB),
  // 384x384 5302-5606 vs 5481-5551 (692 vs 794 MB). Above that strips win: fp32 256x256 trunk whole 3949-4648 vs
  // 3585-3984 in strips, bf16 512x512 10307 vs 9502.
  int trunk_for(int width, int height) const {
    if (strip_rows_ > 0 || !rrdb_) return strip_for(width, height);
    const long long whole = bf16_ ? 384 * 384 : 192 * 192;
    return static_cast<long long>(width) * height <= whole ? height : strip_for(width, height);
  }

  // keep_arena: a small arena stays mapped for the next image (after a failure nothing is kept).
  void release(bool keep_arena = false) {
    if (keep_arena)
      arena_.done();
    else
      arena_.reset();
    for (auto& b : bufs_) b.init(0, 0, 0, 1);
    std::vector<float>().swap(zero_);
    std::vector<char>().swap(dense_v_);
    for (auto& t : scratch_) std::vector<char>().swap(t);
  }

  // Where each tensor's ring lies in the arena for a W x H image, and the arena's size. The schedule is run
  // once without computing anything, giving each tensor the most rows it holds and the steps its rows live
  // between; a tensor whose rows are all consumed frees its block for the tensors that start after it (on an
  // image of one strip most of RRDBNet's tensors are dead long before the last layer; on a tall one all of
  // them live to the end, each in its own block).
  struct Layout {
    std::vector<int> rows;
    std::vector<std::size_t> offset;
    std::vector<bool> reused;  // its block held another tensor before: zero its padding first
    std::size_t bytes = 0;
  };
  Layout plan(int W, int H) {
    for (std::size_t t = 0; t < bufs_.size(); ++t) {
      bufs_[t].init(chan_[t], H * res_[t], W * res_[t], pad_);
      bufs_[t].mirror = mirror_[t];
      bufs_[t].f32 = f32_[t];
    }
    planning_ = true;
    drive({nullptr, W, H, 0}, {nullptr, 4 * W, 4 * H, 0}, nullptr);
    planning_ = false;
    Layout l;
    const std::size_t n = bufs_.size();
    l.rows.resize(n);
    l.offset.resize(n);
    l.reused.assign(n, false);
    std::vector<int> order(n);
    for (std::size_t t = 0; t < n; ++t) order[t] = static_cast<int>(t), l.rows[t] = bufs_[t].peak;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return bufs_[a].first < bufs_[b].first; });
    struct Block {
      std::size_t offset, bytes;
      int busy_until;  // the last step of the tensor in it
    };
    std::vector<Block> blocks;
    for (int t : order) {
      const Buf& b = bufs_[t];
      const std::size_t bytes = b.ring_bytes(l.rows[t]);
      Block* best = nullptr;
      for (auto& k : blocks)
        if (k.busy_until < b.first && k.bytes >= bytes && (!best || k.bytes < best->bytes)) best = &k;
      if (!best) {
        blocks.push_back({l.bytes, bytes, 0});
        l.bytes += bytes;
        best = &blocks.back();
      } else {
        l.reused[t] = true;
      }
      l.offset[t] = best->offset;
      best->busy_until = b.last < 0 ? std::numeric_limits<int>::max() : b.last;
    }
    for (auto& b : bufs_) b.init(0, 0, 0, 1);
    return l;
  }

  // A dense block's V for the whole image, when the trunk runs as one strip: at most 63 slots past its tiles.
  std::size_t dense_v_bytes(int W, int H) const {
    if (groups_ == 0 || trunk_for(W, H) < H) return 0;
    int ld = 0;
    for (const auto& node : nodes_)
      if (node.is_conv && node.conv.group >= 0 && !node.conv.direct) ld = std::max(ld, node.conv.ld);
    if (ld == 0) return 0;
    const std::size_t tiles = static_cast<std::size_t>((W + m_ - 1) / m_) * ((H + m_ - 1) / m_);
    return (tiles + kChunkTiles - 1) * P_ * ld * velem();
  }

  // Per thread: V (36 x T x Kmax), M (36 x T x Nmax), oneDNN's scratchpad and room to align the three.
  std::size_t scratch_bytes_per_thread() const {
    int kmax = 0, nmax = 0;
    for (const auto& m : mms_) kmax = std::max(kmax, m.ld), nmax = std::max(nmax, m.N);
    return std::max<std::size_t>(static_cast<std::size_t>(P_) * kChunkTiles * kmax * velem() +
                                     static_cast<std::size_t>(P_) * kChunkTiles * nmax * 4 + scratch_bytes_,
                                 2 * 32 * 32 * sizeof(float)) +
           3 * 64;
  }

 public:
  std::size_t working_bytes(int width, int height) override {
    if (width <= 0 || height <= 0) return 0;
    return plan(width, height).bytes + scratch_bytes_per_thread() * threads_ + dense_v_bytes(width, height);
  }

 private:
  void run(ConstImageView in, ImageView out, const Progress& progress) {
    const int H = in.height, W = in.width;
    const Layout l = plan(W, H);
    float* arena = arena_.map(l.bytes);
    for (std::size_t t = 0; t < bufs_.size(); ++t) {
      Buf& b = bufs_[t];
      b.init(chan_[t], H * res_[t], W * res_[t], pad_);
      b.mirror = mirror_[t];
      b.f32 = f32_[t];
      b.cap = l.rows[t];
      b.data = arena + l.offset[t] / sizeof(float);
      b.h = !b.mirror ? nullptr
            : b.f32   ? reinterpret_cast<std::uint16_t*>(b.data + static_cast<std::size_t>(b.cap) * b.row_floats())
                      : reinterpret_cast<std::uint16_t*>(b.data);
      if (!b.f32) b.data = nullptr;
    }
    reused_ = l.reused;
    if (arena_.recycled()) reused_.assign(reused_.size(), true);  // every block held the last image's rows
    std::size_t zero = 0;
    for (const auto& b : bufs_) zero = std::max(zero, b.row_floats());
    zero_.assign(zero + 16, 0.0f);  // + room to align it to 64 bytes (tile loads)
    scratch_.resize(threads_);
    while (static_cast<int>(streams_.size()) < threads_) streams_.emplace_back(eng_);
    for (auto& s : scratch_) s.assign(scratch_bytes_per_thread(), 0);
    dense_v_.assign(dense_v_bytes(W, H) + 64, 0);
    dense_group_ = -1;
    drive(in, out, progress);
  }

  // Room in tensor t for rows [base, upto): planning records it; running, the plan has made it.
  void reserve(int t, int upto) {
    Buf& b = bufs_[t];
    const int need = upto - b.base;
    if (planning_) {
      if (b.first < 0) b.first = step_;
      b.peak = std::max(b.peak, need);
      return;
    }
    if (need > b.cap) throw std::logic_error("native engine: a tensor needs more rows than planned");
    if (!b.live) {
      b.live = true;
      if (reused_[t])  // the block's last tensor left its pixels; our padding columns must be zero
        for (int r = 0; r < b.cap; ++r) {
          if (b.f32) {
            float* row = b.data + static_cast<std::size_t>(r) * b.row_floats();
            std::memset(row, 0, sizeof(float) * b.C);
            std::memset(row + static_cast<std::size_t>(b.W + 1) * b.C, 0,
                        sizeof(float) * (b.row_floats() - static_cast<std::size_t>(b.W + 1) * b.C));
          }
          if (!b.mirror) continue;
          std::uint16_t* hr = b.h + static_cast<std::size_t>(r) * b.row_floats();
          std::memset(hr, 0, 2 * b.C);
          std::memset(hr + static_cast<std::size_t>(b.W + 1) * b.C, 0,
                      2 * (b.row_floats() - static_cast<std::size_t>(b.W + 1) * b.C));
        }
    }
  }

  // The strips through the whole network (planning_: only the rows each tensor holds).
  void drive(ConstImageView in, ImageView out, const Progress& progress) {
    const int H = in.height, W = in.width;
    const int S = strip_for(W, H), St = trunk_for(W, H);
    const int total = (H + S - 1) / S;
    int fed = 0, written = 0, reported = 0;
    step_ = 0;
    while (written < H) {
      if (fed < H) {
        const int upto = std::min(H, fed + St);
        feed(in, fed, upto);
        fed = upto;
      }
      ++step_;
      for (auto& node : nodes_) {
        if (node.is_conv) {
          step_conv(node.conv, res_[node.conv.out] == 1 ? St : S);
          for (int t : node.conv.in) trim(t, written);
          for (int k = 0; k < node.conv.nres; ++k) trim(node.conv.res[k], written);
        } else {
          step_upsample(node.up, S);
          trim(node.up.in, written);
        }
        ++step_;
      }
      const int done = bufs_[final_].avail / res_[final_];
      if (done > written) {
        if (!planning_) write(in, out, written, done);
        written = done;
      }
      trim(final_, written);
      trim(input_, written);
      ++step_;
      const int strips = written >= H ? total : written / S;
      if (progress && strips > reported) {
        reported = strips;
        progress(strips, total);
      }
    }
  }

  void feed(ConstImageView in, int y0, int y1) {
    Buf& b = bufs_[input_];
    reserve(input_, y1);
    if (planning_) y0 = y1;
    for (int y = y0; y < y1; ++y) {
      const std::uint8_t* src = in.data + in.stride * static_cast<std::size_t>(y);
      float* dst = b.pixels(y);
      for (int x = 0; x < in.width; ++x) {
        float* p = dst + static_cast<std::size_t>(x) * b.C;
        for (int c = 0; c < 3; ++c) p[c] = static_cast<float>(src[3 * x + c]) / 255.0f;
        std::fill(p + 3, p + b.C, 0.0f);
      }
    }
    if (!planning_) sync_mirror(b, y0, y1);
    b.avail = y1;
  }

  void step_upsample(const Upsample& u, int S) {
    Buf &src = bufs_[u.in], &dst = bufs_[u.out];
    int target = src.avail == src.H ? dst.H : 2 * src.avail;
    target = std::min(target, dst.avail + S * res_[u.out]);
    if (target <= dst.avail) return;
    reserve(u.out, target);
    if (planning_) {
      dst.avail = target;
      return;
    }
    // Nearest: each source pixel twice, in the precisions the result keeps (bf16 only: from the source's bf16
    // rows, the same values its fp32 ones round to).
    const std::size_t C = dst.C;
    rows_on_threads(threads_, dst.avail, target, [&](int r) {
      if (dst.f32) {
        const float* s = src.pixels(r / 2);
        float* d = dst.pixels(r);
        for (int x = 0; x < dst.W; ++x) std::memcpy(d + x * C, s + (x / 2) * C, C * sizeof(float));
      }
      if (!dst.mirror) return;
      std::uint16_t* d = dst.hpixels(r);
      if (!src.mirror) {
        const float* s = src.pixels(r / 2);
        for (int x = 0; x < dst.W; ++x) amx::to_bf16(s + (x / 2) * C, d + x * C, C);
        return;
      }
      const std::uint16_t* s = src.hpixels(r / 2);
      for (int x = 0; x < dst.W; ++x) std::memcpy(d + x * C, s + (x / 2) * C, C * sizeof(std::uint16_t));
    });
    dst.avail = target;
  }

  void step_conv(Conv& c, int S) {
    Buf& out = bufs_[c.out];
    const int H = out.H;
    int target = H;
    for (int t : c.in) {
      const Buf& b = bufs_[t];
      target = std::min(target, b.avail == H ? H : std::max(0, b.avail - 1));
    }
    for (int k = 0; k < c.nres; ++k) target = std::min(target, bufs_[c.res[k]].avail);
    target = std::min(target, out.avail + S * res_[c.out]);
    const int o = out.avail;
    if (target <= o) return;
    const int rows = target - o;
    const int n_ty = (rows + m_ - 1) / m_, n_tx = (out.W + m_ - 1) / m_;
    reserve(c.out, target);
    if (planning_) {
      out.avail = target;
      return;
    }
    if (c.direct) {
      step_direct(c, o, target);
      out.avail = target;
      return;
    }

    InputJob ij;
    ij.nsrc = static_cast<int>(c.in.size());
    ij.n_tx = n_tx;
    ij.K = c.K;
    ij.ld = c.ld;
    const int nrows = m_ * n_ty + 2;
    for (int s = 0; s < ij.nsrc; ++s) {
      Buf& b = bufs_[c.in[s]];
      auto& rp = c.rows[s];
      rp.resize(nrows);
      for (int k = 0; k < nrows; ++k) {
        const int y = o - 1 + k;
        rp[k] = y >= 0 && y < b.avail ? b.row(y) : zero_row();
      }
      ij.src[s].C = b.C;
      ij.src[s].rows = rp.data();
    }
    OutputJob oj;
    oj.N = c.N;
    oj.n_tx = n_tx;
    oj.rows = rows;
    oj.width = out.W;
    oj.bias = c.bias.data();
    oj.slope = c.slope.empty() ? nullptr : c.slope.data();
    oj.act = c.act;
    oj.nres = c.nres;
    c.out_rows.resize(rows);
    for (int k = 0; k < rows; ++k) c.out_rows[k] = out.pixels(o + k);
    oj.out_rows = c.out_rows.data();
    for (int k = 0; k < c.nres; ++k) {
      Buf& r = bufs_[c.res[k]];
      c.res_rows[k].resize(rows);
      for (int j = 0; j < rows; ++j) c.res_rows[k][j] = r.pixels(o + j);
      oj.res_rows[k] = c.res_rows[k].data();
      oj.res_scale[k] = c.res_scale[k];
    }

    const Matmul& mm = mms_[c.prim];
    const int tiles = n_ty * n_tx;
    // Chunks of at most 64 tiles, as many as a multiple of the threads where there is work for it, cut to a
    // multiple of 16 tiles: 192 tiles on 2 threads run as 4 x 48, not 64 + 64 + 64 with one thread idle.
    int chunks = (tiles + kChunkTiles - 1) / kChunkTiles;
    const int nthreads = static_cast<int>(scratch_.size());
    if (chunks % nthreads != 0 && tiles >= kChunkStep * nthreads) chunks = (chunks / nthreads + 1) * nthreads;
    int size = ((tiles + chunks - 1) / chunks + kChunkStep - 1) / kChunkStep - 1;
    while (!mm.at[size].ok) ++size;  // M = 64 always is
    const auto& shape = mm.at[size];
    const int T = (size + 1) * kChunkStep;
    chunks = (tiles + T - 1) / T;
    // The trunk as one strip: a dense block's conv keeps its V in dense_v_ for the next ones, and transforms only
    // the source the conv before it made (if that conv left V for the same block in the same chunks).
    const bool dense = c.group >= 0 && o == 0 && target == H && !dense_v_.empty();
    const std::size_t chunk_v = static_cast<std::size_t>(P_) * T * c.ld * velem();
    if (dense) {
      const bool has = dense_group_ == c.group && dense_sources_ == c.fresh && dense_tiles_ == T;
      ij.first = has ? c.fresh : 0;
      dense_group_ = c.group, dense_sources_ = ij.nsrc, dense_tiles_ = T;
    } else if (c.group >= 0) {
      dense_group_ = -1;
    }
    char* dense_base = align64(dense_v_.data());
    const std::size_t vbytes = static_cast<std::size_t>(P_) * kChunkTiles * c.ld * velem();
    const std::size_t mbytes = static_cast<std::size_t>(P_) * kChunkTiles * c.N * 4;
    // Chunks are taken from a shared counter, so a thread that lost its core to another process does not hold
    // the others at the barrier with a fixed share of the work.
    std::atomic<int> next{0};
    const int workers = std::min(chunks, nthreads);
    auto work = [&](int thread) {
      char* base = align64(scratch_[thread].data());
      void* v = base;
      auto* m = reinterpret_cast<float*>(align64(base + vbytes));
      char* pad = align64(reinterpret_cast<char*>(m) + mbytes);
      dnnl::memory src(shape.src, eng_, v), dst(shape.dst, eng_, m), scratch(shape.scratch, eng_, pad);
      for (int ch = next++; ch < chunks; ch = next++) {
        const int t0 = ch * T;
        const int count = std::min(T, tiles - t0);
        if (dense) {
          v = dense_base + ch * chunk_v;
          src.set_data_handle(v);
        }
        kernels_.input(ij, t0, count, T, v, bf16_);
        shape.prim.execute(
            streams_[thread],
            {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, c.weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
        kernels_.output(oj, t0, count, T, m);
      }
    };
    on_threads(workers, work);
    sync_mirror(out, o, target);
    out.avail = target;
  }

  // A row of zeros for rows outside the image, 64-byte aligned.
  const float* zero_row() { return reinterpret_cast<const float*>(align64(reinterpret_cast<char*>(zero_.data()))); }

  // Output rows [o, target) of a direct conv, a row at a time, each thread a contiguous part.
  void step_direct(const Conv& c, int o, int target) {
    Buf& out = bufs_[c.out];
    amx::RowJob proto;
    proto.nsrc = static_cast<int>(c.in.size());
    proto.K = c.K;
    proto.N = c.N;
    proto.width = out.W;
    proto.weights = amx::aligned64(c.packed);
    proto.bias = c.bias.data();
    proto.slope = c.slope.empty() ? nullptr : c.slope.data();
    proto.act = c.act;
    proto.nres = c.nres;
    for (int k = 0; k < c.nres; ++k) proto.res_scale[k] = c.res_scale[k];
    const auto* zero = reinterpret_cast<const std::uint16_t*>(zero_row());
    // Each thread a contiguous part: the three input rows of its next row are two of its last row's, in its L2.
    const int n = target - o, parts = std::min(static_cast<int>(scratch_.size()), n);
    on_threads(parts, [&](int thread) {
      auto* scratch = reinterpret_cast<float*>(align64(scratch_[thread].data()));
      amx::RowJob j = proto;
      amx::begin();
      const int lo = o + static_cast<int>(static_cast<long long>(n) * thread / parts);
      const int hi = o + static_cast<int>(static_cast<long long>(n) * (thread + 1) / parts);
      for (int y = lo; y < hi; ++y) {
        for (int s = 0; s < j.nsrc; ++s) {
          Buf& b = bufs_[c.in[s]];
          j.src[s].C = b.C;
          for (int k = 0; k < 3; ++k) {
            const int r = y - 1 + k;
            j.src[s].rows[k] = r >= 0 && r < b.avail ? b.hrow(r) : zero;
          }
        }
        for (int k = 0; k < c.nres; ++k) j.res[k] = bufs_[c.res[k]].pixels(y);
        j.out = out.f32 ? out.pixels(y) : nullptr;
        j.out_bf16 = out.mirror ? out.hpixels(y) : nullptr;
        amx::conv_row(j, scratch);
      }
      amx::end();
    });
  }

  // The bf16 copy of rows [r0, r1) of a tensor a direct conv reads, from its fp32 rows.
  void sync_mirror(Buf& b, int r0, int r1) {
    if (!b.mirror) return;
    rows_on_threads(threads_, r0, r1,
                    [&](int r) { amx::to_bf16(b.pixels(r), b.hpixels(r), static_cast<std::size_t>(b.W) * b.C); });
  }

  static char* align64(char* p) {
    return reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(p) + 63) & ~std::uintptr_t{63});
  }

  // The first row of tensor t any consumer still reads: rows below it are dropped from the ring. A consumer
  // that is done reads none; when none reads any, the tensor is dead and its block free for later tensors.
  int need_of(int t, int written) const {
    int need = bufs_[t].avail;
    for (int n : users_[t]) {
      const Node& node = nodes_[n];
      if (!node.is_conv) {
        need = std::min(need, bufs_[node.up.out].avail / 2);
        continue;
      }
      const Conv& c = node.conv;
      const Buf& o = bufs_[c.out];
      if (o.avail >= o.H) continue;
      if (std::find(c.in.begin(), c.in.end(), t) != c.in.end()) need = std::min(need, std::max(0, o.avail - 1));
      for (int k = 0; k < c.nres; ++k)
        if (c.res[k] == t) need = std::min(need, o.avail);
    }
    if (t == final_) need = std::min(need, written * res_[final_]);
    if (t == input_) need = std::min(need, written);
    return need;
  }

  void trim(int t, int written) {
    Buf& b = bufs_[t];
    b.base = std::max(b.base, need_of(t, written));
    if (planning_ && b.last < 0 && b.dead()) b.last = step_;
  }

  // x255, clamped, rounded half to even as std::nearbyint (adding 2^23 leaves no fraction bits, in the default
  // rounding mode) without its library call per value.
  static std::uint8_t to_u8(float v) {
    const float c = std::clamp(v * 255.0f, 0.0f, 255.0f);
    return static_cast<std::uint8_t>((c + 8388608.0f) - 8388608.0f);
  }

  // Input rows [y0, y1) of the result: the network's tail, x255, clamp and round into `out`.
  void write(ConstImageView in, ImageView out, int y0, int y1) {
    Buf& f = bufs_[final_];
    if (res_[final_] == 4) {  // RRDBNet: the last conv is the image
      rows_on_threads(threads_, y0 * 4, y1 * 4, [&](int oy) {
        const float* src = f.pixels(oy);
        std::uint8_t* dst = out.data + out.stride * static_cast<std::size_t>(oy);
        for (int x = 0; x < out.width; ++x)
          for (int c = 0; c < 3; ++c) dst[3 * x + c] = to_u8(src[static_cast<std::size_t>(x) * f.C + c]);
      });
      return;
    }
    // SRVGGNetCompact: pixel_shuffle(y, 4) + nearest_upsample(x, 4).
    Buf& x = bufs_[input_];
    rows_on_threads(threads_, y0, y1, [&](int y) {
      const float* r = f.pixels(y);
      const float* xi = x.pixels(y);
      for (int i = 0; i < 4; ++i) {
        std::uint8_t* dst = out.data + out.stride * static_cast<std::size_t>(y * 4 + i);
        for (int lx = 0; lx < in.width; ++lx) {
          const float* p = r + static_cast<std::size_t>(lx) * f.C + i * 4;
          const float* q = xi + static_cast<std::size_t>(lx) * x.C;
          for (int j = 0; j < 4; ++j)
            for (int ch = 0; ch < 3; ++ch) *dst++ = to_u8(p[ch * 16 + j] + q[ch]);
        }
      }
    });
  }

  std::shared_ptr<Network> net_;
  Precision precision_;
  bool bf16_;
  int m_, P_;                                  // Winograd output tile and transformed points
  bool direct_ = false;                        // bf16 on AMX: 3x3 convs with 32-channel sources run direct
  int pad_ = 4;                                // rows are padded to whole multiples of this many pixels
  int velem() const { return bf16_ ? 2 : 4; }  // bytes of one element of V
  Kernels kernels_;
  int threads_;
  int strip_rows_;
  dnnl::engine eng_;
  std::vector<Matmul> mms_;
  std::size_t scratch_bytes_ = 0;
  std::string impl_, describe_, arch_;
  std::int64_t macs_ = 0;
  bool rrdb_ = false;
  std::vector<Node> nodes_;
  std::vector<Buf> bufs_;
  std::vector<int> res_, chan_;
  std::vector<bool> mirror_;  // per tensor: a direct conv reads it (its rows get a bf16 copy)
  std::vector<bool> f32_;     // per tensor: it has fp32 rows
  int input_ = -1, final_ = -1;
  std::vector<float> zero_;
  bool planning_ = false;
  int step_ = 0;    // nodes run so far in this drive (the plan's clock)
  int groups_ = 0;  // dense blocks
  std::vector<char> dense_v_;
  // What dense_v_ holds: the block, how many of its sources, in chunks of how many tiles.
  int dense_group_ = -1, dense_sources_ = 0, dense_tiles_ = 0;
  std::vector<std::vector<int>> users_;  // per tensor: the nodes that read it
  Arena arena_;
  std::vector<bool> reused_;
  std::vector<std::vector<char>> scratch_;
  std::vector<dnnl::stream> streams_;
};

}  // namespace

bool supports(const Network& net) {
  if (net.scale() != 4) return false;
  const auto& convs = net.convs();
  if (net.tail() == Tail::PixelShuffleAddInput) return net.prelus().size() + 1 == convs.size() && convs.size() >= 2;
  return net.tail() == Tail::None && convs.size() >= 21 && (convs.size() - 6) % 15 == 0;
}

int default_winograd() {
  const char* m = std::getenv("PETCAM_WINOGRAD");
  return m && std::strcmp(m, "6") == 0 ? 6 : 4;
}

std::unique_ptr<NativeUpscaler> make_upscaler(std::shared_ptr<Network> net, Precision precision, int threads,
                                              int strip_rows, int winograd) {
  if (!supports(*net)) throw ModelError("the native engine does not know the network " + net->describe());
  if (winograd == 0) winograd = default_winograd();
  if (winograd != 4 && winograd != 6) throw std::invalid_argument("the native engine's Winograd tile is 4 or 6");
  torch::NoGradGuard no_grad;
  return std::make_unique<Engine>(std::move(net), precision, threads, strip_rows, winograd);
}

}  // namespace petcam::upscaler::native
