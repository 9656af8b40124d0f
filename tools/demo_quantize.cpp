// nvfp4kv CLI — the quantization section of `nvfp4kv demo` (declared in demo.h): every recipe on
// three synthetic bf16 tensors, through the public API on the CPU (the reference backend).
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "common/format.h"
#include "demo.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv::cli {
namespace {

// splitmix64: tiny, seedable, identical on every platform (std::normal_distribution is not
// specified bit for bit, and the demo's tables should not depend on the standard library).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53; }  // (0, 1)
  // Box-Muller; the second value of each pair is kept for the next call.
  double normal() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double t = 6.283185307179586 * uniform();
    spare = r * std::sin(t);
    has_spare = true;
    return r * std::cos(t);
  }
  double spare = 0.0;
  bool has_spare = false;
};

// One synthetic tensor in bf16 (what a KV cache or activation holds) and its exact f32 widening.
struct Dataset {
  std::string name;
  std::string description;
  std::vector<uint16_t> bf16;
  std::vector<float> values;
  float amax = 0.0f;
};

enum class Kind { kGaussian, kStudentT3, kKCacheOutliers };

Dataset make_dataset(Kind kind, int64_t rows, int64_t cols, uint64_t seed) {
  Dataset d;
  Rng rng{seed, 0.0, false};
  const std::size_t n = static_cast<std::size_t>(rows * cols);
  std::vector<double> x(n);
  std::vector<double> channel_gain(static_cast<std::size_t>(cols), 1.0);
  constexpr int kOutlierChannels = 8;
  switch (kind) {
    case Kind::kGaussian:
      d.name = "gaussian";
      d.description = "N(0, 1)";
      for (auto& v : x) v = rng.normal();
      break;
    case Kind::kStudentT3:
      // t_3 = z / sqrt(chi2_3 / 3): heavy tails (finite variance, infinite 4th moment).
      // chi2_3 = chi2_2 + z'^2 with chi2_2 = -2 ln U (an exponential of mean 2).
      d.name = "student_t3";
      d.description = "Student-t, nu = 3 (heavy tails)";
      for (auto& v : x) {
        const double z = rng.normal(), z2 = rng.normal();
        v = z / std::sqrt((-2.0 * std::log(rng.uniform()) + z2 * z2) / 3.0);
      }
      break;
    case Kind::kKCacheOutliers:
      // Keys of real models carry a few channels that are large for every token; the same
      // channels in every row is what makes them hard for per-block scales.
      d.name = "kcache_outliers";
      d.description = "N(0, 1), " + std::to_string(kOutlierChannels) + " of " +
                      std::to_string(cols) + " channels x20 in every row (K-cache-like)";
      for (int i = 0; i < kOutlierChannels && i < cols; ++i) {
        channel_gain[static_cast<std::size_t>(rng.next() % static_cast<uint64_t>(cols))] = 20.0;
      }
      for (std::size_t i = 0; i < n; ++i) x[i] = rng.normal() * channel_gain[i % static_cast<std::size_t>(cols)];
      break;
  }
  d.bf16.resize(n);
  d.values.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    d.bf16[i] = fmt::float_to_bf16_bits(static_cast<float>(x[i]));
    d.values[i] = fmt::bf16_bits_to_float(d.bf16[i]);
    d.amax = std::max(d.amax, std::fabs(d.values[i]));
  }
  return d;
}

struct RecipeCase {
  Recipe recipe;
  ErrorMetric metric;
  const char* label;
};

constexpr RecipeCase kCases[] = {
    {Recipe::kNvfp4, ErrorMetric::kMse, "nvfp4"},
    {Recipe::kNvfp4FourOverSix, ErrorMetric::kMse, "nvfp4_4over6 mse"},
    {Recipe::kNvfp4FourOverSix, ErrorMetric::kMae, "nvfp4_4over6 mae"},
    {Recipe::kMxfp4, ErrorMetric::kMse, "mxfp4"},
    {Recipe::kFp4Block16, ErrorMetric::kMse, "fp4_block16"},
};

struct Result {
  double rel_l2 = 0, max_err_over_amax = 0, bits_per_value = 0;
  int64_t blocks = 0, map_to_4 = 0, undecided = 0, inconsistent = 0;
  bool non_finite = false;
};

