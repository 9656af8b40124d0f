// nvfp4kv — register-level exact dequantization of one lane's run of a KV row to bf16x2/f16x2
// fragments (SPEC.md §5), for the decode kernel (decode.cu).
//
// A lane owns head_dim/4 consecutive dims of one token: raw words in memory order (W words).
// Output register e (0 ≤ e < head_dim/8) holds dims (run_pos(e, 0), run_pos(e, 1)) of the run,
// low half first: (2e, 2e+1) in general, (i, i+4) within each 8-dim word for nvfp4. The decode
// kernel relies only on this mapping (it permutes Q and O to match).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/bits.cuh"

namespace nvfp4kv::cuda::attn {

// KvFormat values (kv_cache.h order), usable as template arguments.
inline constexpr int kFmtBF16 = 0, kFmtF16 = 1, kFmtFP8 = 2, kFmtNvfp4 = 3, kFmtFp4Block16 = 4;

template <int FMT>
inline constexpr int kBitsPerElem = FMT <= kFmtF16 ? 16 : (FMT == kFmtFP8 ? 8 : 4);

// Broadcast one block scale to both halves of a 16-bit pair, in the compute type.
template <typename T>
__device__ __forceinline__ uint32_t splat(float s) {
  if constexpr (std::is_same_v<T, __half>) {
    __half2 h = __float2half2_rn(s);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __float2bfloat162_rn(s);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

template <typename T>
__device__ __forceinline__ uint32_t hmul2(uint32_t a, uint32_t b) {
  if constexpr (std::is_same_v<T, __half>) {
    __half2 r = __hmul2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
  } else {
    __nv_bfloat162 r =
        __hmul2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
  }
}

// Block scale byte → value in T, exact: E4M3 (nvfp4) has ≤ 4 significant bits and range
// 2^-9..448, inside both 16-bit types. UE8M0 2^(c−127) (fp4_block16) is exact in bf16 for every
// finite code; in f16 only for c in 103..142 (2^-24..2^15) — outside that range the scale
// rounds (documented in docs/attention.md: fp4_block16 values need |x| < 2^15 under f16).
template <typename T, int FMT>
__device__ __forceinline__ uint32_t block_scale2(uint32_t byte) {
  float s;
  if constexpr (FMT == kFmtNvfp4) {
    s = e4m3_to_float_hw(byte);
  } else {
    s = byte == 255u ? __int_as_float(0x7FC00000) : (byte == 0 ? 0x1p-127f : __int_as_float(byte << 23));
  }
  return splat<T>(s);
}

// Magnitude tables of the 8 E2M1 codes as the high/low bytes of the 16-bit value.
template <typename T>
struct E2m1Table;
template <>
struct E2m1Table<__nv_bfloat16> {
  // 0, 0.5, 1, 1.5, 2, 3, 4, 6 in bf16: 0000 3F00 3F80 3FC0 4000 4040 4080 40C0
  static constexpr uint32_t hi0 = 0x3F3F3F00u, hi1 = 0x40404040u;
  static constexpr uint32_t lo0 = 0xC0800000u, lo1 = 0xC0804000u;
};
template <>
struct E2m1Table<__half> {
  // in f16: 0000 3800 3C00 3E00 4000 4200 4400 4600 (low bytes all zero)
  static constexpr uint32_t hi0 = 0x3E3C3800u, hi1 = 0x46444240u;
};

// 8 E2M1 codes (one word, element 2j in the low nibble of byte j) → 4 pairs, not yet scaled.
// Magnitudes through PRMT byte-table lookups (the sign nibble bit is masked off because PRMT
// reads a selector's bit 3 as "replicate sign"), signs moved to bit 15/31 by PRMT + LOP3.
template <typename T>
__device__ __forceinline__ void e2m1x8(uint32_t w, uint32_t (&r)[4]) {
  const uint32_t idx = w & 0x77777777u;
  const uint32_t idx_hi = idx >> 16;
  const uint32_t w4 = w << 4;
  if constexpr (std::is_same_v<T, __half>) {
    const uint32_t a = prmt(E2m1Table<T>::hi0, E2m1Table<T>::hi1, idx);
    const uint32_t b = prmt(E2m1Table<T>::hi0, E2m1Table<T>::hi1, idx_hi);
    r[0] = prmt(a, 0u, 0x1404u);
    r[1] = prmt(a, 0u, 0x3424u);
    r[2] = prmt(b, 0u, 0x1404u);
    r[3] = prmt(b, 0u, 0x3424u);
  } else {
    const uint32_t ha = prmt(E2m1Table<T>::hi0, E2m1Table<T>::hi1, idx);
    const uint32_t la = prmt(E2m1Table<T>::lo0, E2m1Table<T>::lo1, idx);
    const uint32_t hb = prmt(E2m1Table<T>::hi0, E2m1Table<T>::hi1, idx_hi);
    const uint32_t lb = prmt(E2m1Table<T>::lo0, E2m1Table<T>::lo1, idx_hi);
    r[0] = prmt(la, ha, 0x5140u);
    r[1] = prmt(la, ha, 0x7362u);
    r[2] = prmt(lb, hb, 0x5140u);
    r[3] = prmt(lb, hb, 0x7362u);
  }
  // Sign of element 2i → bit 15 and of 2i+1 → bit 31 of r[i]: byte 1 from (w << 4) (whose
  // byte k bit 7 is w's bit 8k+3, the even element's sign), byte 3 from w (bit 8k+7).
  r[0] |= prmt(w4, w, 0x4000u) & 0x80008000u;
  r[1] |= prmt(w4, w, 0x5010u) & 0x80008000u;
  r[2] |= prmt(w4, w, 0x6020u) & 0x80008000u;
  r[3] |= prmt(w4, w, 0x7030u) & 0x80008000u;
}

// ---- nvfp4 fast path: exponent-field dequantization ------------------------------------------
// Register e of a lane's run holds dims (pos(e, 0), pos(e, 1)) of the run; the decode kernel
// permutes Q and O by the same map (an mma's k index, and P·V's n index, are free relabellings).
// The generic path pairs neighbours (2e, 2e+1); the nvfp4 path pairs (i, i + 4) inside each
// 8-dim word, so that one integer multiply lines up both codes of a pair at once.
template <int FMT>
inline constexpr bool kExpTrick = FMT == kFmtNvfp4;

template <int FMT>
__host__ __device__ constexpr int run_pos(int e, int c) {
  if constexpr (kExpTrick<FMT>) return 8 * (e / 4) + (e % 4) + 4 * c;
  else return 2 * e + c;
}

// Dequantized nvfp4 values are x̂ · 2^-kExpShift: the power of two is folded into the logit scale
// (K) and the output scale (V) by the kernel.
template <typename T>
inline constexpr int kExpShift = std::is_same_v<T, __half> ? 14 : 62;

// The bits (m << 6) | (s << 15) of a code with magnitude bits m (3) and sign s are, read as a
// bf16, exactly e2m1 · 2^-126 (m = 1 gives the subnormal 2^-127 = 0.5 · 2^-126; m = 2..7 put the
// E2M1 exponent into the bf16 exponent field and its mantissa bit into the mantissa MSB). In f16
// the bits (m << 9) | (s << 15) are e2m1 · 2^-14. One HMUL2 by the block scale (bf16: sf · 2^64;
// f16: sf) then gives e2m1 · sf · 2^-62 (bf16: 2^-72 … 2^-50, normal, ≤ 6 significant bits) or
// e2m1 · sf · 2^-14 (f16: a multiple of 2^-24 below 0.17, ≤ 6 significant bits): exact either
// way. Neither mul.rn.bf16x2 nor mul.rn.f16x2 flushes subnormal inputs (no .ftz on sm_90).
//
// bf16, pair i of word w (codes at nibbles i and i + 4): t = code bits at 4i and 4i + 16;
// t · (2^(6−4i) + 2^(12−4i)) puts (code << 6) and (code << 12) side by side without overlap, and
// the mask keeps the magnitude of the first and the sign of the second. i = 2, 3 use w >> 8.
template <typename T>
__device__ __forceinline__ void e2m1x8_exp(uint32_t w, uint32_t (&r)[4]) {
  const uint32_t w2 = w >> 8;
  if constexpr (std::is_same_v<T, __half>) {
    // f16: (c + 7·(c & 8)) = m + 64 s, shifted to bit 9: m << 9 | s << 15.
    const uint32_t t0 = w & 0x000F000Fu, t1 = w & 0x00F000F0u, t2 = w2 & 0x000F000Fu, t3 = w2 & 0x00F000F0u;
    r[0] = (t0 + 7u * (t0 & 0x00080008u)) << 9;
    r[1] = (t1 + 7u * (t1 & 0x00800080u)) << 5;
    r[2] = (t2 + 7u * (t2 & 0x00080008u)) << 9;
    r[3] = (t3 + 7u * (t3 & 0x00800080u)) << 5;
  } else {
    r[0] = ((w & 0x000F000Fu) * 0x1040u) & 0x81C081C0u;
    r[1] = ((w & 0x00F000F0u) * 0x0104u) & 0x81C081C0u;
    r[2] = ((w2 & 0x000F000Fu) * 0x1040u) & 0x81C081C0u;
    r[3] = ((w2 & 0x00F000F0u) * 0x0104u) & 0x81C081C0u;
  }
}

// Two E4M3 block-scale bytes (low two bytes of `b2`) → the two splatted multipliers of
// e2m1x8_exp: bf16 (sf · 2^64) or f16 (sf), exact (E4M3 has ≤ 4 significant bits, 2^-9 … 448).
template <typename T>
__device__ __forceinline__ void scale_pair_exp(uint32_t b2, uint32_t& s0, uint32_t& s1) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(b2 & 0xFFFFu), __NV_E4M3);
  const uint32_t hh = static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  if constexpr (std::is_same_v<T, __half>) {
    s0 = prmt(hh, 0u, 0x1010u);
    s1 = prmt(hh, 0u, 0x3232u);
  } else {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&hh));
    s0 = splat<T>(f.x * 0x1p64f);
    s1 = splat<T>(f.y * 0x1p64f);
  }
}

