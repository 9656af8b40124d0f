// Tests of the f16 / bf16 bit conversions of src/common/format.h: exhaustive widening against an
// ldexp decoder, round trips of all 65536 patterns, and RNE narrowing against the compiler's
// _Float16 (libgcc's IEEE conversion) and an independent nearest search for bf16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "common/format.h"

namespace {

namespace fmt = nvfp4kv::fmt;

double reference_f16_decode(uint32_t h) {
  const double sign = (h & 0x8000u) ? -1.0 : 1.0;
  const int e = static_cast<int>((h >> 10) & 0x1Fu);
  const int m = static_cast<int>(h & 0x3FFu);
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

double reference_bf16_decode(uint32_t h) {
  const double sign = (h & 0x8000u) ? -1.0 : 1.0;
  const int e = static_cast<int>((h >> 7) & 0xFFu);
  const int m = static_cast<int>(h & 0x7Fu);
  if (e == 255) return m ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -133);
  return sign * std::ldexp(1.0 + m / 128.0, e - 127);
}

/// Independent float → bf16: the two bf16 neighbours of x compared in double, ties to even;
/// the pattern above the largest finite value stands for 2^128 (so it rounds to Inf as IEEE does).
uint16_t reference_bf16_encode(float x) {
  const uint32_t u = fmt::float_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint16_t lo = static_cast<uint16_t>((u >> 16) & 0x7FFFu);  // truncation toward 0
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double a = std::fabs(static_cast<double>(x));
  const double vlo = std::fabs(reference_bf16_decode(lo));
  const double vhi = hi == 0x7F80u ? std::ldexp(1.0, 128) : std::fabs(reference_bf16_decode(hi));
  if (a == vlo) return sign | lo;
  const double dlo = a - vlo, dhi = vhi - a;
  if (dlo < dhi || (dlo == dhi && (lo & 1u) == 0)) return sign | lo;
  return sign | hi;
}

uint16_t f16_bits_of(_Float16 h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

TEST(F16, WidensAll65536PatternsExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float v = fmt::f16_bits_to_float(static_cast<uint16_t>(h));
    const double expected = reference_f16_decode(h);
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(v)) << "f16 0x" << std::hex << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(v), expected) << "f16 0x" << std::hex << h;
    ASSERT_EQ(std::signbit(v), (h & 0x8000u) != 0) << "f16 0x" << std::hex << h;
    // The compiler's _Float16 agrees.
    uint16_t b = static_cast<uint16_t>(h);
    _Float16 hf;
    std::memcpy(&hf, &b, 2);
    ASSERT_EQ(fmt::float_bits(static_cast<float>(hf)), fmt::float_bits(v)) << "f16 0x" << std::hex << h;
  }
}

TEST(F16, RoundTripsAll65536Patterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t back = fmt::float_to_f16_bits(fmt::f16_bits_to_float(static_cast<uint16_t>(h)));
    if (((h >> 10) & 0x1Fu) == 0x1Fu && (h & 0x3FFu) != 0) {
      ASSERT_EQ(back & 0x7C00u, 0x7C00u) << "NaN 0x" << std::hex << h;
      ASSERT_NE(back & 0x3FFu, 0u) << "NaN 0x" << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << "f16 0x" << std::hex << h;
    }
  }
}