// Counts the 4over6 blocks that kept the map-to-4 scale. Exact, not a heuristic: the two
// candidate bytes of SPEC.md §3.2 are recomputed from the block amax and the tensor's encode
// scale, and the stored byte is compared with them. Blocks whose candidates coincide (both
// saturate at 448, or the block is zero) have no choice to make and count as "undecided".
// A stored byte equal to neither candidate is a bug and is reported as inconsistent.
void count_map_to_4(const Dataset& d, int64_t rows, int64_t cols, const std::vector<uint8_t>& scales,
                    float stored_s_dec, Result* r) {
  // The per-tensor encode scale as SPEC.md §3.2 computes it; its reciprocal must be the stored
  // decode scale, otherwise the recomputed candidates would not be the ones the library saw.
  const float s_enc = fmt::global_encode_scale(d.amax, fmt::kFourOverSixGlobalNumerator);
  if (fmt::reciprocal_rn(s_enc) != stored_s_dec) ++r->inconsistent;
  const int64_t kv = cols / 16;
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t k = 0; k < kv; ++k) {
      const float* x = d.values.data() + m * cols + k * 16;
      float v = 0.0f;
      for (int i = 0; i < 16; ++i) v = fmt::max_f(v, fmt::abs_f(x[i]));
      const fmt::FourOverSixCandidates c = fmt::four_over_six_candidates(v, s_enc);
      const uint8_t stored = scales[static_cast<std::size_t>(m * kv + k)];  // linear layout
      if (c.sf4 == c.sf6) {
        ++r->undecided;
        if (stored != c.sf6) ++r->inconsistent;
      } else if (stored == c.sf4) {
        ++r->map_to_4;
      } else if (stored != c.sf6) {
        ++r->inconsistent;
      }
    }
  }
}

Status run_case(const Dataset& d, int64_t rows, int64_t cols, const RecipeCase& rc, Result* r) {
  QuantizeOptions opt;
  opt.recipe = rc.recipe;
  opt.metric = rc.metric;
  opt.sf_layout = SfLayout::kLinear;
  opt.global_scale_mode = GlobalScaleMode::kPerTensor;
  const bool has_global = recipe_has_global_scale(rc.recipe);
  const ScaleShape ss = scale_shape(rc.recipe, opt.sf_layout, rows, cols);
  std::vector<uint8_t> data(static_cast<std::size_t>(rows * cols / 2));
  std::vector<uint8_t> scales(static_cast<std::size_t>(ss.bytes()));
  float gs = 0.0f;
  const TensorView in_v = make_view(const_cast<uint16_t*>(d.bf16.data()), DType::kBF16, Device::kCpu,
                                    {rows, cols});
  const TensorView data_v = make_view(data.data(), DType::kU8, Device::kCpu, {rows, cols / 2});
  const TensorView sc_v = make_view(scales.data(), DType::kU8, Device::kCpu, {ss.rows, ss.cols});
  const TensorView gs_v = has_global ? make_view(&gs, DType::kF32, Device::kCpu, {1}) : TensorView();
  Status s = quantize(in_v, data_v, sc_v, gs_v, opt);
  if (!s.ok()) return s;
  std::vector<float> back(static_cast<std::size_t>(rows * cols));
  DequantizeOptions dopt;
  dopt.recipe = rc.recipe;
  dopt.sf_layout = opt.sf_layout;
  s = dequantize(data_v, sc_v, gs_v, make_view(back.data(), DType::kF32, Device::kCpu, {rows, cols}),
                 dopt);
  if (!s.ok()) return s;

  double err2 = 0, ref2 = 0, max_err = 0;
  for (std::size_t i = 0; i < back.size(); ++i) {
    if (!std::isfinite(back[i])) r->non_finite = true;
    const double e = static_cast<double>(back[i]) - static_cast<double>(d.values[i]);
    err2 += e * e;
    ref2 += static_cast<double>(d.values[i]) * d.values[i];
    max_err = std::max(max_err, std::fabs(e));
  }
  r->rel_l2 = ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0;
  r->max_err_over_amax = d.amax > 0 ? max_err / d.amax : 0.0;
  // Storage of this tensor: packed codes + scale bytes + the fp32 global scale.
  const double bytes = static_cast<double>(data.size() + scales.size() + (has_global ? 4 : 0));
  r->bits_per_value = bytes * 8.0 / static_cast<double>(rows * cols);
  r->blocks = rows * cols / recipe_block_elems(rc.recipe);
  if (rc.recipe == Recipe::kNvfp4FourOverSix) count_map_to_4(d, rows, cols, scales, gs, r);
  return Status();
}

}  // namespace

