// Every bad argument of quantize()/dequantize() returns kInvalidArgument (or kUnsupported) with a
// message naming the argument (and, for shapes, the expected value), and writes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "nvfp4kv/quantize.h"

namespace {

using namespace nvfp4kv;

class QuantizeArgs : public testing::Test {
 protected:
  static constexpr int64_t kM = 4, kK = 64;
  void SetUp() override {
    in.resize(kM * kK);
    for (size_t i = 0; i < in.size(); ++i) in[i] = std::sin(static_cast<float>(i)) * 3.0f;
    data.assign(kM * kK / 2, 0xEE);
    scales.assign(512, 0xCD);
    global.assign(kM, 0.5f);
    input_v = make_view(in.data(), DType::kF32, Device::kCpu, {kM, kK});
    data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, kK / 2});
    scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, kK / 16});
    global_v = make_view(global.data(), DType::kF32, Device::kCpu, {1});
  }
  Status run() { return quantize(input_v, data_v, scales_v, global_v, options); }
  /// Expects `kInvalidArgument` with every piece of `needles` in the message, and untouched outputs.
  void expect_invalid(std::initializer_list<const char*> needles) {
    const auto data_before = data;
    const auto scales_before = scales;
    const auto global_before = global;
    const Status s = run();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    for (const char* n : needles) EXPECT_NE(s.message().find(n), std::string::npos) << "missing '" << n << "' in: " << s.message();
    const Status c = can_run_quantize(input_v, data_v, scales_v, global_v, options);
    EXPECT_EQ(c.code(), s.code()) << "can_run_quantize disagrees: " << c.to_string();
    EXPECT_EQ(data, data_before) << "data written by a failing call";
    EXPECT_EQ(scales, scales_before) << "scales written by a failing call";
    EXPECT_EQ(std::memcmp(global.data(), global_before.data(), global.size() * 4), 0)
        << "global_scale written by a failing call";
  }

  std::vector<float> in, global;
  std::vector<uint8_t> data, scales;
  TensorView input_v, data_v, scales_v, global_v;
  QuantizeOptions options;
};

TEST_F(QuantizeArgs, BaselineIsValid) {
  EXPECT_TRUE(can_run_quantize(input_v, data_v, scales_v, global_v, options).ok());
  const Status s = run();
  EXPECT_TRUE(s.ok()) << s.to_string();
}

TEST_F(QuantizeArgs, KNotAMultipleOfTheBlock) {
  input_v = make_strided_view(in.data(), DType::kF32, Device::kCpu, {kM, 40}, {kK, 1});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, 20});
  expect_invalid({"input", "multiple of 16", "K = 40"});
  options.recipe = Recipe::kMxfp4;
  global_v = TensorView{};
  input_v = make_strided_view(in.data(), DType::kF32, Device::kCpu, {kM, 48}, {kK, 1});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, 24});
  expect_invalid({"input", "multiple of 32"});
  input_v = make_view(in.data(), DType::kF32, Device::kCpu, {kM, 0});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, 0});
  expect_invalid({"input", "positive multiple"});
}

TEST_F(QuantizeArgs, WrongInputDtypeOrRank) {
  input_v.dtype = DType::kU8;
  expect_invalid({"input", "dtype"});
  input_v.dtype = DType::kI32;
  expect_invalid({"input", "dtype"});
  input_v = make_view(in.data(), DType::kF32, Device::kCpu, {kM * kK});
  expect_invalid({"input", "rank"});
  input_v = make_view(in.data(), DType::kF32, Device::kCpu, {1, 1, kM, kK});
  expect_invalid({"input", "rank"});
}

