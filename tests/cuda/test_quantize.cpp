// nvfp4kv GPU tests — quantize / dequantize on CUDA views against the CPU reference (the public
// API on CPU views), bitwise: packed codes, scale bytes (padding included), global scales, and the
// canary bytes around and between the output rows. Fresh seeded data per case (seed printed on
// failure); the first mismatch is reported as (batch, row, block, nibble).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <initializer_list>
#include <vector>

#include <cuda_runtime.h>

#include "common/format.h"
#include "cuda/gpu_test_util.h"
#include "cuda/quantize/quantize_params.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/quantize.h"

namespace nvfp4kv {
namespace {

namespace fmt = nvfp4kv::fmt;

constexpr uint8_t kCanary = 0xA5;
constexpr int64_t kCanaryBytes = 64;

enum class Fill { kRandom, kTies, kSpecial, kScaleTies };

const char* fill_name(Fill f) {
  return f == Fill::kRandom ? "random" : f == Fill::kTies ? "ties" : f == Fill::kSpecial ? "special" : "scale_ties";
}
const char* mode_name(GlobalScaleMode m) {
  return m == GlobalScaleMode::kGiven ? "given" : m == GlobalScaleMode::kPerRow ? "per_row" : "per_tensor";
}

struct Shape {
  int64_t batch = 1, rows = 1, k = 16;  // batch 0 means a rank-2 tensor (batch 1)
  int64_t in_row_pad = 0;               // extra elements after each input row
  int64_t data_row_pad = 0;             // extra bytes after each data row
  int64_t batch_pad = 0;                // extra elements / bytes between batches
};

struct Case {
  Recipe recipe = Recipe::kNvfp4;
  SfLayout layout = SfLayout::kLinear;
  DType dtype = DType::kBF16;
  GlobalScaleMode mode = GlobalScaleMode::kGiven;
  ErrorMetric metric = ErrorMetric::kMse;
  Shape shape;
  Fill fill = Fill::kRandom;
  float given_s_dec = 0.0f;  // 0: chosen from the data
  uint64_t seed = 0;

