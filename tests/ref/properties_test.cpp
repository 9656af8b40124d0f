// Identities of the reference quantizer on fresh seeded random data: bounded round-trip error,
// identical bytes across input dtypes, strides, batches, layouts and global-scale modes, and the
// 4over6 choice against an independent error computation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/format.h"
#include "ref/ref.h"
#include "ref_test_util.h"

namespace {

using namespace nvfp4kv;
using test::dequantize_host;
using test::quantize_host;
namespace fmt = nvfp4kv::fmt;

const Recipe kRecipes[] = {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix, Recipe::kMxfp4, Recipe::kFp4Block16};

/// Half the distance between the E2M1 values around |q| (q in units of the block scale).
double half_e2m1_step(double q) { return q < 2.0 ? 0.25 : q < 4.0 ? 0.5 : 1.0; }

TEST(RoundTrip, ErrorWithinHalfAnE2m1StepTimesTheBlockScale) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const int64_t m = 37, k = 128;
  for (Recipe recipe : kRecipes) {
    SCOPED_TRACE(recipe_name(recipe));
    const int block = recipe_block_elems(recipe);
    const auto x = test::make_test_data(rng, m, k, block);
    for (GlobalScaleMode mode : {GlobalScaleMode::kPerTensor, GlobalScaleMode::kPerRow}) {
      if (mode == GlobalScaleMode::kPerRow && !test::is_nvfp4(recipe)) continue;
      QuantizeOptions o;
      o.recipe = recipe;
      o.global_scale_mode = mode;
      const auto q = quantize_host(x, 0, m, k, o);
      ASSERT_TRUE(q.status.ok()) << q.status.to_string();
      const auto y = dequantize_host(q, o);
      for (int64_t r = 0; r < m; ++r) {
        const float s_dec = !test::is_nvfp4(recipe) ? 0.0f : q.global[q.global.size() == 1 ? 0 : static_cast<size_t>(r)];
        for (int64_t c = 0; c < k; ++c) {
          const size_t i = static_cast<size_t>(r * k + c);
          const uint8_t sf = q.scales[static_cast<size_t>(r * (k / block) + c / block)];
          const double scale = test::is_nvfp4(recipe)
                                   ? static_cast<double>(fmt::e4m3_to_float(sf)) * s_dec
                                   : static_cast<double>(fmt::ue8m0_to_float(sf));
          ASSERT_FALSE(std::isnan(y[i])) << "row " << r << " col " << c;
          if (scale == 0.0) {  // underflowed (or all-zero) block: everything dequantizes to 0
            ASSERT_EQ(y[i], 0.0f);
            continue;
          }
          const double qv = std::fabs(static_cast<double>(x[i])) / scale;
          // RNE to E4M3 can store sf below sf_hp by half an ulp: sf·2^-4 for a normal E4M3 value,
          // 2^-10 for a subnormal one, so v/scale ≤ 6·(1 + max(2^-4, 2^-10/sf)) (clipping by at
          // most that much); the UE8M0 scale is rounded up, so mx recipes never clip.
          const double sf_value = fmt::e4m3_to_float(sf);
          const double cap = test::is_nvfp4(recipe) ? 6.0 * (1 + std::max(1.0 / 16, std::ldexp(1.0, -10) / sf_value))
                                                    : 6.0;
          ASSERT_LE(qv, cap * (1 + 1e-6)) << "row " << r << " col " << c;
          const double bound = (half_e2m1_step(qv) + std::max(0.0, qv - 6.0)) * scale * (1 + 1e-6) +
                               std::fabs(static_cast<double>(x[i])) * 1e-6;
          ASSERT_LE(std::fabs(static_cast<double>(y[i]) - x[i]), bound)
              << "row " << r << " col " << c << " x " << x[i] << " x̂ " << y[i];
        }
      }
    }
  }
}