TEST_F(QuantizeArgs, Fp8InputOnlyForNvfp4Recipes) {
  std::vector<uint8_t> fp8(kM * kK, 0x38);
  input_v = make_view(fp8.data(), DType::kFP8E4M3, Device::kCpu, {kM, kK});
  EXPECT_TRUE(can_run_quantize(input_v, data_v, scales_v, global_v, options).ok());
  options.recipe = Recipe::kNvfp4FourOverSix;
  EXPECT_TRUE(can_run_quantize(input_v, data_v, scales_v, global_v, options).ok());
  options.recipe = Recipe::kFp4Block16;
  global_v = TensorView{};
  expect_invalid({"input", "fp8_e4m3"});
  options.recipe = Recipe::kMxfp4;
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 2});
  expect_invalid({"input", "fp8_e4m3"});
}

TEST_F(QuantizeArgs, DataWrongDtypeShapeOrTooSmall) {
  data_v.dtype = DType::kFP8E4M3;
  expect_invalid({"data", "u8"});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, kK / 4});
  expect_invalid({"data", "[4, 32]"});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM - 1, kK / 2});
  expect_invalid({"data", "[4, 32]"});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {1, kM, kK / 2});
  expect_invalid({"data", "[4, 32]"});
}

TEST_F(QuantizeArgs, NullPointers) {
  input_v.data = nullptr;
  expect_invalid({"input", "null"});
  SetUp();
  data_v.data = nullptr;
  expect_invalid({"data", "null"});
  SetUp();
  scales_v.data = nullptr;
  expect_invalid({"scales", "null"});
  SetUp();
  global_v.data = nullptr;
  expect_invalid({"global_scale", "null"});
}

TEST_F(QuantizeArgs, ScalesWrongLayoutShape) {
  options.sf_layout = SfLayout::k128x4;
  expect_invalid({"scales", "[128, 4]", "128x4"});
  options.sf_layout = SfLayout::k8x4;
  expect_invalid({"scales", "[8, 4]", "8x4"});
  options.sf_layout = SfLayout::kLinear;
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 2});
  expect_invalid({"scales", "[4, 4]"});
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 4, 1});
  expect_invalid({"scales", "[4, 4]"});
}

TEST_F(QuantizeArgs, ScalesDtypeAndContiguity) {
  scales_v.dtype = DType::kFP8E4M3;  // E4M3 scale bytes may be typed as fp8
  EXPECT_TRUE(can_run_quantize(input_v, data_v, scales_v, global_v, options).ok());
  scales_v.dtype = DType::kF16;
  expect_invalid({"scales", "dtype"});
  scales_v = make_strided_view(scales.data(), DType::kU8, Device::kCpu, {kM, 4}, {8, 1});
  expect_invalid({"scales", "contiguous"});
  options.recipe = Recipe::kFp4Block16;
  global_v = TensorView{};
  scales_v = make_view(scales.data(), DType::kFP8E4M3, Device::kCpu, {kM, 4});
  expect_invalid({"scales", "u8", "UE8M0"});
}

TEST_F(QuantizeArgs, NonContiguousLastDimension) {
  input_v = make_strided_view(in.data(), DType::kF32, Device::kCpu, {kM, kK / 2}, {kK, 2});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, kK / 4});
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 2});
  expect_invalid({"input", "contiguous last dimension"});
  SetUp();
  data_v = make_strided_view(data.data(), DType::kU8, Device::kCpu, {kM / 2, kK / 2}, {kK, 2});
  input_v = make_view(in.data(), DType::kF32, Device::kCpu, {kM / 2, kK});
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM / 2, 4});
  expect_invalid({"data", "contiguous last dimension"});
}

TEST_F(QuantizeArgs, NegativeExtentOrStride) {
  input_v = make_strided_view(in.data(), DType::kF32, Device::kCpu, {kM, kK}, {-kK, 1});
  expect_invalid({"input", "non-negative strides"});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {-1, kK / 2});
  input_v = make_view(in.data(), DType::kF32, Device::kCpu, {kM, kK});
  expect_invalid({"data", "non-negative extents"});
  SetUp();
  input_v.ndim = kMaxDims + 3;
  expect_invalid({"input", "rank"});
}