  std::string describe() const {
    std::ostringstream os;
    os << recipe_name(recipe) << (recipe == Recipe::kNvfp4FourOverSix ? std::string("/") + error_metric_name(metric) : "")
       << " layout " << sf_layout_name(layout) << " input " << dtype_name(dtype) << " scale "
       << (recipe_has_global_scale(recipe) ? mode_name(mode) : "none") << " shape ";
    if (shape.batch > 0) os << shape.batch << "x";
    os << shape.rows << "x" << shape.k << " pads(" << shape.in_row_pad << "," << shape.data_row_pad << ","
       << shape.batch_pad << ") fill " << fill_name(fill) << " seed " << seed;
    return os.str();
  }
};

uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

/// Storage bits of `x` in `dtype` (little-endian, dtype_size bytes).
void store(uint8_t* p, DType dtype, float x) {
  switch (dtype) {
    case DType::kF32: std::memcpy(p, &x, 4); break;
    case DType::kF16: {
      const uint16_t h = fmt::float_to_f16_bits(x);
      std::memcpy(p, &h, 2);
      break;
    }
    case DType::kBF16: {
      const uint16_t h = fmt::float_to_bf16_bits(x);
      std::memcpy(p, &h, 2);
      break;
    }
    case DType::kFP8E4M3: *p = fmt::float_to_e4m3(x); break;
    default: break;
  }
}

float largest_finite(DType dtype) {
  return dtype == DType::kF16 ? 65504.0f : dtype == DType::kFP8E4M3 ? 448.0f : 3.0e38f;
}

/// Logical values [B, M, K] for a case (row-major, no padding).
std::vector<float> make_values(const Case& c, std::mt19937_64& rng, int64_t batch) {
  const int64_t n = batch * c.shape.rows * c.shape.k;
  std::vector<float> x(static_cast<size_t>(n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  const int block = recipe_block_elems(c.recipe);
  const int64_t blocks = n / block;
  const int64_t row_blocks = c.shape.k / block;
  if (c.fill == Fill::kScaleTies) {
    // 4over6 under a given S_dec (c.given_s_dec): per block a random normal E4M3 scale s and max
    // 6 · s · S_dec (so sf6 = s), the other elements the input values nearest to b · s' · S_dec and
    // their neighbours (±1 in the 16-bit pattern) for E2M1 decision boundaries b and s' = s or
    // e4m3(1.5 s) (the map-to-4 byte): where a rounded product x · enc can land exactly on b.
    static const float kB[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 0.5f, 1.0f, 3.0f, 6.0f};
    const bool f16 = c.dtype == DType::kF16;
    auto nearest = [&](float v, int step) {
      if (f16) return fmt::f16_bits_to_float(static_cast<uint16_t>(fmt::float_to_f16_bits(v) + step));
      return fmt::bf16_bits_to_float(static_cast<uint16_t>(fmt::float_to_bf16_bits(v) + step));
    };
    std::uniform_int_distribution<uint32_t> byte(0x10u, 0x6Eu);
    std::uniform_int_distribution<int> pick(0, 10), nb(-1, 1), pos(0, block - 1);
    for (int64_t b = 0; b < blocks; ++b) {
      const float s6 = fmt::e4m3_to_float(byte(rng));
      const float s4 = fmt::e4m3_to_float(fmt::float_to_e4m3(s6 * 1.5f));
      for (int i = 0; i < block; ++i) {
        const float t = kB[pick(rng)] * (uni(rng) < 0.5f ? s6 : s4) * c.given_s_dec;
        const float v = nearest(t, t > 0.0f ? nb(rng) : 0);
        x[static_cast<size_t>(b * block + i)] = uni(rng) < 0.5f ? -v : v;
      }
      x[static_cast<size_t>(b * block + pos(rng))] = nearest(6.0f * s6 * c.given_s_dec, 0);
    }
    return x;
  }
  if (c.fill == Fill::kTies) {
    // Every block: t_i · 2^e · u with t from the E2M1 ties and grid points, max exactly 6·2^e·u.
    // With S_dec = 1/16 (nvfp4: u = 1/16, so S_enc = 16, sf = 2^e, enc = 16 / 2^e) or the mx
    // rule (u = 1: v6 = 2^e, enc = 2^-e), x · enc = t exactly: every tie of SPEC.md §1 is hit.
    static const float kT[] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f,
                               2.0f, 2.5f,  3.0f, 3.5f,  4.0f, 5.0f,  6.0f};
    const float u = recipe_has_global_scale(c.recipe) ? 1.0f / 16.0f : 1.0f;
    std::uniform_int_distribution<int> pick(0, 14), ex(-3, 3), pos(0, block - 1);
    for (int64_t b = 0; b < blocks; ++b) {
      const float scale = std::ldexp(u, ex(rng));
      for (int i = 0; i < block; ++i) {
        const float t = kT[pick(rng)];
        x[static_cast<size_t>(b * block + i)] = (uni(rng) < 0.5f ? -t : t) * scale;
      }
      x[static_cast<size_t>(b * block + pos(rng))] = (uni(rng) < 0.5f ? -6.0f : 6.0f) * scale;
    }
    return x;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    // Magnitudes vary by block (2^-8..2^8) with outlier blocks, so block scales span E4M3.
    const float mag = std::ldexp(1.0f, static_cast<int>(uni(rng) * 16.0f) - 8) * (uni(rng) < 0.05f ? 40.0f : 1.0f);
    const bool zero_block = uni(rng) < 0.04f;
    for (int i = 0; i < block; ++i) {
      float v = zero_block ? (uni(rng) < 0.5f ? 0.0f : -0.0f) : normal(rng) * mag;
      if (c.fill == Fill::kSpecial) {
        const float r = uni(rng);
        if (r < 0.03f) v = std::numeric_limits<float>::quiet_NaN();
        else if (r < 0.05f) v = (uni(rng) < 0.5f ? -1.0f : 1.0f) * std::numeric_limits<float>::infinity();
        else if (r < 0.08f) v = (uni(rng) < 0.5f ? -1.0f : 1.0f) * largest_finite(c.dtype);
        else if (r < 0.12f) v = (uni(rng) < 0.5f ? -1.0f : 1.0f) * 1.0e-40f * (1.0f + uni(rng));
        else if (r < 0.15f) v = -0.0f;
      }
      x[static_cast<size_t>(b * block + i)] = v;
    }
    (void)row_blocks;
  }
  if (c.fill == Fill::kSpecial && blocks > 2) {
    // One block entirely NaN, one block of tiny values only.
    std::uniform_int_distribution<int64_t> pick_block(0, blocks - 1);
    const int64_t nb = pick_block(rng), tb = pick_block(rng);
    for (int i = 0; i < block; ++i) x[static_cast<size_t>(nb * block + i)] = std::numeric_limits<float>::quiet_NaN();
    for (int i = 0; i < block; ++i) x[static_cast<size_t>(tb * block + i)] = 1.0e-39f * (i + 1);
  }
  // An all-zero row (with -0.0s) when there are several rows.
  if (c.shape.rows > 2) {
    std::uniform_int_distribution<int64_t> pick_row(0, batch * c.shape.rows - 1);
    const int64_t r = pick_row(rng);
    for (int64_t i = 0; i < c.shape.k; ++i) x[static_cast<size_t>(r * c.shape.k + i)] = (i % 3 == 0) ? -0.0f : 0.0f;
  }
  return x;
}

/// Host and device copies of one byte buffer that starts and ends with canaries.
struct Buffers {
  std::vector<uint8_t> host;  // what the CPU reference writes into
  DeviceBuffer device;
  void init(size_t bytes, const std::vector<uint8_t>* content = nullptr) {
    host.assign(bytes, kCanary);
    if (content) host = *content;
    device = test::to_device(host);
  }
  uint8_t* h(int64_t off) { return host.data() + off; }
  uint8_t* d(int64_t off) { return static_cast<uint8_t*>(device.data()) + off; }
  std::vector<uint8_t> fetch() const { return test::to_host<uint8_t>(device, host.size()); }
};

/// Geometry of a case: strides, offsets and views on either side.
struct Layout {
  int rank = 2;
  int64_t batch = 1, rows = 0, k = 0, block = 16, kv = 0;
  int64_t in_row_stride = 0, in_batch_stride = 0;  // elements
  int64_t data_row_stride = 0, data_batch_stride = 0;  // bytes
  int64_t sf_rows = 0, sf_cols = 0;
  int64_t gs_count = 1;
  size_t esize = 2;
};

Layout make_layout(const Case& c) {
  Layout L;
  L.rank = c.shape.batch > 0 ? 3 : 2;
  L.batch = c.shape.batch > 0 ? c.shape.batch : 1;
  L.rows = c.shape.rows;
  L.k = c.shape.k;
  L.block = recipe_block_elems(c.recipe);
  L.kv = L.k / L.block;
  L.esize = dtype_size(c.dtype);
  L.in_row_stride = L.k + c.shape.in_row_pad;
  L.in_batch_stride = L.rows * L.in_row_stride + c.shape.batch_pad;
  L.data_row_stride = L.k / 2 + c.shape.data_row_pad;
  L.data_batch_stride = L.rows * L.data_row_stride + c.shape.batch_pad;
  const ScaleShape ss = scale_shape(c.recipe, c.layout, L.rows, L.k);
  L.sf_rows = ss.rows;
  L.sf_cols = ss.cols;
  L.gs_count = c.mode == GlobalScaleMode::kPerRow ? L.batch * L.rows : 1;
  return L;
}

TensorView elem_view(void* p, DType dt, Device dev, const Layout& L, int64_t row_stride, int64_t batch_stride,
                     int64_t cols) {
  if (L.rank == 3) return make_strided_view(p, dt, dev, {L.batch, L.rows, cols}, {batch_stride, row_stride, 1});
  return make_strided_view(p, dt, dev, {L.rows, cols}, {row_stride, 1});
}
TensorView scale_view(void* p, Device dev, const Layout& L) {
  if (L.rank == 3) return make_view(p, DType::kU8, dev, {L.batch, L.sf_rows, L.sf_cols});
  return make_view(p, DType::kU8, dev, {L.sf_rows, L.sf_cols});
}
TensorView gs_view(void* p, Device dev, const Layout& L, bool per_row) {
  if (!per_row) return make_view(p, DType::kF32, dev, {1});
  if (L.rank == 3) return make_view(p, DType::kF32, dev, {L.batch, L.rows});
  return make_view(p, DType::kF32, dev, {L.rows});
}

/// Where byte `off` of the data buffer lies, for the failure message.
std::string locate_data(const Layout& L, int64_t off, uint8_t got, uint8_t want) {
  std::ostringstream os;
  const int64_t rel = off - kCanaryBytes;
  const int64_t b = rel >= 0 ? rel / L.data_batch_stride : -1;
  const int64_t in_b = rel - b * L.data_batch_stride;
  const int64_t m = in_b / L.data_row_stride;
  const int64_t byte = in_b - m * L.data_row_stride;
  os << std::hex << "got 0x" << int(got) << " want 0x" << int(want) << std::dec << ": ";
  if (rel < 0 || b >= L.batch || m >= L.rows || byte >= L.k / 2) {
    os << "canary/gap byte at buffer offset " << off << " was written";
  } else {
    const int nib = ((got ^ want) & 0x0F) ? 0 : 1;
    const int64_t elem = byte * 2 + nib;
    os << "data mismatch at batch " << b << " row " << m << " block " << elem / L.block << " nibble "
       << elem % L.block << " (element " << elem << ")";
  }
  return os.str();
}

std::string locate_scale(const Case& c, const Layout& L, int64_t off, uint8_t got, uint8_t want) {
  std::ostringstream os;
  os << std::hex << "got 0x" << int(got) << " want 0x" << int(want) << std::dec << ": ";
  const int64_t rel = off - kCanaryBytes;
  const int64_t mat = L.sf_rows * L.sf_cols;
  if (rel < 0 || rel >= L.batch * mat) {
    os << "canary byte at scale buffer offset " << off << " was written";
    return os.str();
  }
  const int64_t b = rel / mat, in_m = rel - b * mat;
  const int li = c.layout == SfLayout::k128x4 ? 1 : c.layout == SfLayout::k8x4 ? 2 : 0;
  for (int64_t m = 0; m < L.sf_rows; ++m)
    for (int64_t k = 0; k < L.sf_cols; ++k)
      if (fmt::sf_offset(li, m, k, L.kv) == in_m) {
        os << "scale mismatch at batch " << b << " row " << m << " block " << k
           << ((m >= L.rows || k >= L.kv) ? " (padding)" : "");
        return os.str();
      }
  os << "scale byte at matrix offset " << in_m;
  return os.str();
}

/// First differing byte, or -1.
int64_t first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  const auto it = std::mismatch(a.begin(), a.end(), b.begin());
  return it.first == a.end() ? -1 : static_cast<int64_t>(it.first - a.begin());
}

/// Quantizes one case on the CPU and on the GPU and compares every byte. Returns false on a
/// mismatch (after reporting it).
bool run_case(Case c) {
  if (c.seed == 0) c.seed = fresh_seed();
  SCOPED_TRACE(c.describe());
  std::mt19937_64 rng(c.seed);
  const Layout L = make_layout(c);
  const std::vector<float> x = make_values(c, rng, L.batch);

  // Input storage with gaps between rows and batches filled with values that would change the
  // result if read (huge, NaN).
  const size_t in_bytes = static_cast<size_t>(L.batch * L.in_batch_stride) * L.esize;
  std::vector<uint8_t> in_host(in_bytes);
  for (size_t i = 0; i < in_bytes; i += L.esize) store(&in_host[i], c.dtype, (i / L.esize) % 2 ? 1.0e30f : NAN);
  for (int64_t b = 0; b < L.batch; ++b)
    for (int64_t m = 0; m < L.rows; ++m)
      for (int64_t i = 0; i < L.k; ++i)
        store(&in_host[static_cast<size_t>((b * L.in_batch_stride + m * L.in_row_stride + i)) * L.esize], c.dtype,
              x[static_cast<size_t>((b * L.rows + m) * L.k + i)]);
  DeviceBuffer in_dev = test::to_device(in_host);

  Buffers data, scales, gs;
  data.init(static_cast<size_t>(2 * kCanaryBytes + L.batch * L.data_batch_stride));
  scales.init(static_cast<size_t>(2 * kCanaryBytes + L.batch * L.sf_rows * L.sf_cols));
  const bool has_global = recipe_has_global_scale(c.recipe);
  if (has_global) {
    gs.host.assign(static_cast<size_t>(2 * kCanaryBytes + 4 * L.gs_count), kCanary);
    if (c.mode == GlobalScaleMode::kGiven) {
      float s_dec = c.given_s_dec;
      if (s_dec == 0.0f) {
        if (c.fill == Fill::kTies) {
          s_dec = 1.0f / 16.0f;
        } else {
          float amax = 0.0f;
          for (float v : x) amax = fmt::max_f(amax, std::isfinite(v) ? std::fabs(v) : 0.0f);
          std::uniform_real_distribution<float> f(0.5f, 2.0f);  // some blocks clip at 448
          s_dec = amax > 0.0f ? amax / 2688.0f * f(rng) : 1.0f;
          // A tensor of only subnormal-range values (special data on a one-block shape) would give
          // a decode scale below what the API accepts (1 / S_dec must be finite): take the
          // smallest it accepts instead (ExtremeGivenScales tests that scale on purpose).
          s_dec = std::max(s_dec, 3.0e-39f);
        }
      }
      std::memcpy(gs.h(kCanaryBytes), &s_dec, 4);
    }
    gs.device = test::to_device(gs.host);
  }

  QuantizeOptions opt;
  opt.recipe = c.recipe;
  opt.sf_layout = c.layout;
  opt.global_scale_mode = c.mode;
  opt.metric = c.metric;
  const bool per_row = has_global && c.mode == GlobalScaleMode::kPerRow;
  auto views = [&](Device dev, void* in_p, uint8_t* data_p, uint8_t* sf_p, uint8_t* gs_p) {
    struct V { TensorView in, data, sf, gs; } v;
    v.in = elem_view(in_p, c.dtype, dev, L, L.in_row_stride, L.in_batch_stride, L.k);
    v.data = elem_view(data_p, DType::kU8, dev, L, L.data_row_stride, L.data_batch_stride, L.k / 2);
    v.sf = scale_view(sf_p, dev, L);
    v.gs = has_global ? gs_view(gs_p, dev, L, per_row) : TensorView{};
    return v;
  };
  const auto hv = views(Device::kCpu, in_host.data(), data.h(kCanaryBytes), scales.h(kCanaryBytes),
                        has_global ? gs.h(kCanaryBytes) : nullptr);
  const Status cpu = quantize(hv.in, hv.data, hv.sf, hv.gs, opt);
  EXPECT_TRUE(cpu.ok()) << cpu.to_string();
  if (!cpu.ok()) return false;
  const auto dv = views(Device::kCuda, in_dev.data(), data.d(kCanaryBytes), scales.d(kCanaryBytes),
                        has_global ? gs.d(kCanaryBytes) : nullptr);
  const Status gpu = quantize(dv.in, dv.data, dv.sf, dv.gs, opt);
  EXPECT_TRUE(gpu.ok()) << gpu.to_string();
  if (!gpu.ok()) return false;
  const Status sync = device_synchronize();
  EXPECT_TRUE(sync.ok()) << sync.to_string();
  if (!sync.ok()) return false;

  bool ok = true;
  const std::vector<uint8_t> d_got = data.fetch();
  if (const int64_t off = first_diff(d_got, data.host); off >= 0) {
    ADD_FAILURE() << locate_data(L, off, d_got[off], data.host[off]);
    ok = false;
  }
  const std::vector<uint8_t> s_got = scales.fetch();
  if (const int64_t off = first_diff(s_got, scales.host); off >= 0) {
    ADD_FAILURE() << locate_scale(c, L, off, s_got[off], scales.host[off]);
    ok = false;
  }
  if (has_global) {
    const std::vector<uint8_t> g_got = gs.fetch();
    if (const int64_t off = first_diff(g_got, gs.host); off >= 0) {
      const int64_t idx = (off - kCanaryBytes) / 4;
      float got = 0, want = 0;
      if (idx >= 0 && idx < L.gs_count) {
        std::memcpy(&got, &g_got[kCanaryBytes + 4 * idx], 4);
        std::memcpy(&want, &gs.host[kCanaryBytes + 4 * idx], 4);
      }
      ADD_FAILURE() << "global scale mismatch at index " << idx << " (buffer offset " << off << "): got " << got
                    << " want " << want;
      ok = false;
    }
  }
  return ok;
}

struct Combo {
  Recipe recipe;
  GlobalScaleMode mode;
  ErrorMetric metric;
};

/// Every recipe (4over6 with both metrics) × global-scale mode.
std::vector<Combo> all_combos() {
  std::vector<Combo> v;
  for (GlobalScaleMode m : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor, GlobalScaleMode::kPerRow}) {
    v.push_back({Recipe::kNvfp4, m, ErrorMetric::kMse});
    v.push_back({Recipe::kNvfp4FourOverSix, m, ErrorMetric::kMse});
    v.push_back({Recipe::kNvfp4FourOverSix, m, ErrorMetric::kMae});
  }
  v.push_back({Recipe::kMxfp4, GlobalScaleMode::kGiven, ErrorMetric::kMse});
  v.push_back({Recipe::kFp4Block16, GlobalScaleMode::kGiven, ErrorMetric::kMse});
  return v;
}

std::vector<DType> input_types(Recipe r) {
  if (recipe_has_global_scale(r)) return {DType::kF32, DType::kF16, DType::kBF16, DType::kFP8E4M3};
  return {DType::kF32, DType::kF16, DType::kBF16};
}

constexpr SfLayout kLayouts[] = {SfLayout::kLinear, SfLayout::k128x4, SfLayout::k8x4};

/// Runs every recipe × layout × input type × mode over `shapes` with `fill`; stops a combo at
/// its first failing shape.
void sweep(const std::vector<Shape>& shapes, Fill fill) {
  for (const Combo& co : all_combos())
    for (SfLayout layout : kLayouts)
      for (DType dt : input_types(co.recipe))
        for (const Shape& s : shapes) {
          if (s.k % recipe_block_elems(co.recipe) != 0) continue;
          Case c{.recipe = co.recipe, .layout = layout, .dtype = dt, .mode = co.mode, .metric = co.metric, .shape = s, .fill = fill};
          if (fill == Fill::kTies && recipe_has_global_scale(c.recipe)) c.mode = GlobalScaleMode::kGiven;
          if (!run_case(c)) break;
        }
}

TEST(CudaQuantize, SmallEveryCombo) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{0, 1, 32}, {2, 5, 96, 3, 5, 7}, {0, 9, 224, 16, 16, 0}}, Fill::kRandom);
}

