// End-to-end tests of the `nvfp4kv` CLI binary (NVFP4KV_CLI_PATH): each test runs it in a fresh
// temp dir on seeded random safetensors files and checks its outputs against calling the
// public API directly on the same data (the reference), plus help/usage/error exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/format.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/safetensors.h"

namespace nvfp4kv {
namespace {

namespace fs = std::filesystem;

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

uint64_t seed_for_run() {
  static const uint64_t seed = std::random_device{}();
  return seed;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("nvfp4kv_cli_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    rng_.seed(seed_for_run() ^ std::hash<std::string>{}(info->name()));
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);  // keep the files of a failing test for a look
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs the CLI with `args` (each quoted), capturing stdout, stderr and the exit code.
  CliResult run(const std::vector<std::string>& args) const {
    std::string cmd = shell_quote(NVFP4KV_CLI_PATH);
    for (const auto& a : args) {
      cmd += ' ';
      cmd += shell_quote(a);
    }
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    cmd += " >";
    cmd += shell_quote(out.string());
    cmd += " 2>";
    cmd += shell_quote(err.string());
    const int status = std::system(cmd.c_str());
    CliResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_text(out);
    r.err = read_text(err);
    return r;
  }

  // Random values in `dtype`: gaussian with a few ×30 outliers, some all-zero blocks and -0.0.
  SafetensorsTensor random_input(const std::string& name, DType dtype, std::vector<int64_t> shape) {
    SafetensorsTensor t{name, dtype, std::move(shape), {}};
    const int64_t n = t.numel();
    t.bytes.resize(static_cast<std::size_t>(t.expected_bytes()));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      float v = normal(rng_) * 0.7f;
      if (u(rng_) < 0.01f) v *= 30.0f;
      if ((i / 16) % 23 == 5) v = (i % 3 == 0) ? -0.0f : 0.0f;  // zero blocks
      uint8_t* p = t.bytes.data() + i * static_cast<int64_t>(dtype_size(dtype));
      switch (dtype) {
        case DType::kF32: std::memcpy(p, &v, 4); break;
        case DType::kF16: {
          const uint16_t h = fmt::float_to_f16_bits(v);
          std::memcpy(p, &h, 2);
          break;
        }
        case DType::kBF16: {
          const uint16_t h = fmt::float_to_bf16_bits(v);
          std::memcpy(p, &h, 2);
          break;
        }
        case DType::kFP8E4M3: *p = fmt::float_to_e4m3(v); break;
        default: ADD_FAILURE() << "unexpected dtype";
      }
    }
    return t;
  }

  std::string write_input(const std::string& file, std::vector<SafetensorsTensor> tensors) const {
    SafetensorsFile f;
    f.tensors = std::move(tensors);
    const std::string p = path(file);
    const Status s = write_safetensors(p, f);
    EXPECT_TRUE(s.ok()) << s.to_string();
    return p;
  }

  fs::path dir_;
  std::mt19937_64 rng_;
};

// Reference outputs of nvfp4kv::quantize on `t` flattened to [M, K].
struct Quantized {
  std::vector<uint8_t> data, scales;
  std::vector<float> global_scale;
  ScaleShape ss;
  int64_t rows = 0, cols = 0;
};

Quantized reference_quantize(const SafetensorsTensor& t, const QuantizeOptions& opt,
                             float given_scale = 0.0f) {
  Quantized q;
  q.cols = t.shape.back();
  q.rows = t.numel() / q.cols;
  q.ss = scale_shape(opt.recipe, opt.sf_layout, q.rows, q.cols);
  q.data.assign(static_cast<std::size_t>(q.rows * q.cols / 2), 0xEE);  // canary-filled
  q.scales.assign(static_cast<std::size_t>(q.ss.bytes()), 0xEE);
  TensorView gs;
  if (recipe_has_global_scale(opt.recipe)) {
    q.global_scale.assign(opt.global_scale_mode == GlobalScaleMode::kPerRow ? q.rows : 1, given_scale);
    gs = make_view(q.global_scale.data(), DType::kF32, Device::kCpu,
                   {static_cast<int64_t>(q.global_scale.size())});
  }
  const Status s = quantize(
      make_view(const_cast<uint8_t*>(t.bytes.data()), t.dtype, Device::kCpu, {q.rows, q.cols}),
      make_view(q.data.data(), DType::kU8, Device::kCpu, {q.rows, q.cols / 2}),
      make_view(q.scales.data(), DType::kU8, Device::kCpu, {q.ss.rows, q.ss.cols}), gs, opt);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return q;
}

// Bytewise comparison that names the first mismatch as (row, block, nibble) for packed data.
void expect_same_data(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, int64_t cols,
                      int block, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      const int64_t row_bytes = cols / 2;
      const int64_t row = static_cast<int64_t>(i) / row_bytes;
      const int64_t elem = (static_cast<int64_t>(i) % row_bytes) * 2;
      FAIL() << what << ": first mismatch at byte " << i << " (row " << row << ", block "
             << elem / block << ", elements " << elem % block << "/" << elem % block + 1
             << "): CLI 0x" << std::hex << int(got[i]) << ", reference 0x" << int(want[i]);
    }
  }
}

