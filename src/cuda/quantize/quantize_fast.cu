// nvfp4kv — fast quantize kernels for 16-bit inputs (bf16 / f16) with 16-byte aligned rows:
// every recipe, given or per-tensor (computed) global scale, every layout. The general kernels of
// quantize.cu still handle f32 / fp8 inputs, unaligned views, per-row scales and tensors whose
// unit count does not fit 31 bits; both produce the bytes of the CPU reference (SPEC.md §1-4).
//
// Map: a persistent grid (a few CTAs per SM) walks "units" of 32 consecutive elements of a row
// (two 16-element blocks, or one mxfp4 block) with a grid-stride loop, unrolled by two so that
// the four 16-byte loads of the next unit are in flight while the current one is encoded (no
// register copy of a pending load: each half of the unroll has its own buffer). The flat unit
// index runs over (batch, padded row, padded scale column pair), so the 0x00 padding of the
// 128x4 / 8x4 layouts is written by the same loop; the index split uses multiply-high division.
// Large tiled inputs walk the units in "sector order" (FastQuantizeParams::order): each CTA's 256
// units of a loop step are the 8 rows × 32 units that complete whole 32-byte scale sectors, so no
// sector is left half-written in L2 waiting for another CTA (launch_quantize_fast says when).
// Per unit: one 16-byte store of 16 code bytes (a warp writes 512 contiguous bytes of a row),
// one 2-byte (mxfp4: 1-byte) store of scale bytes. nvfp4 and 4over6 below 256 MiB take the
// block kernel instead (quantize_block_kernel: the same map over 16-element blocks, one
// per thread and step, or for plain nvfp4 up to 6 MiB one block per thread without a loop;
// see there).
//
// Per element (nvfp4): one unpack, half a packed max (u16x2 max of |x| bit patterns: NaN and Inf
// win, so one compare per block routes a block holding either to the reference code), one FMUL,
// the 6-instruction E2M1 encode kvfmt::e2m1_code_magic (the project's one fast encode, shared with
// the KV append kernel), ~1.6 PRMT/LOP3 to pack codes and signs. Per block: hardware
// e4m3x2 conversion (same RNE/satfinite byte, tested exhaustively) and the element encode
// multiplier rn(1 / rn(sf · S_dec)) read from a 256-entry table built once per CTA from S_dec
// (the reference's own arithmetic per byte; table[0] = FLT_MAX, which gives an all-zero block
// the same codes as the reference's enc = 0, since its elements are all ±0).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "common/kv_format.h"
#include "cuda/common/pdl.cuh"
#include "cuda/quantize/quantize_chunk.cuh"
#include "cuda/common/bits.cuh"
#include "cuda/common/launch_status.cuh"

namespace nvfp4kv::cuda {
namespace {

namespace fmt = nvfp4kv::fmt;
constexpr int kThreads = 256;

template <bool kF16>
__device__ __forceinline__ float lo_elem(uint32_t w) {
  if constexpr (kF16) return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu)));
  else return __uint_as_float(w << 16);
}
template <bool kF16>
__device__ __forceinline__ float hi_elem(uint32_t w) {
  if constexpr (kF16) return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
  else return __uint_as_float(w & 0xFFFF0000u);
}

/// Block max |x| as 16-bit pattern of 8 words by the fp16/bf16 max with |.| (quantize v21b, the
/// block kernel): the same pattern as block_max_bits for NaN-free blocks (for magnitudes the float
/// order is the order of the bit patterns), a NaN pattern (≥ the Inf pattern) when the block holds
/// a NaN — both then take reference_block. 10 instructions instead of 17.
template <bool kF16>
__device__ __forceinline__ uint32_t block_max_bits_abs(const uint32_t* w) {
  const uint32_t a = max_16x2<!kF16, true>(max_16x2<!kF16, true>(w[0], w[1]), max_16x2<!kF16, true>(w[2], w[3]));
  const uint32_t b = max_16x2<!kF16, true>(max_16x2<!kF16, true>(w[4], w[5]), max_16x2<!kF16, true>(w[6], w[7]));
  const uint32_t m = max_16x2<!kF16, true>(a, b);
  return max_16x2<!kF16, true>(m, m >> 16) & 0x7FFFu;
}

/// Block max |x| as 16-bit pattern (NaN/Inf patterns win) of 8 words.
__device__ __forceinline__ uint32_t block_max_bits(const uint32_t* w) {
  uint32_t m = max_u16x2(w[0] & 0x7FFF7FFFu, w[1] & 0x7FFF7FFFu);
#pragma unroll
  for (int k = 2; k < 8; ++k) m = max_u16x2(m, w[k] & 0x7FFF7FFFu);
  return max_u16x2(m, m >> 16) & 0xFFFFu;
}

template <bool kF16>
__device__ __forceinline__ float bits_to_float16(uint32_t h) {
  if constexpr (kF16) return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
  else return __uint_as_float(h << 16);
}

/// Result of reference_block: code words (2, or 4 for a 32-element block) and the scale byte.
struct RefBlock {
  uint32_t w[4];
  uint32_t sf;
};

/// Reference encode of one block (a NaN or Inf among its elements; rare): SPEC.md §3 literally,
/// through src/common/format.h. Reads its n elements again from global memory (`src`) and
/// returns by value: taking the address of the caller's register arrays instead made the
/// compiler keep them in local memory on every unit (80 bytes of STL per 64 input bytes in v5).
template <QuantKind K, bool kF16>
__device__ __noinline__ RefBlock reference_block(const uint16_t* src, int n, detail::GlobalScales g) {
  float x[32];
  float v = 0.0f;
  for (int i = 0; i < n; ++i) {
    const uint32_t h = src[i];
    x[i] = kF16 ? fmt::f16_bits_to_float(static_cast<uint16_t>(h)) : fmt::bf16_bits_to_float(static_cast<uint16_t>(h));
    v = fmt::max_f(v, fmt::abs_f(x[i]));
  }
  uint32_t codes[32];
  uint32_t sf = 0;
  if constexpr (K == QuantKind::kNvfp4) {
    const fmt::BlockScale bs = fmt::nvfp4_block_scale(v, g.sf_mult, g.s_dec);
    sf = bs.sf_byte;
    for (int i = 0; i < n; ++i) codes[i] = fmt::float_to_e2m1(fmt::fmul_rn(x[i], bs.encode));
  } else if constexpr (K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae) {
    constexpr bool kMae = K == QuantKind::kFourOverSixMae;
    const fmt::FourOverSixCandidates c = fmt::four_over_six_candidates(v, g.s_enc);
    uint32_t codes4[16];
    const float err6 = fmt::four_over_six_candidate_error(x, n, v, c.sf6, g.s_dec, kMae, codes);
    const float err4 = fmt::four_over_six_candidate_error(x, n, v, c.sf4, g.s_dec, kMae, codes4);
    sf = c.sf6;
    if (err4 < err6) {
      sf = c.sf4;
      for (int i = 0; i < n; ++i) codes[i] = codes4[i];
    }
  } else {
    const fmt::MxBlockScale ms = fmt::mx_block_scale(v);
    sf = ms.code;
    for (int i = 0; i < n; ++i) codes[i] = fmt::float_to_e2m1(fmt::fmul_rn(x[i], ms.encode));
  }
  RefBlock r{{0u, 0u, 0u, 0u}, sf};
  for (int j = 0; j < n / 8; ++j) {
    uint32_t word = 0;
    for (int i = 0; i < 8; ++i) word |= codes[8 * j + i] << (4 * i);
    r.w[j] = word;
  }
  return r;
}

/// Encode multiplier of every E4M3 scale byte (nvfp4 recipes), per CTA.
struct ScaleEntry {
  float enc;  // min(rn(1 / rn(sf · S_dec)), FLT_MAX) (fmt::nvfp4_element_encode of a non-zero block)
};

/// Magnitude nibbles of 8 codes (byte j = m[2j] | m[2j+1] << 4) from the low bytes of
/// kvfmt::e2m1_code_magic results (low byte = magnitude code 0..7): the magnitude half of
/// pack8_magic_codes, so that each 4over6 candidate is packed as soon as it is computed.
__device__ __forceinline__ uint32_t pack8_magnitudes(const uint32_t* mc) {
  const uint32_t ev = prmt(prmt(mc[0], mc[2], 0x0040u), prmt(mc[4], mc[6], 0x0040u), 0x5410u);
  const uint32_t od = prmt(prmt(mc[1], mc[3], 0x0040u), prmt(mc[5], mc[7], 0x0040u), 0x5410u);
  return ev | (od << 4);
}

/// Sign bits (bit 3 of each nibble) of 8 elements held in 4 16-bit-pair words: the sign half of
/// pack8_magic_codes (for NaN-free blocks the code's sign is the input's: enc ≥ +0).
__device__ __forceinline__ uint32_t pack8_signs(const uint32_t* w) {
  const uint32_t x01 = prmt(w[0], w[1], 0x7531u);
  const uint32_t x23 = prmt(w[2], w[3], 0x7531u);
  return (prmt(x01, x23, 0xECA8u) & 0x08080808u) | (prmt(x01, x23, 0xFDB9u) & 0x80808080u);
}