TEST(CudaQuantize, EveryComboTinyShapes) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{0, 1, 16}, {0, 3, 48}, {0, 2, 80, 1, 1, 0}}, Fill::kRandom);
}

TEST(CudaQuantize, SmallSpecialValues) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{2, 3, 160, 1, 3, 5}}, Fill::kSpecial);
}

TEST(CudaQuantize, SmallTies) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{0, 8, 256, 0, 8, 0}}, Fill::kTies);
}

TEST(CudaQuantize, OddShapesStridesBatches) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{0, 127, 96},
         {0, 129, 160, 32, 16, 0},
         {0, 257, 1056, 5, 3, 0},
         {3, 37, 224, 8, 8, 24},
         {2, 130, 544, 0, 0, 0},
         {0, 1, 4096}},
        Fill::kRandom);
}

// The fast kernel's v6 sector unit order (whole 128x4 / 8x4 scale sectors per CTA step) is no
// longer chosen automatically (the warp-sector order is, for inputs >= 256 MiB) but stays a bench
// A/B variant: force it here so its bytes are checked on odd, strided and batched shapes too.
TEST(CudaQuantize, SectorOrderForcedMatchesReference) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  struct OrderGuard {
    OrderGuard() { cuda::set_fast_quantize_order_override(1); }
    ~OrderGuard() { cuda::set_fast_quantize_order_override(-1); }
  } guard;
  sweep({{0, 257, 1056, 5, 3, 0}, {2, 130, 544, 0, 0, 0}, {0, 384, 2048}, {0, 9, 224, 16, 16, 0}}, Fill::kRandom);
  sweep({{2, 65, 2080, 16, 8, 0}}, Fill::kSpecial);
}