TEST_F(QuantizeArgs, GlobalScaleMissingOrExtra) {
  global_v = TensorView{};
  expect_invalid({"global_scale", "empty view", "nvfp4"});
  options.recipe = Recipe::kMxfp4;
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 2});
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {1});
  expect_invalid({"global_scale", "expected an empty view", "mxfp4"});
  options.recipe = Recipe::kFp4Block16;
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 4});
  expect_invalid({"global_scale", "expected an empty view", "fp4_block16"});
  global_v = TensorView{};
  EXPECT_TRUE(run().ok());
}

TEST_F(QuantizeArgs, GlobalScaleWrongShapeOrDtype) {
  options.global_scale_mode = GlobalScaleMode::kPerRow;
  expect_invalid({"global_scale", "[4]"});
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {kM});
  EXPECT_TRUE(can_run_quantize(input_v, data_v, scales_v, global_v, options).ok());
  options.global_scale_mode = GlobalScaleMode::kPerTensor;
  expect_invalid({"global_scale", "[1]"});
  global_v = make_view(global.data(), DType::kF16, Device::kCpu, {1});
  expect_invalid({"global_scale", "f32"});
}

TEST_F(QuantizeArgs, InvalidGivenScale) {
  options.global_scale_mode = GlobalScaleMode::kGiven;
  for (float bad : {0.0f, -0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    global[0] = bad;
    SCOPED_TRACE(testing::Message() << "given " << bad);
    expect_invalid({"global_scale", "finite decode scale > 0"});
  }
  // Subnormal decode scales whose reciprocal overflows fp32 (SPEC's S_enc = rn(1/S_dec) = Inf).
  for (float tiny : {1e-40f, std::numeric_limits<float>::denorm_min()}) {
    global[0] = tiny;
    SCOPED_TRACE(testing::Message() << "given " << tiny);
    expect_invalid({"global_scale", "1/FLT_MAX"});
  }
  global[0] = 3e-39f;  // just above 1/FLT_MAX: accepted
  EXPECT_TRUE(run().ok());
  global[0] = 0.25f;
  EXPECT_TRUE(run().ok());
}

TEST_F(QuantizeArgs, InvalidOptionValues) {
  options.recipe = static_cast<Recipe>(9);
  expect_invalid({"options.recipe"});
  SetUp();
  options = QuantizeOptions{};
  options.sf_layout = static_cast<SfLayout>(7);
  expect_invalid({"options.sf_layout"});
  options = QuantizeOptions{};
  options.metric = static_cast<ErrorMetric>(5);
  expect_invalid({"options.metric"});
  options = QuantizeOptions{};
  options.global_scale_mode = static_cast<GlobalScaleMode>(5);
  expect_invalid({"options.global_scale_mode"});
}

TEST_F(QuantizeArgs, ViewsOnDifferentDevices) {
  data_v.device = Device::kCuda;
  expect_invalid({"data", "device cpu"});
  SetUp();
  global_v.device = Device::kCuda;
  expect_invalid({"global_scale", "device"});
}

TEST_F(QuantizeArgs, CudaViewsWithoutCuda) {
  // Device pointers are never dereferenced by validation; these are host pointers labelled cuda
  // only to exercise the dispatch decision.
  input_v.device = data_v.device = scales_v.device = global_v.device = Device::kCuda;
  const Status c = can_run_quantize(input_v, data_v, scales_v, global_v, options);
#if NVFP4KV_HAVE_CUDA
  EXPECT_TRUE(c.ok()) << c.to_string();
#else
  EXPECT_EQ(c.code(), StatusCode::kUnsupported);
  EXPECT_NE(c.message().find("without CUDA"), std::string::npos) << c.message();
  EXPECT_EQ(run().code(), StatusCode::kUnsupported);
#endif
}

TEST_F(QuantizeArgs, RankThreeShapes) {
  input_v = make_view(in.data(), DType::kF32, Device::kCpu, {2, 2, kK});
  data_v = make_view(data.data(), DType::kU8, Device::kCpu, {2, 2, kK / 2});
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {2, 2, 4});
  EXPECT_TRUE(run().ok());
  options.global_scale_mode = GlobalScaleMode::kPerRow;
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {4});
  expect_invalid({"global_scale", "[2, 2]"});
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {2, 2});
  EXPECT_TRUE(run().ok());
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {4, 4});
  expect_invalid({"scales", "[2, 2, 4]"});
  options.sf_layout = SfLayout::k8x4;
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {2, 8, 4});
  EXPECT_TRUE(run().ok());
}