/// fp32 load from a 32-bit shared-memory address (the 4over6 dequantized-grid table).
__device__ __forceinline__ float lds_f32(uint32_t addr) {
  float v;
  asm("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr));
  return v;
}

/// Per-CTA table of the dequantized grid of every E4M3 scale byte (4over6): entry 8·sf + m is
/// fmt::nvfp4_dequant(m, e4m3_to_float(sf), S_dec) = rn(rn(e2m1(m) · sf) · S_dec), m = 0..7, i.e.
/// exactly what the error of SPEC.md §3.2 needs per element (rn(e2m1(c) · sf) is exact, so only
/// the · S_dec rounding is data-dependent, and it depends on (sf, m) only). Looked up with the
/// magic code's bit pattern 0x4A800000 + m: address = 4 · bits + (row base − 4 · 0x4A800000), one
/// LEA per element instead of the grid value (5 FMA-pipe operations) and two FMULs.
constexpr uint32_t kDqMagicOffset = 4u * 0x4A800000u;  // wraps mod 2^32, as the LEA does
/// Floats per scale byte's row of that table: 8 entries padded to 9, so that bank = 9 · sf + m
/// mod 32: one byte's 8 entries sit in 8 banks and neighbouring bytes 9 banks apart (8-float rows
/// left 4 bank offsets: ~4.8-way conflicts on the bench's data, v11).
constexpr int kDqRow = 9;
constexpr uint32_t kDqRowBytes = 4u * kDqRow;

/// A 4over6 candidate's per-block constants.
struct Cand {
  float enc;     // rn(1 / rn(sf · S_dec)) (table)
  uint32_t lut;  // shared address of the scale byte's row of the grid table minus kDqMagicOffset
};

/// One 4over6 candidate over 16 elements xf (NaN/Inf-free block): error in element order
/// (SPEC.md §3.2: MSE Σ rn(d²), MAE Σ |d|) and the 8 packed magnitude bytes. Magnitudes
/// throughout: with enc ≥ 0 the code's sign is x's and rounding is symmetric, so
/// rn(dq − |x|) = ±(the reference's d): same d², same |d|. kBelow7: every rn(|x| · enc) < 7, so
/// the encode drops its cap and takes one VIMNMX3 on the bit patterns
/// (e2m1_code_magic_below7_bits: the same code on that domain, exhaustively tested); else
/// kvfmt::e2m1_code_magic. dq = rn(rn(e2m1 · sf) · S_dec) from the per-CTA table: every magic
/// result lies in [2^22, 2^22 + 3.5], so m ∈ 0..7 and the load stays inside the row.
template <bool kBelow7, bool kMae>
__device__ __forceinline__ float candidate(const float* xf, Cand k, uint32_t* mag) {
  float err = 0.0f;
  uint32_t mc[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float a = fabsf(xf[i]);
    const float y = __fmul_rn(a, k.enc);
    if constexpr (kBelow7) mc[i] = e2m1_code_magic_below7_bits(y);
    else mc[i] = __float_as_uint(kvfmt::e2m1_code_magic(y));
    const float dq = lds_f32(k.lut + (mc[i] << 2));
    const float d = __fsub_rn(dq, a);
    const float e = kMae ? fabsf(d) : __fmul_rn(d, d);
    // rn(+0 + e) = e for every e ≥ +0 (d² and |d| are never −0): the first term needs no FADD,
    // which the compiler cannot drop on its own (it does not know e ≠ −0).
    err = i == 0 ? e : __fadd_rn(err, e);
  }
  mag[0] = pack8_magnitudes(mc);
  mag[1] = pack8_magnitudes(mc + 8);
  return err;
}

template <bool kF16>
__device__ __forceinline__ void unpack16(const uint32_t* w, float* xf) {
#pragma unroll
  for (int i = 0; i < 16; ++i) xf[i] = (i & 1) ? hi_elem<kF16>(w[i >> 1]) : lo_elem<kF16>(w[i >> 1]);
}

/// Code words of a 4over6 block (magnitudes; signs added by the caller) and the choice.
struct Block46 {
  uint32_t w0, w1;
  bool four;
};

/// 4over6 block whose candidates may map an element to ≥ 7 (a subnormal or saturated scale byte:
/// the global scale does not fit the block; rare with a calibrated scale). Full encode with the
/// cap; re-reads its 16 elements from global memory (`src`, 32-byte aligned) and returns by
/// value, so that the hot path keeps its registers (see reference_block).
template <bool kF16, bool kMae>
__device__ __noinline__ Block46 encode46_any(const uint16_t* src, Cand k6, Cand k4) {
  const uint4 q0 = __ldg(reinterpret_cast<const uint4*>(src)), q1 = __ldg(reinterpret_cast<const uint4*>(src) + 1);
  const uint32_t w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
  float xf[16];
  unpack16<kF16>(w, xf);
  uint32_t m6[2], m4[2];
  const float err6 = candidate<false, kMae>(xf, k6, m6);
  const float err4 = candidate<false, kMae>(xf, k4, m4);
  const bool four = err4 < err6;  // ties keep map-to-6 (SPEC.md §3.2)
  return {four ? m4[0] : m6[0], four ? m4[1] : m6[1], four};
}

/// The 2 code words of 16 NaN/Inf-free elements (8 words of 16-bit pairs) under the element
/// encode multiplier `enc` (nvfp4, fp4_block16, mxfp4 halves): code = E2M1(rn(x · enc)).
/// kBelow7: the block's max maps below 7 (rn(v · enc) < 7, so every element does), and the three
/// magic sums' minimum is one VIMNMX3 on their bit patterns (e2m1_code_magic_below7_bits, the
/// same code on that domain, exhaustively tested) instead of three FMNMX with the cap — two
/// instructions fewer per element (quantize v16).
template <bool kF16, bool kBelow7 = false>
__device__ __forceinline__ void encode16_with(const uint32_t* w, float enc, uint32_t* out) {
  uint32_t mc[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const float x = (i & 1) ? hi_elem<kF16>(w[i >> 1]) : lo_elem<kF16>(w[i >> 1]);
    const float y = fabsf(__fmul_rn(x, enc));
    if constexpr (kBelow7) mc[i] = e2m1_code_magic_below7_bits(y);
    else mc[i] = __float_as_uint(kvfmt::e2m1_code_magic(y));
  }
  out[0] = pack8_magic_codes(mc, w);
  out[1] = pack8_magic_codes(mc + 8, w + 4);
}

/// One NaN/Inf-free 16-element block of nvfp4 / 4over6 / fp4_block16 → 2 code words; returns the
/// scale byte. `sfb` is the hardware-converted E4M3 byte (nvfp4) or the pair (sf6 | sf4 << 8);
/// `dq_lut` the shared address of the 4over6 grid table minus kDqMagicOffset; `src` (4over6's
/// rare path only) the block's first element in global memory.
template <QuantKind K, bool kF16>
__device__ __forceinline__ uint32_t encode16(const uint32_t* w, float v, uint32_t sfb, const ScaleEntry* table,
                                             uint32_t dq_lut, const uint16_t* src, uint32_t* out) {
  if constexpr (K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae) {
    constexpr bool kMae = K == QuantKind::kFourOverSixMae;
    const uint32_t sf6 = sfb & 0xFFu, sf4 = sfb >> 8;
    const Cand k6{table[sf6].enc, dq_lut + sf6 * kDqRowBytes}, k4{table[sf4].enc, dq_lut + sf4 * kDqRowBytes};
    Block46 r;
    // Every element maps at most to the block max's rn(v · enc) (monotone), so this bounds the
    // whole block; false for NaN. Holds for every normal, unsaturated scale byte (E4M3 rounds
    // within 1/16: map-to-6 sends the max to ≤ 6.4, map-to-4 to ≤ 4.3, or ≤ 6 when only the ×1.5
    // candidate saturates).
    const bool fast = __fmul_rn(v, k6.enc) < 7.0f && __fmul_rn(v, k4.enc) < 7.0f;
    if (fast) {
      float xf[16];
      unpack16<kF16>(w, xf);
      uint32_t m6[2], m4[2];
      const float err6 = candidate<true, kMae>(xf, k6, m6);
      const float err4 = candidate<true, kMae>(xf, k4, m4);
      r.four = err4 < err6;  // ties keep map-to-6 (SPEC.md §3.2)
      r.w0 = r.four ? m4[0] : m6[0];
      r.w1 = r.four ? m4[1] : m6[1];
    } else {
      r = encode46_any<kF16, kMae>(src, k6, k4);
    }
    out[0] = r.w0 | pack8_signs(w);
    out[1] = r.w1 | pack8_signs(w + 4);
    return r.four ? sf4 : sf6;
  } else {
    uint32_t sf;
    float enc;
    if constexpr (K == QuantKind::kNvfp4) {
      sf = sfb;
      enc = table[sf].enc;
    } else {
      const fmt::MxBlockScale ms = fmt::mx_block_scale(v);
      sf = ms.code;
      enc = ms.encode;
    }
    encode16_with<kF16>(w, enc, out);
    return sf;
  }
}

/// The unit (32 elements) a thread works on: its raw words and where it lies, computed once by
/// load_unit and reused by process_unit (v7: the position was computed twice, ~40 instructions
/// per unit).
struct Unit {
  uint4 q[4];
  const uint16_t* src;  // first element (read again only by the rare NaN/Inf and wide-range paths)
  uint32_t b, m, col;  // batch, row within the padded batch, unit column
  int n;               // valid elements (0 for padding rows / columns)
};

struct UnitPos {
  uint32_t row;   // flat (batch, padded row)
  uint32_t col;   // unit column within the row
};

__device__ __forceinline__ UnitPos unit_pos(const FastQuantizeParams& p, uint32_t u) {
  if (p.reverse) u = p.total_units - 1u - u;
  if (p.order == 0) {
    const uint32_t r = fast_div(u, p.units_div);
    return {r, u - r * p.units_per_row};
  }
  // Sector orders (FastQuantizeParams::order): u = (band, [row pair j,] column group g, warp w,
  // lane). The 256 units of (band, [j,] g) are 8 rows (selector r) × 32 unit columns (uc):
  // sector order r = w, uc = lane; warp-sector order r = lane / 4, uc = 4w + lane % 4.
  const uint32_t lane = u & 31u, w = (u >> 5) & 7u, cg = u >> 8;
  const bool warp_sector = p.order >= 3;
  const uint32_t r = warp_sector ? lane >> 2 : w;
  const uint32_t uc = warp_sector ? (w << 2) | (lane & 3u) : lane;
  const uint32_t band = fast_div(cg, p.band_div);
  const uint32_t rem = cg - band * p.groups_per_band;
  uint32_t row, g;
  if (p.order == 1 || p.order == 3) {
    const uint32_t j = fast_div(rem, p.groups_div);
    g = rem - j * p.groups_per_row;
    row = band * 128u + 2u * j + (r & 1u) + ((r >> 1) << 5);
  } else {
    g = rem;
    row = band * 8u + r;
  }
  return {row, g * 32u + uc};
}

/// Number of valid elements of unit `pos` (0, 16 or 32): 0 for padding rows / columns.
__device__ __forceinline__ int unit_valid(const FastQuantizeParams& p, UnitPos pos, uint32_t& b, uint32_t& m) {
  b = p.batch == 1 ? 0u : fast_div(pos.row, p.rows_div);
  m = pos.row - b * p.rows_grid;
  if (m >= p.rows) return 0;
  // col · 32 < k + 64 < 2^32 (k < 2^31): 32-bit arithmetic is enough.
  const uint32_t c0 = pos.col * 32u;
  if (c0 >= p.k) return 0;
  const uint32_t rem = p.k - c0;
  return rem >= 32u ? 32 : static_cast<int>(rem);
}

/// First element of unit column `col` of row (b, m).
__device__ __forceinline__ const uint16_t* src_unit(const FastQuantizeParams& p, uint32_t b, uint32_t m, uint32_t col) {
  return reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(p.input) + b * p.in_batch_bytes +
                                           m * p.in_row_bytes + col * 64u);
}

__device__ __forceinline__ void load_unit_at(const FastQuantizeParams& p, UnitPos pos, Unit& d) {
  d.col = pos.col;
  d.n = unit_valid(p, pos, d.b, d.m);
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.input) + d.b * p.in_batch_bytes +
                                                    d.m * p.in_row_bytes + pos.col * 64u);
  d.src = reinterpret_cast<const uint16_t*>(src);
#pragma unroll
  for (int j = 0; j < 4; ++j) d.q[j] = j < d.n / 8 ? __ldg(src + j) : make_uint4(0u, 0u, 0u, 0u);
}

__device__ __forceinline__ void load_unit(const FastQuantizeParams& p, uint32_t u, Unit& d) {
  if (u < p.total_units) load_unit_at(p, unit_pos(p, u), d);
}