void expect_same_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      FAIL() << what << ": first mismatch at byte " << i << ": CLI 0x" << std::hex << int(got[i])
             << ", reference 0x" << int(want[i]);
    }
  }
}

std::vector<uint8_t> float_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Reads the CLI's output file and compares every tensor with the reference.
void check_quantized_file(const std::string& out_path, const SafetensorsTensor& src,
                          const QuantizeOptions& opt, const Quantized& ref,
                          const std::string& gs_mode) {
  SafetensorsFile f;
  const Status s = read_safetensors(out_path, &f);
  ASSERT_TRUE(s.ok()) << s.to_string();
  const auto* data = f.find("data");
  const auto* scales = f.find("scales");
  ASSERT_NE(data, nullptr);
  ASSERT_NE(scales, nullptr);
  EXPECT_EQ(data->dtype, DType::kU8);
  EXPECT_EQ(data->shape, (std::vector<int64_t>{ref.rows, ref.cols / 2}));
  EXPECT_EQ(scales->dtype, DType::kU8);
  EXPECT_EQ(scales->shape, (std::vector<int64_t>{ref.ss.rows, ref.ss.cols}));
  expect_same_data(data->bytes, ref.data, ref.cols, recipe_block_elems(opt.recipe), "data");
  expect_same_bytes(scales->bytes, ref.scales, "scales");
  const auto* gs = f.find("global_scale");
  if (recipe_has_global_scale(opt.recipe)) {
    ASSERT_NE(gs, nullptr);
    EXPECT_EQ(gs->dtype, DType::kF32);
    EXPECT_EQ(gs->shape, (std::vector<int64_t>{static_cast<int64_t>(ref.global_scale.size())}));
    expect_same_bytes(gs->bytes, float_bytes(ref.global_scale), "global_scale");
    EXPECT_EQ(f.tensors.size(), 3u);
  } else {
    EXPECT_EQ(gs, nullptr) << "recipes without a global scale write no global_scale tensor";
    EXPECT_EQ(f.tensors.size(), 2u);
  }
  std::string shape = "[";
  for (std::size_t i = 0; i < src.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(src.shape[i]);
  shape += "]";
  EXPECT_EQ(f.metadata_or("recipe"), recipe_name(opt.recipe));
  EXPECT_EQ(f.metadata_or("sf_layout"), sf_layout_name(opt.sf_layout));
  EXPECT_EQ(f.metadata_or("shape"), shape);
  EXPECT_EQ(f.metadata_or("rows"), std::to_string(ref.rows));
  EXPECT_EQ(f.metadata_or("cols"), std::to_string(ref.cols));
  EXPECT_EQ(f.metadata_or("metric"), error_metric_name(opt.metric));
  EXPECT_EQ(f.metadata_or("global_scale_mode"), gs_mode);
  EXPECT_EQ(f.metadata_or("source_dtype"), safetensors_dtype_name(src.dtype));
  EXPECT_EQ(f.metadata_or("source_tensor"), src.name);
}

const Recipe kRecipes[] = {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix, Recipe::kMxfp4,
                           Recipe::kFp4Block16};
const SfLayout kLayouts[] = {SfLayout::kLinear, SfLayout::k128x4, SfLayout::k8x4};

TEST_F(CliTest, QuantizeEveryRecipeAndLayoutMatchesLibrary) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  // 130 rows (pads to 256 / 136), K = 96 (6 blocks of 16 → 8 padded columns; 3 of 32 → 4).
  const SafetensorsTensor src = random_input("x", DType::kBF16, {130, 96});
  const std::string in = write_input("in.safetensors", {src});
  for (Recipe r : kRecipes) {
    for (SfLayout l : kLayouts) {
      SCOPED_TRACE(std::string(recipe_name(r)) + " " + sf_layout_name(l));
      const std::string out = path(std::string("q_") + recipe_name(r) + "_" + sf_layout_name(l) + ".safetensors");
      const CliResult res = run({"quantize", "--recipe", recipe_name(r), "--sf-layout",
                                 sf_layout_name(l), in, out});
      ASSERT_EQ(res.exit_code, 0) << res.err;
      EXPECT_TRUE(res.err.empty()) << res.err;
      QuantizeOptions opt;
      opt.recipe = r;
      opt.sf_layout = l;
      check_quantized_file(out, src, opt, reference_quantize(src, opt),
                           recipe_has_global_scale(r) ? "per-tensor" : "none");
    }
  }
}

