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

/// The .sat modifier of the GPU's fp32 instructions: clamp to [0, 1], NaN → +0.
NVFP4KV_HD float saturate01(float x) {
#if defined(__CUDA_ARCH__)
  return __saturatef(x);
#else
  return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f;
#endif
}

/// Exact a · b + c where the caller guarantees the product and sum need no rounding (small
/// multiples of 0.5) or saturate anyway: one FFMA on the device, two plain operations here.
NVFP4KV_HD float fma_exact(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return a * b + c;
#endif
}

/// Magnitude bits (0..7) of fmt::float_to_e2m1(y) as an exact float, from a = |y|, for every
/// non-NaN y (NaN gives 0). Only fp32 add/multiply with .sat, which run on the GPU's FMA pipe at
/// twice the rate of the integer/logic pipe that e2m1_code_by_bits needs: g1, g2, g3 are |y|
/// rounded to nearest-even multiples of 0.5, 1 and 2 (adding 2^22 / 2^23 / 2^24, whose ulp is
/// that step); then code = min(2·g1, 4) + clamp(g2 − 2, 0, 2) + clamp(g3/2 − 2, 0, 1), which is
/// 2·g1 below 2, g2 + 2 in [2, 4), 6 in [4, 5] and 7 above (SPEC.md §1; ties land on the even
/// code because each g ties to the even multiple).
NVFP4KV_HD float e2m1_magnitude_code_f(float a) {
  const float g1 = fmt::fsub_rn(fmt::fadd_rn(a, 0x1p22f), 0x1p22f);
  const float g2 = fmt::fsub_rn(fmt::fadd_rn(a, 0x1p23f), 0x1p23f);
  const float g3 = fmt::fsub_rn(fmt::fadd_rn(a, 0x1p24f), 0x1p24f);
  const float s1 = saturate01(fmt::fmul_rn(g1, 0.5f));
  const float s2 = saturate01(fma_exact(g2, 0.5f, -1.0f));
  const float s3 = saturate01(fma_exact(g3, 0.5f, -2.0f));
  return fma_exact(s1, 4.0f, fma_exact(s2, 2.0f, s3));
}

/// Magnitude bits (0..7) of the code of a non-negative E2M1 grid value q (0, 0.5, ... 6) as an
/// exact float, with FMA-pipe work only: 4·sat(q/2) + 2·sat(q/2 − 1) + sat(q/2 − 2) is 2q below
/// 2, q + 2 up to 4 and 7 at 6 (NaN gives 0).
NVFP4KV_HD float e2m1_magnitude_code_of_grid_value_f(float q) {
  const float s1 = saturate01(fmt::fmul_rn(q, 0.5f));
  const float s2 = saturate01(fma_exact(q, 0.5f, -1.0f));
  const float s3 = saturate01(fma_exact(q, 0.5f, -2.0f));
  return fma_exact(s1, 4.0f, fma_exact(s2, 2.0f, s3));
}

/// fmt::float_to_e2m1(y) for every y through e2m1_magnitude_code_f (the sign from y's bit 31,
/// NaN → 0x7): the form the exhaustive tests check; the kernels inline the same steps.
NVFP4KV_HD uint32_t e2m1_code_by_fp32(float y) {
  const uint32_t u = fmt::float_bits(y);
  if (fmt::is_nan(y)) return 7u;
  const float mf = e2m1_magnitude_code_f(fmt::abs_f(y));
  return ((u >> 28) & 8u) | (fmt::float_bits(fmt::fadd_rn(mf, 0x1p23f)) - 0x4B000000u);
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