/// kLean (4over6 default, kDq 13): the rare paths re-read the unit from the pointer its load
/// used, and the candidate scale bytes skip e4m3x2's NaN fix-ups (the inputs are fminf(·, 448));
/// v12: ~16 and ~14 integer instructions per unit that the compiler issued eagerly.
template <QuantKind K, bool kF16, bool kLean = false>
__device__ __forceinline__ void process_unit(const FastQuantizeParams& p, const Unit& d, const ScaleEntry* table,
                                             uint32_t dq_lut, const detail::GlobalScales& g) {
  constexpr bool kMx32 = K == QuantKind::kMx32;
  const uint32_t b = d.b, m = d.m;
  const auto src_of = [&]() { return kLean ? d.src : src_unit(p, b, m, d.col); };
  const UnitPos pos{0u, d.col};
  const int n = d.n;
  const uint32_t w[16] = {d.q[0].x, d.q[0].y, d.q[0].z, d.q[0].w, d.q[1].x, d.q[1].y, d.q[1].z, d.q[1].w,
                          d.q[2].x, d.q[2].y, d.q[2].z, d.q[2].w, d.q[3].x, d.q[3].y, d.q[3].z, d.q[3].w};
  uint32_t out[4];
  uint32_t sf_pair = 0;  // scale bytes of the unit, little-endian (padding: 0)
  if (n > 0) {
    const uint32_t h0 = block_max_bits(w), h1 = block_max_bits(w + 8);
    constexpr uint32_t kInfBits = kF16 ? 0x7C00u : 0x7F80u;
    if constexpr (kMx32) {
      const uint32_t h = h0 > h1 ? h0 : h1;
      if (h >= kInfBits) {
        const RefBlock r = reference_block<K, kF16>(src_of(), 32, g);
        sf_pair = r.sf;
        out[0] = r.w[0];
        out[1] = r.w[1];
        out[2] = r.w[2];
        out[3] = r.w[3];
      } else {
        const fmt::MxBlockScale ms = fmt::mx_block_scale(bits_to_float16<kF16>(h));
        sf_pair = ms.code;
        uint32_t mc[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          const float x = (i & 1) ? hi_elem<kF16>(w[i >> 1]) : lo_elem<kF16>(w[i >> 1]);
          mc[i] = __float_as_uint(kvfmt::e2m1_code_magic(fabsf(__fmul_rn(x, ms.encode))));
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) out[j] = pack8_magic_codes(mc + 8 * j, w + 4 * j);
      }
    } else {
      const float v0 = bits_to_float16<kF16>(h0), v1 = bits_to_float16<kF16>(h1);
      uint32_t sfb0 = 0, sfb1 = 0;
      if constexpr (K == QuantKind::kNvfp4) {
        const uint32_t pr = kvfmt::e4m3x2(__fmul_rn(v0, g.sf_mult), __fmul_rn(v1, g.sf_mult));
        sfb0 = pr & 0xFFu;
        sfb1 = pr >> 8;
      } else if constexpr (K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae) {
        // rn(v / 6) by div6_rn_16bit (exact for these finite 16-bit maxima; an Inf/NaN block's
        // bytes are unused: it takes reference_block).
        const float base0 = __fmul_rn(div6_rn_16bit(v0), g.s_enc);
        const float base1 = __fmul_rn(div6_rn_16bit(v1), g.s_enc);
        const auto cvt = [](float lo, float hi) { return kLean ? kvfmt::e4m3x2_not_nan(lo, hi) : kvfmt::e4m3x2(lo, hi); };
        const uint32_t p6 = cvt(fminf(base0, fmt::kE4m3Max), fminf(base1, fmt::kE4m3Max));
        const uint32_t p4 = cvt(fminf(__fmul_rn(base0, 1.5f), fmt::kE4m3Max), fminf(__fmul_rn(base1, 1.5f), fmt::kE4m3Max));
        sfb0 = (p6 & 0xFFu) | ((p4 & 0xFFu) << 8);
        sfb1 = (p6 >> 8) | (p4 & 0xFF00u);
      }
      uint32_t s0, s1 = 0;
      if (h0 >= kInfBits) {
        const RefBlock r = reference_block<K, kF16>(src_of(), 16, g);
        s0 = r.sf;
        out[0] = r.w[0];
        out[1] = r.w[1];
      } else {
        s0 = encode16<K, kF16>(w, v0, sfb0, table, dq_lut, src_of(), out);
      }
      if (n == 32) {
        if (h1 >= kInfBits) {
          const RefBlock r = reference_block<K, kF16>(src_of() + 16, 16, g);
          s1 = r.sf;
          out[2] = r.w[0];
          out[3] = r.w[1];
        } else {
          s1 = encode16<K, kF16>(w + 8, v1, sfb1, table, dq_lut, src_of() + 16, out + 2);
        }
      }
      sf_pair = s0 | (s1 << 8);
    }
    uint8_t* dst = p.data + b * p.data_batch_bytes + m * p.data_row_bytes + pos.col * 16u;
    if (n == 32) *reinterpret_cast<uint4*>(dst) = make_uint4(out[0], out[1], out[2], out[3]);
    else *reinterpret_cast<uint2*>(dst) = make_uint2(out[0], out[1]);
  }
  // Scale bytes (real and padding): block columns 2·col, 2·col + 1 (mxfp4: col), consecutive in
  // every layout (k % 4 is the fastest index of the padded ones).
  const uint32_t bb = b, mm = m;  // unit_valid's split of the padded row (padding rows included)
  constexpr int kCols = kMx32 ? 1 : 2;
  const uint32_t k0 = pos.col * kCols;
  uint8_t* sfp = p.scales + bb * p.scales_batch_bytes + fmt::sf_offset(p.layout, mm, k0, p.kv);
  if constexpr (kMx32) {
    *sfp = static_cast<uint8_t>(sf_pair);
  } else if (p.sf_vec2 && k0 + 2 <= p.cols_grid) {
    *reinterpret_cast<uint16_t*>(sfp) = static_cast<uint16_t>(sf_pair);
  } else {
    sfp[0] = static_cast<uint8_t>(sf_pair);
    if (k0 + 1 < p.cols_grid) sfp[1] = static_cast<uint8_t>(sf_pair >> 8);
  }
}

// Registers: an explicit minimum of 1 CTA/SM (nvfp4, mxfp4, fp4_block16) gives 96 / 128 / 95
// registers (2 CTAs/SM; without the second argument ptxas chose 80 / 95 / 75); v8 run 2 measured
// nvfp4 so (≥ 64 MiB geomean 91.0%, min 84.3%; before 90.5%, 82.6%); a 64-register cap (4 CTAs)
// spilled.
// 4over6 (kDq, bench/NOTES.md quantize v8-v12): one unit buffer (the next unit is prefetched into
// L2 while the current one is encoded, then loaded from there), the VIMNMX3 encode, and the grid
// looked up straight in the per-CTA table with kDqRow-float rows. Two loops:
//   kDq 13 (default, v12): 2 CTAs/SM (≤ 128 registers, no spills); the next unit's position is
//     computed once, for its prefetch, and kept for its load; the table base is read back from
//     shared memory, so ptxas sees an opaque value (from the constant it re-associated every
//     lookup address into (row base + 4 · magic) − kDqMagicOffset: two integer instructions per
//     lookup instead of one); process_unit's kLean.
//   kDq 7 (v11's default, the A/B baseline): 3 CTAs/SM (≤ 80 registers, ~32 bytes of spills),
//     the next unit's position computed twice, the constant table base.
// v12 A/B on the H100 (bench q_v12_ab), time ÷ nvfp4 at 64 MiB - 2 GiB: kDq 7 1.52-1.58, 13
// 1.43-1.46 (MSE); MAE 1.36-1.40. ncu at 4096 × 8192: 37.8 M → 34.1 M warp instructions.
__device__ __forceinline__ void prefetch_l2(const void* ptr) {
  asm volatile("prefetch.global.L2 [%0];" : : "l"(ptr));
}

/// Fills the per-CTA tables from S_dec: one scale byte per thread, its encode multiplier and
/// (k46) its row of the dequantized grid (8 FMULs of constants; v12: the loop over 2304 entries
/// with one e4m3 decode each cost ~450 instructions per thread, ~3% of a 64 MiB 4over6 call).
/// The caller publishes them with a barrier.
template <bool k46>
__device__ __forceinline__ void fill_scale_tables(ScaleEntry* table, float* dq_table, float s_dec) {
  for (int i = threadIdx.x; i < 256; i += kThreads) {
    const float sf = fmt::e4m3_to_float(static_cast<uint32_t>(i));
    table[i] = {fmt::nvfp4_element_encode(1.0f, sf, s_dec)};
    if constexpr (k46) {
#pragma unroll
      for (int m = 0; m < kDqRow; ++m)
        dq_table[i * kDqRow + m] = m < 8 ? fmt::nvfp4_dequant(static_cast<uint32_t>(m), sf, s_dec) : 0.0f;
    }
  }
}

template <QuantKind K, bool kF16, int kDq>
constexpr int min_ctas() {
  return K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae ? (kDq == 7 ? 3 : 2) : 1;
}