TEST_F(CliTest, QuantizeInputDtypesAndMaeMetric) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  const SafetensorsTensor f32 = random_input("f32", DType::kF32, {24, 64});
  const SafetensorsTensor f16 = random_input("f16", DType::kF16, {24, 64});
  const SafetensorsTensor fp8 = random_input("fp8", DType::kFP8E4M3, {24, 64});
  const std::string in = write_input("in.safetensors", {f32, f16, fp8});
  struct Case {
    const SafetensorsTensor* src;
    Recipe recipe;
    ErrorMetric metric;
  };
  const Case cases[] = {{&f32, Recipe::kNvfp4FourOverSix, ErrorMetric::kMae},
                        {&f32, Recipe::kNvfp4FourOverSix, ErrorMetric::kMse},
                        {&f16, Recipe::kNvfp4FourOverSix, ErrorMetric::kMae},
                        {&f16, Recipe::kMxfp4, ErrorMetric::kMse},
                        {&fp8, Recipe::kNvfp4, ErrorMetric::kMse}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.src->name + " " + recipe_name(c.recipe) + " " + error_metric_name(c.metric));
    const std::string out = path("q.safetensors");
    const CliResult res = run({"quantize", "--recipe", recipe_name(c.recipe), "--metric",
                               error_metric_name(c.metric), in + ":" + c.src->name, out});
    ASSERT_EQ(res.exit_code, 0) << res.err;
    QuantizeOptions opt;
    opt.recipe = c.recipe;
    opt.metric = c.metric;
    check_quantized_file(out, *c.src, opt, reference_quantize(*c.src, opt),
                         recipe_has_global_scale(c.recipe) ? "per-tensor" : "none");
  }
  // 4over6 with mse and mae must differ somewhere on this data (else the option is ignored).
  ASSERT_EQ(run({"quantize", "--recipe", "nvfp4_4over6", "--metric", "mse", in + ":f32", path("a.safetensors")}).exit_code, 0);
  ASSERT_EQ(run({"quantize", "--recipe", "nvfp4_4over6", "--metric=mae", in + ":f32", path("b.safetensors")}).exit_code, 0);
  SafetensorsFile a, b;
  ASSERT_TRUE(read_safetensors(path("a.safetensors"), &a).ok());
  ASSERT_TRUE(read_safetensors(path("b.safetensors"), &b).ok());
  EXPECT_NE(a.find("scales")->bytes, b.find("scales")->bytes);
}

