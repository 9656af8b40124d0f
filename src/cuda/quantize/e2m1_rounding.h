// nvfp4kv — E2M1 rounding written for the GPU's integer and fp32 pipes: the same results as
// fmt::float_to_e2m1 / fmt::e2m1_to_float (SPEC.md §1), with fewer instructions than the
// reference's seven comparisons. __host__ __device__ so tests/cuda/test_quantize_rounding.cpp can
// check them against the reference on the CPU (every float in the rounding range, all others
// sampled) and on the GPU (all 2^32 floats).
#pragma once

#include <cstdint>

#include "common/format.h"

namespace nvfp4kv::cuda {

/// fmt::float_to_e2m1(y) for every y. Below 1 the code is the number of halves in |y|, which the
/// addition |y| + 2^22 rounds to nearest-even (its ulp is 0.5) and leaves in the low mantissa
/// bits; from 1 up, E2M1 is a float with one mantissa bit and exponent bias 1, so rounding the
/// fp32 bit pattern to 1 mantissa bit (add 2^21 − 1 plus the kept lsb, shift by 22) and
/// rebiasing (−252) gives the code, saturated to 7.
NVFP4KV_HD uint32_t e2m1_code_by_bits(float y) {
  const uint32_t u = fmt::float_bits(y);
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t small = fmt::float_bits(fmt::fadd_rn(fmt::bits_float(a), 0x1p22f)) - 0x4A800000u;
  uint32_t big = (a + 0x1FFFFFu + ((a >> 22) & 1u)) >> 22;
  big = (big < 259u ? big : 259u) - 252u;
  const uint32_t m = a < 0x3F800000u ? small : big;
  return a > 0x7F800000u ? 7u : (((u >> 28) & 8u) | m);
}

/// fmt::e2m1_to_float(fmt::float_to_e2m1(y)) for every non-NaN y (the signed grid value y rounds
/// to); NaN stays NaN, so that e2m1_code_of_grid_value can still give it code 0x7. Rounds |y| to
/// the grid step of its binade (0.5 below 2, 1 below 4, 2 above) by adding and subtracting
/// 2^22 / 2^23 / 2^24, whose ulp is that step, so the tie goes to the even multiple, which is the
/// even code; saturates at 6 (Inf too).
NVFP4KV_HD float e2m1_grid_value(float y) {
  const float a = fmt::abs_f(y);
  const float c = a < 2.0f ? 0x1p22f : (a < 4.0f ? 0x1p23f : 0x1p24f);
  float r = fmt::fsub_rn(fmt::fadd_rn(a, c), c);
  r = r > 6.0f ? 6.0f : r;  // written so that NaN passes through
  return fmt::bits_float(fmt::float_bits(r) | (fmt::float_bits(y) & 0x80000000u));
}

/// Code of a value on the E2M1 grid (what e2m1_grid_value returns): the inverse of
/// fmt::e2m1_to_float for the 16 signed grid values (±0, ±0.5, ... ±6), and 0x7 for NaN — so
/// e2m1_code_of_grid_value(e2m1_grid_value(y)) == fmt::float_to_e2m1(y) for every y.
NVFP4KV_HD uint32_t e2m1_code_of_grid_value(float q) {
  const uint32_t u = fmt::float_bits(q);
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t m = a >= 0x3F800000u ? (a >> 22) - 252u : (a != 0u ? 1u : 0u);
  return a > 0x7F800000u ? 7u : (((u >> 28) & 8u) | m);
}

}  // namespace nvfp4kv::cuda