template <QuantKind K, bool kF16, int kDq = 0>
__global__ void __launch_bounds__(kThreads, min_ctas<K, kF16, kDq>()) quantize_fast_kernel(const __grid_constant__ FastQuantizeParams p) {
  constexpr bool kNv = K == QuantKind::kNvfp4 || K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae;
  constexpr bool k46 = K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae;
  static_assert(!k46 || kDq == 7 || kDq == 13, "4over6 variants: kDq 7 or 13");
  constexpr bool kNew = kDq == 13;  // position once, opaque table base, lean unit (see above)
  __shared__ ScaleEntry table[kNv ? 256 : 1];
  // 4over6: the dequantized grid of every scale byte (see kDqMagicOffset; 9 KB).
  __shared__ __align__(16) float dq_table[k46 ? 256 * kDqRow : 1];
  __shared__ uint32_t dq_lut_cell[1];
  uint32_t dq_lut = static_cast<uint32_t>(__cvta_generic_to_shared(dq_table)) - kDqMagicOffset;
  const uint32_t stride = gridDim.x * kThreads;
  uint32_t u = blockIdx.x * kThreads + threadIdx.x;
  Unit a;
  // The first unit's place (kernel parameters only) and an L2 prefetch of its bytes, before the
  // PDL wait: a prefetch returns no data (nothing is read before the previous kernel's writes
  // are visible; L2 is the point of coherence, so a line the previous kernel still writes is
  // simply updated there), but in a chain of PDL kernels this kernel's CTAs start while the
  // previous one runs, and the first load below then finds its bytes in L2 instead of paying a
  // DRAM latency after the wait (v13; single-wave shapes). Not after the amax pass (per-tensor
  // scale): that kernel reads the same input, so the prefetches would only compete with it for
  // DRAM (measured 5-10 % slower at small shapes) and its loads leave the input in L2 anyway.
  const bool has_first = u < p.total_units;
  UnitPos pos0{0u, 0u};
  if (has_first) {
    pos0 = unit_pos(p, u);
    uint32_t b0, m0;
    const int n0 = unit_valid(p, pos0, b0, m0);
    const uint8_t* src0 = reinterpret_cast<const uint8_t*>(src_unit(p, b0, m0, pos0.col));
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (p.source != ScaleSource::kAmax && j < n0 / 8) prefetch_l2(src0 + 16 * j);
  }
  // PDL (src/cuda/common/pdl.cuh): wait for the previous kernel's writes before reading global
  // memory, and let the next kernel be scheduled as this one's CTAs finish.
  pdl_wait();
  pdl_trigger();
  // The first unit's loads go out before the global scale is read and the table is built, so
  // that their latency overlaps that prologue (it was serial: scale load → table → loads).
  if (has_first) load_unit_at(p, pos0, a);
  detail::GlobalScales g;
  if constexpr (kNv) {
    if (p.source == ScaleSource::kGiven) g = detail::scales_from_decode(p.global_scale[0]);
    else g = detail::scales_from_amax(p.global_scale[0], p.numerator);
    fill_scale_tables<k46>(table, dq_table, g.s_dec);
    if (k46 && kNew && threadIdx.x == 0) dq_lut_cell[0] = dq_lut;
    __syncthreads();
    if constexpr (k46 && kNew) dq_lut = *static_cast<volatile uint32_t*>(dq_lut_cell);
  }
  if constexpr (k46 && kNew) {
    while (u < p.total_units) {
      const uint32_t u1 = u + stride;  // total_units < 2^31 and stride < 2^31: no wrap
      UnitPos pos{0u, 0u};
      const bool more = u1 < p.total_units;
      if (more) {
        // Where the next unit lies; its 64 bytes go to L2 now (a hint: no registers held), and
        // its load after this unit's encode then waits for L2, not DRAM.
        pos = unit_pos(p, u1);
        uint32_t b, m;
        if (unit_valid(p, pos, b, m) > 0) prefetch_l2(src_unit(p, b, m, pos.col));
      }
      process_unit<K, kF16, true>(p, a, table, dq_lut, g);
      if (more) load_unit_at(p, pos, a);
      u = u1;
    }
  } else if constexpr (k46) {
    while (u < p.total_units) {
      const uint32_t u1 = u + stride;
      if (u1 < p.total_units) {
        const UnitPos pos = unit_pos(p, u1);
        uint32_t b, m;
        if (unit_valid(p, pos, b, m) > 0) prefetch_l2(src_unit(p, b, m, pos.col));
      }
      process_unit<K, kF16>(p, a, table, dq_lut, g);
      load_unit(p, u1, a);
      u = u1;
    }
  } else {
    Unit c;
    while (u < p.total_units) {
      const uint32_t u1 = u + stride;  // total_units < 2^31 and stride < 2^31: no wrap
      load_unit(p, u1, c);
      process_unit<K, kF16>(p, a, table, dq_lut, g);
      if (u1 >= p.total_units) break;
      const uint32_t u2 = u1 + stride;
      load_unit(p, u2, a);
      process_unit<K, kF16>(p, c, table, dq_lut, g);
      u = u2;
    }
  }
}

// Block kernel (nvfp4 and 4over6, v14): one 16-element block per thread and loop step, below
// 256 MiB (launch_quantize_fast's rule). The ncu profile of the unit kernel at 4 MiB (bench/
// NOTES.md, "ncu of the plain nvfp4 kernel") put its ~1.9 µs over a same-bytes copy in the chain
// after the loads: one 32-element unit per thread (~700 instructions per warp with the CTA's
// scale table) at 96 registers, i.e. 16 warps per SM issuing at IPC 1.2 while DRAM sat idle. Here
// a thread encodes half a unit, computes its block's encode multiplier itself (the table's
// arithmetic for one byte: no table, no barrier) and the kernel keeps ≤ 64 registers, so 32 warps
// per SM share the work: half the chain per thread and twice the warps to interleave. Same bytes
// as the unit kernel and the CPU reference (the same encode16_with, the same reference_block for
// NaN / Inf blocks, the same e4m3x2 conversion of the scale). 4over6 (MSE, MAE) runs the same
// map with the unit kernel's per-CTA tables, encode16 for one block and a one-buffer loop (3 CTAs
// of 256 per SM; see kBlockMinCtas46). Plain nvfp4 up to 6 MiB, where one wave holds every block
// at one per thread, takes the kernel's loop-free path instead (kOne, quantize v18 and v20).
constexpr int kBlockMinCtas = 4;
/// launch_quantize_fast gives the block kernel fewer blocks than this (padding included): 2^23
/// blocks = 256 MiB of 16-bit input, where the tiled layouts switch to the unit kernel's
/// warp-sector order anyway (bench q_block_ab, H100: the block kernel faster at every size
/// measured from 0.1 to 128 MiB, e.g. 4 MiB 5.1 → 3.4 µs, 64 MiB 32.8 → 31.3 µs).
constexpr uint32_t kBlockKernelBlocksBelow = 1u << 23;
/// ... except plain nvfp4, which takes it (in row-major order) up to this many blocks inclusive:
/// at 256 MiB of 16-bit input the lean block loop beat the unit kernel's warp-sector order by
/// 3-4 % for rows of 8K-32K elements (123.7 → 118.6-119.8 µs) and tied at 1K; from 512 MiB it lost
/// 1-40 % (row-major scale sectors leave L2 before they are complete; bench q_v22_big_ab,
/// bench/NOTES.md quantize v22).
constexpr uint32_t kBlockKernelNvfp4BlocksMax = 1u << 23;
/// ... and 4over6 up to this many (1 GiB): its block loop (one buffer, 3 CTAs per SM) beat the
/// unit kernel's warp-sector order by 5-7 % at 256-512 MiB (MSE, 179 → 167 µs at 256 MiB) and
/// 3-6 % at 1 GiB, and lost 6-35 % from 1.5 GiB (q_v22_big_ab).
constexpr uint32_t kBlockKernel46BlocksMax = 1u << 25;
/// Plain nvfp4's lean loop stores its scale bytes with an L2 evict_last policy from this many
/// blocks (32 MiB of 16-bit input; a second build of the block kernel): bench q_v22_ab, the two
/// builds alternated twice: 32 MiB −1.6 %, 64 MiB −2.2 %, 128 MiB −2.5 %, 256 MiB −2.4 … −3.5 %,
/// but 8-16 MiB +1.2 … +2 % (bench/NOTES.md, quantize v22).
constexpr uint32_t kSfEvictLastBlocksMin = 1u << 20;
/// The block kernel takes the sector order (FastQuantizeParams::block_order) for plain nvfp4 in
/// the tiled layouts up to this many blocks (2^18: 8 MiB of 16-bit input; launch_quantize_fast).
constexpr uint32_t kSectorOrderBlocksMax = 1u << 18;
/// Plain nvfp4 takes the block kernel's one-block path (kOne 1, quantize v18) at ≤ 128 registers
/// up to this many blocks (3 MiB of 16-bit input), where one wave holds them (launch_block).
/// H100 A/B against the loop, bench q_v18_ab (bench/NOTES.md, quantize v18): 0.1 MiB equal,
/// 0.5 MiB 1.5 → 1.4 µs, 1 MiB 1.7 → 1.5-1.6, 2 MiB 2.3 → 2.2, 4 MiB 3.3 → 3.0-3.1.
constexpr uint32_t kBlockOneBlocksMax = 3u << 15;
/// ... and the same path at ≤ 32 registers (8 CTAs of 256 per SM, launch_block_waves; one wave
/// up to 8 MiB on an H100) above that, up to this many blocks (6 MiB), where v18 took two blocks
/// per thread at 4 CTAs per SM: 6 MiB 4.18-4.19 → 4.05-4.09 µs in three benches of the H100
/// (bench/NOTES.md, quantize v20). At 4 MiB the 32-register build is 4 % faster (3.1 → 3.0 µs at
/// five of the six grid shapes), at 0.5-1 MiB 2 % slower, at 2-3 MiB within 0.5 % (bench
/// q_v20_ab after the decode and KV benches, quantize v21). Session 16 saw it 5-12 % slower at
/// 3-4 MiB after the decode read-floor benches, diagnostic kernels that leave the process slower
/// for small calls (bench/NOTES.md, quantize v21); gpu_check now runs them last. From 8 MiB the
/// loop wins (8 MiB 4.7 against 5.0-5.1 µs).
constexpr uint32_t kBlockWavesBlocksMax = 3u << 16;

/// One block a thread works on: where it lies (padding blocks too) and its two 16-byte words.
struct Blk {
  uint4 q[2];
  const uint16_t* src;
  uint32_t b, m, col;  // batch, row within the padded batch, block column (padded)
  bool valid;          // a real block (not a padding row or column of the scale layout)
};

/// Position of flat block index i over (batch, padded row, padded block column), in the order
/// p.block_order (see FastQuantizeParams).
__device__ __forceinline__ void block_at(const FastQuantizeParams& p, uint32_t i, Blk& d) {
  if (p.reverse) i = p.total_blocks - 1u - i;
  if (p.block_order == 0) {
    const uint32_t r = fast_div(i, p.blocks_div);
    d.col = i - r * p.cols_grid;
    d.b = p.batch == 1 ? 0u : fast_div(r, p.rows_div);
    d.m = r - d.b * p.rows_grid;
  } else {
    const uint32_t w = i >> 5, l = i & 31u, ri = l >> 2;
    const uint32_t q = fast_div(w, p.tiles_div);  // 128x4: band · 16 + s; 8x4: band
    d.col = 4u * (w - q * p.col_tiles) + (l & 3u);
    const uint32_t band = p.block_order == 1 ? q >> 4 : q;
    const uint32_t r_in = p.block_order == 1 ? 2u * (q & 15u) + (ri & 1u) + 32u * (ri >> 1) : ri;
    d.b = p.batch == 1 ? 0u : fast_div(band, p.bands_div);
    d.m = (band - d.b * p.bands_per_batch) * (p.block_order == 1 ? 128u : 8u) + r_in;
  }
  // col · 16 < cols_grid · 16 ≤ k + 48 < 2^32 (k < 2^31): 32-bit arithmetic is enough.
  d.valid = d.m < p.rows && d.col * 16u < p.k;
  d.src = reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(p.input) + d.b * p.in_batch_bytes +
                                            d.m * p.in_row_bytes + d.col * 32u);
}