TEST_F(CliTest, PerTokenAndGivenGlobalScale) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  SafetensorsTensor src = random_input("k", DType::kBF16, {40, 128});
  // One all-zero row: per-token mode gives it decode scale 0 (SPEC.md §3.5).
  std::fill(src.bytes.begin() + 7 * 128 * 2, src.bytes.begin() + 8 * 128 * 2, 0);
  const std::string in = write_input("in.safetensors", {src});
  for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix}) {
    SCOPED_TRACE(recipe_name(r));
    QuantizeOptions opt;
    opt.recipe = r;
    opt.sf_layout = SfLayout::k128x4;
    opt.global_scale_mode = GlobalScaleMode::kPerRow;
    CliResult res = run({"quantize", "--recipe", recipe_name(r), "--sf-layout", "128x4",
                         "--global-scale", "per-token", in, path("pt.safetensors")});
    ASSERT_EQ(res.exit_code, 0) << res.err;
    const Quantized ref = reference_quantize(src, opt);
    ASSERT_EQ(ref.global_scale.size(), 40u);
    EXPECT_EQ(ref.global_scale[7], 0.0f);
    check_quantized_file(path("pt.safetensors"), src, opt, ref, "per-token");

    // A given decode scale G: stored as given, and used (x̂ = e2m1 · sf · G).
    const float g = 0.0123f;
    opt.sf_layout = SfLayout::kLinear;
    opt.global_scale_mode = GlobalScaleMode::kGiven;
    res = run({"quantize", "--recipe", recipe_name(r), "--global-scale", "0.0123", in,
               path("g.safetensors")});
    ASSERT_EQ(res.exit_code, 0) << res.err;
    const Quantized ref_g = reference_quantize(src, opt, g);
    ASSERT_EQ(ref_g.global_scale.size(), 1u);
    EXPECT_EQ(ref_g.global_scale[0], g);
    check_quantized_file(path("g.safetensors"), src, opt, ref_g, "given");
  }
}

TEST_F(CliTest, NdInputIsFlattenedOverTheLastDim) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  const SafetensorsTensor src = random_input("kv", DType::kF16, {2, 3, 5, 64});
  const SafetensorsTensor vec = random_input("vec", DType::kF32, {64});
  const std::string in = write_input("in.safetensors", {src, vec});
  QuantizeOptions opt;
  opt.recipe = Recipe::kNvfp4FourOverSix;
  opt.sf_layout = SfLayout::k8x4;
  CliResult res = run({"quantize", "--recipe", "nvfp4_4over6", "--sf-layout", "8x4", in + ":kv",
                       path("q.safetensors")});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  const Quantized ref = reference_quantize(src, opt);
  EXPECT_EQ(ref.rows, 30);
  check_quantized_file(path("q.safetensors"), src, opt, ref, "per-tensor");
  // A 1-D tensor is one row.
  opt.sf_layout = SfLayout::kLinear;
  res = run({"quantize", "--recipe", "nvfp4_4over6", in + ":vec", path("v.safetensors")});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  check_quantized_file(path("v.safetensors"), vec, opt, reference_quantize(vec, opt), "per-tensor");
}

