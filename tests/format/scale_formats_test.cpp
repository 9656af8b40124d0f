// Exhaustive tests of the E4M3 and UE8M0 scale codecs of src/common/format.h (SPEC.md §2),
// against independent ldexp-based decoders and nearest-value searches written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/format.h"

namespace {

namespace fmt = nvfp4kv::fmt;

/// Independent E4M3 decode (bias 7, 3 mantissa bits, 0x7F/0xFF NaN, no infinities).
double reference_e4m3_decode(uint32_t byte) {
  const double sign = (byte & 0x80u) ? -1.0 : 1.0;
  const int e = static_cast<int>((byte >> 3) & 0xFu);
  const int m = static_cast<int>(byte & 7u);
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -9);
  return sign * std::ldexp(1.0 + m / 8.0, e - 7);
}

/// Independent float → E4M3: nearest of the 127 finite magnitudes by search in double, ties to
/// the even mantissa (the low bit of the byte), |x| ≥ 448 saturates, sign kept.
uint32_t reference_e4m3_encode(float x) {
  const uint32_t sign = std::signbit(x) ? 0x80u : 0u;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return sign | 0x7Eu;
  uint32_t best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (uint32_t b = 0; b <= 0x7Eu; ++b) {
    const double d = std::fabs(a - reference_e4m3_decode(b));
    if (d < best_distance || (d == best_distance && (b & 1u) == 0)) {
      best = b;
      best_distance = d;
    }
  }
  return sign | best;
}

/// Independent UE8M0 "round up": smallest power of two ≥ v, code clamp(ceil(log2 v)+127, 0, 254).
uint32_t reference_ue8m0_up(float v) {
  if (std::isnan(v)) return 255;
  if (v == 0.0f) return 0;
  if (std::isinf(v)) return 254;
  int e = 0;
  const double f = std::frexp(static_cast<double>(v), &e);  // v = f · 2^e, f in [0.5, 1)
  const int log2_ceil = (f == 0.5) ? e - 1 : e;
  return static_cast<uint32_t>(std::clamp(log2_ceil + 127, 0, 254));
}

TEST(E4m3, DecodesAll256Bytes) {
  for (uint32_t b = 0; b < 256; ++b) {
    const float v = fmt::e4m3_to_float(b);
    const double expected = reference_e4m3_decode(b);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(v)) << "byte 0x" << std::hex << b;
    } else {
      EXPECT_EQ(static_cast<double>(v), expected) << "byte 0x" << std::hex << b;
      EXPECT_EQ(std::signbit(v), (b & 0x80u) != 0) << "byte 0x" << std::hex << b;
    }
  }
  EXPECT_EQ(fmt::e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(fmt::e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fmt::e4m3_to_float(0x08), std::ldexp(1.0f, -6));
}

