// nvfp4kv KV cache: every bad argument of append_kv / dequantize_kv / calibrate_kv_scale gives a
// Status with the right code and a message naming the argument, and leaves the cache unchanged.
#include <gtest/gtest.h>

#include <cfloat>
#include <functional>
#include <limits>

#include "kv/kv_test_util.h"

namespace nvfp4kv::kvtest {
namespace {

/// A valid small CPU cache plus inputs; tests mutate copies of its views.
struct Fixture {
  CacheSpec spec;
  std::vector<std::vector<uint8_t>> bufs;
  Inputs in;
  std::vector<int64_t> slots;
  float k_scale = 0.01f, v_scale = 0.02f;
  KvCacheView cache;
  TensorView keys, values, slot_view;
  int64_t n = 4;

  explicit Fixture(KvFormat f = KvFormat::kNvfp4) {
    std::mt19937_64 rng(99);
    spec = make_cache_spec(f, KvLayout::kNHD, 5, 4, 2, 64, Variant::kSeparate);
    bufs = random_buffers(spec, rng);
    in = make_inputs(n, 2, 64, Variant::kSeparate, false, rng);
    slots = {0, 7, -1, 19};
    std::vector<uint8_t*> b;
    for (auto& x : bufs) b.push_back(x.data());
    cache = bind_cache(spec, b, Device::kCpu, &k_scale, &v_scale);
    keys = input_view(in.buf.data(), in, false, n, 2, 64, false, Device::kCpu);
    values = input_view(in.buf.data(), in, true, n, 2, 64, false, Device::kCpu);
    slot_view = make_view(slots.data(), DType::kI64, Device::kCpu, {n});
  }
};

void expect_append_error(const std::function<void(Fixture&, AppendOptions&)>& mutate, StatusCode code,
                         const std::string& needle) {
  Fixture f;
  AppendOptions o;
  mutate(f, o);
  const auto before = f.bufs;
  const Status st = append_kv(f.cache, f.keys, f.values, f.slot_view, o);
  EXPECT_EQ(st.code(), code) << st.to_string();
  EXPECT_NE(st.message().find(needle), std::string::npos) << "message should name '" << needle << "': " << st.message();
  EXPECT_TRUE(first_diff(f.bufs, before).empty()) << "a failed append must not write";
}

TEST(KvValidation, GoodArgumentsAppend) {
  Fixture f;
  const auto before = f.bufs;
  const Status st = append_kv(f.cache, f.keys, f.values, f.slot_view);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_FALSE(first_diff(f.bufs, before).empty());
  EXPECT_TRUE(can_run_append_kv(f.cache, f.keys, f.values, f.slot_view).ok());
}

TEST(KvValidation, CacheFields) {
  using C = StatusCode;
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.format = static_cast<KvFormat>(42); }, C::kInvalidArgument, "cache.format");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.layout = static_cast<KvLayout>(7); }, C::kInvalidArgument, "cache.layout");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.num_pages = 0; }, C::kInvalidArgument, "cache.num_pages");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.page_size = 0; }, C::kInvalidArgument, "cache.page_size");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.num_kv_heads = 0; }, C::kInvalidArgument, "cache.num_kv_heads");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.head_dim = 96; }, C::kInvalidArgument, "cache.head_dim");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.num_pages = 6; }, C::kInvalidArgument, "cache.k_data must have shape [6, 4, 2, 32]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.layout = KvLayout::kHND; }, C::kInvalidArgument, "layout HND");
}

TEST(KvValidation, DataAndScaleViews) {
  using C = StatusCode;
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.k_data.data = nullptr; }, C::kInvalidArgument, "cache.k_data must not be null");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.v_data.dtype = DType::kBF16; }, C::kInvalidArgument, "cache.v_data must have dtype u8");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.k_data.strides[3] = 2; }, C::kInvalidArgument, "contiguous last dimension");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.v_data.strides[0] = -1; }, C::kInvalidArgument, "non-negative");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.v_data.ndim = 3; }, C::kInvalidArgument, "cache.v_data must have shape");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.k_data.device = Device::kCuda; }, C::kInvalidArgument, "cache.k_data");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.v_data.device = Device::kCuda; }, C::kInvalidArgument, "cache.v_data must be on cpu");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.k_scales = TensorView(); }, C::kInvalidArgument, "cache.k_scales must not be null");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.v_scales.shape[3] = 8; }, C::kInvalidArgument, "cache.v_scales must have shape [5, 4, 2, 4]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.k_scales.dtype = DType::kI32; }, C::kInvalidArgument, "cache.k_scales must have dtype u8 or fp8_e4m3");
}