TEST_F(CliTest, DequantizeRoundTrip) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  const SafetensorsTensor src = random_input("x", DType::kF32, {3, 20, 64});
  const std::string in = write_input("in.safetensors", {src});
  const struct {
    Recipe recipe;
    SfLayout layout;
    const char* gs;
    const char* dtype;
    DType out_dtype;
  } cases[] = {{Recipe::kNvfp4, SfLayout::kLinear, "auto", "f32", DType::kF32},
               {Recipe::kNvfp4FourOverSix, SfLayout::k128x4, "per-token", "bf16", DType::kBF16},
               {Recipe::kNvfp4, SfLayout::k8x4, "0.05", "f16", DType::kF16},
               {Recipe::kMxfp4, SfLayout::k128x4, "auto", "f32", DType::kF32},
               {Recipe::kFp4Block16, SfLayout::kLinear, "auto", "bf16", DType::kBF16}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(recipe_name(c.recipe)) + " " + sf_layout_name(c.layout) + " " + c.gs +
                 " -> " + c.dtype);
    CliResult res = run({"quantize", "--recipe", recipe_name(c.recipe), "--sf-layout",
                         sf_layout_name(c.layout), "--global-scale", c.gs, in, path("q.safetensors")});
    ASSERT_EQ(res.exit_code, 0) << res.err;
    std::vector<std::string> dq_args = {"dequantize", path("q.safetensors"), path("dq.safetensors")};
    if (std::string(c.dtype) != "f32") dq_args.insert(dq_args.begin() + 1, {"--dtype", c.dtype});
    res = run(dq_args);
    ASSERT_EQ(res.exit_code, 0) << res.err;
    SafetensorsFile q, dq;
    ASSERT_TRUE(read_safetensors(path("q.safetensors"), &q).ok());
    ASSERT_TRUE(read_safetensors(path("dq.safetensors"), &dq).ok());
    ASSERT_EQ(dq.tensors.size(), 1u);
    const SafetensorsTensor& t = dq.tensors[0];
    EXPECT_EQ(t.name, "dequantized");
    EXPECT_EQ(t.dtype, c.out_dtype);
    EXPECT_EQ(t.shape, src.shape);
    // Reference: the library's dequantize on the file's tensors.
    const int64_t rows = 60, cols = 64;
    std::vector<uint8_t> want(static_cast<std::size_t>(rows * cols) * dtype_size(c.out_dtype));
    auto* data = q.find("data");
    auto* scales = q.find("scales");
    auto* gs = q.find("global_scale");
    TensorView dv, sv, gv;
    ASSERT_TRUE(safetensors_cpu_view(*data, &dv).ok());
    ASSERT_TRUE(safetensors_cpu_view(*scales, &sv).ok());
    if (gs != nullptr) {
      ASSERT_TRUE(safetensors_cpu_view(*gs, &gv).ok());
    }
    DequantizeOptions dopt;
    dopt.recipe = c.recipe;
    dopt.sf_layout = c.layout;
    ASSERT_TRUE(dequantize(dv, sv, gv, make_view(want.data(), c.out_dtype, Device::kCpu, {rows, cols}),
                           dopt).ok());
    expect_same_bytes(t.bytes, want, "dequantized");
    // And the values are close to the input: FP4 keeps ~1 significant bit, so the relative
    // L2 error of gaussian data is ~0.1 (nvfp4) to ~0.15 (mx); 0.25 catches garbage.
    double err = 0, ref = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      float x;
      std::memcpy(&x, src.bytes.data() + i * 4, 4);
      float y = 0;
      if (c.out_dtype == DType::kF32) {
        std::memcpy(&y, t.bytes.data() + i * 4, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, t.bytes.data() + i * 2, 2);
        y = c.out_dtype == DType::kF16 ? fmt::f16_bits_to_float(h) : fmt::bf16_bits_to_float(h);
      }
      ASSERT_TRUE(std::isfinite(y)) << "element " << i;
      err += (static_cast<double>(y) - x) * (static_cast<double>(y) - x);
      ref += static_cast<double>(x) * x;
    }
    EXPECT_LT(std::sqrt(err / ref), 0.25);
    EXPECT_EQ(dq.metadata_or("recipe"), recipe_name(c.recipe));
  }
}

