// nvfp4kv — KV-cache element rules of SPEC.md §5, per 16-element chunk of one (token, head) row,
// shared by the CPU reference (src/ref/kv_cache.cpp) and the kernels (src/cuda/kv/*.cu) so both
// produce the same bits. Only composes the primitives of format.h; no format math of its own.
//
// A chunk is 16 consecutive elements of head_dim: one FP4 block (8 packed bytes + 1 scale byte),
// 16 fp8 bytes or 16 bf16/f16 values.
#pragma once

#include <cstdint>

#include "common/format.h"

// Unrolling hint for the kernels; host compilers ignore it (and would warn on the pragma).
#if defined(__CUDACC__)
#define NVFP4KV_KV_UNROLL _Pragma("unroll")
#else
#define NVFP4KV_KV_UNROLL
#endif

namespace nvfp4kv::kvfmt {

/// Elements per chunk (= FP4 block size of nvfp4 and fp4_block16).
inline constexpr int kChunk = 16;

/// Cache format codes usable in device code (same order as nvfp4kv::KvFormat).
enum Format : int { kBF16 = 0, kF16 = 1, kFP8 = 2, kNvfp4 = 3, kFp4Block16 = 4 };

/// Block choice of the nvfp4 format: plain (§3.1) or 4over6 with MSE / MAE (§3.2).
enum Fp4Mode : int { kModePlain = 0, kModeFourOverSixMse = 1, kModeFourOverSixMae = 2 };

/// 16-bit storage (f16 when `is_f16`, else bf16) → fp32, exact.
NVFP4KV_HD float half_to_float(uint16_t bits, bool is_f16) {
  return is_f16 ? fmt::f16_bits_to_float(bits) : fmt::bf16_bits_to_float(bits);
}

/// fp32 → 16-bit storage, RNE.
NVFP4KV_HD uint16_t float_to_half(float x, bool is_f16) {
  return is_f16 ? fmt::float_to_f16_bits(x) : fmt::float_to_bf16_bits(x);
}

/// Plain-format element: the input bits when the types match, else an RNE conversion (so NaN
/// payloads of same-type copies survive).
NVFP4KV_HD uint16_t plain_element(uint16_t in_bits, bool in_f16, bool cache_f16) {
  if (in_f16 == cache_f16) return in_bits;
  return float_to_half(half_to_float(in_bits, in_f16), cache_f16);
}

/// The one NaN the KV decode produces (f32 0x7FFFFFFF; 0x7FFF once rounded to bf16 or f16), so
/// the CPU and the GPU agree bit for bit: x86 propagates NaN payloads and signs through
/// arithmetic, the GPU returns its own canonical NaN.
NVFP4KV_HD float canonical_nan(float x) { return fmt::is_nan(x) ? fmt::bits_float(0x7FFFFFFFu) : x; }

/// fp8_e4m3 byte of an already divided value q = rn(x / scale); NaN → 0x7F (sign dropped, see
/// canonical_nan). On sm_89+ the hardware conversion (the one SPEC.md §2 names) gives the same
/// RNE/satfinite byte as fmt::float_to_e4m3 for every non-NaN input.
NVFP4KV_HD uint32_t e4m3x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  unsigned short r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  uint32_t v = r;
#else
  uint32_t v = static_cast<uint32_t>(fmt::float_to_e4m3(lo)) | (static_cast<uint32_t>(fmt::float_to_e4m3(hi)) << 8);
#endif
  if (fmt::is_nan(lo)) v = (v & 0xFF00u) | 0x7Fu;
  if (fmt::is_nan(hi)) v = (v & 0x00FFu) | 0x7F00u;
  return v;
}

/// e4m3x2 for inputs that cannot be NaN (e.g. fminf(x, 448), which returns 448 for a NaN x):
/// the same bytes without the NaN fix-ups.
NVFP4KV_HD uint32_t e4m3x2_not_nan(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  unsigned short r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return e4m3x2(lo, hi);
#endif
}

/// fp8_e4m3 element: e4m3(rn(x / scale)) (SPEC.md §5); NaN → 0x7F.
NVFP4KV_HD uint8_t fp8_element(float x, float decode_scale) {
  return static_cast<uint8_t>(e4m3x2(fmt::fdiv_rn(x, decode_scale), 0.0f));
}

