// Golden vectors of the reference quantizer (SPEC.md §3), each derived by hand in its comment, run
// through the public API on CPU views.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/format.h"
#include "ref/ref.h"
#include "ref_test_util.h"

namespace {

using namespace nvfp4kv;
using test::quantize_host;
using test::dequantize_host;
namespace fmt = nvfp4kv::fmt;

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<uint8_t> bytes_of(const std::vector<uint8_t>& v, size_t from, size_t n) {
  return std::vector<uint8_t>(v.begin() + static_cast<long>(from), v.begin() + static_cast<long>(from + n));
}

/// rn(a · b) computed independently: the double product of two floats is exact (48 bits), so
/// one narrowing to float is the correctly rounded fp32 product.
float mul_rn(float a, float b) { return static_cast<float>(static_cast<double>(a) * b); }

// The issue's golden block. Tensor amax 12 → S_enc = rn(2688/12) = 224, S_dec = rn(1/224).
// Block 0 = [0.1, −0.2, 0.3, −0.4, 0.5, −0.6, 0.7, −0.8, 0.9, −1.0, 1.1, −1.2, 1.3, −1.4, 1.5, −3.0]:
// the bytes 90 A1 A2 B3 C4 C4 D5 F5 pin it down. v = 3 gives sf_hp = rn(3 · rn(224 · (1/6)f)) =
// 112.000008 → E4M3 112 = 1.75·2^6 = 0x6E; rn(112 · S_dec) = 0.5 so enc = 2 and c_i = e2m1(2x_i):
// byte0: 0.2 → 0 (x0), −0.4 → −0.5 = 0x9 (x1) → 0x90; byte1: 0.6 → 0.5 = 0x1, −0.8 → −1 = 0xA;
// byte2: 1.0 = 0x2, −1.2 → −1 = 0xA; byte3: 1.4 → 1.5 = 0x3, −1.6 → −1.5 = 0xB;
// byte4: 1.8 → 2 = 0x4, −2 = 0xC; byte5: 2.2 → 2 = 0x4, −2.4 → −2 = 0xC;
// byte6: 2.6 → 3 = 0x5, −2.8 → −3 = 0xD; byte7: 3 = 0x5, −6 = 0xF.
// Consecutive ±0.1 steps alternating in sign are the only 16-value sequence that starts at 0.1,
// −0.2 and ends at 1.5, −3.0 with these codes, which is how the "…" of the issue is read.
// Block 1 carries the tensor amax 12: [12, −6, 3, −1.5, 0.75, 0, −0, 1, 2, 4, 5, 8, −10, 0.25,
// −0.5, 11]: v = 12, sf_hp = rn(12 · 37.333336) = 448.00003 → 0x7E (448); rn(448 · S_dec) = 2, enc
// = 0.5: codes 6→7, −3→D, 1.5→3, −0.75→A (tie → even 1.0), 0.375→1, 0→0, −0→8, 0.5→1, 1→2, 2→4,
// 2.5→4 (tie → even 2), 4→6, −5→E (tie → even 4), 0.125→0, −0.25→8 (−0), 5.5→7.
TEST(Golden, IssueNvfp4Block) {
  std::vector<float> x = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f,
                          0.9f, -1.0f, 1.1f, -1.2f, 1.3f, -1.4f, 1.5f, -3.0f,
                          12.0f, -6.0f, 3.0f, -1.5f, 0.75f, 0.0f, -0.0f, 1.0f,
                          2.0f, 4.0f, 5.0f, 8.0f, -10.0f, 0.25f, -0.5f, 11.0f};
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4;
  const auto q = quantize_host(x, 0, 1, 32, o);
  ASSERT_TRUE(q.status.ok()) << q.status.to_string();
  EXPECT_EQ(q.global[0], 1.0f / 224.0f);
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x6E, 0x7E}));
  EXPECT_EQ(bytes_of(q.data, 0, 8), (std::vector<uint8_t>{0x90, 0xA1, 0xA2, 0xB3, 0xC4, 0xC4, 0xD5, 0xF5}));
  EXPECT_EQ(bytes_of(q.data, 8, 8), (std::vector<uint8_t>{0xD7, 0xA3, 0x01, 0x18, 0x42, 0x64, 0x0E, 0x78}));

  // Dequantize: x̂ = rn(rn(e2m1 · sf) · S_dec), within one float ulp of e2m1 · 0.5 (block 0) and
  // e2m1 · 2 (block 1) — the research note's 0 −0.25 0.25 −0.5 0.5 −0.5 0.75 −0.75 1 −1 1 −1 1.5
  // −1.5 1.5 −3.
  const auto y = dequantize_host(q, o);
  const float e2m1_block0[16] = {0, -0.5f, 0.5f, -1, 1, -1, 1.5f, -1.5f, 2, -2, 2, -2, 3, -3, 3, -6};
  const float s_dec = 1.0f / 224.0f;
  for (int i = 0; i < 16; ++i) {
    const float expected = mul_rn(mul_rn(e2m1_block0[i], 112.0f), s_dec);
    EXPECT_EQ(y[static_cast<size_t>(i)], expected) << "element " << i;
    // S_dec = rn(1/224) is 1/224 · (1 + 4e-8), so x̂ may sit one ulp above e2m1 · 0.5.
    EXPECT_LE(std::fabs(y[static_cast<size_t>(i)] - 0.5f * e2m1_block0[i]), std::fabs(e2m1_block0[i]) * 0x1p-24f)
        << "element " << i;
  }
  EXPECT_TRUE(std::signbit(y[22]));  // −0 stays −0
  EXPECT_EQ(y[16], mul_rn(mul_rn(6.0f, 448.0f), s_dec));
  EXPECT_NEAR(y[16], 12.0f, 1e-5f);

  // Given decode scale rn(1/224): S_enc = rn(1/S_dec) = 223.99998, so sf_hp moves by an ulp
  // (111.99999, 447.99998) but rounds to the same E4M3 bytes, and enc only depends on S_dec.
  o.global_scale_mode = GlobalScaleMode::kGiven;
  const auto g = quantize_host(x, 0, 1, 32, o, 1.0f / 224.0f);
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  EXPECT_EQ(g.data, q.data);
  EXPECT_EQ(g.scales, q.scales);
  EXPECT_EQ(g.global[0], 1.0f / 224.0f);  // kGiven never writes the scale
}

