// nvfp4kv — E2M1 rounding written for the GPU's integer and fp32 pipes: the same results as
// fmt::float_to_e2m1 / fmt::e2m1_to_float (SPEC.md §1), with fewer instructions than the
// reference's seven comparisons. __host__ __device__ so tests/cuda/test_quantize_rounding.cpp can
// check them against the reference on the CPU (every float in the rounding range, all others
// sampled) and on the GPU (all 2^32 floats).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/format.h"
#include "common/kv_format.h"

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

/// rn(a · b + c), one rounding (FFMA), identical on host and device.
NVFP4KV_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

/// rn(v / 6) without a division, for every finite v that is a widened bf16 or f16 value other
/// than −0 (the fast kernels' block maxima: ≥ +0, finite — a block holding ±Inf or NaN takes the
/// reference code): q0 = rn(v · (1/6)f), then one correction step q0 + rn(v − 6·q0)·(1/6)f, each
/// rounded once (FFMA). tests/cuda/test_quantize_rounding.cu checks it against fmt::fdiv_rn(v, 6)
/// for all finite bf16 and f16 bit patterns (subnormals included) except −0, which gives +0 here
/// (±Inf give NaN). q0 alone differs from rn(v / 6) on ~42 000 of them. A correctly rounded
/// fp32 division is ~10 instructions plus a slow-path branch; the 4over6 scale rule divides each
/// block max by 6 (SPEC.md §3.2).
NVFP4KV_HD float div6_rn_16bit(float v) {
  const float q0 = fmt::fmul_rn(v, fmt::kOneSixth);
  const float r = fma_rn(-q0, 6.0f, v);
  return fma_rn(r, fmt::kOneSixth, q0);
}

/// kvfmt::e2m1_code_magic(y) for 0 ≤ y < 7 with the cap dropped: there round(y/2) + 4 ≤ 7
/// (y/2 < 3.5), so min(round(2y), round(y) + 2, round(y/2) + 4) is already ≤ 7. Checked against
/// e2m1_code_magic for every float in [0, 7) (tests/cuda/test_quantize_rounding.cu). The 4over6
/// kernel uses it for a block whose max maps below 7 under both candidates (then every element
/// does: rn(|x| · enc) is monotone in |x|), i.e. unless a scale byte is subnormal or saturated.
NVFP4KV_HD float e2m1_code_magic_below7(float y) {
  const float s1 = fmt::fadd_rn(y, 0x1p22f);
  const float s2 = kvfmt::fma_rn(y, 0.5f, 0x1p22f + 1.0f);
  const float s3 = kvfmt::fma_rn(y, 0.25f, 0x1p22f + 2.0f);
#if defined(__CUDA_ARCH__)
  return fminf(fminf(s1, s2), s3);
#else
  return fmt::min_f(fmt::min_f(s1, s2), s3);
#endif
}

/// Bit pattern of e2m1_code_magic_below7(y) for +0 ≤ y < 7 (and any y ≥ +0 without the cap:
/// then the uncapped min), with the two FMNMX replaced by one three-way unsigned minimum — on
/// sm_90 the DPX instruction VIMNMX3.U32 (`__vimin3_u32`). The three sums are positive finite
/// floats for y ≥ +0, and the bit patterns of positive floats order as the floats do, so the
/// integer minimum is the float minimum's pattern (equal sums give equal patterns). Checked
/// against e2m1_code_magic_below7 on every float in [+0, 7) (tests/cuda/test_quantize_rounding.cu,
/// CPU and GPU). The default 4over6 kernel (kDq 4) uses it: two fewer instructions per element,
/// 2% faster on the H100 than the two FMNMX (bench/NOTES.md, quantize v8 run 2).
NVFP4KV_HD uint32_t e2m1_code_magic_below7_bits(float y) {
  const uint32_t s1 = fmt::float_bits(fmt::fadd_rn(y, 0x1p22f));
  const uint32_t s2 = fmt::float_bits(kvfmt::fma_rn(y, 0.5f, 0x1p22f + 1.0f));
  const uint32_t s3 = fmt::float_bits(kvfmt::fma_rn(y, 0.25f, 0x1p22f + 2.0f));
#if defined(__CUDA_ARCH__)
  return __vimin3_u32(s1, s2, s3);
#else
  const uint32_t m = s1 < s2 ? s1 : s2;
  return m < s3 ? m : s3;
#endif
}

/// The three saturated terms whose weighted sum 4·s1 + 2·s2 + s3 is the E2M1 magnitude code of
/// a = |y| (non-NaN; NaN gives 0s), with fp32 FMA-pipe work only (twice the rate of the
/// integer/logic pipe that e2m1_code_by_bits needs). t1, t2, t3 hold 2^23 + k with k = |y|·2,
/// |y|, |y|/2 rounded to nearest-even integers (the ulp of 2^23 is 1, and each product is exact
/// inside the fused operation); then s1 = clamp(k1/4, 0, 1), s2 = clamp(k2/2 − 1, 0, 1),
/// s3 = clamp(k3 − 2, 0, 1) (the 2^23 offsets cancel exactly), so
/// code = min(k1, 4) + clamp(k2 − 2, 0, 2) + clamp(k3 − 2, 0, 1): 2|y| rounded below 2, |y| + 2
/// rounded in [2, 4), 6 in [4, 5] and 7 above (SPEC.md §1; each k ties to even, which is the even
/// code). Large |y| and Inf saturate every term to 1 (code 7).
struct E2m1Terms {
  float s1, s2, s3;
};
NVFP4KV_HD E2m1Terms e2m1_terms(float a) {
  const float t1 = fma_rn(a, 2.0f, 0x1p23f);
  const float t2 = fmt::fadd_rn(a, 0x1p23f);
  const float t3 = fma_rn(a, 0.5f, 0x1p23f);
  return {saturate01(fma_exact(t1, 0.25f, -0x1p21f)), saturate01(fma_exact(t2, 0.5f, -(0x1p22f + 1.0f))),
          saturate01(fmt::fadd_rn(t3, -(0x1p23f + 2.0f)))};
}