/// Two fp32 values → two 16-bit values (lo in the low half), RNE; a NaN input gives 0x7FFF.
/// Meant for values whose NaNs are canonical (canonical_nan): then the software conversion gives
/// 0x7FFF as well, and the device may use the hardware conversion (same RNE rounding).
NVFP4KV_HD uint32_t pack_half2_rn(float lo, float hi, bool f16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  if (f16) {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  }
#else
  uint32_t r = static_cast<uint32_t>(float_to_half(lo, f16)) | (static_cast<uint32_t>(float_to_half(hi, f16)) << 16);
#endif
  if (fmt::is_nan(lo)) r = (r & 0xFFFF0000u) | 0x7FFFu;
  if (fmt::is_nan(hi)) r = (r & 0x0000FFFFu) | 0x7FFF0000u;
  return r;
}

/// Block maximum max |x_i| with NaN ignored (SPEC.md §3.1); exact for widened bf16/f16 inputs.
/// The device uses fmaxf (IEEE maxNum: a NaN operand is ignored, one FMNMX), the same value as
/// fmt::max_f here because every operand is a non-negative |x| and the start is +0.
NVFP4KV_HD float block_amax(const float* x) {
  float v = 0.0f;
NVFP4KV_KV_UNROLL
  for (int i = 0; i < kChunk; ++i) {
#if defined(__CUDA_ARCH__)
    v = fmaxf(v, fabsf(x[i]));
#else
    v = fmt::max_f(v, fmt::abs_f(x[i]));
#endif
  }
  return v;
}

/// Packs 16 E2M1 codes into 8 bytes held as two little-endian words (byte j = c[2j] | c[2j+1]<<4).
NVFP4KV_HD void pack_codes(const uint32_t* codes, uint32_t* words) {
NVFP4KV_KV_UNROLL
  for (int w = 0; w < 2; ++w) {
    uint32_t word = 0;
NVFP4KV_KV_UNROLL
    for (int j = 0; j < 4; ++j) {
      word |= static_cast<uint32_t>(fmt::pack_e2m1(codes[8 * w + 2 * j], codes[8 * w + 2 * j + 1]))
              << (8 * j);
    }
    words[w] = word;
  }
}

/// Per-layer constants of the nvfp4 format derived once from the decode scale.
struct Nvfp4Scales {
  float s_dec;    ///< decode scale as stored (k_scale / v_scale)
  float s_enc;    ///< rn(1 / s_dec), clamped to FLT_MAX (format.h encode_scale_from_decode)
  float sf_mult;  ///< rn(s_enc · (1/6)f) (SPEC.md §3.1)
};

NVFP4KV_HD Nvfp4Scales nvfp4_scales(float s_dec) {
  const float s_enc = fmt::encode_scale_from_decode(s_dec);
  return {s_dec, s_enc, fmt::nvfp4_sf_multiplier(s_enc)};
}

/// One nvfp4 chunk: SPEC.md §3.1 (mode plain) or §3.2 (4over6). Writes 8 packed bytes as two
/// words and returns the E4M3 scale byte.
NVFP4KV_HD uint8_t nvfp4_chunk(const float* x, const Nvfp4Scales& s, int mode, uint32_t* words) {
  const float v = block_amax(x);
  uint32_t codes[kChunk];
  uint8_t sf;
  if (mode == kModePlain) {
    const fmt::BlockScale bs = fmt::nvfp4_block_scale(v, s.sf_mult, s.s_dec);
    sf = bs.sf_byte;
NVFP4KV_KV_UNROLL
    for (int i = 0; i < kChunk; ++i) codes[i] = fmt::float_to_e2m1(fmt::fmul_rn(x[i], bs.encode));
  } else {
    const bool mae = mode == kModeFourOverSixMae;
    const fmt::FourOverSixCandidates cand = fmt::four_over_six_candidates(v, s.s_enc);
    uint32_t codes4[kChunk];
    const float err6 = fmt::four_over_six_candidate_error(x, kChunk, v, cand.sf6, s.s_dec, mae, codes);
    const float err4 = fmt::four_over_six_candidate_error(x, kChunk, v, cand.sf4, s.s_dec, mae, codes4);
    sf = cand.sf6;
    // Ties (and NaN errors) keep the map-to-6 candidate (SPEC.md §3.2).
    if (err4 < err6) {
      sf = cand.sf4;
NVFP4KV_KV_UNROLL
      for (int i = 0; i < kChunk; ++i) codes[i] = codes4[i];
    }
  }
  pack_codes(codes, words);
  return sf;
}