// Values with 8 significant bits in [2^-8, 2^8] are exact in f32, f16 and bf16: the bytes must
// not depend on the input dtype (v is taken exactly in the input type, SPEC.md §3.1).
TEST(InputDtypes, SameValuesGiveIdenticalBytes) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> mant(128, 255), expo(-15, 1), coin(0, 1);
  const int64_t m = 9, k = 64;
  std::vector<float> x(static_cast<size_t>(m * k));
  for (auto& v : x) v = (coin(rng) ? -1.0f : 1.0f) * std::ldexp(static_cast<float>(mant(rng)), expo(rng));
  for (Recipe recipe : kRecipes) {
    SCOPED_TRACE(recipe_name(recipe));
    QuantizeOptions o;
    o.recipe = recipe;
    const auto a = quantize_host(x, 0, m, k, o, 1.0f, DType::kF32);
    ASSERT_TRUE(a.status.ok());
    for (DType dt : {DType::kF16, DType::kBF16}) {
      const auto b = quantize_host(x, 0, m, k, o, 1.0f, dt);
      ASSERT_TRUE(b.status.ok()) << b.status.to_string();
      EXPECT_EQ(test::first_data_mismatch(a, b, recipe_block_elems(recipe)), "") << dtype_name(dt);
      EXPECT_EQ(a.scales, b.scales) << dtype_name(dt);
      EXPECT_EQ(a.global, b.global) << dtype_name(dt);
    }
  }
}

// Dequantizing to f16/bf16 is the f32 result rounded once more (RNE).
TEST(Dequantize, HalfOutputsAreTheF32ResultRounded) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (Recipe recipe : kRecipes) {
    const int64_t m = 6, k = 64;
    const auto x = test::make_test_data(rng, m, k, recipe_block_elems(recipe));
    QuantizeOptions o;
    o.recipe = recipe;
    const auto q = quantize_host(x, 0, m, k, o);
    ASSERT_TRUE(q.status.ok());
    const auto y32 = dequantize_host(q, o, DType::kF32);
    const auto y16 = dequantize_host(q, o, DType::kF16);
    const auto yb = dequantize_host(q, o, DType::kBF16);
    for (size_t i = 0; i < y32.size(); ++i) {
      ASSERT_EQ(fmt::float_bits(y16[i]), fmt::float_bits(fmt::f16_bits_to_float(fmt::float_to_f16_bits(y32[i])))) << i;
      ASSERT_EQ(fmt::float_bits(yb[i]), fmt::float_bits(fmt::bf16_bits_to_float(fmt::float_to_bf16_bits(y32[i])))) << i;
    }
  }
}

