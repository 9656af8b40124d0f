// Exhaustive tests of the E2M1 codec of src/common/format.h against SPEC.md §1 and against an
// independent nearest-value search written here in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "common/format.h"

namespace {

namespace fmt = nvfp4kv::fmt;

// SPEC.md §1: magnitudes of m = 0..7.
constexpr double kMagnitudes[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

/// Independent float → E2M1: the nearest magnitude by exhaustive search in double, ties to the
/// even code (the mantissa bit is the low bit of m), saturation above 6, sign kept for values
/// that round to zero, NaN → 0x7 (SPEC.md §1).
uint32_t reference_e2m1(float x) {
  if (std::isnan(x)) return 0x7u;
  const uint32_t sign = std::signbit(x) ? 8u : 0u;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 6.0) return sign | 7u;
  uint32_t best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (uint32_t m = 0; m < 8; ++m) {
    const double d = std::fabs(a - kMagnitudes[m]);
    if (d < best_distance || (d == best_distance && (m & 1u) == 0)) {
      best = m;
      best_distance = d;
    }
  }
  return sign | best;
}

uint32_t bits(float x) { return fmt::float_bits(x); }

TEST(E2m1, DecodesAll16Codes) {
  for (uint32_t c = 0; c < 16; ++c) {
    const float v = fmt::e2m1_to_float(c);
    const double expected = (c & 8u ? -1.0 : 1.0) * kMagnitudes[c & 7u];
    EXPECT_EQ(static_cast<double>(v), expected) << "code 0x" << std::hex << c;
    EXPECT_EQ(std::signbit(v), (c & 8u) != 0) << "code 0x" << std::hex << c;
  }
  // Code 0x8 is −0.0 exactly.
  EXPECT_EQ(bits(fmt::e2m1_to_float(0x8)), 0x80000000u);
}

TEST(E2m1, EncodesEveryCodeValueToItself) {
  for (uint32_t c = 0; c < 16; ++c) {
    EXPECT_EQ(fmt::float_to_e2m1(fmt::e2m1_to_float(c)), c) << "code 0x" << std::hex << c;
  }
}

TEST(E2m1, SpecTieVectors) {
  // SPEC.md §1: 0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4 (ties to even).
  EXPECT_EQ(fmt::float_to_e2m1(0.25f), 0x0u);
  EXPECT_EQ(fmt::float_to_e2m1(0.75f), 0x2u);
  EXPECT_EQ(fmt::float_to_e2m1(1.25f), 0x2u);
  EXPECT_EQ(fmt::float_to_e2m1(1.75f), 0x4u);
  EXPECT_EQ(fmt::float_to_e2m1(2.5f), 0x4u);
  EXPECT_EQ(fmt::float_to_e2m1(3.5f), 0x6u);
  EXPECT_EQ(fmt::float_to_e2m1(5.0f), 0x6u);
  EXPECT_EQ(fmt::float_to_e2m1(-0.25f), 0x8u);
  EXPECT_EQ(fmt::float_to_e2m1(-0.75f), 0xAu);
  EXPECT_EQ(fmt::float_to_e2m1(-1.25f), 0xAu);
  EXPECT_EQ(fmt::float_to_e2m1(-1.75f), 0xCu);
  EXPECT_EQ(fmt::float_to_e2m1(-2.5f), 0xCu);
  EXPECT_EQ(fmt::float_to_e2m1(-3.5f), 0xEu);
  EXPECT_EQ(fmt::float_to_e2m1(-5.0f), 0xEu);
  // Just above a midpoint goes up (host-emulation vectors of the research note).
  EXPECT_EQ(fmt::float_to_e2m1(0.25000009f), 0x1u);
  EXPECT_EQ(fmt::float_to_e2m1(1.25000012f), 0x3u);
  EXPECT_EQ(fmt::float_to_e2m1(2.5000002f), 0x5u);
  EXPECT_EQ(fmt::float_to_e2m1(5.0000005f), 0x7u);
}

TEST(E2m1, EveryMidpointAndItsNeighbours) {
  const float inf = std::numeric_limits<float>::infinity();
  for (int m = 0; m < 7; ++m) {
    const float lo = static_cast<float>(kMagnitudes[m]);
    const float hi = static_cast<float>(kMagnitudes[m + 1]);
    const float mid = 0.5f * (lo + hi);  // exact: at most 3 significant bits
    const uint32_t even = (m & 1) == 0 ? static_cast<uint32_t>(m) : static_cast<uint32_t>(m + 1);
    for (float sgn : {1.0f, -1.0f}) {
      const uint32_t sign = sgn < 0 ? 8u : 0u;
      const float x = sgn * mid;
      EXPECT_EQ(fmt::float_to_e2m1(x), sign | even) << "midpoint " << x;
      const float below = sgn * std::nextafter(mid, 0.0f);
      const float above = sgn * std::nextafter(mid, inf);
      EXPECT_EQ(fmt::float_to_e2m1(below), sign | static_cast<uint32_t>(m)) << "below " << below;
      EXPECT_EQ(fmt::float_to_e2m1(above), sign | static_cast<uint32_t>(m + 1)) << "above " << above;
      EXPECT_EQ(fmt::float_to_e2m1(below), reference_e2m1(below));
      EXPECT_EQ(fmt::float_to_e2m1(above), reference_e2m1(above));
      EXPECT_EQ(fmt::float_to_e2m1(x), reference_e2m1(x));
    }
  }
}

TEST(E2m1, SignedZeroNanInfAndSaturation) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(fmt::float_to_e2m1(0.0f), 0x0u);
  EXPECT_EQ(fmt::float_to_e2m1(-0.0f), 0x8u);
  EXPECT_EQ(fmt::float_to_e2m1(0.1f), 0x0u);
  EXPECT_EQ(fmt::float_to_e2m1(-0.1f), 0x8u);
  EXPECT_EQ(fmt::float_to_e2m1(-1e-45f), 0x8u);  // negative subnormal rounds to −0
  EXPECT_EQ(fmt::float_to_e2m1(nan), 0x7u);
  EXPECT_EQ(fmt::float_to_e2m1(-nan), 0x7u);
  EXPECT_EQ(fmt::float_to_e2m1(fmt::bits_float(0xFFC00001u)), 0x7u);  // negative NaN with payload
  EXPECT_EQ(fmt::float_to_e2m1(fmt::bits_float(0x7F800001u)), 0x7u);  // signalling NaN
  EXPECT_EQ(fmt::float_to_e2m1(inf), 0x7u);
  EXPECT_EQ(fmt::float_to_e2m1(-inf), 0xFu);
  for (float x : {6.0f, 6.0000005f, 6.5f, 7.0f, 1e30f, 3.4028235e38f}) {
    EXPECT_EQ(fmt::float_to_e2m1(x), 0x7u) << x;
    EXPECT_EQ(fmt::float_to_e2m1(-x), 0xFu) << -x;
  }
}

