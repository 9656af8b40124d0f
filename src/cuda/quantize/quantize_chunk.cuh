// nvfp4kv — device code shared by the quantize kernels (quantize.cu, quantize_per_row.cu,
// amax.cu): loading 64-element chunks of a row in any input type, and quantizing one chunk into
// packed codes and scale bytes with the SPEC.md §3 arithmetic of src/common/format.h.
//
// A chunk is 4 sub-blocks of 16 elements: 4 nvfp4 / fp4_block16 blocks or 2 mxfp4 blocks, whose
// scale bytes are consecutive in every layout (SPEC.md §4: k % 4 is the fastest index), so one
// thread issues all its loads up front (16-byte vectors when the row allows), then writes its
// codes with two 16-byte stores and its scale bytes with one 4- (or 2-) byte store.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "common/format.h"
#include "cuda/common/bits.cuh"
#include "cuda/quantize/e2m1_rounding.h"
#include "cuda/quantize/quantize_params.h"

namespace nvfp4kv::cuda::detail {

namespace fmt = nvfp4kv::fmt;

/// Storage of one input element type: 32-bit words per 16-element sub-block and widening.
template <QuantInput I> struct InputTraits;
template <> struct InputTraits<QuantInput::kF32> { static constexpr int kBytes = 4; };
template <> struct InputTraits<QuantInput::kF16> { static constexpr int kBytes = 2; };
template <> struct InputTraits<QuantInput::kBF16> { static constexpr int kBytes = 2; };
template <> struct InputTraits<QuantInput::kFP8E4M3> { static constexpr int kBytes = 1; };

/// 32-bit words holding one 16-element sub-block.
template <QuantInput I> inline constexpr int kWordsPerSub = 16 * InputTraits<I>::kBytes / 4;

/// Raw bits of a 64-element chunk, kept packed until use (fewer registers than 64 floats).
template <QuantInput I> struct ChunkBits {
  uint32_t w[4][kWordsPerSub<I>];
};

/// Exact widening of element `i` (compile-time) of sub-block words `w` to fp32. Hardware
/// conversions are exact for f16 and E4M3 (both fit f16/f32), and NaN stays NaN, which is all
/// the recipes look at (a NaN element gives code 0x7 whatever its payload).
template <QuantInput I>
__device__ __forceinline__ float element(const uint32_t* w, int i) {
  if constexpr (I == QuantInput::kF32) {
    return __uint_as_float(w[i]);
  } else if constexpr (I == QuantInput::kBF16) {
    const uint32_t x = w[i >> 1];
    return __uint_as_float((i & 1) ? (x & 0xFFFF0000u) : (x << 16));
  } else if constexpr (I == QuantInput::kF16) {
    const uint32_t x = w[i >> 1];
    return __half2float(__ushort_as_half(static_cast<unsigned short>((i & 1) ? (x >> 16) : (x & 0xFFFFu))));
  } else {
    return e4m3_to_float_hw(w[i >> 2] >> (8 * (i & 3)));
  }
}

/// Loads sub-block `s` (16 elements at `src`) into `w`: 16-byte vectors when `vec16`, else one
/// element at a time (rows with odd strides or misaligned bases).
template <QuantInput I>
__device__ __forceinline__ void load_sub(const uint8_t* src, bool vec16, uint32_t* w) {
  constexpr int kWords = kWordsPerSub<I>;
  if (vec16) {
#pragma unroll
    for (int v = 0; v < kWords / 4; ++v) {
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(src) + v);
      w[4 * v + 0] = q.x;
      w[4 * v + 1] = q.y;
      w[4 * v + 2] = q.z;
      w[4 * v + 3] = q.w;
    }
  } else {
    constexpr int kB = InputTraits<I>::kBytes;
#pragma unroll
    for (int j = 0; j < kWords; ++j) {
      uint32_t word = 0;
      if constexpr (kB == 4) {
        word = __ldg(reinterpret_cast<const uint32_t*>(src) + j);
      } else if constexpr (kB == 2) {
        const auto* p = reinterpret_cast<const unsigned short*>(src) + 2 * j;
        word = static_cast<uint32_t>(__ldg(p)) | (static_cast<uint32_t>(__ldg(p + 1)) << 16);
      } else {
        const auto* p = reinterpret_cast<const unsigned char*>(src) + 4 * j;
#pragma unroll
        for (int b = 0; b < 4; ++b) word |= static_cast<uint32_t>(__ldg(p + b)) << (8 * b);
      }
      w[j] = word;
    }
  }
}