// The warp-sector order (each warp: the 8 rows of a scale sector × 4 units; bench A/B only unless
// chosen by the launch rule) and the v6 grid without balancing, forced on the same shapes.
TEST(CudaQuantize, WarpSectorOrderAndUnbalancedGridMatchReference) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  struct Guard {
    Guard() { cuda::set_fast_quantize_order_override(2); }
    ~Guard() {
      cuda::set_fast_quantize_order_override(-1);
      cuda::set_fast_quantize_balance_override(-1);
    }
  } guard;
  sweep({{0, 257, 1056, 5, 3, 0}, {2, 130, 544, 0, 0, 0}, {0, 384, 2048}, {0, 9, 224, 16, 16, 0}}, Fill::kRandom);
  sweep({{2, 65, 2080, 16, 8, 0}}, Fill::kSpecial);
  // ≥ 1 wave of CTAs (so balancing changes the grid) with and without balancing, both orders.
  for (int order : {2, 0})
    for (int balance : {0, 1}) {
      cuda::set_fast_quantize_order_override(order);
      cuda::set_fast_quantize_balance_override(balance);
      for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix}) {
        Case c;
        c.recipe = r;
        c.layout = SfLayout::k128x4;
        c.dtype = DType::kBF16;
        c.mode = GlobalScaleMode::kGiven;
        c.shape = {0, 2048, 4096};
        if (!run_case(c)) ADD_FAILURE() << "order " << order << " balance " << balance;
      }
    }
}

// Puts every fast-kernel choice knob a test sets back to its launch rule when the test ends,
// also when an assertion returns early.
struct KernelKnobGuard {
  ~KernelKnobGuard() {
    cuda::set_fast_quantize_4over6_dq_override(-1);
    cuda::set_fast_quantize_block_override(-1);
    cuda::set_fast_quantize_block_step_override(-1);
    cuda::set_fast_quantize_block_order_override(-1);
    cuda::set_fast_quantize_block_threads_override(0);
    cuda::set_fast_quantize_block_one_override(-1);
    cuda::set_fast_quantize_lean_override(-1);
  }
};