TEST(KvValidation, DecodeScales) {
  using C = StatusCode;
  expect_append_error([](Fixture& f, AppendOptions&) { f.cache.k_scale = nullptr; }, C::kInvalidArgument, "cache.k_scale");
  expect_append_error([](Fixture& f, AppendOptions&) { f.k_scale = 0.0f; }, C::kInvalidArgument, "*cache.k_scale must be a finite decode scale > 0");
  expect_append_error([](Fixture& f, AppendOptions&) { f.v_scale = -1.0f; }, C::kInvalidArgument, "*cache.v_scale");
  expect_append_error([](Fixture& f, AppendOptions&) { f.k_scale = std::numeric_limits<float>::quiet_NaN(); }, C::kInvalidArgument, "*cache.k_scale");
  expect_append_error([](Fixture& f, AppendOptions&) { f.v_scale = std::numeric_limits<float>::infinity(); }, C::kInvalidArgument, "*cache.v_scale");
}

TEST(KvValidation, ScalesOnlyForFp4AndScaleIgnoredForPlain) {
  Fixture f(KvFormat::kBF16);
  // A bf16 cache with a scale view is rejected; with null decode scales it is fine.
  KvCacheView c = f.cache;
  c.k_scale = nullptr;
  c.v_scale = nullptr;
  c.k_scales = make_view(f.bufs[0].data(), DType::kU8, Device::kCpu, {5, 4, 2, 4});
  Status st = append_kv(c, f.keys, f.values, f.slot_view);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("must be empty views"), std::string::npos) << st.message();
  c.k_scales = TensorView();
  st = append_kv(c, f.keys, f.values, f.slot_view);
  EXPECT_TRUE(st.ok()) << st.to_string();
  // fp8 needs its scales.
  Fixture g(KvFormat::kFP8E4M3);
  g.cache.v_scale = nullptr;
  EXPECT_EQ(append_kv(g.cache, g.keys, g.values, g.slot_view).code(), StatusCode::kInvalidArgument);
}

TEST(KvValidation, InputsAndSlots) {
  using C = StatusCode;
  expect_append_error([](Fixture& f, AppendOptions&) { f.keys.dtype = DType::kF32; }, C::kInvalidArgument, "keys must have dtype bf16 or f16");
  expect_append_error([](Fixture& f, AppendOptions&) { f.values.dtype = DType::kF16; }, C::kInvalidArgument, "values must have the dtype of keys");
  expect_append_error([](Fixture& f, AppendOptions&) { f.keys.shape[1] = 3; }, C::kInvalidArgument, "keys must have shape [4, 2, 64]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.values.shape[0] = 3; }, C::kInvalidArgument, "values must have shape [4, 2, 64]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.keys.strides[2] = 2; }, C::kInvalidArgument, "keys must have a contiguous last dimension");
  expect_append_error([](Fixture& f, AppendOptions&) { f.keys.ndim = 2; }, C::kInvalidArgument, "keys must be 3-D");
  expect_append_error([](Fixture& f, AppendOptions&) { f.values.device = Device::kCuda; }, C::kInvalidArgument, "values must be on cpu");
  expect_append_error([](Fixture& f, AppendOptions&) { f.slot_view.dtype = DType::kI32; }, C::kInvalidArgument, "slot_mapping must be i64[4]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.slot_view.shape[0] = 3; }, C::kInvalidArgument, "slot_mapping must be i64[4]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.slot_view.data = nullptr; }, C::kInvalidArgument, "slot_mapping must be a non-null");
  expect_append_error([](Fixture& f, AppendOptions&) { f.slots[3] = 20; }, C::kOutOfRange, "slot_mapping[3] = 20 must be < num_pages · page_size = 20");
  expect_append_error([](Fixture& f, AppendOptions&) { f.slots[0] = int64_t(1) << 50; }, C::kOutOfRange, "slot_mapping[0]");
  expect_append_error([](Fixture& f, AppendOptions&) { f.slots[2] = 7; }, C::kInvalidArgument, "slot 7 appears more than once");
  expect_append_error([](Fixture&, AppendOptions& o) { o.metric = static_cast<ErrorMetric>(5); }, C::kInvalidArgument, "options.metric");
}