// Input rows and batches at arbitrary strides (gaps filled with huge values that would change the
// amax if read) and strided data rows (gaps must stay untouched) give the contiguous result.
TEST(Strides, StridedInputAndDataMatchContiguous) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const int64_t b = 3, m = 5, k = 64;
  const int64_t row_stride = k + 24, batch_stride = m * row_stride + 40;
  const int64_t data_row_stride = k / 2 + 8, data_batch_stride = m * data_row_stride + 3;
  for (Recipe recipe : kRecipes) {
    for (GlobalScaleMode mode : {GlobalScaleMode::kPerTensor, GlobalScaleMode::kPerRow}) {
      if (mode == GlobalScaleMode::kPerRow && !test::is_nvfp4(recipe)) continue;
      SCOPED_TRACE(testing::Message() << recipe_name(recipe) << " mode " << static_cast<int>(mode));
      const auto x = test::make_test_data(rng, b * m, k, recipe_block_elems(recipe));
      QuantizeOptions o;
      o.recipe = recipe;
      o.global_scale_mode = mode;
      const auto ref = quantize_host(x, b, m, k, o);
      ASSERT_TRUE(ref.status.ok());

      std::vector<float> in(static_cast<size_t>(b * batch_stride), 1e30f);
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < k; ++c)
            in[static_cast<size_t>(bi * batch_stride + r * row_stride + c)] = x[static_cast<size_t>((bi * m + r) * k + c)];
      std::vector<uint8_t> data(static_cast<size_t>(b * data_batch_stride), 0xEE);
      std::vector<uint8_t> scales(ref.scales.size(), 0xCD);
      std::vector<float> global(ref.global.size(), -1.0f);
      const auto input = make_strided_view(in.data(), DType::kF32, Device::kCpu, {b, m, k}, {batch_stride, row_stride, 1});
      const auto dv = make_strided_view(data.data(), DType::kU8, Device::kCpu, {b, m, k / 2}, {data_batch_stride, data_row_stride, 1});
      const auto sv = make_view(scales.data(), DType::kU8, Device::kCpu, {b, ref.shape.rows, ref.shape.cols});
      TensorView gv;
      if (test::is_nvfp4(recipe)) {
        gv = mode == GlobalScaleMode::kPerRow ? make_view(global.data(), DType::kF32, Device::kCpu, {b, m})
                                              : make_view(global.data(), DType::kF32, Device::kCpu, {1});
      }
      const Status s = quantize(input, dv, sv, gv, o);
      ASSERT_TRUE(s.ok()) << s.to_string();
      EXPECT_EQ(scales, ref.scales);
      EXPECT_EQ(global, ref.global);
      for (int64_t bi = 0; bi < b; ++bi) {
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t j = 0; j < data_row_stride; ++j) {
            const int64_t at = bi * data_batch_stride + r * data_row_stride + j;
            if (j < k / 2) {
              ASSERT_EQ(data[static_cast<size_t>(at)], ref.data[static_cast<size_t>((bi * m + r) * (k / 2) + j)])
                  << "batch " << bi << " row " << r << " byte " << j;
            } else {
              ASSERT_EQ(data[static_cast<size_t>(at)], 0xEE) << "gap written: batch " << bi << " row " << r;
            }
          }
        }
      }
      // Dequantize from the strided data into a strided output.
      std::vector<float> out(static_cast<size_t>(b * batch_stride), 7.0f);
      const auto ov = make_strided_view(out.data(), DType::kF32, Device::kCpu, {b, m, k}, {batch_stride, row_stride, 1});
      DequantizeOptions d;
      d.recipe = recipe;
      const Status ds = dequantize(dv, sv, gv, ov, d);
      ASSERT_TRUE(ds.ok()) << ds.to_string();
      const auto y = dequantize_host(ref, o);
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < row_stride; ++c) {
            const float got = out[static_cast<size_t>(bi * batch_stride + r * row_stride + c)];
            if (c < k) {
              ASSERT_EQ(fmt::float_bits(got), fmt::float_bits(y[static_cast<size_t>((bi * m + r) * k + c)]));
            } else {
              ASSERT_EQ(got, 7.0f) << "output gap written";
            }
          }
    }
  }
}

// A batch: per-tensor amax covers every matrix; per-row and the mx recipes quantize each matrix
// exactly as they would on their own.
TEST(Batch, MatchesSeparateMatrices) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const int64_t b = 4, m = 3, k = 64;
  for (Recipe recipe : kRecipes) {
    SCOPED_TRACE(recipe_name(recipe));
    const auto x = test::make_test_data(rng, b * m, k, recipe_block_elems(recipe));
    QuantizeOptions o;
    o.recipe = recipe;
    o.sf_layout = SfLayout::k8x4;
    o.global_scale_mode = test::is_nvfp4(recipe) ? GlobalScaleMode::kPerRow : GlobalScaleMode::kPerTensor;
    const auto all = quantize_host(x, b, m, k, o);
    ASSERT_TRUE(all.status.ok());
    for (int64_t bi = 0; bi < b; ++bi) {
      const std::vector<float> xb(x.begin() + bi * m * k, x.begin() + (bi + 1) * m * k);
      const auto one = quantize_host(xb, 0, m, k, o);
      ASSERT_TRUE(one.status.ok());
      EXPECT_EQ(std::vector<uint8_t>(all.data.begin() + bi * m * k / 2, all.data.begin() + (bi + 1) * m * k / 2), one.data);
      const int64_t sb = one.shape.bytes();
      EXPECT_EQ(std::vector<uint8_t>(all.scales.begin() + bi * sb, all.scales.begin() + (bi + 1) * sb), one.scales);
      if (test::is_nvfp4(recipe)) {
        EXPECT_EQ(std::vector<float>(all.global.begin() + bi * m, all.global.begin() + (bi + 1) * m), one.global);
      }
    }
    if (test::is_nvfp4(recipe)) {
      // Per-tensor over the batch: one decode scale from the amax of all B·M rows.
      o.global_scale_mode = GlobalScaleMode::kPerTensor;
      const auto pt = quantize_host(x, b, m, k, o);
      ASSERT_TRUE(pt.status.ok());
      float amax = 0.0f;
      for (float v : x) amax = std::fmax(amax, std::fabs(v));
      const float numerator = ref::global_scale_numerator(recipe);
      EXPECT_EQ(pt.global[0], 1.0f / (numerator / amax));
      const auto flat = quantize_host(x, 0, b * m, k, QuantizeOptions{recipe, SfLayout::kLinear, GlobalScaleMode::kPerTensor, o.metric});
      EXPECT_EQ(pt.data, flat.data);
    }
  }
}