class DequantizeArgs : public testing::Test {
 protected:
  static constexpr int64_t kM = 4, kK = 64;
  void SetUp() override {
    data.assign(kM * kK / 2, 0x21);
    scales.assign(kM * kK / 16, 0x38);
    global.assign(kM, 0.5f);
    out.assign(kM * kK, -3.0f);
    data_v = make_view(data.data(), DType::kU8, Device::kCpu, {kM, kK / 2});
    scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, kK / 16});
    global_v = make_view(global.data(), DType::kF32, Device::kCpu, {1});
    out_v = make_view(out.data(), DType::kF32, Device::kCpu, {kM, kK});
  }
  Status run() { return dequantize(data_v, scales_v, global_v, out_v, options); }
  void expect_invalid(std::initializer_list<const char*> needles) {
    const Status s = run();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    for (const char* n : needles) EXPECT_NE(s.message().find(n), std::string::npos) << "missing '" << n << "' in: " << s.message();
    for (float v : out) ASSERT_EQ(v, -3.0f) << "output written by a failing call";
    EXPECT_NE(s.message().find("(check `"), std::string::npos) << "no check location in: " << s.message();
  }
  std::vector<uint8_t> data, scales;
  std::vector<float> global, out;
  TensorView data_v, scales_v, global_v, out_v;
  DequantizeOptions options;
};

TEST_F(DequantizeArgs, BaselineAndPerRowAreValid) {
  Status s = run();
  EXPECT_TRUE(s.ok()) << s.to_string();
  // code 1 (0.5) · E4M3 0x38 (1.0) · 0.5 = 0.25; code 2 (1.0) → 0.5.
  EXPECT_EQ(out[0], 0.25f);
  EXPECT_EQ(out[1], 0.5f);
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {kM});
  s = run();
  EXPECT_TRUE(s.ok()) << s.to_string();
}

TEST_F(DequantizeArgs, OutputDtypeShapeAndK) {
  out_v.dtype = DType::kU8;
  expect_invalid({"output", "dtype"});
  out_v = make_view(out.data(), DType::kF32, Device::kCpu, {kM, 40});
  expect_invalid({"output", "multiple of 16"});
  out_v = make_view(out.data(), DType::kF32, Device::kCpu, {kM, kK / 2});
  expect_invalid({"data", "[4, 16]"});
  out_v = make_strided_view(out.data(), DType::kF32, Device::kCpu, {kM, kK / 2}, {kK, 2});
  expect_invalid({"output", "contiguous last dimension"});
  out_v = make_view(nullptr, DType::kF32, Device::kCpu, {kM, kK});
  expect_invalid({"output", "null"});
}

TEST_F(DequantizeArgs, ScalesAndGlobalScale) {
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 2});
  expect_invalid({"scales", "[4, 4]"});
  SetUp();
  global_v = TensorView{};
  expect_invalid({"global_scale", "empty view"});
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {2});
  expect_invalid({"global_scale", "[1]", "[4]"});
  options.recipe = Recipe::kMxfp4;
  scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {kM, 2});
  global_v = make_view(global.data(), DType::kF32, Device::kCpu, {1});
  expect_invalid({"global_scale", "expected an empty view"});
  global_v = TensorView{};
  EXPECT_TRUE(run().ok());
}

}  // namespace