/// Loads the valid sub-blocks of chunk `c` of a row (`valid_subs` of 4; the rest are zeroed so
/// the unrolled code below never reads uninitialised registers).
template <QuantInput I>
__device__ __forceinline__ void load_chunk(const uint8_t* row, int64_t c, int valid_subs, bool vec16,
                                           ChunkBits<I>& bits) {
  constexpr int kSubBytes = 16 * InputTraits<I>::kBytes;
  const uint8_t* base = row + c * 4 * kSubBytes;
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    if (s < valid_subs) {
      load_sub<I>(base + s * kSubBytes, vec16, bits.w[s]);
    } else {
#pragma unroll
      for (int j = 0; j < kWordsPerSub<I>; ++j) bits.w[s][j] = 0u;
    }
  }
}

/// 16-byte pieces of one chunk, and the shared-memory staging area a warp needs (bytes).
template <QuantInput I> inline constexpr int kPiecesPerChunk = 4 * kWordsPerSub<I> / 4;
template <QuantInput I> inline constexpr int kWarpStageBytes = 32 * kPiecesPerChunk<I> * 16;

/// Swizzled slot of piece `s` of lane `t`'s row in a warp's staging area: rows are 128 or 256
/// bytes, so without the XOR the 8 lanes of a quarter-warp reading piece s of their own rows
/// would hit the same banks.
template <int P>
__device__ __forceinline__ int stage_slot(int t, int s) {
  return t * P + (s ^ (t & ((P < 8 ? P : 8) - 1)));
}

/// Warp-cooperative load of every lane's chunk (all 32 lanes must call it). A per-lane loop
/// over its own 128 contiguous bytes makes each 16-byte load instruction touch 32 different
/// lines; here instruction j loads whole lines of P / 32-lane-groups of consecutive chunks
/// (lanes take the chunk address of their owner by shuffle), stages them in shared memory and
/// each lane then reads back its own chunk. `src` is the lane's chunk (any value when
/// `valid_subs` is 0); sub-blocks at or past `valid_subs` read as zero.
template <QuantInput I>
__device__ __forceinline__ void load_chunk_warp(const uint8_t* src, int valid_subs, uint4* stage,
                                                ChunkBits<I>& bits) {
  constexpr int P = kPiecesPerChunk<I>;
  constexpr int kPiecesPerSub = P / 4;
  constexpr int kOwnersPerLoad = 32 / P;
  const int lane = threadIdx.x & 31;
  const unsigned long long addr = reinterpret_cast<unsigned long long>(src);
  uint4 tmp[P];
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int owner = j * kOwnersPerLoad + lane / P;
    const int piece = lane % P;
    const unsigned long long oaddr = __shfl_sync(0xFFFFFFFFu, addr, owner);
    const int ovalid = __shfl_sync(0xFFFFFFFFu, valid_subs, owner);
    tmp[j] = piece < ovalid * kPiecesPerSub ? __ldg(reinterpret_cast<const uint4*>(oaddr) + piece)
                                            : make_uint4(0u, 0u, 0u, 0u);
  }
#pragma unroll
  for (int j = 0; j < P; ++j) {
    const int owner = j * kOwnersPerLoad + lane / P;
    stage[stage_slot<P>(owner, lane % P)] = tmp[j];
  }
  __syncwarp();
#pragma unroll
  for (int s = 0; s < P; ++s) {
    const uint4 v = stage[stage_slot<P>(lane, s)];
    uint32_t* w = &bits.w[s / kPiecesPerSub][(s % kPiecesPerSub) * 4];
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
  }
  __syncwarp();  // the stage is reused by the next call
}

