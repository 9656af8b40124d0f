// nvfp4kv — the number formats of SPEC.md, written once and shared by the CPU reference and the
// CUDA kernels (every function is __host__ __device__).
//
// Every fp32 operation that SPEC.md writes as rn(·) goes through fmul_rn/fadd_rn/fdiv_rn below:
// on the device these are the __f*_rn intrinsics, which nvcc never contracts into an FMA; on the
// host the translation units are compiled with -ffp-contract=off (CMakeLists.txt), so a plain
// operator is one correctly rounded IEEE operation.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NVFP4KV_HD __host__ __device__ __forceinline__
#else
#define NVFP4KV_HD inline
#endif

namespace nvfp4kv::fmt {

inline constexpr float kFltMax = 3.40282346638528859812e+38f;
/// (1/6)f as SPEC.md §3.1 writes it: 0x1.555556p-3 (0x3E2AAAAB).
inline constexpr float kOneSixth = 0x1.555556p-3f;
/// Largest finite E4M3 value.
inline constexpr float kE4m3Max = 448.0f;
/// Global encode numerators: 448·6 (nvfp4) and 256·6 (nvfp4_4over6), SPEC.md §3.1/§3.2.
inline constexpr float kNvfp4GlobalNumerator = 2688.0f;
inline constexpr float kFourOverSixGlobalNumerator = 1536.0f;

// ---------------------------------------------------------------------------------------------
// Bit casts and correctly rounded fp32 operations.

NVFP4KV_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

NVFP4KV_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

NVFP4KV_HD float fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

NVFP4KV_HD float fadd_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

NVFP4KV_HD float fsub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

NVFP4KV_HD float fdiv_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

/// rn(1 / x): on the device __frcp_rn, the IEEE reciprocal with round-to-nearest-even, which is
/// the same correctly rounded value as __fdiv_rn(1, x) (denormals included) in fewer
/// instructions; on the host one division.
NVFP4KV_HD float frcp_rn(float x) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(x);
#else
  return 1.0f / x;
#endif
}

NVFP4KV_HD bool is_nan(float x) { return (float_bits(x) & 0x7FFFFFFFu) > 0x7F800000u; }
NVFP4KV_HD float abs_f(float x) { return bits_float(float_bits(x) & 0x7FFFFFFFu); }
/// min that returns `a` when `b` is NaN and vice versa (IEEE minNum, as fminf).
NVFP4KV_HD float min_f(float a, float b) {
  if (is_nan(a)) return b;
  if (is_nan(b)) return a;
  return b < a ? b : a;
}
/// max ignoring NaN (as fmaxf / __hmax2): the block and tensor amax of SPEC.md §3.1.
NVFP4KV_HD float max_f(float a, float b) {
  if (is_nan(a)) return b;
  if (is_nan(b)) return a;
  return b > a ? b : a;
}

/// Exact 2^e for e in [-149, 127] (subnormal results included).
NVFP4KV_HD float exp2i(int e) {
  if (e >= -126) return bits_float(static_cast<uint32_t>(e + 127) << 23);
  return bits_float(1u << (e + 149));
}

// ---------------------------------------------------------------------------------------------
// 16-bit float storage formats (exact widening, RNE narrowing), so the reference needs no
// compiler support for _Float16 / __bf16.