int demo_quantize(const DemoOptions& o, std::FILE* out, nlohmann::json* json) {
  if (o.rows <= 0 || o.cols <= 0 || o.cols % 32 != 0) {
    std::fprintf(stderr, "nvfp4kv demo: --rows must be > 0 and --cols a positive multiple of 32\n");
    return kExitUsage;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(out,
               "Quantization (CPU reference): %" PRId64 " x %" PRId64
               " bf16 tensors, linear scales, per-tensor global scale, seed %" PRIu64 "\n\n",
               o.rows, o.cols, o.seed);
  std::fprintf(out, "  %-16s %-17s %11s %13s %11s  %s\n", "data", "recipe", "rel L2 err",
               "max err/amax", "bits/value", "4over6 map-to-4 blocks");
  nlohmann::json results = nlohmann::json::array();
  std::vector<Dataset> datasets;
  int rc_exit = kExitOk;
  const Kind kinds[] = {Kind::kGaussian, Kind::kStudentT3, Kind::kKCacheOutliers};
  for (int ki = 0; ki < 3; ++ki) {
    const Dataset d = make_dataset(kinds[ki], o.rows, o.cols, o.seed + static_cast<uint64_t>(ki));
    for (const RecipeCase& rc : kCases) {
      Result r;
      const Status s = run_case(d, o.rows, o.cols, rc, &r);
      if (!s.ok()) {
        std::fprintf(stderr, "nvfp4kv demo: %s on %s: %s\n", rc.label, d.name.c_str(),
                     s.to_string().c_str());
        return kExitError;
      }
      std::string m4 = "-";
      if (rc.recipe == Recipe::kNvfp4FourOverSix) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%" PRId64 " of %" PRId64 " (%.1f%%)", r.map_to_4, r.blocks,
                      100.0 * static_cast<double>(r.map_to_4) / static_cast<double>(r.blocks));
        m4 = buf;
      }
      std::fprintf(out, "  %-16s %-17s %11.5f %13.5f %11.4f  %s\n", d.name.c_str(), rc.label,
                   r.rel_l2, r.max_err_over_amax, r.bits_per_value, m4.c_str());
      if (r.inconsistent > 0 || r.non_finite) {
        std::fprintf(stderr,
                     "nvfp4kv demo: consistency check failed for %s on %s: %" PRId64
                     " 4over6 scale(s) match neither candidate%s\n",
                     rc.label, d.name.c_str(), r.inconsistent,
                     r.non_finite ? ", non-finite dequantized values" : "");
        rc_exit = kExitMismatch;
      }
      nlohmann::json j = {{"data", d.name},
                          {"recipe", recipe_name(rc.recipe)},
                          {"label", rc.label},
                          {"rel_l2_error", r.rel_l2},
                          {"max_abs_error_over_amax", r.max_err_over_amax},
                          {"bits_per_value", r.bits_per_value},
                          {"blocks", r.blocks}};
      if (rc.recipe == Recipe::kNvfp4FourOverSix) {
        j["metric"] = error_metric_name(rc.metric);
        j["blocks_map_to_4"] = r.map_to_4;
        j["blocks_without_choice"] = r.undecided;
      }
      results.push_back(std::move(j));
    }
    datasets.push_back(Dataset{d.name, d.description, {}, {}, d.amax});
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(out, "\n  data: ");
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    std::fprintf(out, "%s%s = %s (amax %.4g)", i ? "\n        " : "", datasets[i].name.c_str(),
                 datasets[i].description.c_str(), static_cast<double>(datasets[i].amax));
  }
  std::fprintf(out,
               "\n  rel L2 err = ||x^ - x|| / ||x||; bits/value counts codes, scale bytes and the"
               " fp32 global scale.\n"
               "  map-to-4: blocks whose stored scale is the 4over6 x1.5 candidate (SPEC.md 3.2),"
               " found by\n  recomputing both candidates; blocks where they coincide cannot"
               " choose.\n"
               "  (%zu quantize + dequantize runs in %.2f s)\n",
               results.size(), secs);
  (*json)["quantize"] = {{"device", "cpu"},
                         {"rows", o.rows},
                         {"cols", o.cols},
                         {"seed", o.seed},
                         {"input_dtype", "bf16"},
                         {"sf_layout", "linear"},
                         {"global_scale", "per-tensor"},
                         {"results", std::move(results)}};
  return rc_exit;
}

}  // namespace nvfp4kv::cli