TEST(E4m3, SpecEncodeVectors) {
  // SPEC.md §2.
  EXPECT_EQ(fmt::float_to_e4m3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(fmt::float_to_e4m3(1.5f * std::ldexp(1.0f, -9)), 0x02);
  EXPECT_EQ(fmt::float_to_e4m3(464.0f), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(448.0f / 6.0f), 0x69);
  EXPECT_EQ(fmt::e4m3_to_float(0x69), 72.0f);
  EXPECT_EQ(fmt::float_to_e4m3(384.0f), 0x7C);
  // More of the research note's host vectors: saturation and NaN.
  EXPECT_EQ(fmt::float_to_e4m3(448.0f), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(500.0f), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(672.0f), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(1e9f), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(-std::numeric_limits<float>::infinity()), 0xFE);
  EXPECT_EQ(fmt::float_to_e4m3(std::numeric_limits<float>::quiet_NaN()) & 0x7F, 0x7F);
  EXPECT_EQ(fmt::float_to_e4m3(0.001953125f), 0x01);
  EXPECT_EQ(fmt::float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(fmt::float_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(fmt::float_to_e4m3(1e-30f), 0x00);
}

TEST(E4m3, RoundTripsEveryFiniteByte) {
  for (uint32_t b = 0; b < 256; ++b) {
    if ((b & 0x7Fu) == 0x7Fu) continue;  // NaN
    EXPECT_EQ(fmt::float_to_e4m3(fmt::e4m3_to_float(b)), b) << "byte 0x" << std::hex << b;
  }
}

TEST(E4m3, MidpointsBetweenNeighboursRoundToEven) {
  const float inf = std::numeric_limits<float>::infinity();
  for (uint32_t b = 0; b < 0x7Eu; ++b) {
    const float lo = fmt::e4m3_to_float(b);
    const float hi = fmt::e4m3_to_float(b + 1);
    const float mid = 0.5f * (lo + hi);  // exact: a 5-bit significand at most
    ASSERT_EQ(static_cast<double>(mid), 0.5 * (static_cast<double>(lo) + hi));
    const uint32_t even = (b & 1u) == 0 ? b : b + 1;
    for (uint32_t sign : {0u, 0x80u}) {
      const float s = sign ? -1.0f : 1.0f;
      EXPECT_EQ(fmt::float_to_e4m3(s * mid), sign | even) << "midpoint of 0x" << std::hex << b;
      EXPECT_EQ(fmt::float_to_e4m3(s * std::nextafter(mid, 0.0f)), sign | b)
          << "below midpoint of 0x" << std::hex << b;
      EXPECT_EQ(fmt::float_to_e4m3(s * std::nextafter(mid, inf)), sign | (b + 1))
          << "above midpoint of 0x" << std::hex << b;
    }
  }
  // Between 448 and the (non-existent) 480 everything saturates.
  EXPECT_EQ(fmt::float_to_e4m3(std::nextafter(464.0f, inf)), 0x7E);
  EXPECT_EQ(fmt::float_to_e4m3(std::nextafter(464.0f, 0.0f)), 0x7E);
}

TEST(E4m3, MatchesIndependentSearchOnRandomValues) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> log2_magnitude(-13.0f, 10.0f);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 100000; ++i) {
    float x = std::exp2(log2_magnitude(rng));
    if (i & 1) x = -x;
    ASSERT_EQ(fmt::float_to_e4m3(x), reference_e4m3_encode(x)) << "x = " << x;
    const float y = fmt::bits_float(any_bits(rng));
    if (std::isnan(y)) continue;
    ASSERT_EQ(fmt::float_to_e4m3(y), reference_e4m3_encode(y))
        << "bits 0x" << std::hex << fmt::float_bits(y);
  }
}

TEST(Ue8m0, DecodesAll256Bytes) {
  for (uint32_t c = 0; c < 255; ++c) {
    EXPECT_EQ(static_cast<double>(fmt::ue8m0_to_float(c)), std::ldexp(1.0, static_cast<int>(c) - 127))
        << "code " << c;
  }
  EXPECT_TRUE(std::isnan(fmt::ue8m0_to_float(255)));
  EXPECT_EQ(fmt::float_bits(fmt::ue8m0_to_float(0)), 0x00400000u);  // 2^-127, subnormal
}

TEST(Ue8m0, SpecVectors) {
  // SPEC.md §2.
  EXPECT_EQ(fmt::ue8m0_up(0.0f), 0);
  EXPECT_EQ(fmt::ue8m0_up(0.5f), 126);
  EXPECT_EQ(fmt::ue8m0_up(0.75f), 127);
  EXPECT_EQ(fmt::ue8m0_up(1.0f), 127);
  EXPECT_EQ(fmt::ue8m0_up(1.0000001f), 128);
  EXPECT_EQ(fmt::ue8m0_up(1e-40f), 0);
  EXPECT_EQ(fmt::ue8m0_up(3e38f), 254);
  EXPECT_EQ(fmt::ue8m0_up(std::numeric_limits<float>::infinity()), 254);
  EXPECT_EQ(fmt::ue8m0_up(std::numeric_limits<float>::quiet_NaN()), 255);
  // Subnormal inputs: ceil(log2 v) + 127 is 1 in (2^-127, 2^-126) and 0 at or below 2^-127.
  EXPECT_EQ(fmt::ue8m0_up(1.5f * std::ldexp(1.0f, -127)), 1);
  EXPECT_EQ(fmt::ue8m0_up(std::ldexp(1.0f, -127)), 0);
  EXPECT_EQ(fmt::ue8m0_up(std::nextafter(std::ldexp(1.0f, -127), 1.0f)), 1);
  EXPECT_EQ(fmt::ue8m0_up(std::ldexp(1.0f, -126)), 1);
  EXPECT_EQ(fmt::ue8m0_up(std::nextafter(std::ldexp(1.0f, -126), 1.0f)), 2);
}

TEST(Ue8m0, PowersOfTwoAndNeighbours) {
  const float inf = std::numeric_limits<float>::infinity();
  for (int e = -149; e <= 127; ++e) {
    const float p = std::ldexp(1.0f, e);
    for (float v : {p, std::nextafter(p, 0.0f), std::nextafter(p, inf)}) {
      if (v == 0.0f || std::isinf(v)) continue;
      ASSERT_EQ(fmt::ue8m0_up(v), reference_ue8m0_up(v)) << "v = " << v << " (2^" << e << ")";
      // The scale it stands for is ≥ v unless the code saturated at 254 (2^127).
      const uint8_t code = fmt::ue8m0_up(v);
      if (code < 254 && code > 0) {
        ASSERT_GE(fmt::ue8m0_to_float(code), v);
      }
    }
  }
}

TEST(Ue8m0, MatchesIndependentRuleOnRandomValues) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> positive_bits(0, 0x7FFFFFFFu);
  for (int i = 0; i < 200000; ++i) {
    const float v = fmt::bits_float(positive_bits(rng));
    ASSERT_EQ(fmt::ue8m0_up(v), reference_ue8m0_up(v)) << "bits 0x" << std::hex << fmt::float_bits(v);
  }
}

}  // namespace