/// Quantize v22, "lean" calls (FastQuantizeParams::lean: batch 1, no padding rows or columns,
/// row strides below 2^32): every block is valid, and a block's input, code and scale addresses
/// are one 64-bit base plus 32 × 32-bit products (IMAD.WIDE.U32), without the batch terms and the
/// 64-bit stride products.
__device__ __forceinline__ const uint16_t* lean_src(const FastQuantizeParams& p, uint32_t m, uint32_t col) {
  const uint8_t* row = static_cast<const uint8_t*>(p.input) + static_cast<uint64_t>(m) * static_cast<uint32_t>(p.in_row_bytes);
  return reinterpret_cast<const uint16_t*>(row + static_cast<uint64_t>(col) * 32u);
}
__device__ __forceinline__ uint8_t* lean_data_at(const FastQuantizeParams& p, const Blk& d) {
  return p.data + static_cast<uint64_t>(d.m) * static_cast<uint32_t>(p.data_row_bytes) + static_cast<uint64_t>(d.col) * 8u;
}
__device__ __forceinline__ uint8_t* lean_scale_at(const FastQuantizeParams& p, const Blk& d) {
  return p.scales + fmt::sf_offset_by_terms(p.sf_terms, d.m, d.col);
}
/// A lean call's decode scale keeps sf · S_dec of every nonzero scale byte sf (2^-9 … 448) at
/// 2^-126 … < 2^126, so that the encode multiplier's reciprocal takes frcp_rn_normal: 2^-117 ≤
/// S_dec ≤ 2^117 (false for NaN).
__device__ __forceinline__ bool lean_scale(float s_dec) { return s_dec >= 0x1p-117f && s_dec <= 0x1p117f; }

/// L2 evict_last policy for the lean loop's scale-byte stores.
__device__ __forceinline__ uint64_t l2_evict_last_policy() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}
__device__ __forceinline__ void st_u8_hint(uint8_t* p, uint32_t v, uint64_t pol) {
  asm volatile("st.global.L2::cache_hint.u8 [%0], %1, %2;" ::"l"(p), "r"(v), "l"(pol) : "memory");
}

/// block_at(p, i + stride) from d = block_at(p, i) when p.step_ok (batch 1, forward order): the
/// row and column advance by (stride / cols_grid, stride % cols_grid), with one carry from the
/// column into the row. The row may pass rows_grid only when i + stride ≥ total_blocks, where
/// the caller does not use the result. kLean: no validity test, lean_src.
template <bool kLean>
__device__ __forceinline__ void block_step(const FastQuantizeParams& p, const Blk& d, Blk& n) {
  uint32_t col = d.col + p.step_cols;
  uint32_t m = d.m + p.step_rows;
  if (col >= p.cols_grid) {
    col -= p.cols_grid;
    ++m;
  }
  n.b = 0;
  n.m = m;
  n.col = col;
  if constexpr (kLean) {
    n.valid = true;
    n.src = lean_src(p, m, col);
  } else {
    n.valid = m < p.rows && col * 16u < p.k;
    n.src = reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(p.input) + m * p.in_row_bytes + col * 32u);
  }
}

/// The thread's next block (index i_next = index of d + gridDim.x · blockDim.x) into n.
template <bool kLean = false>
__device__ __forceinline__ void next_block(const FastQuantizeParams& p, const Blk& d, uint32_t i_next, Blk& n) {
  if (p.step_ok) {
    block_step<kLean>(p, d, n);
  } else {
    block_at(p, i_next, n);
  }
}

/// The block's two 16-byte words. A padding block's are zero (kZero) or left unset: block_codes
/// reads them only for valid blocks, and plain nvfp4 skips the fill (quantize v21b; 4over6 keeps
/// it: without it its loop spilled 4 bytes at 80 registers).
template <bool kZero, bool kLean = false>
__device__ __forceinline__ void load_block(Blk& d) {
  const uint4* src = reinterpret_cast<const uint4*>(d.src);
  if constexpr (kLean) {
    d.q[0] = __ldg(src);
    d.q[1] = __ldg(src + 1);
  } else if constexpr (kZero) {
    d.q[0] = d.valid ? __ldg(src) : make_uint4(0u, 0u, 0u, 0u);
    d.q[1] = d.valid ? __ldg(src + 1) : make_uint4(0u, 0u, 0u, 0u);
  } else if (d.valid) {
    d.q[0] = __ldg(src);
    d.q[1] = __ldg(src + 1);
  }
}

// Timeline experiment (bench/NOTES.md, quantize v18), built with -DNVFP4KV_QUANT_TRACE only: lane
// 0 of every warp of the plain nvfp4 block kernel stamps %globaltimer (256 ns steps on the H100)
// at entry, after pdl_wait, when the global scale's chain is done, when its first block's words
// have arrived, after its first block's stores are issued and at exit, and %clock64 at the steps
// of the first block (kQTraceWords), and appends the record (with its input address, which tells
// the calls of a graph apart) to g_qtrace; quant_trace_reset / quant_trace_fetch; bench q_trace.
// The stamps cost time themselves (the floor kernel with the same stamps: 0.74 → 1.22 µs at
// 128 x 512), so only the intervals inside one build compare.
#ifdef NVFP4KV_QUANT_TRACE
constexpr unsigned kQTraceMax = 1u << 17;
__device__ unsigned long long g_qtrace[kQTraceMax][kQTraceWords];
__device__ unsigned int g_qtrace_n;
__device__ __forceinline__ unsigned long long qtrace_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void qtrace_store(const unsigned long long* t, const unsigned long long* tcl, const void* tag) {
  if ((threadIdx.x & 31u) != 0u) return;
  const unsigned n = atomicAdd(&g_qtrace_n, 1u);
  if (n >= kQTraceMax) return;
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  for (int j = 0; j < 6; ++j) g_qtrace[n][j] = t[j];
  g_qtrace[n][6] = reinterpret_cast<uintptr_t>(tag);
  g_qtrace[n][7] = sm;
  for (int j = 0; j < 10; ++j) g_qtrace[n][8 + j] = tcl[j];
}
// SM clock after register v holds its value: the branch on v (never taken: p.rows is never
// 2^32 − 1 with that v) cannot be resolved, nor the clock read issued, before v arrives.
#define QT_CLK(slot, v)                                                      \
  do {                                                                       \
    if ((v) == 0x9E3779B9u && p.rows == 0xFFFFFFFFu) __trap();               \
    tcl[slot] = clock64();                                                   \
  } while (0)
#endif

/// The codes (out) and scale byte (returned; 0x00 for padding, whose out is not set) of one block
/// of the block kernel: nvfp4 (the encode multiplier computed here) or 4over6 (both candidates
/// through encode16 with the per-CTA tables, as process_unit's kLean path).
template <QuantKind K, bool kF16, bool kLean = false>
__device__ __forceinline__ uint32_t block_codes(const Blk& d, const ScaleEntry* table, uint32_t dq_lut,
                                                const detail::GlobalScales& g, uint32_t* out
#ifdef NVFP4KV_QUANT_TRACE
                                                , const FastQuantizeParams& p, unsigned long long* tcl
#endif
) {
  constexpr bool k46 = K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae;
  uint32_t sf = 0;  // padding: 0x00
  if (kLean || d.valid) {
    const uint32_t w[8] = {d.q[0].x, d.q[0].y, d.q[0].z, d.q[0].w, d.q[1].x, d.q[1].y, d.q[1].z, d.q[1].w};
    constexpr uint32_t kInfBits = kF16 ? 0x7C00u : 0x7F80u;
    // 4over6 keeps the integer max: its loop sits at its 80-register cap (quantize v21b measured the
    // float max on plain nvfp4 only).
    const uint32_t h = k46 ? block_max_bits(w) : block_max_bits_abs<kF16>(w);
#ifdef NVFP4KV_QUANT_TRACE
    if (tcl) QT_CLK(3, h);
#endif
    if (h >= kInfBits) {
      const RefBlock r = reference_block<K, kF16>(d.src, 16, g);
      sf = r.sf;
      out[0] = r.w[0];
      out[1] = r.w[1];
    } else if constexpr (k46) {
      // The scale-byte pair (sf6 | sf4 << 8) of process_unit, for one block.
      const float v = bits_to_float16<kF16>(h);
      const float base = __fmul_rn(div6_rn_16bit(v), g.s_enc);
      const uint32_t sfb = kvfmt::e4m3x2_not_nan(fminf(base, fmt::kE4m3Max), fminf(__fmul_rn(base, 1.5f), fmt::kE4m3Max));
      sf = encode16<K, kF16>(w, v, sfb, table, dq_lut, d.src, out);
    } else {
      const float v = bits_to_float16<kF16>(h);
      // v · sf_mult is never NaN under the API's preconditions (v finite ≥ 0; sf_mult finite: 1 / S_dec
      // finite, or the computed S_enc capped at FLT_MAX), and a NaN from FMUL is the canonical
      // positive one, which the conversion maps to 0x7F as the reference does: no NaN fix-up
      // (quantize v21c; kvfmt::e4m3x2 spends three instructions on it).
      // The pair's high byte is e4m3(+0) = 0x00, so the pair is the scale byte (no mask; quantize v22).
      sf = kvfmt::e4m3x2_not_nan(__fmul_rn(v, g.sf_mult), 0.0f);
      // The unit kernel's table entry for this byte (table[0] = FLT_MAX: see the file comment).
#ifdef NVFP4KV_QUANT_TRACE
      if (tcl) QT_CLK(4, sf);
#endif
      // fmt::nvfp4_element_encode for a nonzero max: min_f(rn(1 / rn(sf · S_dec)), FLT_MAX). min_f
      // ignores a NaN operand and otherwise takes the smaller, as fminf (FMNMX) does, and with
      // FLT_MAX as one operand the ±0 order cannot differ: one instruction instead of four.
      // kLean (quantize v22): S_dec keeps every sf · S_dec of a nonzero byte in frcp_rn_normal's range
      // (lean_scale), and sf = 0 gives NaN there, which the fminf turns into FLT_MAX as well.
      const float s = fmt::fmul_rn(e4m3_lo_to_float_hw(sf), g.s_dec);
      const float enc = fminf(kLean ? frcp_rn_normal(s) : fmt::frcp_rn(s), fmt::kFltMax);
#ifdef NVFP4KV_QUANT_TRACE
      if (tcl) QT_CLK(5, __float_as_uint(enc));
#endif
      // rn(|x| · enc) ≤ rn(v · enc) (monotone): below 7 for every normal, unsaturated scale byte
      // (E4M3 rounds the scale within 1/16, so the max maps to ≤ 6.4).
      if (__fmul_rn(v, enc) < 7.0f) encode16_with<kF16, true>(w, enc, out);
      else encode16_with<kF16>(w, enc, out);
    }
#ifdef NVFP4KV_QUANT_TRACE
    if (tcl) QT_CLK(6, out[0] ^ out[1]);
#endif
  }
  return sf;
}

/// Where block d's codes go (8 bytes).
__device__ __forceinline__ uint8_t* block_data_at(const FastQuantizeParams& p, const Blk& d) {
  return p.data + d.b * p.data_batch_bytes + d.m * p.data_row_bytes + d.col * 8u;
}
/// Where block d's scale byte goes: the layout's offset without a layout switch (quantize v17:
/// ~35 → 17 SASS per block).
__device__ __forceinline__ uint8_t* block_scale_at(const FastQuantizeParams& p, const Blk& d) {
  return p.scales + d.b * p.scales_batch_bytes + fmt::sf_offset_by_terms(p.sf_terms, d.m, d.col);
}