// 4over6 (SPEC.md §3.2): block [10, 20, 30, 40] × 4, amax 40 → S_enc = rn(1536/40) = 38.4,
// base = rn(rn(40/6) · 38.4) = 256: sf6 = 0x78 (256), sf4 = e4m3(384) = 0x7C.
// Map-to-4: enc = rn(1/rn(384 · S_dec)) = 0.1 (to fp32), codes 1,2,3,4 = 2,4,5,6 and every
// value reconstructs exactly (rn(rn(c · 384) · S_dec) = 10, 20, 30, 40): err4 = 0.
// Map-to-6: 30 · 0.15 = 4.5 → 4 (tie to even) reconstructs 26.67: err6 > 0, so map-to-4 wins.
TEST(Golden, FourOverSixPicksMapTo4) {
  std::vector<float> x;
  for (int r = 0; r < 4; ++r) x.insert(x.end(), {10.0f, 20.0f, 30.0f, 40.0f});
  for (ErrorMetric metric : {ErrorMetric::kMse, ErrorMetric::kMae}) {
    QuantizeOptions o;
    o.recipe = Recipe::kNvfp4FourOverSix;
    o.metric = metric;
    const auto q = quantize_host(x, 0, 1, 16, o);
    ASSERT_TRUE(q.status.ok()) << q.status.to_string();
    EXPECT_EQ(q.global[0], 1.0f / (1536.0f / 40.0f));
    EXPECT_EQ(q.scales[0], 0x7C);
    for (int j = 0; j < 8; j += 2) {
      EXPECT_EQ(q.data[static_cast<size_t>(j)], 0x42);
      EXPECT_EQ(q.data[static_cast<size_t>(j + 1)], 0x65);
    }
    const auto y = dequantize_host(q, o);
    EXPECT_EQ(y, x);
  }
}