NVFP4KV_HD float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_float(sign | 0x7F800000u | (man << 13));
  if (exp == 0) {
    // Subnormal: man · 2^-24, exact in fp32.
    const float mag = static_cast<float>(man) * exp2i(-24);
    return bits_float(sign | float_bits(mag));
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

NVFP4KV_HD uint16_t float_to_f16_bits(float x) {
  const uint32_t u = float_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x1FFu));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // ≥ 65520 rounds to Inf
  if (a < 0x38800000u) {
    // Result is subnormal (or zero) in f16: round a / 2^-24 to an integer, ties to even.
    const uint32_t exp = a >> 23;
    if (exp < 102) return sign;  // below 2^-25: rounds to 0
    const uint32_t man = (a & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // value = man · 2^(exp-150); units of 2^-24
    uint32_t q = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 → 15 (in the fp32 field position)
  const uint32_t rem = r & 0x1FFFu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

NVFP4KV_HD float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

NVFP4KV_HD uint16_t float_to_bf16_bits(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

// ---------------------------------------------------------------------------------------------
// E2M1 (SPEC.md §1).

/// Magnitudes of the 8 E2M1 codes.
NVFP4KV_HD float e2m1_magnitude(uint32_t m) {
  // 0, 0.5, 1, 1.5, 2, 3, 4, 6 — m in 0..7. Built from bits (no int→float conversion, which is
  // slow on the GPU): m ≥ 2 is 2^((m>>1)−1) · (1 + (m&1)/2), i.e. exponent field (m>>1) + 126
  // and the top mantissa bit m&1; m = 1 is 0.5 (0x3F000000), m = 0 is +0.
  const uint32_t normal = (((m >> 1) + 126u) << 23) | ((m & 1u) << 22);
  return bits_float(m >= 2u ? normal : m * 0x3F000000u);
}

/// E2M1 code (4 bits) → value; code 0x8 is −0.0.
NVFP4KV_HD float e2m1_to_float(uint32_t code) {
  const float mag = e2m1_magnitude(code & 7u);
  return bits_float(float_bits(mag) | ((code & 8u) << 28));
}

/// fp32 → E2M1 code with the rules of cvt.rn.satfinite.e2m1x2.f32: round to nearest, ties to
/// even; |x| > 6 and ±Inf saturate; negative values keep the sign bit even when they round to
/// zero (−0.0 → 0x8); NaN → 0x7.
NVFP4KV_HD uint32_t float_to_e2m1(float x) {
  const uint32_t u = float_bits(x);
  const float a = bits_float(u & 0x7FFFFFFFu);
  if (is_nan(x)) return 0x7u;
  // Each comparison is one rounding boundary; '>' where the tie goes down to the even code,
  // '>=' where it goes up to the even code.
  const uint32_t m = static_cast<uint32_t>(a > 0.25f) + static_cast<uint32_t>(a >= 0.75f) +
                     static_cast<uint32_t>(a > 1.25f) + static_cast<uint32_t>(a >= 1.75f) +
                     static_cast<uint32_t>(a > 2.5f) + static_cast<uint32_t>(a >= 3.5f) +
                     static_cast<uint32_t>(a > 5.0f);
  return ((u >> 28) & 8u) | m;
}

/// Two codes in one byte, the even element in the low nibble (SPEC.md §1).
NVFP4KV_HD uint8_t pack_e2m1(uint32_t even_code, uint32_t odd_code) {
  return static_cast<uint8_t>((even_code & 0xFu) | ((odd_code & 0xFu) << 4));
}

// ---------------------------------------------------------------------------------------------
// E4M3 and UE8M0 (SPEC.md §2).

/// fp32 → E4M3 byte: RNE, saturating to ±448 (Inf too), NaN → 0x7F (sign kept).
NVFP4KV_HD uint8_t float_to_e4m3(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  if (is_nan(x)) return static_cast<uint8_t>(0x7Fu | sign);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a >= 0x43E00000u) return static_cast<uint8_t>(0x7Eu | sign);  // |x| ≥ 448
  if (a < 0x3C800000u) {
    // |x| < 2^-6: subnormal E4M3, units of 2^-9. Round |x|·2^9 to an integer, ties to even.
    const uint32_t exp = a >> 23;
    if (exp < 116) return static_cast<uint8_t>(sign);  // |x| < 2^-11 rounds to 0
    const uint32_t man = (a & 0x7FFFFFu) | 0x800000u;  // value = man · 2^(exp-150)
    const uint32_t shift = 141 - exp;                  // into units of 2^-9
    uint32_t q = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint8_t>(sign | q);  // q == 8 is the smallest normal, 0x08
  }
  // Normal: keep 3 mantissa bits, RNE; a carry into the exponent is what integer addition does.
  uint32_t r = a - (120u << 23);  // rebias 127 → 7
  const uint32_t rem = r & 0xFFFFFu;
  r >>= 20;
  if (rem > 0x80000u || (rem == 0x80000u && (r & 1u))) ++r;
  if (r > 0x7Eu) r = 0x7Eu;
  return static_cast<uint8_t>(sign | r);
}

/// E4M3 byte → fp32 (exact); 0x7F/0xFF → NaN.
NVFP4KV_HD float e4m3_to_float(uint32_t byte) {
  const uint32_t sign = (byte & 0x80u) << 24;
  const uint32_t e = (byte >> 3) & 0xFu;
  const uint32_t m = byte & 7u;
  if (e == 0xFu && m == 7u) return bits_float(sign | 0x7FC00000u);
  if (e == 0) return bits_float(sign | float_bits(static_cast<float>(m) * exp2i(-9)));
  return bits_float(sign | ((e + 120u) << 23) | (m << 20));
}

/// UE8M0 of the smallest power of two ≥ v: clamp(ceil(log2 v) + 127, 0, 254); 0 → 0; NaN → 255.
/// v is a block maximum, so v ≥ 0.
NVFP4KV_HD uint8_t ue8m0_up(float v) {
  if (is_nan(v)) return 255;
  const uint32_t a = float_bits(v) & 0x7FFFFFFFu;
  if (a == 0) return 0;
  if (a >= 0x7F800000u) return 254;
  const uint32_t e = a >> 23;
  const uint32_t man = a & 0x7FFFFFu;
  if (e == 0) {
    // Subnormal v = man · 2^-149 < 2^-126: ceil(log2 v) is -126 (code 1) for v in
    // (2^-127, 2^-126) and ≤ -127 (code 0 after the clamp) for v ≤ 2^-127 = man 0x400000.
    return man > 0x400000u ? 1 : 0;
  }
  // Normal v = 1.man · 2^(e-127): ceil(log2 v) = e - 127, plus 1 unless v is a power of two.
  const uint32_t code = e + (man != 0 ? 1u : 0u);
  return static_cast<uint8_t>(code > 254u ? 254u : code);
}

/// UE8M0 byte → 2^(code−127) (exact, 2^-127 is subnormal); 255 → NaN.
NVFP4KV_HD float ue8m0_to_float(uint32_t code) {
  if (code == 255u) return bits_float(0x7FC00000u);
  return exp2i(static_cast<int>(code) - 127);
}

// ---------------------------------------------------------------------------------------------
// Recipe scale rules (SPEC.md §3).

/// Global encode scale from an amax: amax == 0 → 1; min(rn(numerator / amax), FLT_MAX); 0 → 1.
NVFP4KV_HD float global_encode_scale(float amax, float numerator) {
  if (amax == 0.0f) return 1.0f;
  float s = min_f(fdiv_rn(numerator, amax), kFltMax);
  if (s == 0.0f) s = 1.0f;
  return s;
}

/// rn(1 / s): decode scale from encode scale and back (SPEC.md §3.1).
NVFP4KV_HD float reciprocal_rn(float s) { return frcp_rn(s); }

/// Encode scale from a caller-given decode scale (GlobalScaleMode::kGiven): rn(1 / S_dec),
/// clamped to FLT_MAX like the computed scale. The clamp only matters for S_dec < ~2.9e-39
/// (subnormal), where rn(1 / S_dec) is +Inf and an all-zero block would otherwise get
/// sf_hp = rn(0 · Inf) = NaN and store the NaN scale byte 0x7F.
NVFP4KV_HD float encode_scale_from_decode(float s_dec) {
  return min_f(frcp_rn(s_dec), kFltMax);
}

/// Per-element encode multiplier for a block with stored scale value `sf` (decoded):
/// v == 0 ? 0 : min(rn(1 / rn(sf · S_dec)), FLT_MAX).
NVFP4KV_HD float nvfp4_element_encode(float block_amax, float sf, float s_dec) {
  if (block_amax == 0.0f) return 0.0f;
  return min_f(frcp_rn(fmul_rn(sf, s_dec)), kFltMax);
}

/// The nvfp4 block scale: stored E4M3 byte and per-element encode multiplier.
struct BlockScale {
  uint8_t sf_byte;  ///< stored scale byte
  float encode;     ///< multiplier applied to every element before float_to_e2m1
};

/// rn(S_enc · (1/6)f): computed once per tensor (or row) and reused by every block.
NVFP4KV_HD float nvfp4_sf_multiplier(float s_enc) { return fmul_rn(s_enc, kOneSixth); }

/// SPEC.md §3.1: sf = e4m3(rn(v · rn(S_enc · (1/6)f))); enc as nvfp4_element_encode.
NVFP4KV_HD BlockScale nvfp4_block_scale(float block_amax, float sf_multiplier, float s_dec) {
  const uint8_t sf = float_to_e4m3(fmul_rn(block_amax, sf_multiplier));
  return {sf, nvfp4_element_encode(block_amax, e4m3_to_float(sf), s_dec)};
}

/// SPEC.md §3.1 dequantization of one element: rn(rn(e2m1 · sf) · S_dec).
NVFP4KV_HD float nvfp4_dequant(uint32_t code, float sf, float s_dec) {
  return fmul_rn(fmul_rn(e2m1_to_float(code), sf), s_dec);
}

/// The two "Four Over Six" candidate scale bytes of a block (SPEC.md §3.2).
struct FourOverSixCandidates {
  uint8_t sf6;  ///< block max mapped to 6
  uint8_t sf4;  ///< block max mapped to 4
};

NVFP4KV_HD FourOverSixCandidates four_over_six_candidates(float block_amax, float s_enc) {
  const float base = fmul_rn(fdiv_rn(block_amax, 6.0f), s_enc);
  return {float_to_e4m3(min_f(base, kE4m3Max)), float_to_e4m3(min_f(fmul_rn(base, 1.5f), kE4m3Max))};
}

/// Error of quantizing `n` values with scale byte `sf_byte`; codes are written to `codes`.
/// MSE: Σ rn(d·d); MAE: Σ |d|; summed in element order (SPEC.md §3.2).
NVFP4KV_HD float four_over_six_candidate_error(const float* x, int n, float block_amax,
                                               uint8_t sf_byte, float s_dec, bool mae,
                                               uint32_t* codes) {
  const float sf = e4m3_to_float(sf_byte);
  const float enc = nvfp4_element_encode(block_amax, sf, s_dec);
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const uint32_t c = float_to_e2m1(fmul_rn(x[i], enc));
    codes[i] = c;
    const float d = fsub_rn(nvfp4_dequant(c, sf, s_dec), x[i]);
    err = fadd_rn(err, mae ? abs_f(d) : fmul_rn(d, d));
  }
  return err;
}

/// SPEC.md §3.3: v6 = rn(v · (1/6)f); code = ue8m0_up(v6); enc = v6 == 0 ? 0 :
/// (code == 0 ? 1 : 2^(127 − code)).
struct MxBlockScale {
  uint8_t code;  ///< stored UE8M0 byte
  float encode;  ///< multiplier applied to every element before float_to_e2m1
};

NVFP4KV_HD MxBlockScale mx_block_scale(float block_amax) {
  const float v6 = fmul_rn(block_amax, kOneSixth);
  const uint8_t code = ue8m0_up(v6);
  float enc = 0.0f;
  if (v6 != 0.0f) enc = (code == 0) ? 1.0f : (code == 255 ? 0.0f : exp2i(127 - static_cast<int>(code)));
  return {code, enc};
}

/// SPEC.md §3.3 dequantization: rn(e2m1 · 2^(code − 127)).
NVFP4KV_HD float mx_dequant(uint32_t code, uint32_t scale_code) {
  return fmul_rn(e2m1_to_float(code), ue8m0_to_float(scale_code));
}

// ---------------------------------------------------------------------------------------------
// Scale-factor layouts (SPEC.md §4). `m` row, `k` scale column, `rows` = M, `kv` = K / block.

NVFP4KV_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Padded rows and columns of one matrix's scales. layout: 0 linear, 1 128x4, 2 8x4.
NVFP4KV_HD int64_t sf_padded_rows(int layout, int64_t rows) {
  return layout == 0 ? rows : ceil_div(rows, layout == 1 ? 128 : 8) * (layout == 1 ? 128 : 8);
}
NVFP4KV_HD int64_t sf_padded_cols(int layout, int64_t kv) {
  return layout == 0 ? kv : ceil_div(kv, 4) * 4;
}

/// Byte offset of scale (m, k) within one matrix of the layout.
NVFP4KV_HD int64_t sf_offset(int layout, int64_t m, int64_t k, int64_t kv) {
  if (layout == 0) return m * kv + k;
  const int64_t kt = ceil_div(kv, 4);
  if (layout == 1) {
    return (m / 128) * kt * 512 + (k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + k % 4;
  }
  return (m / 8) * kt * 32 + (k / 4) * 32 + (m % 8) * 4 + k % 4;
}

/// sf_offset as one branch-free formula over per-layout constants, for kernels that should not
/// switch on the layout per scale byte (the quantize block kernel): offset(m, k) =
/// (m >> row_shift) · row_tile_bytes + ((m & row_mask) << row_lshift) + (((m >> 5) & quad_mask) << 2)
/// + (k >> 2) · col_tile_bytes + (k & 3). Equal to sf_offset wherever the offset fits 32 bits
/// (tests/format/layout_test.cpp checks it against sf_offset for every layout).
struct SfOffsetTerms {
  uint32_t row_shift = 0, row_tile_bytes = 0, row_mask = 0, row_lshift = 0, quad_mask = 0, col_tile_bytes = 4;
};

/// The constants of layout 0 (linear), 1 (128x4) or 2 (8x4) for `kv` scale columns.
NVFP4KV_HD SfOffsetTerms sf_offset_terms(int layout, int64_t kv) {
  const uint32_t kt = static_cast<uint32_t>(ceil_div(kv, 4));
  SfOffsetTerms t;
  if (layout == 1) {
    t.row_shift = 7, t.row_tile_bytes = kt * 512u, t.row_mask = 31, t.row_lshift = 4, t.quad_mask = 3;
    t.col_tile_bytes = 512;
  } else if (layout == 2) {
    t.row_shift = 3, t.row_tile_bytes = kt * 32u, t.row_mask = 7, t.row_lshift = 2, t.quad_mask = 0;
    t.col_tile_bytes = 32;
  } else {
    t.row_tile_bytes = static_cast<uint32_t>(kv);
  }
  return t;
}

/// sf_offset(layout, m, k, kv) from sf_offset_terms(layout, kv).
NVFP4KV_HD uint32_t sf_offset_by_terms(const SfOffsetTerms& t, uint32_t m, uint32_t k) {
  return (m >> t.row_shift) * t.row_tile_bytes + ((m & t.row_mask) << t.row_lshift) + (((m >> 5) & t.quad_mask) << 2) +
         (k >> 2) * t.col_tile_bytes + (k & 3u);
}

}  // namespace nvfp4kv::fmt