// 128x4 and 8x4 hold the linear scales at sf_offset() and 0x00 everywhere else; data and
// dequantized values do not depend on the layout.
TEST(Layouts, SwizzledEqualsLinearAfterUnswizzling) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  struct Shape { int64_t b, m, k; };
  for (Recipe recipe : kRecipes) {
    for (Shape sh : {Shape{0, 1, 96}, Shape{0, 130, 96}, Shape{2, 9, 64}, Shape{0, 7, 160}}) {
      const int block = recipe_block_elems(recipe);
      if (sh.k % block) continue;
      SCOPED_TRACE(testing::Message() << recipe_name(recipe) << " B " << sh.b << " M " << sh.m << " K " << sh.k);
      const int64_t nb = sh.b == 0 ? 1 : sh.b;
      const auto x = test::make_test_data(rng, nb * sh.m, sh.k, block);
      QuantizeOptions o;
      o.recipe = recipe;
      const auto lin = quantize_host(x, sh.b, sh.m, sh.k, o);
      ASSERT_TRUE(lin.status.ok());
      const auto y_lin = dequantize_host(lin, o);
      const int64_t kv = sh.k / block;
      for (SfLayout layout : {SfLayout::k128x4, SfLayout::k8x4}) {
        o.sf_layout = layout;
        const auto sw = quantize_host(x, sh.b, sh.m, sh.k, o);
        ASSERT_TRUE(sw.status.ok());
        EXPECT_EQ(sw.data, lin.data);
        EXPECT_EQ(sw.global, lin.global);
        const int li = layout == SfLayout::k128x4 ? 1 : 2;
        const int64_t matrix = sw.shape.bytes();
        std::vector<bool> real(sw.scales.size(), false);
        for (int64_t bi = 0; bi < nb; ++bi)
          for (int64_t r = 0; r < sh.m; ++r)
            for (int64_t c = 0; c < kv; ++c) {
              const int64_t at = bi * matrix + fmt::sf_offset(li, r, c, kv);
              real[static_cast<size_t>(at)] = true;
              ASSERT_EQ(sw.scales[static_cast<size_t>(at)], lin.scales[static_cast<size_t>((bi * sh.m + r) * kv + c)])
                  << sf_layout_name(layout) << " batch " << bi << " row " << r << " block " << c;
            }
        for (size_t i = 0; i < real.size(); ++i) {
          if (!real[i]) {
            ASSERT_EQ(sw.scales[i], 0x00) << "padding byte " << i << " of " << sf_layout_name(layout);
          }
        }
        EXPECT_EQ(dequantize_host(sw, o), y_lin);
      }
    }
  }
}