/// Runs `body` once per plain-nvfp4 block-kernel path, that path forced: the one-block path at
/// ≤ 128 registers (knob 1), at ≤ 32 registers over waves (2), and the loop (0).
void for_each_block_path(const std::function<void(int)>& body) {
  const KernelKnobGuard guard;
  for (int one : {1, 2, 0}) {
    SCOPED_TRACE(testing::Message() << "block_one_override " << one);
    cuda::set_fast_quantize_block_one_override(one);
    body(one);
  }
}

/// Runs `recipe` (with `metric`) over every layout, both 16-bit types, random, special and tie data
/// and given and per-tensor scales (ties with a given scale only) on shapes of every kind (one
/// block, odd rows, padded rows and columns, strided rows, batches) plus `extra`; stops a
/// combination at its first failing shape.
void sweep_fast(Recipe recipe, ErrorMetric metric, std::initializer_list<Shape> extra = {}) {
  std::vector<Shape> shapes = {Shape{0, 1, 16},   Shape{0, 3, 48},  Shape{2, 5, 96, 3, 5, 7}, Shape{0, 129, 160, 32, 16, 0},
                               Shape{3, 37, 224, 8, 8, 24}, Shape{0, 257, 1056, 5, 3, 0}};
  shapes.insert(shapes.end(), extra.begin(), extra.end());
  for (SfLayout layout : kLayouts)
    for (DType dt : {DType::kBF16, DType::kF16})
      for (Fill f : {Fill::kRandom, Fill::kSpecial, Fill::kTies})
        for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor}) {
          if (f == Fill::kTies && gm != GlobalScaleMode::kGiven) continue;
          for (const Shape& sh : shapes) {
            const Case c{.recipe = recipe, .layout = layout, .dtype = dt, .mode = gm, .metric = metric, .shape = sh, .fill = f};
            if (!run_case(c)) break;
          }
        }
}

// nvfp4 and 4over6 from 16-bit inputs run the block kernel (one 16-element block per thread and
// step) up to the launch rule's size and the unit kernel (two blocks per thread) above it: force
// each over shapes of every kind (one block, odd rows, padded rows and columns, strided rows, batches,
// a multi-wave input), every layout, both 16-bit types, given and per-tensor scales, with random,
// special (NaN, Inf, zero blocks, tiny, huge) and tie data and extreme given scales.
TEST(CudaQuantize, BlockAndUnitKernelsForcedMatchReference) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const KernelKnobGuard guard;
  for (int mode : {1, 0}) {
    SCOPED_TRACE(testing::Message() << (mode == 1 ? "block kernel" : "unit kernel") << " forced");
    cuda::set_fast_quantize_block_override(mode);
    sweep_fast(Recipe::kNvfp4, ErrorMetric::kMse);
    sweep_fast(Recipe::kNvfp4FourOverSix, ErrorMetric::kMse);
    sweep_fast(Recipe::kNvfp4FourOverSix, ErrorMetric::kMae);
    for (float sdec : {3.0e-39f, 1.0e30f, 1.0e-30f, 3.0e38f})
      for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix})
      for (Fill f : {Fill::kRandom, Fill::kSpecial}) {
        run_case(Case{.recipe = r, .layout = SfLayout::k128x4, .shape = {0, 33, 320}, .fill = f, .given_s_dec = sdec});
      }
    for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix})
      for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor}) {
        // 8 Mi elements: several waves of either kernel.
        run_case(Case{.recipe = r, .layout = SfLayout::k128x4, .mode = gm, .shape = {0, 2048, 4096}});
      }
    // The block kernel's next-block position: stepped from the previous block (default; batch 1,
    // forward order) and by division (forced), on inputs of 1-2 blocks per thread whose grid
    // stride is no multiple of the row (129 block columns: the column carries into the row).
    for (int step : {-1, 0}) {
      SCOPED_TRACE(testing::Message() << "block position " << (step == 0 ? "by division" : "stepped"));
      cuda::set_fast_quantize_block_step_override(step);
      for (SfLayout layout : kLayouts)
        for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix})
          run_case(Case{.recipe = r, .layout = layout, .shape = {0, 1500, 2064}});
    }
    cuda::set_fast_quantize_block_step_override(-1);
    // The block kernel's order in the tiled layouts: sector order and row-major, each forced, over
    // batches, padded rows and columns and multi-wave inputs.
    for (int order : {1, 0}) {
      SCOPED_TRACE(testing::Message() << "block order " << (order == 0 ? "row-major" : "sector"));
      cuda::set_fast_quantize_block_order_override(order);
      for (SfLayout layout : {SfLayout::k128x4, SfLayout::k8x4})
        for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix})
          for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor})
            for (const Shape& sh : {Shape{0, 1500, 2064}, Shape{3, 200, 544, 8, 16, 32}, Shape{0, 129, 160, 32, 16, 0}})
              run_case(Case{.recipe = r, .layout = layout, .mode = gm, .shape = sh});
    }
    cuda::set_fast_quantize_block_order_override(-1);
    // The block kernel's CTA size (plain nvfp4 takes 32-256 threads per CTA; the knob leaves
    // 4over6 at 256): every size forced, every layout, row-major and sector order, padded and
    // batched shapes, one and several blocks per thread.
    if (mode == 1) {
      for (int threads : {32, 64, 128, 256}) {
        SCOPED_TRACE(testing::Message() << "block kernel CTA of " << threads << " threads");
        cuda::set_fast_quantize_block_threads_override(threads);
        for (SfLayout layout : kLayouts)
          for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor})
            for (const Shape& sh : {Shape{0, 1, 16}, Shape{0, 129, 160, 32, 16, 0}, Shape{3, 200, 544, 8, 16, 32},
                                    Shape{0, 1500, 2064}})
              run_case(Case{.recipe = Recipe::kNvfp4, .layout = layout, .mode = gm, .shape = sh});
      }
      cuda::set_fast_quantize_block_threads_override(0);
    }
  }
}