/// One fp4_block16 chunk (SPEC.md §3.4 = §3.3 rule with 16-element blocks): returns the UE8M0
/// byte and writes 8 packed bytes as two words.
NVFP4KV_HD uint8_t fp4_block16_chunk(const float* x, uint32_t* words) {
  const fmt::MxBlockScale bs = fmt::mx_block_scale(block_amax(x));
  uint32_t codes[kChunk];
NVFP4KV_KV_UNROLL
  for (int i = 0; i < kChunk; ++i) codes[i] = fmt::float_to_e2m1(fmt::fmul_rn(x[i], bs.encode));
  pack_codes(codes, words);
  return bs.code;
}

/// rn(a · b + c): the device FFMA; on the host fadd_rn(fmul_rn(a, b), c). Used only where the
/// product is exact (or far below half an ulp of c), where both are the same value.
NVFP4KV_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  // Every caller's product is a power-of-two scaling of a, exact unless it underflows, and an
  // underflowing product is far below half an ulp of c: the unfused form gives the same value.
  return fmt::fadd_rn(fmt::fmul_rn(a, b), c);
#endif
}

/// Fast E2M1 magnitude encode for the kernels: for a = |y| (any float, NaN included) returns the
/// float 2^22 + m/2 whose low mantissa bits are m = fmt::float_to_e2m1(a) & 7 (0..7; NaN → 7),
/// in 6 fp32 instructions instead of 7 comparisons and selects. Same results as the reference
/// for every input (tests/kv/test_kv_fast_codec.cpp checks every float in [1/8, 8], where all
/// rounding boundaries lie, and a dense sample of all others, Inf and NaN):
///   m = min(round(2a), round(a) + 2, round(a/2) + 4, 7), round = ties to even,
/// since E2M1 steps are 0.5 below 2 (codes 0..4), 1 in [2, 4) (codes 4..6) and 2 from 4 (codes
/// 6, 7); each candidate is ≥ the right one outside its own range. Each round(k·a) + o comes
/// from one addition in the binade of 2^22, whose ulp is 0.5: rn(a + 2^22), rn(a·0.5 + 2^22 + 1)
/// and rn(a·0.25 + 2^22 + 2) are 2^22 + {round(2a), round(a) + 2, round(a/2) + 4}/2 (the added
/// 1 and 2 are an even number of ulps, so ties still go to the even code); k·a is a power-of-two
/// scaling, exact (so FFMA on the device, mul + add on the host, give the same value). The three
/// sums are floats of one binade (or larger for huge a), so the float minimum is the integer
/// minimum of the codes; fminf ignores NaN sums, so NaN gives the cap 2^22 + 3.5, code 7.
NVFP4KV_HD float e2m1_code_magic(float a) {
  const float s1 = fmt::fadd_rn(a, 0x1p22f);
  const float s2 = fma_rn(a, 0.5f, 0x1p22f + 1.0f);
  const float s3 = fma_rn(a, 0.25f, 0x1p22f + 2.0f);
#if defined(__CUDA_ARCH__)
  return fminf(fminf(s1, s2), fminf(s3, 0x1p22f + 3.5f));
#else
  return fmt::min_f(fmt::min_f(s1, s2), fmt::min_f(s3, 0x1p22f + 3.5f));
#endif
}

/// fmt::float_to_e2m1(y) & 7 for every y (the magnitude part of the code), via e2m1_code_magic.
NVFP4KV_HD uint32_t e2m1_magnitude_code_fast(float y) {
  return fmt::float_bits(e2m1_code_magic(fmt::abs_f(y))) - 0x4A800000u;
}

/// Nibble `i` (0..15) of a chunk held as two words.
NVFP4KV_HD uint32_t chunk_code(const uint32_t* words, int i) {
  return (words[i >> 3] >> (4 * (i & 7))) & 0xFu;
}

/// Dequantized nvfp4 element: rn(rn(e2m1 · sf) · s_dec) (SPEC.md §3.1), `sf` the decoded E4M3
/// block scale; NaN canonical.
NVFP4KV_HD float nvfp4_value(uint32_t code, float sf, float s_dec) {
  return canonical_nan(fmt::nvfp4_dequant(code, sf, s_dec));
}

/// Dequantized fp4_block16 element: rn(e2m1 · 2^(code − 127)), `scale` = 2^(code − 127)
/// (fmt::ue8m0_to_float); NaN canonical.
NVFP4KV_HD float fp4_block16_value(uint32_t code, float scale) {
  return canonical_nan(fmt::fmul_rn(fmt::e2m1_to_float(code), scale));
}

/// Dequantized fp8 element: rn(e4m3 · scale); NaN canonical.
NVFP4KV_HD float fp8_value(uint8_t byte, float decode_scale) {
  return canonical_nan(fmt::fmul_rn(fmt::e4m3_to_float(byte), decode_scale));
}

}  // namespace nvfp4kv::kvfmt