TEST(E2m1, MatchesIndependentSearchOnRandomValues) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-8.0f, 8.0f);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    const float x = uniform(rng);
    ASSERT_EQ(fmt::float_to_e2m1(x), reference_e2m1(x)) << "x = " << x;
    // Arbitrary bit patterns cover subnormals, huge values, Inf and NaN payloads.
    const float y = fmt::bits_float(any_bits(rng));
    ASSERT_EQ(fmt::float_to_e2m1(y), reference_e2m1(y)) << "bits 0x" << std::hex << bits(y);
  }
}

TEST(E2m1, PacksEvenElementInLowNibble) {
  // SPEC.md §1: byte[j] = c[2j] | c[2j+1] << 4; pack(x0 = 1.0, x1 = −6.0) = 0xF2.
  EXPECT_EQ(fmt::pack_e2m1(fmt::float_to_e2m1(1.0f), fmt::float_to_e2m1(-6.0f)), 0xF2);
  for (uint32_t lo = 0; lo < 16; ++lo) {
    for (uint32_t hi = 0; hi < 16; ++hi) {
      const uint8_t b = fmt::pack_e2m1(lo, hi);
      EXPECT_EQ(b & 0xFu, lo);
      EXPECT_EQ(b >> 4, hi);
    }
  }
}

}  // namespace