// The block kernel's lean path (batch 1 without padding: no validity tests, 32-bit address
// products, the reciprocal without range check where 2^-117 ≤ S_dec ≤ 2^117) is what the
// unpadded shapes of the other tests take; here the same block paths run with it off, on unpadded
// shapes (so that only the knob differs), and with it on around the decode-scale bounds.
TEST(CudaQuantize, BlockKernelLeanPathOnAndOff) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  for_each_block_path([](int) {
    for (int lean : {0, 1}) {
      SCOPED_TRACE(testing::Message() << "lean_override " << lean);
      cuda::set_fast_quantize_lean_override(lean);
      for (SfLayout layout : kLayouts)
        for (DType dt : {DType::kBF16, DType::kF16})
          for (Fill f : {Fill::kRandom, Fill::kSpecial, Fill::kTies})
            for (const Shape& sh : {Shape{0, 1, 16}, Shape{0, 128, 512}, Shape{0, 1024, 2048}})
              run_case(Case{.recipe = Recipe::kNvfp4, .layout = layout, .dtype = dt, .shape = sh, .fill = f});
      for (float sdec : {0x1p-117f, 0x1.fffffep-118f, 0x1p117f, 0x1.000002p117f, 1.0e-37f, 3.0e36f})
        for (Fill f : {Fill::kRandom, Fill::kSpecial})
          run_case(Case{.recipe = Recipe::kNvfp4, .layout = SfLayout::k128x4, .shape = {0, 256, 512}, .fill = f, .given_s_dec = sdec});
    }
  });
}

// Lean calls of ≥ 2^20 blocks (32 MiB of 16-bit input) take a second build of the block kernel
// whose lean loop stores the scale bytes with an L2 evict_last policy: every layout, both 16-bit
// types, given and per-tensor scales (the per-tensor pass walks the blocks in reverse, by
// division), a row of 528 block columns (the grid stride carries into the row).
TEST(CudaQuantize, LeanLoopEvictLastBuildMatchesReference) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  for (SfLayout layout : kLayouts)
    for (DType dt : {DType::kBF16, DType::kF16})
      for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor})
        for (const Shape& sh : {Shape{0, 4096, 4096}, Shape{0, 2048, 8448}})
          run_case(Case{.recipe = Recipe::kNvfp4, .layout = layout, .dtype = dt, .mode = gm, .shape = sh});
  run_case(Case{.recipe = Recipe::kNvfp4, .layout = SfLayout::k128x4, .shape = {0, 4096, 4096}, .fill = Fill::kSpecial});
}

// Plain nvfp4's one-block path of the block kernel at ≤ 128 registers in one wave (knob 1) and
// at ≤ 32 registers in as many waves as needed (knob 2), and the loop (knob 0), each forced, over
// every layout, both 16-bit types, given and per-tensor scales, random, special and tie data,
// extreme given scales, one block, odd, padded, strided and batched rows, inputs of 2-4 Mi
// elements (1500 x 2064 with a partial last wave), 9 Mi elements (knob 2: more than two waves of
// 8 CTAs of 256 per SM on an H100), both block orders and CTAs of 128 and 256 threads.
TEST(CudaQuantize, BlockKernelOneBlockPathMatchesReference) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  for_each_block_path([](int one) {
    sweep_fast(Recipe::kNvfp4, ErrorMetric::kMse, {Shape{0, 1024, 2048}, Shape{0, 1024, 4096}});
    if (one == 2)
      for (SfLayout layout : kLayouts)
        for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor})
          run_case(Case{.recipe = Recipe::kNvfp4, .layout = layout, .mode = gm, .shape = {0, 2048, 4608}});
    for (float sdec : {3.0e-39f, 1.0e30f, 1.0e-30f, 3.0e38f})
      for (Fill f : {Fill::kRandom, Fill::kSpecial})
        run_case(Case{.recipe = Recipe::kNvfp4, .layout = SfLayout::k128x4, .shape = {0, 33, 320}, .fill = f, .given_s_dec = sdec});
    for (int order : {1, 0})
      for (int threads : {128, 256}) {
        cuda::set_fast_quantize_block_order_override(order);
        cuda::set_fast_quantize_block_threads_override(threads);
        for (SfLayout layout : {SfLayout::k128x4, SfLayout::k8x4})
          for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor})
            for (const Shape& sh : {Shape{0, 1500, 2064}, Shape{3, 200, 544, 8, 16, 32}, Shape{0, 129, 160, 32, 16, 0}})
              run_case(Case{.recipe = Recipe::kNvfp4, .layout = layout, .mode = gm, .shape = sh});
      }
    cuda::set_fast_quantize_block_order_override(-1);
    cuda::set_fast_quantize_block_threads_override(0);
  });
}

// The block kernel's plain-nvfp4 paths (one-block path at ≤ 128 and at ≤ 32 registers, the loop),
// each forced on small inputs of every kind over every layout, both scale modes and random and
// special data: small enough for gpu_check's compute-sanitizer pass (filter *Small*).
TEST(CudaQuantize, SmallBlockKernelPathsForced) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  for_each_block_path([](int) {
    for (SfLayout layout : kLayouts)
      for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor})
        for (Fill f : {Fill::kRandom, Fill::kSpecial})
          for (const Shape& sh : {Shape{0, 1, 16}, Shape{3, 37, 224, 8, 8, 24}, Shape{0, 129, 160, 32, 16, 0}, Shape{0, 300, 1056}})
            run_case(Case{.recipe = Recipe::kNvfp4, .layout = layout, .mode = gm, .shape = sh, .fill = f});
  });
}

// The 4over6 variants of the fast kernel (kDq 7, v11's loop at 3 CTAs/SM, and kDq 13, the
// default: see quantize_fast.cu), each forced over every 4over6 combo with random, special and
// tie data, extreme and ordinary given scales, inputs at the E2M1 decision boundaries of each
// block's own scales, rows padded to whole units and a batch.
TEST(CudaQuantize, FourOverSixGridVariantsMatchReference) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const KernelKnobGuard guard;
  // kDq 7 and 13 are variants of the unit kernel; 14 stands for the block kernel (one block per
  // thread), which the launch rule picks below 256 MiB.
  for (int mode : {7, 13, 14}) {
    SCOPED_TRACE(testing::Message() << "4over6 grid variant " << mode);
    cuda::set_fast_quantize_4over6_dq_override(mode == 14 ? -1 : mode);
    cuda::set_fast_quantize_block_override(mode == 14 ? 1 : 0);
    for (ErrorMetric metric : {ErrorMetric::kMse, ErrorMetric::kMae})
      for (DType dt : {DType::kBF16, DType::kF16})
        for (Fill f : {Fill::kRandom, Fill::kSpecial, Fill::kTies})
          for (GlobalScaleMode gm : {GlobalScaleMode::kGiven, GlobalScaleMode::kPerTensor}) {
            if (f == Fill::kTies && gm != GlobalScaleMode::kGiven) continue;
            Case c;
            c.recipe = Recipe::kNvfp4FourOverSix;
            c.metric = metric;
            c.layout = SfLayout::k128x4;
            c.dtype = dt;
            c.mode = gm;
            c.shape = {0, 300, 1056, 8, 0, 0};
            c.fill = f;
            run_case(c);
          }
    for (float sdec : {3.0e-39f, 1.0e30f, 1.0e-30f, 3.0e38f, 16.0f / 2688.0f, 1.0f, 1.0f / 1536.0f})
      for (DType dt : {DType::kBF16, DType::kF16}) {
        Case c;
        c.recipe = Recipe::kNvfp4FourOverSix;
        c.layout = SfLayout::k128x4;
        c.dtype = dt;
        c.mode = GlobalScaleMode::kGiven;
        c.shape = {0, 65, 544};
        c.given_s_dec = sdec;
        run_case(c);
      }
    // Inputs at the E2M1 decision boundaries of the blocks' own scales (and their 16-bit
    // neighbours), under the bench's decode scale and 0.01.
    for (float sdec : {16.0f / 2688.0f, 0.01f})
      for (DType dt : {DType::kBF16, DType::kF16})
        for (ErrorMetric metric : {ErrorMetric::kMse, ErrorMetric::kMae}) {
          Case c;
          c.recipe = Recipe::kNvfp4FourOverSix;
          c.metric = metric;
          c.layout = SfLayout::k128x4;
          c.dtype = dt;
          c.mode = GlobalScaleMode::kGiven;
          c.shape = {0, 130, 1024};
          c.fill = Fill::kScaleTies;
          c.given_s_dec = sdec;
          run_case(c);
        }
    // Rows padded to whole units (linear prefetch with partial units) and a batch (not linear).
    for (Shape sh : {Shape{0, 97, 1040, 16, 0, 0}, Shape{2, 65, 544, 0, 0, 0}})
      for (Fill f : {Fill::kRandom, Fill::kTies}) {
        Case c;
        c.recipe = Recipe::kNvfp4FourOverSix;
        c.layout = SfLayout::k128x4;
        c.dtype = DType::kBF16;
        c.mode = GlobalScaleMode::kGiven;
        c.shape = sh;
        c.fill = f;
        run_case(c);
      }
  }
}