// A block where both candidates reconstruct identically: [40, 20, 10, 0] × 4. Map-to-6 codes
// 6, 3, 1.5, 0 (rn(c · 256)) and map-to-4 codes 4, 2, 1, 0 (rn(c · 384)) give the same products
// 1536, 768, 384, 0, so err4 == err6 and the tie keeps map-to-6: scale 0x78, codes 7, 5, 3, 0.
TEST(Golden, FourOverSixTieKeepsMapTo6) {
  std::vector<float> x;
  for (int r = 0; r < 4; ++r) x.insert(x.end(), {40.0f, 20.0f, 10.0f, 0.0f});
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4FourOverSix;
  const auto q = quantize_host(x, 0, 1, 16, o);
  ASSERT_TRUE(q.status.ok());
  EXPECT_EQ(q.scales[0], 0x78);
  for (int j = 0; j < 8; j += 2) {
    EXPECT_EQ(q.data[static_cast<size_t>(j)], 0x57);
    EXPECT_EQ(q.data[static_cast<size_t>(j + 1)], 0x03);
  }
}

// All-zero block and all-zero tensor: sf 0x00, codes 0 (0x8 for −0.0, SPEC.md §3.1); an all-zero
// tensor has amax 0 → S_enc = 1 → S_dec = 1.
TEST(Golden, AllZeroBlockAndTensor) {
  for (Recipe recipe : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix, Recipe::kMxfp4, Recipe::kFp4Block16}) {
    SCOPED_TRACE(recipe_name(recipe));
    const int block = recipe_block_elems(recipe);
    std::vector<float> x(static_cast<size_t>(2 * block), 0.0f);
    x[1] = -0.0f;
    for (int i = block; i < 2 * block; ++i) x[static_cast<size_t>(i)] = 0.25f * static_cast<float>(i - block + 1);
    QuantizeOptions o;
    o.recipe = recipe;
    auto q = quantize_host(x, 0, 1, 2 * block, o);
    ASSERT_TRUE(q.status.ok()) << q.status.to_string();
    EXPECT_EQ(q.scales[0], 0x00);
    EXPECT_NE(q.scales[1], 0x00);
    EXPECT_EQ(q.data[0], 0x80);  // x0 = 0 → 0x0, x1 = −0 → 0x8
    for (int j = 1; j < block / 2; ++j) EXPECT_EQ(q.data[static_cast<size_t>(j)], 0x00);
    auto y = dequantize_host(q, o);
    for (int i = 0; i < block; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f);

    std::fill(x.begin(), x.end(), 0.0f);
    q = quantize_host(x, 0, 1, 2 * block, o);
    ASSERT_TRUE(q.status.ok());
    if (test::is_nvfp4(recipe)) {
      EXPECT_EQ(q.global[0], 1.0f);
    }
    for (uint8_t b : q.scales) EXPECT_EQ(b, 0x00);
    for (uint8_t b : q.data) EXPECT_EQ(b, 0x00);
  }
}

// Underflowing block (SPEC.md §3.1): tensor amax 1e4 (block 1) → S_enc = rn(2688/1e4) = 0.2688;
// block 0 = ±(i+1)·1e-4 with element 3 = 0 has v = 1.6e-3, sf_hp = rn(1.6e-3 · 0.0448) = 7.2e-5
// < 2^-10 → sf 0x00, enc = min(rn(1/0), FLT_MAX) = FLT_MAX: non-zero elements saturate to ±6
// (7 / F), the zero stays 0: codes 7 F 7 0 7 F 7 F 7 F 7 F 7 F 7 F → bytes F7 07 F7 F7 F7 F7 F7 F7.
// Dequantization gives ±0 (sf = 0), never NaN.
TEST(Golden, UnderflowingBlockScale) {
  std::vector<float> x(32, 1.0f);
  for (int i = 0; i < 16; ++i) x[static_cast<size_t>(i)] = (i % 2 ? -1.0f : 1.0f) * 1e-4f * static_cast<float>(i + 1);
  x[3] = 0.0f;
  x[16] = 1e4f;
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4;
  const auto q = quantize_host(x, 0, 1, 32, o);
  ASSERT_TRUE(q.status.ok());
  EXPECT_EQ(q.scales[0], 0x00);
  EXPECT_EQ(bytes_of(q.data, 0, 8), (std::vector<uint8_t>{0xF7, 0x07, 0xF7, 0xF7, 0xF7, 0xF7, 0xF7, 0xF7}));
  const auto y = dequantize_host(q, o);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f) << i;
    EXPECT_FALSE(std::isnan(y[static_cast<size_t>(i)]));
  }
}