// kGiven with a power-of-two decode scale equals the computed per-tensor scale when both give
// the same S_enc: amax 84 → rn(2688/84) = 32 (nvfp4), amax 48 → rn(1536/48) = 32 (4over6).
TEST(GlobalScale, GivenEqualsComputedForTheSameScale) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (Recipe recipe : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix}) {
    auto x = test::make_test_data(rng, 8, 64, 16);
    float amax = 0.0f;
    for (float v : x) amax = std::fmax(amax, std::fabs(v));
    const float target = recipe == Recipe::kNvfp4 ? 84.0f : 48.0f;
    for (float& v : x) v = v / amax * target;  // amax becomes ≈ target
    x[5] = -target;                            // and exactly target
    for (float v : x) ASSERT_LE(std::fabs(v), target);
    QuantizeOptions o;
    o.recipe = recipe;
    const auto computed = quantize_host(x, 0, 8, 64, o);
    ASSERT_TRUE(computed.status.ok());
    ASSERT_EQ(computed.global[0], 1.0f / 32.0f);
    o.global_scale_mode = GlobalScaleMode::kGiven;
    const auto given = quantize_host(x, 0, 8, 64, o, 1.0f / 32.0f);
    ASSERT_TRUE(given.status.ok()) << given.status.to_string();
    EXPECT_EQ(test::first_data_mismatch(computed, given, 16), "");
    EXPECT_EQ(computed.scales, given.scales);
  }
}

// A subnormal given decode scale makes rn(1/S_dec) overflow. The host API rejects such scales
// (every accepted one then follows SPEC's literal S_enc = rn(1/S_dec)); the shared math clamps
// the encode scale to FLT_MAX (format.h encode_scale_from_decode) so a device-resident tiny
// scale, which cannot be checked, still stores 0x00 for an all-zero block and never NaN.
TEST(GlobalScale, TinyGivenScaleIsRejectedAndClampedInTheMath) {
  std::vector<float> x(32, 0.0f);
  x[20] = 1e-40f;
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4;
  o.global_scale_mode = GlobalScaleMode::kGiven;
  const auto q = quantize_host(x, 0, 1, 32, o, 1e-44f);
  EXPECT_EQ(q.status.code(), StatusCode::kInvalidArgument) << q.status.to_string();

  const float s_dec = 1e-44f;
  const float s_enc = fmt::encode_scale_from_decode(s_dec);
  EXPECT_EQ(s_enc, fmt::kFltMax);
  const float mult = fmt::nvfp4_sf_multiplier(s_enc);
  const fmt::BlockScale zero_block = fmt::nvfp4_block_scale(0.0f, mult, s_dec);
  EXPECT_EQ(zero_block.sf_byte, 0x00);
  EXPECT_EQ(zero_block.encode, 0.0f);
  const fmt::BlockScale tiny_block = fmt::nvfp4_block_scale(1e-40f, mult, s_dec);
  EXPECT_NE(tiny_block.sf_byte, 0x7F);
  EXPECT_FALSE(std::isnan(tiny_block.encode));
}