TEST(CudaQuantize, SpecialValuesLarger) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{0, 200, 1024}, {2, 65, 2080, 16, 8, 0}}, Fill::kSpecial);
}

TEST(CudaQuantize, TiesLarger) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  sweep({{0, 300, 1024}}, Fill::kTies);
}

TEST(CudaQuantize, ExtremeGivenScales) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  // A subnormal decode scale (just above 1/FLT_MAX, the smallest the API accepts), a huge one (every block underflows to
  // scale 0x00 and enc = FLT_MAX) and a tiny normal one.
  // f32 takes the general kernel; bf16 / f16 the fast one, whose 4over6 blocks with a subnormal
  // or saturated scale byte take its rare full-encode path.
  for (float s : {3.0e-39f, 1.0e30f, 1.0e-30f, 3.0e38f})
    for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix})
      for (Fill f : {Fill::kRandom, Fill::kSpecial})
        for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
          Case c;
          c.recipe = r;
          c.layout = SfLayout::k128x4;
          c.dtype = dt;
          c.mode = GlobalScaleMode::kGiven;
          c.shape = {0, 33, 320};
          c.fill = f;
          c.given_s_dec = s;
          run_case(c);
        }
}

TEST(CudaQuantize, LargeBf16Nvfp4Given128x4) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  Case c;
  c.recipe = Recipe::kNvfp4;
  c.layout = SfLayout::k128x4;
  c.dtype = DType::kBF16;
  c.mode = GlobalScaleMode::kGiven;
  c.shape = {0, 16384, 8192};
  run_case(c);
}

TEST(CudaQuantize, LargePerTensorAndPerRow) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  Case c;
  c.recipe = Recipe::kNvfp4;
  c.layout = SfLayout::k128x4;
  c.dtype = DType::kBF16;
  c.mode = GlobalScaleMode::kPerTensor;
  c.shape = {0, 4099, 4096};
  run_case(c);
  c.recipe = Recipe::kNvfp4FourOverSix;
  c.mode = GlobalScaleMode::kPerRow;
  c.dtype = DType::kF16;
  c.shape = {0, 1000, 8192, 64, 0, 0};
  run_case(c);
  c.recipe = Recipe::kMxfp4;
  c.layout = SfLayout::k8x4;
  c.dtype = DType::kF32;
  c.shape = {0, 2047, 6144};
  run_case(c);
}

// ---- dequantize ------------------------------------------------------------------------------