// Two E4M3 block-scale bytes of two tokens (byte 0: token A, byte 1: token B) → one multiplier
// pair (sf_A, sf_B) for e2m1x8_exp's (token A, token B) pairs: bf16 (sf · 2^64) or f16 (sf),
// exact as in scale_pair_exp. Used by the decode kernel's narrow tile (V paired across tokens).
template <typename T>
__device__ __forceinline__ uint32_t scale_pair_mixed_exp(uint32_t b2) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(b2 & 0xFFFFu), __NV_E4M3);
  const uint32_t hh = static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  if constexpr (std::is_same_v<T, __half>) {
    return hh;
  } else {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&hh));
    __nv_bfloat162 r = __floats2bfloat162_rn(f.x * 0x1p64f, f.y * 0x1p64f);
    return *reinterpret_cast<uint32_t*>(&r);
  }
}

// Two E4M3 bytes (low half of `b2`: value A in byte 0, B in byte 1) → the pair (A, B) in T,
// exact (E4M3 has ≤ 4 significant bits and range 2^-9 … 448, inside both 16-bit types).
template <typename T>
__device__ __forceinline__ uint32_t fp8x2_pair(uint32_t b2) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(b2 & 0xFFFFu), __NV_E4M3);
  if constexpr (std::is_same_v<T, __half>) {
    return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  } else {
    const float2 f = __half22float2(__half2(h));
    __nv_bfloat162 b = __float22bfloat162_rn(f);
    return *reinterpret_cast<uint32_t*>(&b);
  }
}