TEST_F(CliTest, InspectShowsTensorsMetadataAndBlocks) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  const SafetensorsTensor src = random_input("x", DType::kBF16, {4, 64});
  const std::string in = write_input("in.safetensors", {src});
  ASSERT_EQ(run({"quantize", "--recipe", "nvfp4", "--sf-layout", "128x4", in, path("q.safetensors")}).exit_code, 0);
  CliResult res = run({"inspect", path("q.safetensors"), "--blocks", "5"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  for (const char* needle : {"data", "scales", "global_scale", "U8", "F32", "[4, 32]", "[128, 4]",
                             "recipe = nvfp4", "sf_layout = 128x4", "shape = [4, 64]", "row",
                             "block", "codes", "decoded"}) {
    EXPECT_NE(res.out.find(needle), std::string::npos) << "missing '" << needle << "' in\n" << res.out;
  }
  // Block (0, 0): its scale byte, the codes of its first elements and a decoded value must be
  // the ones in the file.
  SafetensorsFile q;
  ASSERT_TRUE(read_safetensors(path("q.safetensors"), &q).ok());
  const uint8_t sf = q.find("scales")->bytes[0];
  float gs;
  std::memcpy(&gs, q.find("global_scale")->bytes.data(), 4);
  const uint8_t b0 = q.find("data")->bytes[0];
  char expect[64];
  std::snprintf(expect, sizeof expect, "%X %X ", b0 & 0xF, b0 >> 4);
  const std::string first_codes = expect;
  std::snprintf(expect, sizeof expect, "0x%02X=", sf);
  const std::string scale_txt = expect;
  std::snprintf(expect, sizeof expect, "%.6g",
                static_cast<double>(fmt::nvfp4_dequant(b0 >> 4, fmt::e4m3_to_float(sf), gs)));
  const std::string decoded1 = expect;
  // Row lines of the table start with "       0      0  " (row 0, block 0).
  const auto line_start = res.out.find("\n       0      0  ");
  ASSERT_NE(line_start, std::string::npos) << res.out;
  const std::string line = res.out.substr(line_start + 1, res.out.find('\n', line_start + 1) - line_start - 1);
  EXPECT_NE(line.find(first_codes), std::string::npos) << line << " vs codes " << first_codes;
  EXPECT_NE(line.find(scale_txt), std::string::npos) << line << " vs " << scale_txt;
  EXPECT_NE(line.find(" " + decoded1 + " "), std::string::npos) << line << " vs " << decoded1;
  // 5 block rows: rows 0 (4 blocks) and 1 (1 block).
  EXPECT_NE(res.out.find("\n       1      0  "), std::string::npos) << res.out;
  EXPECT_EQ(res.out.find("\n       1      1  "), std::string::npos) << res.out;

  // A plain tensor with --tensor prints its first values.
  res = run({"inspect", in, "--tensor", "x", "--blocks", "1"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.out.find("first 16 of 256 values of 'x'"), std::string::npos) << res.out;
  std::snprintf(expect, sizeof expect, "%.6g",
                static_cast<double>(fmt::bf16_bits_to_float(static_cast<uint16_t>(src.bytes[0] | src.bytes[1] << 8))));
  EXPECT_NE(res.out.find(std::string("  ") + expect), std::string::npos) << res.out;
  // mxfp4 blocks show the power-of-two scale.
  ASSERT_EQ(run({"quantize", "--recipe", "mxfp4", in, path("m.safetensors")}).exit_code, 0);
  res = run({"inspect", path("m.safetensors")});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.out.find("=2^"), std::string::npos) << res.out;
}

// Subcommands listed by `nvfp4kv --help` (so that new ones are covered automatically).
std::vector<std::string> listed_commands(const std::string& help) {
  std::vector<std::string> cmds;
  std::istringstream in(help);
  std::string line;
  bool in_list = false;
  while (std::getline(in, line)) {
    if (line == "commands:") {
      in_list = true;
      continue;
    }
    if (in_list) {
      if (line.rfind("  ", 0) != 0) break;
      std::istringstream ls(line);
      std::string name;
      ls >> name;
      cmds.push_back(name);
    }
  }
  return cmds;
}

TEST_F(CliTest, HelpOnEverySubcommandExitsZero) {
  const CliResult top = run({"--help"});
  ASSERT_EQ(top.exit_code, 0);
  const auto cmds = listed_commands(top.out);
  for (const char* mine : {"quantize", "dequantize", "inspect", "demo"}) {
    EXPECT_NE(std::find(cmds.begin(), cmds.end(), mine), cmds.end()) << mine << " not listed:\n" << top.out;
  }
  for (const auto& c : cmds) {
    for (const char* flag : {"--help", "-h"}) {
      const CliResult r = run({c, flag});
      EXPECT_EQ(r.exit_code, 0) << c << " " << flag << ": " << r.err;
      EXPECT_NE(r.out.find("usage: nvfp4kv " + c), std::string::npos) << c << ":\n" << r.out;
    }
  }
}

TEST_F(CliTest, BadUsageExitsTwo) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  const std::string in = write_input("in.safetensors", {random_input("x", DType::kF32, {4, 64}),
                                                         random_input("y", DType::kF32, {4, 64})});
  const std::string out = path("o.safetensors");
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"no-such-command"},
      {"quantize", in + ":x", out},                                      // --recipe missing
      {"quantize", "--recipe", "nvfp8", in + ":x", out},                  // unknown recipe
      {"quantize", "--recipe", "nvfp4", "--sf-layout", "64x4", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--metric", "max", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--global-scale", "0", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--global-scale", "-1", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--global-scale", "inf", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--global-scale", "nan", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--global-scale", "per-row", in + ":x", out},
      {"quantize", "--recipe", "mxfp4", "--global-scale", "per-token", in + ":x", out},
      {"quantize", "--recipe", "fp4_block16", "--global-scale", "0.5", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--device", "tpu", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", in + ":x"},                       // OUT missing
      {"quantize", "--recipe", "nvfp4", in + ":x", out, "extra"},
      {"quantize", "--recipe", "nvfp4", "--bogus", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", "--recipe", "mxfp4", in + ":x", out},
      {"quantize", "--recipe", "nvfp4", in, out},                        // 2 tensors, none named
      {"quantize", "--recipe"},                                          // value missing
      {"dequantize", "--dtype", "f64", in, out},
      {"dequantize", in},
      {"inspect"},
      {"inspect", in, "--blocks", "-1"},
      {"inspect", in, "--blocks", "x"},
      {"demo", "--cols", "100"},
      {"demo", "extra"},
  };
  for (const auto& args : cases) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    const CliResult r = run(args);
    EXPECT_EQ(r.exit_code, 2) << joined << "\nstderr: " << r.err;
    EXPECT_FALSE(r.err.empty()) << joined << ": a usage error must say what is wrong";
  }
  EXPECT_FALSE(fs::exists(out)) << "no output may be written on a usage error";
}