TEST(F16, MidpointsRoundToEven) {
  const float inf = std::numeric_limits<float>::infinity();
  for (uint32_t h = 0; h < 0x7BFFu; ++h) {
    const double lo = reference_f16_decode(h), hi = reference_f16_decode(h + 1);
    const float mid = static_cast<float>(0.5 * (lo + hi));  // exact: 12 significant bits
    ASSERT_EQ(static_cast<double>(mid), 0.5 * (lo + hi));
    const uint32_t even = (h & 1u) == 0 ? h : h + 1;
    ASSERT_EQ(fmt::float_to_f16_bits(mid), even) << "midpoint above 0x" << std::hex << h;
    ASSERT_EQ(fmt::float_to_f16_bits(-mid), even | 0x8000u) << "midpoint above -0x" << std::hex << h;
    ASSERT_EQ(fmt::float_to_f16_bits(std::nextafter(mid, 0.0f)), h);
    ASSERT_EQ(fmt::float_to_f16_bits(std::nextafter(mid, inf)), h + 1);
  }
  // Overflow: 65520 (midpoint of 65504 and 2^16) goes to Inf, just below it stays finite.
  EXPECT_EQ(fmt::float_to_f16_bits(65520.0f), 0x7C00u);
  EXPECT_EQ(fmt::float_to_f16_bits(std::nextafter(65520.0f, 0.0f)), 0x7BFFu);
  EXPECT_EQ(fmt::float_to_f16_bits(-inf), 0xFC00u);
  EXPECT_EQ(fmt::float_to_f16_bits(std::ldexp(1.0f, -25)), 0x0000u);  // tie with 0 → 0
  EXPECT_EQ(fmt::float_to_f16_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001u);
  EXPECT_EQ(fmt::float_to_f16_bits(-0.0f), 0x8000u);
}

TEST(F16, NarrowingMatchesCompilerOnRandomFloats) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_real_distribution<float> moderate(-70000.0f, 70000.0f);
  for (int i = 0; i < 300000; ++i) {
    const float x = (i & 1) ? fmt::bits_float(any_bits(rng)) : moderate(rng);
    if (std::isnan(x)) continue;
    ASSERT_EQ(fmt::float_to_f16_bits(x), f16_bits_of(static_cast<_Float16>(x)))
        << "x bits 0x" << std::hex << fmt::float_bits(x);
  }
}

TEST(Bf16, WidensAndRoundTripsAll65536Patterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float v = fmt::bf16_bits_to_float(static_cast<uint16_t>(h));
    const double expected = reference_bf16_decode(h);
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(v));
      const uint16_t back = fmt::float_to_bf16_bits(v);
      ASSERT_EQ(back & 0x7F80u, 0x7F80u);
      ASSERT_NE(back & 0x7Fu, 0u);
      continue;
    }
    ASSERT_EQ(static_cast<double>(v), expected) << "bf16 0x" << std::hex << h;
    ASSERT_EQ(fmt::float_to_bf16_bits(v), h) << "bf16 0x" << std::hex << h;
  }
}

TEST(Bf16, MidpointsRoundToEven) {
  const float inf = std::numeric_limits<float>::infinity();
  for (uint32_t h = 0; h < 0x7F7Fu; ++h) {
    // The midpoint of two neighbouring bf16 values is the fp32 pattern with bit 15 set.
    const float mid = fmt::bits_float((h << 16) | 0x8000u);
    const uint32_t even = (h & 1u) == 0 ? h : h + 1;
    ASSERT_EQ(fmt::float_to_bf16_bits(mid), even) << "midpoint above 0x" << std::hex << h;
    ASSERT_EQ(fmt::float_to_bf16_bits(-mid), even | 0x8000u);
    ASSERT_EQ(fmt::float_to_bf16_bits(std::nextafter(mid, 0.0f)), h);
    ASSERT_EQ(fmt::float_to_bf16_bits(std::nextafter(mid, inf)), h + 1);
  }
  EXPECT_EQ(fmt::float_to_bf16_bits(std::numeric_limits<float>::max()), 0x7F80u);  // rounds to Inf
  EXPECT_EQ(fmt::float_to_bf16_bits(inf), 0x7F80u);
  EXPECT_EQ(fmt::float_to_bf16_bits(-0.0f), 0x8000u);
}

TEST(Bf16, NarrowingMatchesIndependentSearchOnRandomFloats) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 300000; ++i) {
    const float x = fmt::bits_float(any_bits(rng));
    if (std::isnan(x) || std::isinf(x)) continue;
    ASSERT_EQ(fmt::float_to_bf16_bits(x), reference_bf16_encode(x))
        << "x bits 0x" << std::hex << fmt::float_bits(x);
  }
}

}  // namespace