// Saturation with a given decode scale 1 (S_enc = 1, rn(S_enc · (1/6)f) = 0.16666667):
// block v = 1000 → sf_hp = 166.66667 → E4M3 160 (1.25·2^7 = 0x72; neighbours 160, 176), enc = rn(1/160):
// 1000 · enc = 6.25 → 6 (7), −1000 → F, 500 → 3.125 → 3 (5), −250 → −1.5625 → −1.5 (B),
// 100 → 0.625 → 0.5 (1), 0 → 0. Block 1: v = 3000 → sf_hp = 500 → saturates to 448 (0x7E), enc =
// rn(1/448): 3000 → 6.7 → 6 (7), −Inf → F, 2000 → 4.46 → 4 (6), −900 → −2.0089 → −2 (C).
TEST(Golden, SaturatingValues) {
  std::vector<float> x(32, 0.0f);
  x[0] = 1000; x[1] = -1000; x[2] = 500; x[3] = -250; x[4] = 100;
  x[16] = 3000; x[17] = -kInf; x[18] = 2000; x[19] = -900;
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4;
  o.global_scale_mode = GlobalScaleMode::kGiven;
  const auto q = quantize_host(x, 0, 1, 32, o, 1.0f);
  ASSERT_TRUE(q.status.ok()) << q.status.to_string();
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x72, 0x7E}));
  EXPECT_EQ(bytes_of(q.data, 0, 3), (std::vector<uint8_t>{0xF7, 0xB5, 0x01}));
  EXPECT_EQ(bytes_of(q.data, 8, 2), (std::vector<uint8_t>{0xF7, 0xC6}));
  const auto y = dequantize_host(q, o);
  EXPECT_EQ(y[0], 960.0f);   // 6 · 160
  EXPECT_EQ(y[16], 2688.0f); // 6 · 448
  EXPECT_EQ(y[17], -2688.0f);
}

// NaN and Inf inputs (SPEC.md §1, §3.1): tensor amax ignores NaN and is +Inf → S_enc =
// rn(2688/Inf) = 0 → 1, S_dec = 1. Block 0 = [NaN, 1, −2, Inf, −Inf, 0, …]: v = Inf → sf_hp = Inf →
// 0x7E (448), enc = rn(1/448): NaN → 0x7, 1 → 0.0022 → 0, −2 → −0 (8), Inf → 7, −Inf → F.
// Block 1 = [3, −1.5, 0, …]: sf_hp = rn(3 · 0.16666667) = 0.5 → 0x30; enc = 2: 3 → 6 (7), −1.5 → −3 (D).
// Dequantizing the NaN code gives 6 · 448 = 2688: finite.
TEST(Golden, NanAndInfInputs) {
  std::vector<float> x(32, 0.0f);
  x[0] = kNaN; x[1] = 1; x[2] = -2; x[3] = kInf; x[4] = -kInf;
  x[16] = 3; x[17] = -1.5f;
  QuantizeOptions o;
  o.recipe = Recipe::kNvfp4;
  const auto q = quantize_host(x, 0, 1, 32, o);
  ASSERT_TRUE(q.status.ok());
  EXPECT_EQ(q.global[0], 1.0f);
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x7E, 0x30}));
  EXPECT_EQ(bytes_of(q.data, 0, 3), (std::vector<uint8_t>{0x07, 0x78, 0x0F}));
  EXPECT_EQ(q.data[8], 0xD7);
  const auto y = dequantize_host(q, o);
  EXPECT_EQ(y[0], 2688.0f);
  for (float v : y) EXPECT_FALSE(std::isnan(v));

  // mxfp4: v = Inf → v6 = Inf → code 254, enc = 2^-127: NaN → 7, Inf → 7, −Inf → F, finite → ±0.
  o.recipe = Recipe::kMxfp4;
  const auto m = quantize_host(x, 0, 1, 32, o);
  ASSERT_TRUE(m.status.ok());
  EXPECT_EQ(m.scales[0], 254);
  EXPECT_EQ(bytes_of(m.data, 0, 3), (std::vector<uint8_t>{0x07, 0x78, 0x0F}));
  EXPECT_EQ(m.data[8], 0x80);  // 3·2^-127 → 0, −1.5·2^-127 → −0
}