/// One block of the block kernel: block_codes, then its stores.
template <QuantKind K, bool kF16, bool kLean = false, bool kSfEvictLast = false>
__device__ __forceinline__ void process_block(const FastQuantizeParams& p, const Blk& d, const ScaleEntry* table,
                                              uint32_t dq_lut, const detail::GlobalScales& g, uint64_t pol_sf = 0
#ifdef NVFP4KV_QUANT_TRACE
                                              , unsigned long long* tcl = nullptr
#endif
) {
  uint32_t out[2];
#ifdef NVFP4KV_QUANT_TRACE
  const uint32_t sf = block_codes<K, kF16, kLean>(d, table, dq_lut, g, out, p, tcl);
#else
  const uint32_t sf = block_codes<K, kF16, kLean>(d, table, dq_lut, g, out);
#endif
  if constexpr (kLean) {
    *reinterpret_cast<uint2*>(lean_data_at(p, d)) = make_uint2(out[0], out[1]);
    if constexpr (kSfEvictLast) st_u8_hint(lean_scale_at(p, d), sf, pol_sf);
    else *lean_scale_at(p, d) = static_cast<uint8_t>(sf);
    return;
  }
  if (d.valid) *reinterpret_cast<uint2*>(block_data_at(p, d)) = make_uint2(out[0], out[1]);
#ifdef NVFP4KV_QUANT_TRACE
  if (tcl) tcl[7] = clock64();
#endif
  *block_scale_at(p, d) = static_cast<uint8_t>(sf);
#ifdef NVFP4KV_QUANT_TRACE
  if (tcl) tcl[8] = clock64();
#endif
}

/// CTAs per SM of the block kernel: 4 (≤ 64 registers) for nvfp4, 3 (≤ 80) for 4over6, whose
/// loop keeps one block buffer and prefetches the next block into L2 instead (kDq 13's loop):
/// with two buffers 4over6 needed 115 registers (2 CTAs/SM), or spilled 96 bytes at 3 CTAs/SM.
/// H100, MSE (bench/results/quantize_v14_block46_onebuf_h100_ab.txt): one buffer at 3 CTAs/SM
/// against two at 2: 64 MiB 47.0 → 45.4 µs (unit kernel 47.2), 128 MiB 91.1 → 88.8 (unit 89.7),
/// 16-32 MiB −3 to −5 %; 4-8 MiB +8-10 % (still −22 % against the unit kernel); MAE −7 % from
/// 16 MiB. At 4 CTAs/SM (64 registers) it lost 7 % at ≥ 16 MiB.
constexpr int kBlockMinCtas46 = 3;
template <QuantKind K>
constexpr int block_min_ctas() {
  return K == QuantKind::kNvfp4 ? kBlockMinCtas : kBlockMinCtas46;
}

/// The block kernel's loop for plain nvfp4 from block i (its place and words in a): two buffers,
/// so that the next block's loads are in flight while this one is encoded without a register copy
/// of a pending load (the unit kernel's loop).
template <QuantKind K, bool kF16, bool kLean, bool kSfEvictLast = false>
__device__ __forceinline__ void nvfp4_block_loop(const FastQuantizeParams& p, Blk& a, Blk& c, uint32_t i, uint32_t stride,
                                                 const ScaleEntry* table, uint32_t dq_lut, const detail::GlobalScales& g
#ifdef NVFP4KV_QUANT_TRACE
                                                 , unsigned long long* tr, unsigned long long* tcl
#endif
) {
  // kSfEvictLast (lean calls from kSfEvictLastBlocksMin blocks): the scale-byte stores with an L2
  // evict_last policy.
  const uint64_t pol_sf = kLean && kSfEvictLast ? l2_evict_last_policy() : 0;
  while (i < p.total_blocks) {
    const uint32_t i1 = i + stride;  // total_blocks < 2^31 and stride < 2^31: no wrap
    if (i1 < p.total_blocks) {
      next_block<kLean>(p, a, i1, c);
      load_block<false, kLean>(c);
    }
#ifdef NVFP4KV_QUANT_TRACE
    process_block<K, kF16, kLean, kSfEvictLast>(p, a, table, dq_lut, g, pol_sf, tr[4] == 0 ? tcl : nullptr);
    if (tr[4] == 0) tr[4] = qtrace_now();
#else
    process_block<K, kF16, kLean, kSfEvictLast>(p, a, table, dq_lut, g, pol_sf);
#endif
    if (i1 >= p.total_blocks) break;
    const uint32_t i2 = i1 + stride;
    if (i2 < p.total_blocks) {
      next_block<kLean>(p, c, i2, a);
      load_block<false, kLean>(a);
    }
    process_block<K, kF16, kLean, kSfEvictLast>(p, c, table, dq_lut, g, pol_sf);
    i = i2;
  }
}

/// kOne > 0 (plain nvfp4, quantize v18): every thread has at most kOne blocks, i and i + stride
/// (launch_block picks it when one wave holds them all; only kOne 1 is launched since v20). No
/// loop; the blocks' places and output addresses are computed before the PDL wait, while the
/// previous call finishes, instead of after the words arrive (bench q_trace: ~1000 SM cycles of
/// one warp's chain follow the data at 128 x 512), and all kOne blocks' loads are issued at once
/// after it. kMin, the CTAs per SM of the launch bounds: 2 (56 registers; up to 3 MiB) or
/// kBlockWavesMinCtas (32 registers, no spills; launch_block_waves).
constexpr int kBlockOneMinCtas = 2;
constexpr int kBlockWavesMinCtas = 8;

template <QuantKind K, bool kF16, int kOne = 0, int kMin = (kOne > 0 ? kBlockOneMinCtas : block_min_ctas<K>()),
          bool kSfEvictLast = false>
__global__ void __launch_bounds__(kThreads, kMin) quantize_block_kernel(const __grid_constant__ FastQuantizeParams p) {
  constexpr bool k46 = K == QuantKind::kFourOverSixMse || K == QuantKind::kFourOverSixMae;
  static_assert(K == QuantKind::kNvfp4 || k46, "block kernel: nvfp4 and 4over6");
  // 4over6: the unit kernel's per-CTA tables (encode multiplier and dequantized grid per scale
  // byte, one byte per thread) and its opaque table base (kDq 13).
  __shared__ ScaleEntry table[k46 ? 256 : 1];
  __shared__ __align__(16) float dq_table[k46 ? 256 * kDqRow : 1];
  __shared__ uint32_t dq_lut_cell[1];
  uint32_t dq_lut = 0;
  // blockDim.x: kThreads, or fewer for small plain-nvfp4 inputs (launch_block; 4over6's table
  // fill needs all kThreads).
  const uint32_t stride = gridDim.x * blockDim.x;
  uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
#ifdef NVFP4KV_QUANT_TRACE
  unsigned long long tr[6] = {qtrace_now(), 0, 0, 0, 0, 0};
  unsigned long long tcl[10] = {};
#endif
  Blk a, c;
  if constexpr (kOne > 0) {
    static_assert(K == QuantKind::kNvfp4, "one-block path: plain nvfp4");
    // Blocks i + u · stride, u < kOne: places, output addresses and L2 prefetches before the wait.
    Blk b[kOne];
    uint8_t* dst_data[kOne];
    uint8_t* dst_scale[kOne];
#pragma unroll
    for (int u = 0; u < kOne; ++u) {
      const uint32_t j = i + static_cast<uint32_t>(u) * stride;  // < 2^32: total_blocks < 2^31, stride < 2^30
      dst_data[u] = dst_scale[u] = nullptr;
      b[u].valid = false;
      if (j < p.total_blocks) {
        block_at(p, j, b[u]);
        dst_data[u] = block_data_at(p, b[u]);
        dst_scale[u] = block_scale_at(p, b[u]);
        if (b[u].valid && p.source != ScaleSource::kAmax) {
          prefetch_l2(b[u].src);
          prefetch_l2(b[u].src + 8);
        }
      }
    }
    pdl_wait();
    pdl_trigger();
    if (i >= p.total_blocks) return;
#pragma unroll
    for (int u = 0; u < kOne; ++u) load_block<false>(b[u]);
    const detail::GlobalScales g1 = p.source == ScaleSource::kGiven ? detail::scales_from_decode(p.global_scale[0])
                                                                    : detail::scales_from_amax(p.global_scale[0], p.numerator);
#pragma unroll
    for (int u = 0; u < kOne; ++u) {
      if (dst_scale[u] == nullptr) break;  // j ≥ total_blocks (so are the later ones)
      // No lean path here (quantize v22): in the record runs it gained at most 0.5 % at 1-3 MiB, made
      // the 0.5 MiB shapes 2-5 % slower (a second copy of the block path in the kernel), spilled
      // 8 bytes in the 32-register f16 build and made the 32-register bf16 build 13 % slower at 6 MiB.
      uint32_t out[2];
#ifdef NVFP4KV_QUANT_TRACE
      const uint32_t sf = block_codes<K, kF16>(b[u], table, dq_lut, g1, out, p, nullptr);
#else
      const uint32_t sf = block_codes<K, kF16>(b[u], table, dq_lut, g1, out);
#endif
      if (b[u].valid) *reinterpret_cast<uint2*>(dst_data[u]) = make_uint2(out[0], out[1]);
      *dst_scale[u] = static_cast<uint8_t>(sf);
    }
    return;
  }
  // The first block's place and an L2 prefetch of its bytes before the PDL wait, as in the unit
  // kernel (and, as there, not after the amax pass).
  if (i < p.total_blocks) {
    block_at(p, i, a);
    if (a.valid && p.source != ScaleSource::kAmax) {
      prefetch_l2(a.src);
      prefetch_l2(a.src + 8);
    }
  }
  pdl_wait();
  pdl_trigger();
#ifdef NVFP4KV_QUANT_TRACE
  tr[1] = qtrace_now();
  tcl[0] = clock64();
#endif
  if (i < p.total_blocks) load_block<k46>(a);
  const detail::GlobalScales g = p.source == ScaleSource::kGiven ? detail::scales_from_decode(p.global_scale[0])
                                                                 : detail::scales_from_amax(p.global_scale[0], p.numerator);
#ifdef NVFP4KV_QUANT_TRACE
  if (i < p.total_blocks) {
    QT_CLK(2, __float_as_uint(g.sf_mult));
    tr[2] = qtrace_now();
    QT_CLK(1, a.q[0].x ^ a.q[1].w);
    tr[3] = qtrace_now();
  }
#endif
  if constexpr (k46) {
    fill_scale_tables<true>(table, dq_table, g.s_dec);
    if (threadIdx.x == 0) dq_lut_cell[0] = static_cast<uint32_t>(__cvta_generic_to_shared(dq_table)) - kDqMagicOffset;
    __syncthreads();
    dq_lut = *static_cast<volatile uint32_t*>(dq_lut_cell);
  }
  if constexpr (k46) {
    // One buffer (kDq 13's loop of the unit kernel): the next block goes to L2 by a prefetch
    // while this one is encoded, and is loaded from there after it (see kBlockMinCtas46).
    while (i < p.total_blocks) {
      const uint32_t i1 = i + stride;  // total_blocks < 2^31 and stride < 2^31: no wrap
      const bool more = i1 < p.total_blocks;
      if (more) {
        next_block(p, a, i1, c);
        if (c.valid) {
          prefetch_l2(c.src);
          prefetch_l2(c.src + 8);
        }
      }
      process_block<K, kF16>(p, a, table, dq_lut, g);
      if (!more) break;
      a = c;
      load_block<true>(a);
      i = i1;
    }
  } else {
    // Lean calls whose decode scale fits frcp_rn_normal take the loop without validity tests and
    // range checks (quantize v22); the test is uniform over the grid.
#ifdef NVFP4KV_QUANT_TRACE
    if (p.lean && lean_scale(g.s_dec)) nvfp4_block_loop<K, kF16, true, kSfEvictLast>(p, a, c, i, stride, table, dq_lut, g, tr, tcl);
    else nvfp4_block_loop<K, kF16, false>(p, a, c, i, stride, table, dq_lut, g, tr, tcl);
#else
    if (p.lean && lean_scale(g.s_dec)) nvfp4_block_loop<K, kF16, true, kSfEvictLast>(p, a, c, i, stride, table, dq_lut, g);
    else nvfp4_block_loop<K, kF16, false>(p, a, c, i, stride, table, dq_lut, g);
#endif
  }
#ifdef NVFP4KV_QUANT_TRACE
  tr[5] = qtrace_now();
  tcl[9] = clock64();
  if (tr[4] != 0) qtrace_store(tr, tcl, p.input);
#endif
}