TEST(KvValidation, FourOverSixOnlyForNvfp4) {
  Fixture f(KvFormat::kFp4Block16);
  AppendOptions o;
  o.four_over_six = true;
  const Status st = append_kv(f.cache, f.keys, f.values, f.slot_view, o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("options.four_over_six"), std::string::npos) << st.message();
}

TEST(KvValidation, ZeroTokensIsANoOp) {
  Fixture f;
  const auto before = f.bufs;
  f.keys.shape[0] = f.values.shape[0] = f.slot_view.shape[0] = 0;
  EXPECT_TRUE(append_kv(f.cache, f.keys, f.values, f.slot_view).ok());
  EXPECT_TRUE(first_diff(f.bufs, before).empty());
}

TEST(KvValidation, Dequantize) {
  Fixture f;
  ASSERT_TRUE(append_kv(f.cache, f.keys, f.values, f.slot_view).ok());
  std::vector<int32_t> table = {0, 1, 4, 2}, lens = {5, 4};
  std::vector<float> ok(9 * 2 * 64), ov(ok.size());
  auto run = [&](const std::function<void(TensorView&, TensorView&, TensorView&, TensorView&)>& mutate) {
    TensorView bt = make_view(table.data(), DType::kI32, Device::kCpu, {2, 2});
    TensorView sl = make_view(lens.data(), DType::kI32, Device::kCpu, {2});
    TensorView k = make_view(ok.data(), DType::kF32, Device::kCpu, {9, 2, 64});
    TensorView v = make_view(ov.data(), DType::kF32, Device::kCpu, {9, 2, 64});
    mutate(bt, sl, k, v);
    return dequantize_kv(f.cache, bt, sl, k, v);
  };
  auto none = [](TensorView&, TensorView&, TensorView&, TensorView&) {};
  EXPECT_TRUE(run(none).ok());
  Status st = run([](TensorView& bt, TensorView&, TensorView&, TensorView&) { bt.dtype = DType::kI64; });
  EXPECT_NE(st.message().find("block_tables must be i32"), std::string::npos) << st.message();
  st = run([](TensorView&, TensorView& sl, TensorView&, TensorView&) { sl.shape[0] = 3; });
  EXPECT_NE(st.message().find("seq_lens must be i32 [2]"), std::string::npos) << st.message();
  st = run([](TensorView&, TensorView&, TensorView& k, TensorView&) { k.shape[0] = 8; });
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  st = run([](TensorView&, TensorView&, TensorView&, TensorView& v) { v.shape[0] = 8; });
  EXPECT_NE(st.message().find("out_v must have shape [9, 2, 64]"), std::string::npos) << st.message();
  st = run([](TensorView&, TensorView&, TensorView& k, TensorView&) { k.dtype = DType::kU8; });
  EXPECT_NE(st.message().find("out_k must have dtype f32, bf16 or f16"), std::string::npos) << st.message();
  st = run([](TensorView&, TensorView&, TensorView&, TensorView& v) { v.dtype = DType::kBF16; });
  EXPECT_NE(st.message().find("out_v must have the dtype of out_k"), std::string::npos) << st.message();
  table[1] = 5;
  st = run(none);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("block_tables[0, 1] = 5"), std::string::npos) << st.message();
  table[1] = 1;
  lens = {9, 0};
  st = run(none);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("seq_lens[0] = 9"), std::string::npos) << st.message();
  lens = {-1, 10};
  st = run(none);
  EXPECT_NE(st.message().find("seq_lens[0] must be >= 0"), std::string::npos) << st.message();
  lens = {4, 4};
  st = run(none);
  EXPECT_NE(st.message().find("out_k.shape[0] must equal the sum of seq_lens (8"), std::string::npos) << st.message();
  // Empty batch, zero rows: fine.
  st = run([](TensorView& bt, TensorView& sl, TensorView& k, TensorView& v) {
    bt.shape[0] = 0; sl.shape[0] = 0; k.shape[0] = 0; v.shape[0] = 0;
  });
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(KvCalibrate, Values) {
  std::vector<float> x = {0.5f, -3.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f};
  const TensorView v = make_view(x.data(), DType::kF32, Device::kCpu, {4});
  float s = 0;
  ASSERT_TRUE(calibrate_kv_scale(v, KvFormat::kNvfp4, false, &s).ok());
  EXPECT_EQ(s, 3.0f / 2688.0f);
  ASSERT_TRUE(calibrate_kv_scale(v, KvFormat::kNvfp4, true, &s).ok());
  EXPECT_EQ(s, 3.0f / 1536.0f);
  ASSERT_TRUE(calibrate_kv_scale(v, KvFormat::kFP8E4M3, false, &s).ok());
  EXPECT_EQ(s, 3.0f / 448.0f);
  ASSERT_TRUE(calibrate_kv_scale(v, KvFormat::kBF16, false, &s).ok());
  EXPECT_EQ(s, 1.0f);
  std::vector<float> z = {0.0f, -0.0f};
  ASSERT_TRUE(calibrate_kv_scale(make_view(z.data(), DType::kF32, Device::kCpu, {2}), KvFormat::kNvfp4, false, &s).ok());
  EXPECT_EQ(s, 1.0f);
  std::vector<float> tiny = {1e-44f};
  ASSERT_TRUE(calibrate_kv_scale(make_view(tiny.data(), DType::kF32, Device::kCpu, {1}), KvFormat::kNvfp4, false, &s).ok());
  EXPECT_EQ(s, FLT_MIN);
  std::vector<float> inf = {1.0f, -std::numeric_limits<float>::infinity()};
  Status st = calibrate_kv_scale(make_view(inf.data(), DType::kF32, Device::kCpu, {2}), KvFormat::kNvfp4, false, &s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("x must not contain"), std::string::npos) << st.message();
  EXPECT_EQ(calibrate_kv_scale(v, KvFormat::kFP8E4M3, true, &s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(calibrate_kv_scale(v, KvFormat::kNvfp4, false, nullptr).code(), StatusCode::kInvalidArgument);
  // Strided bf16: only the viewed elements count.
  std::vector<uint16_t> b = {fmt::float_to_bf16_bits(1.0f), fmt::float_to_bf16_bits(-100.0f), fmt::float_to_bf16_bits(-2.0f)};
  ASSERT_TRUE(calibrate_kv_scale(make_strided_view(b.data(), DType::kBF16, Device::kCpu, {2}, {2}), KvFormat::kFP8E4M3, false, &s).ok());
  EXPECT_EQ(s, 2.0f / 448.0f);
}

TEST(KvNames, RoundTrip) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kF16, KvFormat::kFP8E4M3, KvFormat::kNvfp4, KvFormat::kFp4Block16}) {
    KvFormat g;
    ASSERT_TRUE(parse_kv_format(kv_format_name(f), &g));
    EXPECT_EQ(f, g);
  }
  KvFormat g;
  EXPECT_FALSE(parse_kv_format("nvfp4_4over6", &g));
  EXPECT_FALSE(parse_kv_format("", &g));
  KvLayout l;
  ASSERT_TRUE(parse_kv_layout("hnd", &l));
  EXPECT_EQ(l, KvLayout::kHND);
  ASSERT_TRUE(parse_kv_layout(kv_layout_name(KvLayout::kNHD), &l));
  EXPECT_EQ(l, KvLayout::kNHD);
  EXPECT_FALSE(parse_kv_layout("NDH", &l));
  EXPECT_TRUE(kv_format_is_fp4(KvFormat::kNvfp4));
  EXPECT_TRUE(kv_format_is_fp4(KvFormat::kFp4Block16));
  EXPECT_FALSE(kv_format_is_fp4(KvFormat::kFP8E4M3));
}

}  // namespace
}  // namespace nvfp4kv::kvtest