/// Warp-cooperative store of the 32 code bytes of every lane whose `deferred` flag is set (all
/// 32 lanes must call it): staged in shared memory (2 KB of the stage) and written as whole
/// 512-byte spans per instruction where consecutive lanes' chunks are consecutive.
__device__ __forceinline__ void store_codes_warp(uint8_t* dst, bool deferred, const uint32_t (&words)[8],
                                                 uint4* stage) {
  const int lane = threadIdx.x & 31;
  stage[2 * lane] = make_uint4(words[0], words[1], words[2], words[3]);
  stage[2 * lane + 1] = make_uint4(words[4], words[5], words[6], words[7]);
  __syncwarp();
  const unsigned long long addr = reinterpret_cast<unsigned long long>(dst);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int q = j * 32 + lane;
    const int owner = q >> 1;
    const unsigned long long oaddr = __shfl_sync(0xFFFFFFFFu, addr, owner);
    const bool od = __shfl_sync(0xFFFFFFFFu, deferred, owner);
    if (od) reinterpret_cast<uint4*>(oaddr)[q & 1] = stage[q];
  }
  __syncwarp();
}

/// max |x| over the valid sub-blocks of a chunk (NaN ignored: fmaxf returns the other operand,
/// and |x| ≥ +0 so the result equals fmt::max_f's).
template <QuantInput I>
__device__ __forceinline__ float chunk_abs_max(const ChunkBits<I>& bits) {
  float v = 0.0f;
#pragma unroll
  for (int s = 0; s < 4; ++s)
#pragma unroll
    for (int i = 0; i < 16; ++i) v = fmaxf(v, fabsf(element<I>(bits.w[s], i)));
  return v;
}

/// Global scales a chunk is quantized with (nvfp4 recipes; unused by the mx recipes).
struct GlobalScales {
  float s_enc = 1.0f;    // S_enc
  float s_dec = 1.0f;    // S_dec
  float sf_mult = 0.0f;  // rn(S_enc · (1/6)f), nvfp4 only
};

/// S_enc, S_dec and the nvfp4 scale multiplier from a tensor or row amax (SPEC.md §3.1).
__device__ __forceinline__ GlobalScales scales_from_amax(float amax, float numerator) {
  GlobalScales g;
  g.s_enc = fmt::global_encode_scale(amax, numerator);
  g.s_dec = fmt::reciprocal_rn(g.s_enc);
  g.sf_mult = fmt::nvfp4_sf_multiplier(g.s_enc);
  return g;
}

/// The same from a caller-given decode scale.
__device__ __forceinline__ GlobalScales scales_from_decode(float s_dec) {
  GlobalScales g;
  g.s_dec = s_dec;
  g.s_enc = fmt::encode_scale_from_decode(s_dec);
  g.sf_mult = fmt::nvfp4_sf_multiplier(g.s_enc);
  return g;
}

/// Packs the E2M1 codes of 8 elements (first at `i0`) of a sub-block into one word:
/// fmt::float_to_e2m1(rn(x · enc)) for each, through e2m1_pack8_by_fp32 (fp32 FMA-pipe work;
/// with e2m1_code_by_bits alone the kernel was limited by the integer pipe). A NaN or infinite
/// y (rare: NaN/Inf input, or enc = 0 against Inf) sends the 8 elements through
/// e2m1_code_by_bits, which handles NaN → 0x7.
template <QuantInput I>
__device__ __forceinline__ uint32_t pack8(const uint32_t* w, int i0, float enc) {
  float x[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) x[i] = element<I>(w, i0 + i);
  bool nonfinite = false;
  uint32_t word = e2m1_pack8_by_fp32(x, enc, nonfinite);
  if (nonfinite) {
    word = 0u;
#pragma unroll
    for (int i = 0; i < 8; ++i) word |= e2m1_code_by_bits(__fmul_rn(x[i], enc)) << (4 * i);
  }
  return word;
}