// Per-token (SPEC.md §3.5): each row has its own S_enc = rn(2688/row_amax); an all-zero row stores
// decode scale 0, scale bytes 0 and zero codes (0x8 for −0.0).
TEST(Golden, PerRowZeroRow) {
  std::vector<float> x(3 * 16, 0.0f);
  for (int i = 0; i < 16; ++i) {
    x[static_cast<size_t>(i)] = 0.5f * static_cast<float>(i - 7);        // row 0, amax 4
    x[static_cast<size_t>(32 + i)] = 100.0f * static_cast<float>(i - 3); // row 2, amax 1200
  }
  x[17] = -0.0f;  // row 1 stays all zero
  for (Recipe recipe : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix}) {
    SCOPED_TRACE(recipe_name(recipe));
    QuantizeOptions o;
    o.recipe = recipe;
    o.global_scale_mode = GlobalScaleMode::kPerRow;
    const auto q = quantize_host(x, 0, 3, 16, o);
    ASSERT_TRUE(q.status.ok()) << q.status.to_string();
    const float numerator = recipe == Recipe::kNvfp4 ? 2688.0f : 1536.0f;
    EXPECT_EQ(q.global[0], 1.0f / (numerator / 4.0f));
    EXPECT_EQ(q.global[1], 0.0f);
    EXPECT_EQ(q.global[2], 1.0f / (numerator / 1200.0f));
    EXPECT_EQ(q.scales[1], 0x00);
    EXPECT_EQ(q.data[8], 0x80);
    for (int j = 9; j < 16; ++j) EXPECT_EQ(q.data[static_cast<size_t>(j)], 0x00);
    const auto y = dequantize_host(q, o);
    for (int i = 16; i < 32; ++i) EXPECT_EQ(y[static_cast<size_t>(i)], 0.0f);
    // Row 0 on its own in per-tensor mode gives the same bytes (its amax is the tensor amax).
    o.global_scale_mode = GlobalScaleMode::kPerTensor;
    const auto row0 = quantize_host(std::vector<float>(x.begin(), x.begin() + 16), 0, 1, 16, o);
    EXPECT_EQ(bytes_of(q.data, 0, 8), row0.data);
    EXPECT_EQ(q.scales[0], row0.scales[0]);
  }
}

// MXFP4 (SPEC.md §3.3), the research note's vector: x_i = (i − 16) · 0.37, v = 5.92, v6 = 0.98667
// → code 127 (scale 1), enc = 1: codes of −5.92 … 5.55: F F F E E E E D D D C C B A 9 9 0 1 1 2 3 4
// 4 5 5 5 6 6 6 6 7 7 (e.g. −3.70 ≥ 3.5 → 4, −0.74 < 0.75 → 0.5, 2.59 > 2.5 → 3, 5.18 > 5 → 6).
TEST(Golden, Mxfp4Vector) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i - 16) * 0.37f;
  QuantizeOptions o;
  o.recipe = Recipe::kMxfp4;
  const auto q = quantize_host(x, 0, 1, 32, o);
  ASSERT_TRUE(q.status.ok()) << q.status.to_string();
  EXPECT_EQ(q.scales, std::vector<uint8_t>{127});
  EXPECT_EQ(q.data, (std::vector<uint8_t>{0xFF, 0xEF, 0xEE, 0xDE, 0xDD, 0xCC, 0xAB, 0x99,
                                          0x10, 0x21, 0x43, 0x54, 0x55, 0x66, 0x66, 0x77}));
  const auto y = dequantize_host(q, o);
  EXPECT_EQ(y[0], -6.0f);
  EXPECT_EQ(y[31], 6.0f);
  EXPECT_EQ(y[14], -0.5f);
}