/// Magnitude bits (0..7) of fmt::float_to_e2m1(y) as an exact float, from a = |y|, for every
/// non-NaN y (NaN gives 0): 4·s1 + 2·s2 + s3 of e2m1_terms.
NVFP4KV_HD float e2m1_magnitude_code_f(float a) {
  const E2m1Terms t = e2m1_terms(a);
  return fma_exact(t.s1, 4.0f, fma_exact(t.s2, 2.0f, t.s3));
}

/// Eight packed codes fmt::pack of float_to_e2m1(rn(x_i · enc)), element 0 in the low nibble,
/// with the magnitudes summed as exact floats: 2^23 + Σ m_i·16^i over 4 elements stays below
/// 2^24, so its bit pattern minus 0x4B000000 is the 16-bit half-word (one FFMA per term). The
/// sign is y's bit 31. `nonfinite` is set when some y is NaN or ±Inf (rn(y · 0) is then NaN): the
/// caller must then use e2m1_code_by_bits, which gives NaN its code 0x7.
NVFP4KV_HD uint32_t e2m1_pack8_by_fp32(const float (&x)[8], float enc, bool& nonfinite) {
  float acc0 = 0x1p23f, acc1 = 0x1p23f, fin = 0.0f;
  uint32_t signs = 0u;
  for (int i = 0; i < 8; ++i) {
    const float y = fmt::fmul_rn(x[i], enc);
    const E2m1Terms t = e2m1_terms(fmt::abs_f(y));
    const float p = static_cast<float>(1u << (4 * (i & 3)));
    float& acc = i < 4 ? acc0 : acc1;
    acc = fma_exact(t.s3, p, acc);
    acc = fma_exact(t.s2, 2.0f * p, acc);
    acc = fma_exact(t.s1, 4.0f * p, acc);
    signs |= (fmt::float_bits(y) >> 31) << (4 * i + 3);
    fin = fma_rn(y, 0.0f, fin);
  }
  nonfinite = !(fin == 0.0f);
  return ((fmt::float_bits(acc0) - 0x4B000000u) | ((fmt::float_bits(acc1) - 0x4B000000u) << 16)) | signs;
}

/// rn(e2m1(m) · sf) (exact: ≤ 2 × 4 significant bits) from the magic float c = 2^22 + m/2 of
/// kvfmt::e2m1_code_magic, with FMA-pipe work only: (m/2) · sf = c · sf − 2^22 · sf in one FFMA
/// (the product is exact inside it and the result has ≤ 7 bits), then the grid corrections of
/// e2m1_grid_from_magic scaled by sf: + sat(c − 2^22 − 2) · sf + sat(2c − 2^23 − 6) · 1.5 sf.
/// Every intermediate is a small multiple of sf/2, so no step rounds. Checked against
/// fmt::e2m1_to_float(m) · sf for every scale byte and code (test_quantize_rounding). The 4over6
/// error then needs one FMUL by S_dec for rn(rn(e2m1 · sf) · S_dec).
NVFP4KV_HD float e2m1_grid_times_sf_from_magic(float c, float sf) {
  const float tsf = fma_rn(c, sf, -0x1p22f * sf);
  const float sa = saturate01(fmt::fadd_rn(c, -(0x1p22f + 2.0f)));
  const float sb = saturate01(fma_exact(c, 2.0f, -(0x1p23f + 6.0f)));
  return fma_exact(sb, 1.5f * sf, fma_exact(sa, sf, tsf));
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

/// Grid value |q| (0, 0.5, 1, 1.5, 2, 3, 4, 6) of the E2M1 magnitude code held in the magic float
/// c = 2^22 + m/2 that kvfmt::e2m1_code_magic returns, exactly and with FMA-pipe work only:
/// with t = m/2, q = t + sat(t − 2) + 1.5·sat(2t − 6) (the extra terms are 0 up to t = 2, then
/// 0.5, 1, 1 and 0, 0, 1 for t = 2.5, 3, 3.5). Every step is exact (small multiples of 0.5).
NVFP4KV_HD float e2m1_grid_from_magic(float c) {
  const float t = fmt::fadd_rn(c, -0x1p22f);
  const float sa = saturate01(fmt::fadd_rn(c, -(0x1p22f + 2.0f)));
  const float sb = saturate01(fma_exact(c, 2.0f, -(0x1p23f + 6.0f)));
  return fma_exact(sb, 1.5f, fmt::fadd_rn(t, sa));
}

}  // namespace nvfp4kv::cuda