TEST_F(CliTest, FileAndLibraryErrorsExitThree) {
  SCOPED_TRACE("seed " + std::to_string(seed_for_run()));
  const std::string missing = path("missing.safetensors");
  const std::string out = path("o.safetensors");
  const std::string in = write_input("in.safetensors", {random_input("x", DType::kF32, {4, 64})});
  const std::string odd = write_input("odd.safetensors", {random_input("x", DType::kF32, {4, 24})});
  SafetensorsFile ints;
  ints.tensors.push_back({"i", DType::kI32, {4, 64}, std::vector<uint8_t>(4 * 64 * 4, 1)});
  ASSERT_TRUE(write_safetensors(path("ints.safetensors"), ints).ok());
  {
    std::ofstream g(path("garbage.safetensors"), std::ios::binary);
    // Header length 16, then 16 bytes of broken JSON.
    const std::string bytes("\x10\0\0\0\0\0\0\0{\"x\": oops}     ", 8 + 16);
    g.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"quantize", "--recipe", "nvfp4", missing, out}, "missing.safetensors"},
      {{"quantize", "--recipe", "nvfp4", missing + ":x", out}, "missing.safetensors"},
      {{"quantize", "--recipe", "nvfp4", path("garbage.safetensors"), out}, "not valid JSON"},
      {{"quantize", "--recipe", "nvfp4", in + ":nope", out}, "no tensor 'nope'"},
      {{"quantize", "--recipe", "nvfp4", odd, out}, "multiple of"},
      {{"quantize", "--recipe", "nvfp4", path("ints.safetensors"), out}, "I32"},
      {{"quantize", "--recipe", "nvfp4", in, path("no_dir/o.safetensors")}, "cannot open for writing"},
      {{"dequantize", missing, out}, "missing.safetensors"},
      {{"dequantize", in, out}, "metadata has no 'recipe'"},
      {{"inspect", missing}, "cannot open"},
      {{"inspect", path("garbage.safetensors")}, "not valid JSON"},
      {{"inspect", in, "--tensor", "nope"}, "no tensor 'nope'"},
  };
  for (const auto& [args, needle] : cases) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    const CliResult r = run(args);
    EXPECT_EQ(r.exit_code, 3) << joined << "\nstderr: " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << joined << "\nstderr: " << r.err;
  }
  // fp8 input is for the nvfp4 recipes only: the library refuses, the CLI says so.
  const std::string fp8 = write_input("fp8.safetensors", {random_input("x", DType::kFP8E4M3, {4, 64})});
  CliResult r = run({"quantize", "--recipe", "mxfp4", fp8, out});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("fp8_e4m3"), std::string::npos) << r.err;
  // A quantized file whose scales tensor was tampered with is refused by dequantize.
  ASSERT_EQ(run({"quantize", "--recipe", "nvfp4", in, path("q.safetensors")}).exit_code, 0);
  SafetensorsFile q;
  ASSERT_TRUE(read_safetensors(path("q.safetensors"), &q).ok());
  q.find("scales")->shape = {2, 8};
  ASSERT_TRUE(write_safetensors(path("bad_q.safetensors"), q).ok());
  r = run({"dequantize", path("bad_q.safetensors"), out});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("tensor 'scales' is U8[2, 8], expected U8[4, 4]"), std::string::npos) << r.err;
}