// MXFP4 scale rounding up: v = 12.5 → v6 = 2.0833 → code 129 (scale 4, enc 0.25); the OCP floor
// rule would pick scale 2 and clip 12.5 to 12. Elements: 12.5 → 3.125 → 3 (5), 5 → 1.25 → 1 (tie,
// 2), 7 → 1.75 → 2 (4), −10 → −2.5 → −2 (C, tie), 1 → 0.25 → 0 (tie), −3 → −0.75 → −1 (A, tie),
// rest 0. Second block v = 12 → v6 = 2 → code 128 (scale 2, enc 0.5): 12 → 6 (7), 5 → 2.5 → 2 (4).
TEST(Golden, Mxfp4RoundsScaleUp) {
  std::vector<float> x(64, 0.0f);
  x[0] = 12.5f; x[1] = 5; x[2] = 7; x[3] = -10; x[4] = 1; x[5] = -3;
  x[32] = 12; x[33] = 5;
  QuantizeOptions o;
  o.recipe = Recipe::kMxfp4;
  const auto q = quantize_host(x, 0, 1, 64, o);
  ASSERT_TRUE(q.status.ok());
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{129, 128}));
  EXPECT_EQ(bytes_of(q.data, 0, 3), (std::vector<uint8_t>{0x25, 0xC4, 0xA0}));
  EXPECT_EQ(q.data[16], 0x47);
  const auto y = dequantize_host(q, o);
  EXPECT_EQ(y[0], 12.0f);  // 3 · 4
  EXPECT_EQ(y[32], 12.0f); // 6 · 2
}

// fp4_block16 (SPEC.md §3.4) on the issue's block: v = 3 → v6 = rn(3 · (1/6)f) = 0.5 → code 126,
// enc = 2: the same codes as nvfp4 (90 A1 A2 B3 C4 C4 D5 F5), scale byte 126 = 0x7E. Block 1 has
// v = 3.0000002 → v6 just above 0.5 → code 127, enc = 1: 3.0000002 → 3 (5), −1.25 → −1 (A, tie).
// Block 2 shows the subnormal scale rule: v = 9·2^-127 → v6 = 1.5·2^-127 ∈ (2^-127, 2^-126) → code
// 1, enc = 2^126: 9·2^-127 → 4.5 → 4 (6, tie to even).
TEST(Golden, Fp4Block16Vectors) {
  std::vector<float> x = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f,
                          0.9f, -1.0f, 1.1f, -1.2f, 1.3f, -1.4f, 1.5f, -3.0f};
  x.resize(48, 0.0f);
  x[16] = std::nextafter(3.0f, 4.0f);
  x[17] = -1.25f;
  x[32] = 9.0f * std::ldexp(1.0f, -127);
  QuantizeOptions o;
  o.recipe = Recipe::kFp4Block16;
  const auto q = quantize_host(x, 0, 1, 48, o);
  ASSERT_TRUE(q.status.ok()) << q.status.to_string();
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{126, 127, 1}));
  EXPECT_EQ(bytes_of(q.data, 0, 8), (std::vector<uint8_t>{0x90, 0xA1, 0xA2, 0xB3, 0xC4, 0xC4, 0xD5, 0xF5}));
  EXPECT_EQ(q.data[8], 0xA5);
  EXPECT_EQ(q.data[16], 0x06);
  const auto y = dequantize_host(q, o);
  EXPECT_EQ(y[1], -0.25f);
  EXPECT_EQ(y[15], -3.0f);
  EXPECT_EQ(y[32], 8.0f * std::ldexp(1.0f, -127));  // 4 · 2^-126
}

// fp8_e4m3 input (nvfp4 recipes): values exactly representable in E4M3 give the same bytes as f32.
TEST(Golden, Fp8InputMatchesF32) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = fmt::e4m3_to_float(static_cast<uint32_t>((i * 37 + 5) % 0x7E) | (i % 3 ? 0 : 0x80));
  for (Recipe recipe : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix}) {
    QuantizeOptions o;
    o.recipe = recipe;
    const auto a = quantize_host(x, 0, 2, 16, o, 1.0f, DType::kF32);
    const auto b = quantize_host(x, 0, 2, 16, o, 1.0f, DType::kFP8E4M3);
    ASSERT_TRUE(a.status.ok());
    ASSERT_TRUE(b.status.ok()) << b.status.to_string();
    EXPECT_EQ(a.data, b.data);
    EXPECT_EQ(a.scales, b.scales);
    EXPECT_EQ(a.global, b.global);
  }
}

}  // namespace