/// One "Four Over Six" block of 16 elements (SPEC.md §3.2): both candidates' errors in element
/// order, the codes of the kept one. The error loop works on magnitudes: with enc ≥ 0 the code's
/// sign is x's sign, and rn(|q|·sf·S_dec − |x|) = ±rn(q·sf·S_dec − x) (rounding is symmetric), so
/// d² and |d| — all the error needs — are unchanged. The two forms differ only where |x|·enc is
/// NaN while x·enc is not a NaN of the same kind: x = ±Inf with enc = 0 (rn(sf·S_dec) overflowed).
/// There this error is NaN and the reference's is +Inf or NaN. If that candidate is map-to-4,
/// err4 is non-finite in both, so `err4 < err6` is false in both; if it is map-to-6, then enc4 = 0
/// too (sf4 ≥ sf6), both errors are non-finite in both forms, and the test is false again.
/// Grid values replace codes there because rn(rn(q · sf) · S_dec) needs the value.
template <QuantInput I, bool kMae>
__device__ __forceinline__ uint8_t four_over_six_block(const uint32_t* w, float v, const GlobalScales& g,
                                                       uint32_t& lo, uint32_t& hi) {
  const fmt::FourOverSixCandidates cand = fmt::four_over_six_candidates(v, g.s_enc);
  const float sf6 = fmt::e4m3_to_float(cand.sf6);
  const float sf4 = fmt::e4m3_to_float(cand.sf4);
  const float enc6 = fmt::nvfp4_element_encode(v, sf6, g.s_dec);
  const float enc4 = fmt::nvfp4_element_encode(v, sf4, g.s_dec);
  float q6[16], q4[16];
  float err6 = 0.0f, err4 = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float a = fabsf(element<I>(w, i));
    q6[i] = e2m1_grid_value(__fmul_rn(a, enc6));
    q4[i] = e2m1_grid_value(__fmul_rn(a, enc4));
    const float d6 = __fsub_rn(__fmul_rn(__fmul_rn(q6[i], sf6), g.s_dec), a);
    const float d4 = __fsub_rn(__fmul_rn(__fmul_rn(q4[i], sf4), g.s_dec), a);
    err6 = __fadd_rn(err6, kMae ? fabsf(d6) : __fmul_rn(d6, d6));
    err4 = __fadd_rn(err4, kMae ? fabsf(d4) : __fmul_rn(d4, d4));
  }
  const bool four = err4 < err6;
  // Codes of the kept candidate from its grid values, on the FMA pipe as in pack8; a NaN grid
  // value (x NaN, or ±Inf · enc 0) sends the block through the integer path (code 0x7).
  uint32_t word[2] = {0u, 0u};
  float finite = 0.0f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float q = four ? q4[i] : q6[i];
    const float mf = e2m1_magnitude_code_of_grid_value_f(q);
    word[i / 8] += __float_as_uint(__fadd_rn(mf, 0x1p23f)) * (1u << (4 * (i % 8)));
    word[i / 8] += (__float_as_uint(element<I>(w, i)) >> 31) * (8u << (4 * (i % 8)));
    finite = __fmaf_rn(q, 0.0f, finite);
  }
  lo = word[0] - 0x4B000000u * 0x11111111u;
  hi = word[1] - 0x4B000000u * 0x11111111u;
  if (!(finite == 0.0f)) {
    lo = 0u;
    hi = 0u;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      // Sign from x (enc ≥ 0); a NaN grid value is code 0x7, unsigned.
      const uint32_t xb = __float_as_uint(element<I>(w, i));
      const float q = four ? q4[i] : q6[i];
      uint32_t c = e2m1_code_of_grid_value(q);
      c = c == 7u && fmt::is_nan(q) ? 7u : (c | ((xb >> 28) & 8u));
      if (i < 8) lo |= c << (4 * i);
      else hi |= c << (4 * (i - 8));
    }
  }
  return four ? cand.sf4 : cand.sf6;
}

/// Number of valid 16-element sub-blocks of chunk `c` of a data row (0 for a padding row).
template <QuantKind K>
__device__ __forceinline__ int chunk_valid_subs(const QuantizeParams& p, int64_t m, int64_t c) {
  if (m >= p.rows) return 0;
  const int64_t rem = (p.k - c * 64) / 16;
  return rem <= 0 ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));
}