/// Quantizes `c` on the CPU, then dequantizes on both sides into every output type (strided
/// rows, canaries) and compares the bytes.
bool run_dequant_case(Case c) {
  if (c.seed == 0) c.seed = fresh_seed();
  SCOPED_TRACE(c.describe());
  std::mt19937_64 rng(c.seed);
  const Layout L = make_layout(c);
  const std::vector<float> x = make_values(c, rng, L.batch);
  std::vector<uint8_t> in_host(static_cast<size_t>(L.batch * L.in_batch_stride) * L.esize, 0);
  for (int64_t b = 0; b < L.batch; ++b)
    for (int64_t m = 0; m < L.rows; ++m)
      for (int64_t i = 0; i < L.k; ++i)
        store(&in_host[static_cast<size_t>((b * L.in_batch_stride + m * L.in_row_stride + i)) * L.esize], c.dtype,
              x[static_cast<size_t>((b * L.rows + m) * L.k + i)]);
  const bool has_global = recipe_has_global_scale(c.recipe);
  const bool per_row = has_global && c.mode == GlobalScaleMode::kPerRow;
  std::vector<uint8_t> data(static_cast<size_t>(L.batch * L.data_batch_stride), 0);
  std::vector<uint8_t> sf(static_cast<size_t>(L.batch * L.sf_rows * L.sf_cols), 0);
  std::vector<float> gsv(static_cast<size_t>(L.gs_count), 0.0f);
  if (has_global && c.mode == GlobalScaleMode::kGiven) {
    std::uniform_real_distribution<float> f(0.001f, 0.1f);
    gsv[0] = f(rng);  // a decode scale the data clips against in some blocks
  }
  QuantizeOptions qo;
  qo.recipe = c.recipe;
  qo.sf_layout = c.layout;
  qo.global_scale_mode = c.mode;
  qo.metric = c.metric;
  const Status q = quantize(elem_view(in_host.data(), c.dtype, Device::kCpu, L, L.in_row_stride, L.in_batch_stride, L.k),
                            elem_view(data.data(), DType::kU8, Device::kCpu, L, L.data_row_stride, L.data_batch_stride, L.k / 2),
                            scale_view(sf.data(), Device::kCpu, L),
                            has_global ? gs_view(gsv.data(), Device::kCpu, L, per_row) : TensorView{}, qo);
  EXPECT_TRUE(q.ok()) << q.to_string();
  if (!q.ok()) return false;
  DeviceBuffer data_d = test::to_device(data), sf_d = test::to_device(sf), gs_d = test::to_device(gsv);
  DequantizeOptions dqo;
  dqo.recipe = c.recipe;
  dqo.sf_layout = c.layout;
  bool ok = true;
  for (DType out : {DType::kF32, DType::kF16, DType::kBF16}) {
    const size_t osz = dtype_size(out);
    const int64_t out_row_stride = L.k + c.shape.in_row_pad;
    const int64_t out_batch_stride = L.rows * out_row_stride + c.shape.batch_pad;
    Buffers o;
    o.init(static_cast<size_t>(2 * kCanaryBytes + L.batch * out_batch_stride * static_cast<int64_t>(osz)));
    const TensorView gsh = has_global ? gs_view(gsv.data(), Device::kCpu, L, per_row) : TensorView{};
    const Status cpu = dequantize(elem_view(data.data(), DType::kU8, Device::kCpu, L, L.data_row_stride, L.data_batch_stride, L.k / 2),
                                  scale_view(sf.data(), Device::kCpu, L), gsh,
                                  elem_view(o.h(kCanaryBytes), out, Device::kCpu, L, out_row_stride, out_batch_stride, L.k), dqo);
    EXPECT_TRUE(cpu.ok()) << cpu.to_string();
    const TensorView gsdv = has_global ? gs_view(gs_d.data(), Device::kCuda, L, per_row) : TensorView{};
    const Status gpu = dequantize(elem_view(data_d.data(), DType::kU8, Device::kCuda, L, L.data_row_stride, L.data_batch_stride, L.k / 2),
                                  scale_view(sf_d.data(), Device::kCuda, L), gsdv,
                                  elem_view(o.d(kCanaryBytes), out, Device::kCuda, L, out_row_stride, out_batch_stride, L.k), dqo);
    EXPECT_TRUE(gpu.ok()) << gpu.to_string();
    EXPECT_TRUE(device_synchronize().ok());
    const std::vector<uint8_t> got = o.fetch();
    if (const int64_t off = first_diff(got, o.host); off >= 0) {
      const int64_t rel = off - kCanaryBytes;
      const int64_t elem = rel >= 0 ? rel / static_cast<int64_t>(osz) : -1;
      const int64_t b = elem >= 0 ? elem / out_batch_stride : -1;
      const int64_t m = elem >= 0 ? (elem - b * out_batch_stride) / out_row_stride : -1;
      const int64_t i = elem >= 0 ? elem - b * out_batch_stride - m * out_row_stride : -1;
      ADD_FAILURE() << "dequantize to " << dtype_name(out) << ": byte offset " << off
                    << ((rel < 0 || b >= L.batch || m >= L.rows || i >= L.k) ? " (canary/gap)" : "") << " batch " << b
                    << " row " << m << " block " << i / L.block << " element " << i;
      ok = false;
    }
  }
  return ok;
}

void dequant_sweep(const std::vector<Shape>& shapes, Fill fill) {
  for (const Combo& co : all_combos()) {
    if (co.metric == ErrorMetric::kMae) continue;
    for (SfLayout layout : kLayouts)
      for (const Shape& s : shapes) {
        if (s.k % recipe_block_elems(co.recipe) != 0) continue;
        Case c;
        c.recipe = co.recipe;
        c.mode = co.mode == GlobalScaleMode::kPerTensor ? GlobalScaleMode::kPerTensor : co.mode;
        c.layout = layout;
        c.dtype = DType::kF32;
        c.shape = s;
        c.fill = fill;
        if (!run_dequant_case(c)) break;
      }
  }
}

TEST(CudaQuantizeDequant, SmallEveryCombo) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  dequant_sweep({{0, 1, 32}, {0, 3, 48}, {2, 5, 96, 3, 5, 7}}, Fill::kSpecial);
}

TEST(CudaQuantizeDequant, OddShapesStrides) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  dequant_sweep({{0, 129, 1056, 8, 0, 0}, {3, 37, 224, 1, 1, 9}, {0, 64, 4096}}, Fill::kRandom);
}

// ---- CUDA graph ------------------------------------------------------------------------------

TEST(CudaQuantizeGraph, SmallCaptureReplayPerTensor) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t M = 77, K = 320;
  const ScaleShape ss = scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K);
  DeviceBuffer in_d, data_d, sf_d, gs_d;
  ASSERT_TRUE(in_d.allocate(M * K * 2).ok());
  ASSERT_TRUE(data_d.allocate(M * K / 2).ok());
  ASSERT_TRUE(sf_d.allocate(ss.bytes()).ok());
  ASSERT_TRUE(gs_d.allocate(4).ok());
  QuantizeOptions opt;
  opt.recipe = Recipe::kNvfp4;
  opt.sf_layout = SfLayout::k128x4;
  opt.global_scale_mode = GlobalScaleMode::kPerTensor;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const Status st = quantize(make_view(in_d.data(), DType::kBF16, Device::kCuda, {M, K}),
                             make_view(data_d.data(), DType::kU8, Device::kCuda, {M, K / 2}),
                             make_view(sf_d.data(), DType::kU8, Device::kCuda, {ss.rows, ss.cols}),
                             make_view(gs_d.data(), DType::kF32, Device::kCuda, {1}), opt, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int replay = 0; replay < 3; ++replay) {
    // New data with a different amax each replay: the graph must recompute the global scale.
    std::vector<uint16_t> in(static_cast<size_t>(M * K));
    const float mag = std::ldexp(1.0f, 4 * replay - 4);
    for (auto& h : in) h = fmt::float_to_bf16_bits(normal(rng) * mag);
    ASSERT_TRUE(copy_to_device(in_d.data(), in.data(), in.size() * 2).ok());
    ASSERT_TRUE(fill_device(data_d.data(), 0xA5, M * K / 2).ok());
    ASSERT_TRUE(fill_device(sf_d.data(), 0xA5, ss.bytes()).ok());
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<uint8_t> data(static_cast<size_t>(M * K / 2)), sf(static_cast<size_t>(ss.bytes()));
    float gs = 0.0f;
    ASSERT_TRUE(quantize(make_view(in.data(), DType::kBF16, Device::kCpu, {M, K}),
                         make_view(data.data(), DType::kU8, Device::kCpu, {M, K / 2}),
                         make_view(sf.data(), DType::kU8, Device::kCpu, {ss.rows, ss.cols}),
                         make_view(&gs, DType::kF32, Device::kCpu, {1}), opt)
                    .ok());
    EXPECT_EQ(test::to_host<uint8_t>(data_d, data.size()), data) << "replay " << replay;
    EXPECT_EQ(test::to_host<uint8_t>(sf_d, sf.size()), sf) << "replay " << replay;
    EXPECT_EQ(test::to_host<float>(gs_d, 1)[0], gs) << "replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace nvfp4kv