// The 4over6 choice against an independent (double-precision) error of both candidates: where the
// two errors differ clearly, the smaller one must be kept; MSE and MAE must disagree somewhere.
TEST(FourOverSix, ChoiceFollowsTheMetric) {
  const uint32_t seed = test::test_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const int64_t m = 64, k = 256;
  const auto x = test::make_test_data(rng, m, k, 16);
  int64_t checked = 0, disagreements = 0, moved = 0;
  std::vector<uint8_t> by_metric[2];
  for (ErrorMetric metric : {ErrorMetric::kMse, ErrorMetric::kMae}) {
    QuantizeOptions o;
    o.recipe = Recipe::kNvfp4FourOverSix;
    o.metric = metric;
    const auto q = quantize_host(x, 0, m, k, o);
    ASSERT_TRUE(q.status.ok());
    by_metric[metric == ErrorMetric::kMae] = q.scales;
    const float s_dec = q.global[0];
    const float s_enc = 1536.0f / [&] { float a = 0; for (float v : x) a = std::fmax(a, std::fabs(v)); return a; }();
    for (int64_t blk = 0; blk < m * k / 16; ++blk) {
      const float* xb = x.data() + blk * 16;
      float v = 0.0f;
      for (int i = 0; i < 16; ++i) v = std::fmax(v, std::fabs(xb[i]));
      const auto cand = fmt::four_over_six_candidates(v, s_enc);
      double err[2] = {0, 0};  // [0] map-to-6, [1] map-to-4
      for (int which = 0; which < 2; ++which) {
        const double sf = fmt::e4m3_to_float(which ? cand.sf4 : cand.sf6);
        const double scale = sf * s_dec;
        for (int i = 0; i < 16; ++i) {
          const uint32_t c = scale == 0 ? 0u : fmt::float_to_e2m1(static_cast<float>(xb[i] / scale));
          const double d = fmt::e2m1_to_float(c) * scale - xb[i];
          err[which] += metric == ErrorMetric::kMse ? d * d : std::fabs(d);
        }
      }
      const uint8_t stored = q.scales[static_cast<size_t>(blk)];
      ASSERT_TRUE(stored == cand.sf6 || stored == cand.sf4) << "block " << blk;
      if (err[1] < err[0] * (1 - 1e-4)) {
        ++checked;
        ASSERT_EQ(stored, cand.sf4) << "block " << blk << " err6 " << err[0] << " err4 " << err[1];
      } else if (err[0] < err[1] * (1 - 1e-4)) {
        ++checked;
        ASSERT_EQ(stored, cand.sf6) << "block " << blk << " err6 " << err[0] << " err4 " << err[1];
      }
      if (metric == ErrorMetric::kMse && stored == cand.sf4 && cand.sf4 != cand.sf6) ++moved;
    }
  }
  for (size_t i = 0; i < by_metric[0].size(); ++i) disagreements += by_metric[0][i] != by_metric[1][i];
  EXPECT_GT(checked, m * k / 16);  // most blocks have a clear winner under both metrics
  EXPECT_GT(moved, 0);
  EXPECT_GT(disagreements, 0) << "MSE and MAE chose identically on every block";

  // ref::quantize's counter agrees with the bytes.
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4FourOverSix;
  std::vector<uint8_t> data(static_cast<size_t>(m * k / 2)), scales(static_cast<size_t>(m * k / 16));
  float global = 0;
  ref::QuantizeStats stats;
  const Status s = ref::quantize(make_view(const_cast<float*>(x.data()), DType::kF32, Device::kCpu, {m, k}),
                                 make_view(data.data(), DType::kU8, Device::kCpu, {m, k / 2}),
                                 make_view(scales.data(), DType::kU8, Device::kCpu, {m, k / 16}),
                                 make_view(&global, DType::kF32, Device::kCpu, {1}), o, &stats);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(stats.blocks, m * k / 16);
  EXPECT_EQ(stats.blocks_map_to_4, moved);
  EXPECT_EQ(scales, by_metric[0]);
}

// Empty tensors (M = 0, B = 0) are valid: nothing is written but the per-tensor scale (amax 0 → 1).
TEST(Empty, ZeroRowsAndZeroBatch) {
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4;
  const auto q = quantize_host({}, 0, 0, 32, o);
  ASSERT_TRUE(q.status.ok()) << q.status.to_string();
  EXPECT_EQ(q.global[0], 1.0f);
  o.sf_layout = SfLayout::k128x4;
  const auto qb = quantize_host({}, 0, 0, 32, o);
  ASSERT_TRUE(qb.status.ok()) << qb.status.to_string();
  float g = -1;
  const Status s = quantize(make_view(nullptr, DType::kBF16, Device::kCpu, {0, 4, 32}),
                            make_view(nullptr, DType::kU8, Device::kCpu, {0, 4, 16}),
                            make_view(nullptr, DType::kU8, Device::kCpu, {0, 128, 4}),
                            make_view(&g, DType::kF32, Device::kCpu, {1}), o);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(g, 1.0f);
}

}  // namespace