std::atomic<int> g_order_override{-1};
std::atomic<int> g_ctas_override{0};
std::atomic<int> g_balance_override{-1};
std::atomic<int> g_dq_override{-1};
std::atomic<int> g_block_override{-1};
std::atomic<int> g_block_step_override{-1};
std::atomic<int> g_block_order_override{-1};
std::atomic<int> g_block_threads_override{0};
std::atomic<int> g_block_one_override{-1};
std::atomic<int> g_lean_override{-1};

/// Resident CTAs of kThreads per SM of kernel `Fn` (at least 1), queried once per kernel: a
/// persistent grid must not exceed one wave, or the CTAs of the second wave would run their whole
/// share after the first.
template <auto Fn>
int resident_ctas() {
  static const int cached = [] {
    int n = 0;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Fn, kThreads, 0) == cudaSuccess && n >= 1 ? n : 1;
  }();
  return cached;
}

template <QuantKind K, bool kF16, int kDq>
void launch_one(const FastQuantizeParams& p, Stream stream) {
  const int64_t units = p.total_units;
  const int64_t want = (units + kThreads - 1) / kThreads;
  const int per_sm = resident_ctas<quantize_fast_kernel<K, kF16, kDq>>();
  const int cap_ovr = g_ctas_override.load(std::memory_order_relaxed);
  const int64_t cap = static_cast<int64_t>(fast_quantize_sm_count()) * (cap_ovr > 0 && cap_ovr < per_sm ? cap_ovr : per_sm);
  int64_t grid = want < cap ? want : cap;
  // Balanced grid (bench knob only): the fewest CTAs that cover the units in the same number of
  // grid-stride rounds, so that no last round runs with part of the threads (0.34 of a round at
  // 64 MiB). Measured slower on the H100 (v7 A/B: 64 MiB 33.3 → 34.4 µs, 86.6% → 83.8% of copy):
  // the resident CTAs it drops keep loads in flight, which matters more than the idle tail.
  if (g_balance_override.load(std::memory_order_relaxed) == 1 && want > cap) {
    const int64_t rounds = (units + cap * kThreads - 1) / (cap * kThreads);
    grid = (units + rounds * kThreads - 1) / (rounds * kThreads);
  }
  (void)launch_pdl(quantize_fast_kernel<K, kF16, kDq>, dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0,
                   reinterpret_cast<cudaStream_t>(stream), p);  // the caller reads the launch status
}

/// 4over6 kernel variant: default kDq 7 (lookups in the per-CTA table with padded rows, one unit
/// buffer, 3 CTAs/SM, VIMNMX3 encode).
template <QuantKind K, bool kF16>
void launch_46(const FastQuantizeParams& p, Stream stream) {
  if (g_dq_override.load(std::memory_order_relaxed) == 7) launch_one<K, kF16, 7>(p, stream);
  else launch_one<K, kF16, 13>(p, stream);
}

/// The block kernel's loop-free path (one block per thread, ≤ 128 registers) if one wave of it
/// holds every block; returns whether it launched (the caller reads the launch status).
template <QuantKind K, bool kF16>
bool launch_block_one(const FastQuantizeParams& p, int threads, Stream stream) {
  const int per_sm = resident_ctas<quantize_block_kernel<K, kF16, 1>>();
  const int64_t want = (static_cast<int64_t>(p.total_blocks) + threads - 1) / threads;
  if (want > static_cast<int64_t>(fast_quantize_sm_count()) * per_sm * (kThreads / threads)) return false;
  (void)launch_pdl(quantize_block_kernel<K, kF16, 1>, dim3(static_cast<unsigned>(want)), dim3(static_cast<unsigned>(threads)),
                   0, reinterpret_cast<cudaStream_t>(stream), p);
  return true;
}

/// The one-block path at ≤ 32 registers (8 CTAs of 256 per SM) over as many waves as its blocks
/// need (the launch rule gives it ≤ 6 MiB, one wave; the bench and tests force it at any size).
template <QuantKind K, bool kF16>
void launch_block_waves(const FastQuantizeParams& p, int threads, Stream stream) {
  const int64_t grid = (static_cast<int64_t>(p.total_blocks) + threads - 1) / threads;
  (void)launch_pdl(quantize_block_kernel<K, kF16, 1, kBlockWavesMinCtas>, dim3(static_cast<unsigned>(grid)),
                   dim3(static_cast<unsigned>(threads)), 0, reinterpret_cast<cudaStream_t>(stream), p);
}

/// The block kernel on a persistent grid of at most one wave (see launch_one).
template <QuantKind K, bool kF16>
void launch_block(const FastQuantizeParams& p, Stream stream) {
  const int per_sm = resident_ctas<quantize_block_kernel<K, kF16>>();
  // CTA size: kThreads, or 128 for plain nvfp4 when CTAs of kThreads would leave SMs without
  // work (≤ 1 MiB of 16-bit input on an H100): twice the SMs then share the blocks, one warp per
  // scheduler (quantize v17 A/B, bench q_v17_ab: 128 x 512 - 512 x 512 −2 … −4 %; 1 MiB and up
  // unchanged or slower). The knob forces 32-256 (bench, tests).
  int threads = kThreads;
  const int to = g_block_threads_override.load(std::memory_order_relaxed);
  if constexpr (K == QuantKind::kNvfp4) {
    if (to == 32 || to == 64 || to == 128) {
      threads = to;
    } else if (to <= 0 && (static_cast<int64_t>(p.total_blocks) + kThreads - 1) / kThreads < fast_quantize_sm_count()) {
      threads = 128;
    }
  }
  const int64_t want = (static_cast<int64_t>(p.total_blocks) + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(fast_quantize_sm_count()) * per_sm * (kThreads / threads);
  const int64_t grid = want < cap ? want : cap;
  if constexpr (K == QuantKind::kNvfp4) {
    // One block per thread: the one-block path at ≤ 128 registers in one wave, or at ≤ 32 in
    // waves (override 1 forces the first wherever one wave holds the blocks, 2 the second at
    // any size, 0 neither).
    const int oo = g_block_one_override.load(std::memory_order_relaxed);
    if (oo == 2 || (oo == -1 && p.total_blocks > kBlockOneBlocksMax && p.total_blocks <= kBlockWavesBlocksMax)) {
      launch_block_waves<K, kF16>(p, threads, stream);
      return;
    }
    if ((oo == 1 || (oo == -1 && p.total_blocks <= kBlockOneBlocksMax)) && launch_block_one<K, kF16>(p, threads, stream))
      return;
  }
  FastQuantizeParams q = p;
  const uint32_t stride = static_cast<uint32_t>(grid * threads);
  q.step_ok = p.batch == 1 && !p.reverse && p.block_order == 0 && g_block_step_override.load(std::memory_order_relaxed) != 0;
  q.step_rows = stride / p.cols_grid;
  q.step_cols = stride % p.cols_grid;
  if constexpr (K == QuantKind::kNvfp4) {
    if (p.lean && p.total_blocks >= kSfEvictLastBlocksMin) {
      (void)launch_pdl(quantize_block_kernel<K, kF16, 0, block_min_ctas<K>(), true>, dim3(static_cast<unsigned>(grid)),
                       dim3(static_cast<unsigned>(threads)), 0, reinterpret_cast<cudaStream_t>(stream), q);
      return;
    }
  }
  (void)launch_pdl(quantize_block_kernel<K, kF16>, dim3(static_cast<unsigned>(grid)), dim3(static_cast<unsigned>(threads)), 0,
                   reinterpret_cast<cudaStream_t>(stream), q);  // the caller reads the launch status
}

template <bool kF16>
void launch_block_kind(const FastQuantizeParams& p, QuantKind kind, Stream stream) {
  switch (kind) {
    case QuantKind::kNvfp4: launch_block<QuantKind::kNvfp4, kF16>(p, stream); break;
    case QuantKind::kFourOverSixMse: launch_block<QuantKind::kFourOverSixMse, kF16>(p, stream); break;
    case QuantKind::kFourOverSixMae: launch_block<QuantKind::kFourOverSixMae, kF16>(p, stream); break;
    default: break;  // not given to the block kernel (launch_quantize_fast)
  }
}

template <bool kF16>
void launch_kind(const FastQuantizeParams& p, QuantKind kind, Stream stream) {
  switch (kind) {
    case QuantKind::kNvfp4: launch_one<QuantKind::kNvfp4, kF16, 0>(p, stream); break;
    case QuantKind::kFourOverSixMse: launch_46<QuantKind::kFourOverSixMse, kF16>(p, stream); break;
    case QuantKind::kFourOverSixMae: launch_46<QuantKind::kFourOverSixMae, kF16>(p, stream); break;
    case QuantKind::kMx32: launch_one<QuantKind::kMx32, kF16, 0>(p, stream); break;
    case QuantKind::kMx16: launch_one<QuantKind::kMx16, kF16, 0>(p, stream); break;
  }
}

}  // namespace