// One lane's run of one token: raw words (memory order) + its block-scale bytes → D/8 pairs.
template <typename T, int FMT, int D>
__device__ __forceinline__ void dequant_run(const uint32_t* raw, uint32_t scales, uint32_t* out) {
  constexpr int kPairs = D / 8;
  if constexpr (FMT == kFmtBF16 || FMT == kFmtF16) {
#pragma unroll
    for (int e = 0; e < kPairs; ++e) out[e] = raw[e];
  } else if constexpr (FMT == kFmtFP8) {
#pragma unroll
    for (int w = 0; w < kPairs / 2; ++w) {
#pragma unroll
      for (int h = 0; h < 2; ++h) out[2 * w + h] = fp8x2_pair<T>(raw[w] >> (16 * h));
    }
  } else if constexpr (kExpTrick<FMT>) {
    // 16 dims per scale block = 8 pairs = 2 words; the lane's run has D/64 blocks.
#pragma unroll
    for (int blk2 = 0; blk2 < (kPairs / 8 + 1) / 2; ++blk2) {
      uint32_t s2[2];
      scale_pair_exp<T>(scales >> (16 * blk2), s2[0], s2[1]);
#pragma unroll
      for (int bb = 0; bb < 2; ++bb) {
        const int blk = 2 * blk2 + bb;
        if (blk < kPairs / 8) {
#pragma unroll
          for (int w = 0; w < 2; ++w) {
            uint32_t r[4];
            e2m1x8_exp<T>(raw[2 * blk + w], r);
#pragma unroll
            for (int i = 0; i < 4; ++i) out[8 * blk + 4 * w + i] = hmul2<T>(r[i], s2[bb]);
          }
        }
      }
    }
  } else {
    // 16 dims per scale block = 8 pairs = 2 words.
#pragma unroll
    for (int blk = 0; blk < kPairs / 8; ++blk) {
      const uint32_t s2 = block_scale2<T, FMT>((scales >> (8 * blk)) & 0xFFu);
#pragma unroll
      for (int w = 0; w < 2; ++w) {
        uint32_t r[4];
        e2m1x8<T>(raw[2 * blk + w], r);
#pragma unroll
        for (int i = 0; i < 4; ++i) out[8 * blk + 4 * w + i] = hmul2<T>(r[i], s2);
      }
    }
  }
}

}  // namespace nvfp4kv::cuda::attn