TEST_F(CliTest, CudaDeviceWithoutGpuExitsThree) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible; this checks the no-GPU message";
  const std::string in = write_input("in.safetensors", {random_input("x", DType::kF32, {4, 64})});
  CliResult r = run({"quantize", "--recipe", "nvfp4", "--device", "cuda", in, path("o.safetensors")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("no CUDA device"), std::string::npos) << r.err;
  ASSERT_EQ(run({"quantize", "--recipe", "nvfp4", in, path("q.safetensors")}).exit_code, 0);
  r = run({"dequantize", "--device", "cuda", path("q.safetensors"), path("o.safetensors")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("no CUDA device"), std::string::npos) << r.err;
}

TEST_F(CliTest, DemoPrintsTableAndJson) {
  // A small demo (the default size takes a few seconds; same code path).
  const CliResult r = run({"demo", "--rows", "64", "--cols", "256", "--seed", "7", "--json",
                           path("demo.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Without a GPU both sections say they ran the CPU reference (decode attention first, then
  // the quantization table).
  if (cuda_device_count() == 0) {
    EXPECT_NE(r.out.find("no GPU visible: CPU fp64 reference"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("no GPU used"), std::string::npos) << r.out;
  }
  EXPECT_NE(r.out.find("decode attention"), std::string::npos) << r.out;
  for (const char* needle : {"rel L2 err", "max err/amax", "bits/value", "map-to-4", "gaussian",
                             "student_t3", "kcache_outliers", "nvfp4_4over6 mse",
                             "nvfp4_4over6 mae", "mxfp4", "fp4_block16"}) {
    EXPECT_NE(r.out.find(needle), std::string::npos) << "missing '" << needle << "' in\n" << r.out;
  }
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(read_text(path("demo.json"))));
  const auto& res = j.at("quantize").at("results");
  ASSERT_EQ(res.size(), 15u);
  for (const auto& e : res) {
    const double rel = e.at("rel_l2_error").get<double>();
    EXPECT_GT(rel, 0.02) << e.dump();
    EXPECT_LT(rel, 0.3) << e.dump();
    const std::string recipe = e.at("recipe").get<std::string>();
    const double bits = e.at("bits_per_value").get<double>();
    // Codes 4 bits + one scale byte per block (+ 32 bits of global scale over 64·256 values).
    const double want = recipe == "mxfp4" ? 4.25 : 4.5 + (recipe.rfind("nvfp4", 0) == 0 ? 32.0 / (64 * 256) : 0.0);
    EXPECT_DOUBLE_EQ(bits, want) << e.dump();
    if (recipe == "nvfp4_4over6") {
      const int64_t m4 = e.at("blocks_map_to_4").get<int64_t>();
      EXPECT_GT(m4, 0) << e.dump();
      EXPECT_LT(m4, e.at("blocks").get<int64_t>()) << e.dump();
    }
  }
  // Same seed, same table.
  const CliResult again = run({"demo", "--rows", "64", "--cols", "256", "--seed", "7"});
  ASSERT_EQ(again.exit_code, 0);
  const auto table = [](const std::string& s) { return s.substr(0, s.find("runs in")); };
  EXPECT_EQ(table(again.out), table(r.out));
}

}  // namespace
}  // namespace nvfp4kv