void set_fast_quantize_order_override(int order) { g_order_override.store(order, std::memory_order_relaxed); }
void set_fast_quantize_ctas_override(int ctas_per_sm) { g_ctas_override.store(ctas_per_sm, std::memory_order_relaxed); }
void set_fast_quantize_balance_override(int mode) { g_balance_override.store(mode, std::memory_order_relaxed); }
void set_fast_quantize_4over6_dq_override(int mode) { g_dq_override.store(mode, std::memory_order_relaxed); }
void set_fast_quantize_block_override(int mode) { g_block_override.store(mode, std::memory_order_relaxed); }
void set_fast_quantize_block_order_override(int mode) { g_block_order_override.store(mode, std::memory_order_relaxed); }
void set_fast_quantize_block_step_override(int mode) { g_block_step_override.store(mode, std::memory_order_relaxed); }
void set_fast_quantize_block_threads_override(int threads) {
  g_block_threads_override.store(threads, std::memory_order_relaxed);
}
void set_fast_quantize_block_one_override(int mode) { g_block_one_override.store(mode, std::memory_order_relaxed); }
void set_fast_quantize_lean_override(int mode) { g_lean_override.store(mode, std::memory_order_relaxed); }

#ifdef NVFP4KV_QUANT_TRACE
void quant_trace_reset() {
  const unsigned zero = 0;
  (void)cudaMemcpyToSymbol(g_qtrace_n, &zero, sizeof(zero));
}
std::vector<unsigned long long> quant_trace_fetch() {
  unsigned n = 0;
  (void)cudaMemcpyFromSymbol(&n, g_qtrace_n, sizeof(n));
  if (n > kQTraceMax) n = kQTraceMax;
  std::vector<unsigned long long> v(static_cast<std::size_t>(n) * kQTraceWords);
  if (n > 0) (void)cudaMemcpyFromSymbol(v.data(), g_qtrace, v.size() * sizeof(unsigned long long));
  return v;
}
#endif

int fast_quantize_sm_count() {
  // Cached per process for device 0 .. 15: the attribute query costs host time on every call.
  static int cache[16] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 132;
  if (dev >= 0 && dev < 16 && cache[dev] > 0) return cache[dev];
  int sms = 132;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) sms = 132;
  if (dev >= 0 && dev < 16) cache[dev] = sms;
  return sms;
}

bool fast_quantize_applies(const QuantizeParams& p, QuantInput in) {
  if (in != QuantInput::kBF16 && in != QuantInput::kF16) return false;
  if (!p.in_vec16 || p.data_align != 16) return false;
  if (p.source == ScaleSource::kPerRow) return false;
  const int64_t cols_per_unit = p.kv == p.k / 32 ? 1 : 2;  // mxfp4 blocks are 32 elements
  const int64_t units_per_row = (p.cols_grid + cols_per_unit - 1) / cols_per_unit;
  const int64_t total = p.batch * p.rows_grid * units_per_row;
  // 32-bit unit indices and byte offsets below 2^32 per batch (b · stride is 64-bit).
  return total < (int64_t(1) << 30) && p.rows_grid < (int64_t(1) << 31) &&
         p.in_row_stride * 2 * p.rows_grid < (int64_t(1) << 40) && p.k < (int64_t(1) << 31);
}

Status launch_quantize_fast(const QuantizeParams& q, QuantInput in, QuantKind kind, Stream stream) {
  FastQuantizeParams p;
  p.input = q.input;
  p.in_batch_bytes = q.in_batch_stride * 2;
  p.in_row_bytes = q.in_row_stride * 2;
  p.data = q.data;
  p.data_batch_bytes = q.data_batch_stride;
  p.data_row_bytes = q.data_row_stride;
  p.scales = q.scales;
  p.scales_batch_bytes = q.scales_batch_stride;
  p.global_scale = q.global_scale;
  p.source = q.source;
  p.numerator = q.numerator;
  p.batch = static_cast<uint32_t>(q.batch);
  p.rows = static_cast<uint32_t>(q.rows);
  p.rows_grid = static_cast<uint32_t>(q.rows_grid);
  p.k = static_cast<uint32_t>(q.k);
  p.kv = static_cast<uint32_t>(q.kv);
  p.cols_grid = static_cast<uint32_t>(q.cols_grid);
  const bool mx32 = kind == QuantKind::kMx32;
  p.units_per_row = static_cast<uint32_t>(mx32 ? q.cols_grid : (q.cols_grid + 1) / 2);
  p.total_units = static_cast<uint32_t>(q.batch * q.rows_grid * p.units_per_row);
  p.units_div = make_fast_div(p.units_per_row);
  p.rows_div = make_fast_div(p.rows_grid);
  p.layout = q.layout;
  p.reverse = q.reverse;
  // 2-byte scale stores: the pair starts at an even column of an even-aligned row.
  p.sf_vec2 = reinterpret_cast<uintptr_t>(q.scales) % 2 == 0 && q.scales_batch_stride % 2 == 0 &&
              (q.layout != 0 || q.kv % 2 == 0);
  // Unit order for the tiled layouts when rows are whole 32-unit groups (rows_grid is a multiple
  // of the tile height by padding). Row-major order leaves each 32-byte scale sector to be
  // completed by 8 rows up to 97 rows apart, i.e. by different CTAs, whose progress drifts apart
  // over a long persistent loop; on large inputs the partly written sectors then leave L2 before
  // they are complete (v6, H200: 8 GiB at 50% of copy row-major, 73% in sector order). The
  // warp-sector order (v7) has each warp store two whole sectors per scale store instruction.
  // Rule from the v7 H100 A/B (bench q_v7_ab, bench/NOTES.md quantize v7b; both orders
  // bitwise-tested on the GPU): warp-sector order for inputs ≥ 256 MiB — 512 MiB 83.9% → 94.2% of
  // copy, 768 MiB-1.5 GiB 75-81% → 92.6-93.9%, 2-8 GiB 72-83% → 85-91% (the v6 sector order:
  // 71-90%) — and row-major below (at 128 MiB row-major was 0.6 points faster, at 64 MiB the two
  // were within 1 point). mxfp4 (1-byte scale stores, 2 CTAs/SM) never collapsed in row-major order
  // and was not measured in the warp-sector order, so it stays row-major unless forced.
  const int ov = g_order_override.load(std::memory_order_relaxed);
  const double in_bytes = static_cast<double>(q.batch) * static_cast<double>(q.rows) * static_cast<double>(q.k) * 2.0;
  const int64_t padded_blocks = q.batch * q.rows_grid * q.cols_grid;
  // Plain nvfp4 up to kBlockKernelNvfp4BlocksMax blocks and 4over6 up to kBlockKernel46BlocksMax
  // take the block kernel in row-major order instead (quantize v22).
  const bool k46 = kind == QuantKind::kFourOverSixMse || kind == QuantKind::kFourOverSixMae;
  const bool nv_block_rule =
      g_block_override.load(std::memory_order_relaxed) != 0 &&
      ((kind == QuantKind::kNvfp4 && padded_blocks <= int64_t(kBlockKernelNvfp4BlocksMax)) ||
       (k46 && padded_blocks <= int64_t(kBlockKernel46BlocksMax)));
  const bool big = !mx32 && in_bytes >= 268435456.0 && !nv_block_rule;
  if ((ov >= 1 || (ov < 0 && big)) && (q.layout == 1 || q.layout == 2) && p.units_per_row % 32 == 0) {
    const bool warp_sector = ov == 2 || ov < 0;  // override 1: the v6 sector order (A/B)
    p.order = (q.layout == 1 ? 1u : 2u) + (warp_sector ? 2u : 0u);
    p.groups_per_row = p.units_per_row / 32;
    p.groups_per_band = q.layout == 1 ? 16u * p.groups_per_row : p.groups_per_row;
    p.groups_div = make_fast_div(p.groups_per_row);
    p.band_div = make_fast_div(p.groups_per_band);
  }
  if (p.total_units == 0) return Status();
  // nvfp4 and 4over6 in row-major order: the block kernel (one 16-element block per thread and
  // step) below kBlockKernelBlocksBelow blocks, padding included (bench q_block_ab,
  // bench/NOTES.md quantize v14), the unit kernel otherwise.
  p.total_blocks = static_cast<uint32_t>(q.batch * q.rows_grid * q.cols_grid);
  p.blocks_div = make_fast_div(p.cols_grid);
  p.sf_terms = fmt::sf_offset_terms(q.layout, q.kv);
  // Lean calls (quantize v22; the plain-nvfp4 loop of the block kernel, which the launch rule
  // takes above 6 MiB): batch 1, every block valid, row strides below 2^32.
  p.lean = g_lean_override.load(std::memory_order_relaxed) != 0 && q.batch == 1 && q.rows == q.rows_grid &&
           q.cols_grid * 16 == q.k && p.in_row_bytes < (int64_t(1) << 32) && p.data_row_bytes < (int64_t(1) << 32);
  const int bo = g_block_override.load(std::memory_order_relaxed);
  const bool nv_kind = kind == QuantKind::kNvfp4 || kind == QuantKind::kFourOverSixMse || kind == QuantKind::kFourOverSixMae;
  const bool block = nv_kind && p.order == 0 && (bo == 1 || (bo < 0 && (p.total_blocks < kBlockKernelBlocksBelow || nv_block_rule)));
  // Block kernel, plain nvfp4 in the tiled layouts up to kSectorOrderBlocksMax blocks: sector order
  // (quantize v16), so that each warp's scale-byte stores fill one whole 32-byte sector; in
  // row-major order a sector's 32 bytes come from 8 rows 1-97 apart, i.e. from different warps and
  // CTAs. H100 A/B (bench q_v16_ab, bench/NOTES.md quantize v16): 0.1-8 MiB −0 … −8 % (1 MiB
  // 1.9 → 1.8 µs, 2 MiB 2.4 → 2.3), but 12-128 MiB +1 … +6 % (16 MiB 8.8 → 9.3: a warp then reads
  // 8 rows × 128 bytes instead of 1 KB of one row) and 4over6 +2 … +9 % from 4 MiB. Override 1
  // forces it wherever it applies (tests), 0 forces row-major.
  const int oo = g_block_order_override.load(std::memory_order_relaxed);
  const bool sector_rule = kind == QuantKind::kNvfp4 && p.total_blocks <= kSectorOrderBlocksMax;
  if (block && (q.layout == 1 || q.layout == 2) && p.cols_grid % 4 == 0 && (oo == 1 || (oo < 0 && sector_rule))) {
    const uint32_t band_rows = q.layout == 1 ? 128u : 8u;
    if (p.rows_grid % band_rows == 0) {
      p.block_order = q.layout == 1 ? 1u : 2u;
      p.col_tiles = p.cols_grid / 4;
      p.tiles_div = make_fast_div(p.col_tiles);
      p.bands_per_batch = p.rows_grid / band_rows;
      p.bands_div = make_fast_div(p.bands_per_batch);
    }
  }
  // Persistent grid: one wave of resident CTAs, fewer when the tensor is small (each thread then
  // gets about one unit).
  if (block) {
    if (in == QuantInput::kF16) launch_block_kind<true>(p, kind, stream);
    else launch_block_kind<false>(p, kind, stream);
  } else if (in == QuantInput::kF16) {
    launch_kind<true>(p, kind, stream);
  } else {
    launch_kind<false>(p, kind, stream);
  }
  return last_launch_status("fast quantize kernel launch");
}

}  // namespace nvfp4kv::cuda
