// nvfp4kv KV — the kernels' fast E2M1 encode (kvfmt::e2m1_magnitude_code_fast) against the
// reference fmt::float_to_e2m1 (SPEC.md §1): every float in [1/8, 8] (all rounding boundaries and
// ties live there: 0.25 ... 5), a dense sample of every other float of both signs (below 1/8
// every sum a + 2^22 rounds to 2^22, code 0), ±Inf, NaNs. A full 2^32 sweep would take
// ~70 s on the shared 2-core machine (18 s for [0, 8]), too slow for a unit test.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "common/format.h"
#include "common/kv_format.h"

namespace nvfp4kv::kvfmt {
namespace {

uint32_t first_mismatch(uint32_t begin, uint32_t end, uint32_t step, uint64_t* count) {
  for (uint64_t b = begin; b < end; b += step) {
    const float y = fmt::bits_float(static_cast<uint32_t>(b));
    if (e2m1_magnitude_code_fast(y) != (fmt::float_to_e2m1(y) & 7u)) return static_cast<uint32_t>(b);
    ++*count;
  }
  return 0xFFFFFFFFu;
}

TEST(KvFastCodec, EveryFloatFromEighthToEight) {
  uint64_t n = 0;
  // 0x3E000000 = 1/8 through 0x41000000 = 8.0 and one past it.
  const uint32_t bad = first_mismatch(0x3E000000u, 0x41000001u, 1u, &n);
  ASSERT_EQ(bad, 0xFFFFFFFFu) << "fast E2M1 encode differs at bits 0x" << std::hex << bad;
  EXPECT_EQ(n, 0x41000001ull - 0x3E000000u);
}

TEST(KvFastCodec, NegativeAndLargeSampled) {
  uint64_t n = 0;
  // Odd strides visit every residue class of the low bits: positive floats below 1/8, negative
  // floats below 8 in magnitude, all magnitudes above 8 through Inf and the NaNs, both signs.
  EXPECT_EQ(first_mismatch(0x00000000u, 0x3E000000u, 61u, &n), 0xFFFFFFFFu);
  EXPECT_EQ(first_mismatch(0x80000000u, 0xC1000001u, 97u, &n), 0xFFFFFFFFu);
  EXPECT_EQ(first_mismatch(0x41000000u, 0x80000000u, 101u, &n), 0xFFFFFFFFu);
  EXPECT_EQ(first_mismatch(0xC1000000u, 0xFFFFFFFFu, 103u, &n), 0xFFFFFFFFu);
  EXPECT_EQ(first_mismatch(0x7F7FFF00u, 0x80000000u, 1u, &n), 0xFFFFFFFFu);  // top floats, Inf, NaNs
  std::mt19937 rng(20261121u);
  for (int i = 0; i < 1000000; ++i) {
    const uint32_t b = static_cast<uint32_t>(rng());
    const float y = fmt::bits_float(b);
    ASSERT_EQ(e2m1_magnitude_code_fast(y), fmt::float_to_e2m1(y) & 7u) << "bits 0x" << std::hex << b;
  }
}

TEST(KvFastCodec, SpecialsAndTies) {
  const float cases[] = {0.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f, 7.0f, 8.0f, 1e30f,
                         3.4028235e38f, fmt::bits_float(0x7F800000u), fmt::bits_float(0x7FC00000u),
                         fmt::bits_float(0x7F800001u), fmt::bits_float(0xFFFFFFFFu), 1e-45f};
  const uint32_t want[] = {0, 0, 2, 2, 4, 4, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0};
  for (std::size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    EXPECT_EQ(e2m1_magnitude_code_fast(cases[i]), want[i]) << cases[i];
    EXPECT_EQ(e2m1_magnitude_code_fast(-cases[i]), want[i]) << -cases[i];
  }
}

}  // namespace
}  // namespace nvfp4kv::kvfmt