/// Quantizes chunk `c` of row (b, m) from `bits` (its valid_subs sub-blocks loaded) — or, for a
/// padding row m ≥ rows / padding columns, writes its 0x00 scale bytes — for kind K with global
/// scales `g`. Writes the scale bytes and the packed codes, except that with `defer_full` a full
/// chunk with 16-byte aligned data leaves its 32 code bytes in `words` and returns true (the
/// caller stores them, see store_codes_warp).
template <QuantInput I, QuantKind K>
__device__ __forceinline__ bool quantize_chunk(const QuantizeParams& p, int64_t b, int64_t m, int64_t c,
                                               int valid_subs, const ChunkBits<I>& bits, const GlobalScales& g,
                                               bool defer_full, uint32_t (&words)[8]) {
  constexpr int kBlock = K == QuantKind::kMx32 ? 32 : 16;
  constexpr int kBlocksPerChunk = 64 / kBlock;
  constexpr int kSubsPerBlock = kBlock / 16;
  const int64_t k0 = c * kBlocksPerChunk;  // first scale column of the chunk
  const int valid_blocks = valid_subs / kSubsPerBlock;
  uint32_t sf_word = 0;                    // scale bytes of the chunk, little-endian
  bool deferred = false;
  if (valid_subs > 0) {
#pragma unroll
    for (int blk = 0; blk < kBlocksPerChunk; ++blk) {
      float v = 0.0f;
#pragma unroll
      for (int s = 0; s < kSubsPerBlock; ++s)
#pragma unroll
        for (int i = 0; i < 16; ++i) v = fmaxf(v, fabsf(element<I>(bits.w[blk * kSubsPerBlock + s], i)));
      uint32_t sf = 0;
      if constexpr (K == QuantKind::kNvfp4) {
        const fmt::BlockScale bs = fmt::nvfp4_block_scale(v, g.sf_mult, g.s_dec);
        sf = bs.sf_byte;
        words[2 * blk] = pack8<I>(bits.w[blk], 0, bs.encode);
        words[2 * blk + 1] = pack8<I>(bits.w[blk], 8, bs.encode);
      } else if constexpr (K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae) {
        sf = four_over_six_block<I, K == QuantKind::kFourOverSixMae>(bits.w[blk], v, g, words[2 * blk],
                                                                      words[2 * blk + 1]);
      } else {
        const fmt::MxBlockScale ms = fmt::mx_block_scale(v);
        sf = ms.code;
#pragma unroll
        for (int s = 0; s < kSubsPerBlock; ++s) {
          const int sub = blk * kSubsPerBlock + s;
          words[2 * sub] = pack8<I>(bits.w[sub], 0, ms.encode);
          words[2 * sub + 1] = pack8<I>(bits.w[sub], 8, ms.encode);
        }
      }
      if (blk < valid_blocks) sf_word |= sf << (8 * blk);
    }
    uint8_t* out = p.data + b * p.data_batch_stride + m * p.data_row_stride + c * 32;
    if (valid_subs == 4 && p.data_align == 16) {
      if (defer_full) {
        deferred = true;
      } else {
        reinterpret_cast<uint4*>(out)[0] = make_uint4(words[0], words[1], words[2], words[3]);
        reinterpret_cast<uint4*>(out)[1] = make_uint4(words[4], words[5], words[6], words[7]);
      }
    } else {
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        if (s >= valid_subs) break;
        if (p.data_align >= 8) {
          reinterpret_cast<uint2*>(out)[s] = make_uint2(words[2 * s], words[2 * s + 1]);
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            out[8 * s + j] = static_cast<uint8_t>(words[2 * s + (j >> 2)] >> (8 * (j & 3)));
          }
        }
      }
    }
  }
  // Scale bytes: real blocks, and 0x00 for padded columns (k0 + j in [kv, cols_grid)) and rows.
  uint8_t* sf_base = p.scales + b * p.scales_batch_stride + fmt::sf_offset(p.layout, m, k0, p.kv);
  if (p.sf_vec && k0 + kBlocksPerChunk <= p.cols_grid) {
    if constexpr (kBlocksPerChunk == 4) *reinterpret_cast<uint32_t*>(sf_base) = sf_word;
    else *reinterpret_cast<uint16_t*>(sf_base) = static_cast<uint16_t>(sf_word);
  } else {
#pragma unroll
    for (int j = 0; j < kBlocksPerChunk; ++j) {
      if (k0 + j < p.cols_grid) sf_base[j] = static_cast<uint8_t>(sf_word >> (8 * j));
    }
  }
  return deferred;
}

}  // namespace nvfp4kv::cuda::detail
