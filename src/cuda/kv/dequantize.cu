// nvfp4kv — dequantize_kv kernel: gathers a batch of sequences from the paged cache into dense
// [total_tokens, num_kv_heads, head_dim] f32/bf16/f16 K and V (SPEC.md §5 decode rules).
//
// In:  cache views (NHD/HND, any strides), block_tables [batch, max_pages] i32, seq_lens [batch]
//      i32 (device memory), per-layer fp32 decode scales by pointer.
// Out: out_k, out_v [total_tokens, num_kv_heads, head_dim], any token/head stride.
// Mapping: each CTA first turns seq_lens into exclusive prefix sums in shared memory (a block
//      scan; batch ≤ kMaxDequantizeKvBatch). bf16/f16 outputs with aligned rows:
//      dequantize_kv_fast_kernel (persistent CTAs, per-tile row lookup, 8-element units; see
//      below). f32 outputs or unaligned views: dequantize_kv_kernel, whose threads walk (row,
//      head, 16-element chunk) items grid-stride, K and V per item, each row found by binary
//      search in the prefix sums. Consecutive threads take consecutive pieces, so writes are
//      contiguous.
// Device-side invalid input cannot be reported: negative lengths count as 0, tokens whose page
// index is out of [0, num_pages) or beyond max_pages and rows past Σ seq_lens are written as
// zeros, tokens past total_tokens are dropped; nothing outside out_k/out_v is written.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/kv_format.h"
#include "cuda/kv/launch.h"
#include "cuda/common/bits.cuh"

namespace nvfp4kv::cuda {
namespace {

struct RowStrides {
  int64_t page, token, head;
};

struct DequantParams {
  const uint8_t* k_data;  // cache data (element size data_elem_bytes)
  const uint8_t* v_data;
  RowStrides kd, vd;
  const uint8_t* k_sf;    // FP4 scales [.., head_dim/16] u8, null otherwise
  const uint8_t* v_sf;
  RowStrides ks, vs;
  const float* k_scale;   // fp32 decode scales (fp8, nvfp4)
  const float* v_scale;
  const int32_t* block_tables;  // [batch, max_pages]
  int64_t bt_stride0, bt_stride1;
  const int32_t* seq_lens;      // [batch]
  int64_t sl_stride;
  int batch;
  int64_t max_pages;
  int64_t num_pages;
  int64_t page_size;
  uint8_t* out_k;         // [total_tokens, num_kv_heads, head_dim], element size out_elem_bytes
  uint8_t* out_v;
  int64_t ok_token, ok_head, ov_token, ov_head;  // strides in elements
  int64_t total_tokens;
  int64_t num_items;      // total_tokens · num_kv_heads · chunks
  int num_kv_heads;
  uint32_t chunks;        // head_dim / 16 (4, 8 or 16)
  uint32_t chunks_log2;
  int out_kind;           // 0 f32, 1 bf16, 2 f16
  bool vec_in;            // full-width cache loads possible
  bool vec_out;           // 16-byte output stores possible
};

/// Reads one chunk of the cache as fp32 (and raw bits for plain formats).
template <int F>
__device__ __forceinline__ void read_chunk(const uint8_t* data, const uint8_t* sf, bool vec, float s_dec,
                                           float* x, uint16_t* bits) {
  if constexpr (F == kvfmt::kBF16 || F == kvfmt::kF16) {
    uint32_t w[8];
    if (vec) {
      const uint4 a = __ldg(reinterpret_cast<const uint4*>(data));
      const uint4 b = __ldg(reinterpret_cast<const uint4*>(data) + 1);
      w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
    } else {
      const uint16_t* d = reinterpret_cast<const uint16_t*>(data);
      NVFP4KV_KV_UNROLL
      for (int i = 0; i < 8; ++i) w[i] = static_cast<uint32_t>(__ldg(d + 2 * i)) | (static_cast<uint32_t>(__ldg(d + 2 * i + 1)) << 16);
    }
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) {
      bits[i] = static_cast<uint16_t>(w[i >> 1] >> (16 * (i & 1)));
      x[i] = kvfmt::half_to_float(bits[i], F == kvfmt::kF16);
    }
  } else if constexpr (F == kvfmt::kFP8) {
    uint32_t w[4];
    if (vec) {
      const uint4 a = __ldg(reinterpret_cast<const uint4*>(data));
      w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
    } else {
      NVFP4KV_KV_UNROLL
      for (int j = 0; j < 4; ++j) {
        w[j] = 0;
        NVFP4KV_KV_UNROLL
        for (int k = 0; k < 4; ++k) w[j] |= static_cast<uint32_t>(__ldg(data + 4 * j + k)) << (8 * k);
      }
    }
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) x[i] = kvfmt::fp8_value(static_cast<uint8_t>(w[i >> 2] >> (8 * (i & 3))), s_dec);
  } else {
    uint32_t w[2];
    if (vec) {
      const uint2 a = __ldg(reinterpret_cast<const uint2*>(data));
      w[0] = a.x; w[1] = a.y;
    } else {
      NVFP4KV_KV_UNROLL
      for (int j = 0; j < 2; ++j) {
        w[j] = 0;
        NVFP4KV_KV_UNROLL
        for (int k = 0; k < 4; ++k) w[j] |= static_cast<uint32_t>(__ldg(data + 4 * j + k)) << (8 * k);
      }
    }
    const uint8_t s = __ldg(sf);
    // The block scale is decoded once per chunk.
    const float sfv = F == kvfmt::kNvfp4 ? fmt::e4m3_to_float(s) : fmt::ue8m0_to_float(s);
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) {
      const uint32_t code = kvfmt::chunk_code(w, i);
      if constexpr (F == kvfmt::kNvfp4) {
        x[i] = kvfmt::nvfp4_value(code, sfv, s_dec);
      } else {
        x[i] = kvfmt::fp4_block16_value(code, sfv);
      }
    }
  }
}

/// Writes 16 values to the output (zeros when `zero`), converted to its type.
template <int F>
__device__ __forceinline__ void write_chunk(const DequantParams& p, uint8_t* out, const float* x,
                                            const uint16_t* bits, bool zero) {
  constexpr bool kPlain = F == kvfmt::kBF16 || F == kvfmt::kF16;
  if (p.out_kind == 0) {
    uint32_t w[16];
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) w[i] = zero ? 0u : fmt::float_bits(x[i]);
    if (p.vec_out) {
      uint4* o = reinterpret_cast<uint4*>(out);
      NVFP4KV_KV_UNROLL
      for (int j = 0; j < 4; ++j) o[j] = make_uint4(w[4 * j], w[4 * j + 1], w[4 * j + 2], w[4 * j + 3]);
    } else {
      uint32_t* o = reinterpret_cast<uint32_t*>(out);
      NVFP4KV_KV_UNROLL
      for (int i = 0; i < 16; ++i) o[i] = w[i];
    }
    return;
  }
  const bool out_f16 = p.out_kind == 2;
  // A plain cache read into its own type is a bit copy (keeps NaN payloads).
  const bool same = kPlain && (out_f16 == (F == kvfmt::kF16));
  uint32_t w[8];
  NVFP4KV_KV_UNROLL
  for (int i = 0; i < 8; ++i) {
    uint32_t v;
    if constexpr (kPlain) {
      // Plain caches keep NaN payloads: bit copy, or the software RNE conversion as on the CPU.
      v = same ? (static_cast<uint32_t>(bits[2 * i]) | (static_cast<uint32_t>(bits[2 * i + 1]) << 16))
               : (static_cast<uint32_t>(kvfmt::float_to_half(x[2 * i], out_f16)) |
                  (static_cast<uint32_t>(kvfmt::float_to_half(x[2 * i + 1], out_f16)) << 16));
    } else {
      // Quantized formats decode to canonical NaNs, so the hardware conversion is exact here.
      v = kvfmt::pack_half2_rn(x[2 * i], x[2 * i + 1], out_f16);
    }
    w[i] = zero ? 0u : v;
  }
  if (p.vec_out) {
    uint4* o = reinterpret_cast<uint4*>(out);
    o[0] = make_uint4(w[0], w[1], w[2], w[3]);
    o[1] = make_uint4(w[4], w[5], w[6], w[7]);
  } else {
    uint16_t* o = reinterpret_cast<uint16_t*>(out);
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 8; ++i) {
      o[2 * i] = static_cast<uint16_t>(w[i]);
      o[2 * i + 1] = static_cast<uint16_t>(w[i] >> 16);
    }
  }
}

constexpr int kThreads = 256;

/// Exclusive prefix sums of max(seq_lens, 0) into prefix[0..batch] (block scan; kThreads threads).
__device__ __forceinline__ void scan_lengths(const int32_t* seq_lens, int64_t sl_stride, int batch, int64_t* prefix,
                                             int64_t* warp_sums) {
  const int per = (batch + kThreads - 1) / kThreads;
  const int begin = threadIdx.x * per;
  const int end = begin + per < batch ? begin + per : batch;
  int64_t local = 0;
  for (int b = begin; b < end; ++b) {
    const int32_t len = seq_lens[b * sl_stride];
    local += len > 0 ? len : 0;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t incl = local;
  for (int d = 1; d < 32; d <<= 1) {
    const int64_t y = __shfl_up_sync(0xFFFFFFFFu, incl, d);
    if (lane >= d) incl += y;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  int64_t run = incl - local;
  for (int w = 0; w < warp; ++w) run += warp_sums[w];
  for (int b = begin; b < end; ++b) {
    prefix[b] = run;
    const int32_t len = seq_lens[b * sl_stride];
    run += len > 0 ? len : 0;
  }
  if (threadIdx.x == kThreads - 1) prefix[batch] = run;
  __syncthreads();
}

template <int F>
__global__ void __launch_bounds__(kThreads) dequantize_kv_kernel(const __grid_constant__ DequantParams p) {
  extern __shared__ int64_t prefix[];  // [batch + 1] exclusive prefix sums of seq_lens
  constexpr int kElemBytes = (F == kvfmt::kBF16 || F == kvfmt::kF16) ? 2 : 1;
  constexpr int kChunkBytes = (F == kvfmt::kBF16 || F == kvfmt::kF16) ? 32 : F == kvfmt::kFP8 ? 16 : 8;
  constexpr bool kHasScale = F == kvfmt::kFP8 || F == kvfmt::kNvfp4;
  constexpr bool kFp4 = F == kvfmt::kNvfp4 || F == kvfmt::kFp4Block16;
  __shared__ int64_t warp_sums[kThreads / 32];

  scan_lengths(p.seq_lens, p.sl_stride, p.batch, prefix, warp_sums);

  const float k_dec = kHasScale ? *p.k_scale : 1.0f;
  const float v_dec = kHasScale ? *p.v_scale : 1.0f;
  const int out_bytes = p.out_kind == 0 ? 4 : 2;
  // 32-bit index math: the launcher guarantees num_items < 2^31; chunks is 4, 8 or 16.
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t heads = static_cast<uint32_t>(p.num_kv_heads);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<uint32_t>(p.num_items); i += stride) {
    const uint32_t c = i & (p.chunks - 1);
    const uint32_t item_row = i >> p.chunks_log2;
    const uint32_t r32 = item_row / heads;
    const uint32_t h = item_row - r32 * heads;
    const int64_t r = r32;
    // Sequence of row r: the last b with prefix[b] <= r (prefix is non-decreasing).
    bool zero = r >= prefix[p.batch];
    int64_t page = 0, off = 0;
    if (!zero) {
      int lo = 0, hi = p.batch - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (prefix[mid] <= r) lo = mid; else hi = mid - 1;
      }
      const int64_t pos = r - prefix[lo];
      const int64_t j = pos / p.page_size;
      off = pos - j * p.page_size;
      if (j >= p.max_pages) {
        zero = true;
      } else {
        page = p.block_tables[lo * p.bt_stride0 + j * p.bt_stride1];
        zero = page < 0 || page >= p.num_pages;
      }
    }
    float x[16];
    uint16_t bits[16];
    uint8_t* ok = p.out_k + (r * p.ok_token + h * p.ok_head + c * 16) * out_bytes;
    uint8_t* ov = p.out_v + (r * p.ov_token + h * p.ov_head + c * 16) * out_bytes;
    if (zero) {
      write_chunk<F>(p, ok, x, bits, true);
      write_chunk<F>(p, ov, x, bits, true);
      continue;
    }
    const int64_t kdo = (page * p.kd.page + off * p.kd.token + h * p.kd.head) * kElemBytes + c * kChunkBytes;
    const int64_t vdo = (page * p.vd.page + off * p.vd.token + h * p.vd.head) * kElemBytes + c * kChunkBytes;
    const uint8_t* ksf = nullptr;
    const uint8_t* vsf = nullptr;
    if constexpr (kFp4) {
      ksf = p.k_sf + page * p.ks.page + off * p.ks.token + h * p.ks.head + c;
      vsf = p.v_sf + page * p.vs.page + off * p.vs.token + h * p.vs.head + c;
    }
    read_chunk<F>(p.k_data + kdo, ksf, p.vec_in, k_dec, x, bits);
    write_chunk<F>(p, ok, x, bits, false);
    read_chunk<F>(p.v_data + vdo, vsf, p.vec_in, v_dec, x, bits);
    write_chunk<F>(p, ov, x, bits, false);
  }
}

// ---------------------------------------------------------------------------------------------
// Fast path for bf16/f16 outputs with 16-byte aligned cache rows and outputs.
// Mapping: persistent CTAs (≤ 8 per SM) scan seq_lens once, then walk tiles of rows: first one
// thread per row finds its sequence (binary search), page and offset into shared memory, then
// all threads take units of 8 elements (16 output bytes: a warp stores 512 contiguous bytes per
// instruction; 16/8/4 cache bytes) of (row, K/V, head), 4-8 units per thread with every load
// issued before the first store.
// FP4 decodes through a per-block table: the 8 magnitudes' final 16-bit values
// rn16(rn(rn(e2m1 · sf) · S_dec)) (the reference's arithmetic, once per block), looked up by PRMT
// with the sign XORed in — exact because rn is symmetric; a block whose table has a NaN (NaN
// scale byte or scale) takes the reference per-element path.

constexpr int kMaxTileRows = 128;

struct FastDeqParams {
  const uint8_t* data[2];  // K, V cache data
  RowStrides ds[2];        // elements of the data dtype
  const uint8_t* sf[2];    // FP4 scales (1-byte elements)
  RowStrides ss[2];
  const float* dec[2];
  const int32_t* block_tables;
  int64_t bt_stride0, bt_stride1;
  const int32_t* seq_lens;
  int64_t sl_stride;
  int batch;
  int64_t max_pages, num_pages, page_size;
  uint8_t* out[2];
  int64_t o_token[2], o_head[2];  // elements (2 bytes)
  int64_t hs_bytes[2];            // data head stride in bytes
  int64_t ohs_bytes[2];           // output head stride in bytes
  int64_t total_tokens;
  uint32_t uph_log2;   // log2(units per head row) = log2(head_dim / 8)
  uint32_t upr;        // units per (row, tensor) = heads << uph_log2
  uint32_t upr_magic;  // ceil(2^32 / upr) when exact for every unit index of a tile, else 0
  uint32_t tile_rows;
  uint32_t num_tiles;
};


/// Two fp32 → 16-bit pair (lo in the low half), hardware RNE (equals the software conversion for
/// every non-NaN value; tables with NaN never reach it).
template <bool kOutF16>
__device__ __forceinline__ uint32_t cvt_pair(float lo, float hi) {
  uint32_t r;
  if constexpr (kOutF16) {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
}

/// 8 codes (one word) → 4 output pairs through the block's byte tables (lo/hi bytes of the
/// 16-bit values of magnitudes 0..7); sign of each code XORed into bit 15 / 31.
__device__ __forceinline__ void lookup8(uint32_t w, uint32_t lo0, uint32_t lo1, uint32_t hi0, uint32_t hi1,
                                        uint32_t* r) {
  const uint32_t idx = w & 0x77777777u;  // PRMT reads selector bit 3 as "replicate sign"
  const uint32_t idx_hi = idx >> 16;
  const uint32_t la = prmt(lo0, lo1, idx), ha = prmt(hi0, hi1, idx);
  const uint32_t lb = prmt(lo0, lo1, idx_hi), hb = prmt(hi0, hi1, idx_hi);
  const uint32_t w4 = w << 4;  // byte k bit 7 = sign of element 2k; w's byte k bit 7 = of 2k+1
  r[0] = prmt(la, ha, 0x5140u) ^ (prmt(w4, w, 0x4000u) & 0x80008000u);
  r[1] = prmt(la, ha, 0x7362u) ^ (prmt(w4, w, 0x5010u) & 0x80008000u);
  r[2] = prmt(lb, hb, 0x5140u) ^ (prmt(w4, w, 0x6020u) & 0x80008000u);
  r[3] = prmt(lb, hb, 0x7362u) ^ (prmt(w4, w, 0x7030u) & 0x80008000u);
}

/// Decoded block scale: E4M3 through the hardware e4m3x2 → f16x2 conversion (exact; 0x7F/0xFF
/// give NaN like fmt::e4m3_to_float), or UE8M0 2^(code − 127).
template <int F>
__device__ __forceinline__ float fp4_scale_value(uint32_t sfb) {
  if constexpr (F == kvfmt::kNvfp4) {
    uint32_t h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(static_cast<unsigned short>(sfb)));
    return __half2float(__ushort_as_half(static_cast<unsigned short>(h2)));
  } else {
    return fmt::ue8m0_to_float(sfb);
  }
}

/// The lookup table of scale byte `sfb`: the 16-bit outputs of magnitudes 0..7,
/// rn16(rn(rn(e2m1 · sf) · S_dec)) (nvfp4) or rn16(rn(e2m1 · 2^(c−127))) (fp4_block16), as byte
/// tables {lo bytes 0-3, lo 4-7, hi 0-3, hi 4-7}. Only used where no entry is NaN (fp4_table_nan).
template <int F, bool kOutF16>
__device__ __forceinline__ uint4 fp4_table(uint32_t sfb, float s_dec) {
  const float sff = fp4_scale_value<F>(sfb);
  float v[8];
  NVFP4KV_KV_UNROLL
  for (int m = 0; m < 8; ++m) {
    const float q = fmt::fmul_rn(fmt::e2m1_magnitude(m), sff);
    v[m] = F == kvfmt::kNvfp4 ? fmt::fmul_rn(q, s_dec) : q;
  }
  const uint32_t p01 = cvt_pair<kOutF16>(v[0], v[1]), p23 = cvt_pair<kOutF16>(v[2], v[3]);
  const uint32_t p45 = cvt_pair<kOutF16>(v[4], v[5]), p67 = cvt_pair<kOutF16>(v[6], v[7]);
  return make_uint4(prmt(p01, p23, 0x6420u), prmt(p45, p67, 0x6420u), prmt(p01, p23, 0x7531u),
                    prmt(p45, p67, 0x7531u));
}

/// True iff some entry of the table would be NaN: v0 = rn(rn(0 · sf) · S) is NaN exactly when
/// sf or S is NaN or S is ±Inf, and any NaN entry implies a NaN v0 (E4M3 and UE8M0 are finite).
template <int F>
__device__ __forceinline__ bool fp4_table_nan(uint32_t sfb, bool bad_scale) {
  if constexpr (F == kvfmt::kNvfp4) return (sfb & 0x7Fu) == 0x7Fu || bad_scale;
  return sfb == 0xFFu;
}

/// The reference per-element path for one word of 8 codes (NaN tables).
template <int F, bool kOutF16>
__device__ __noinline__ uint4 decode_fp4_word_slow(uint32_t w0, uint32_t sfb, float s_dec) {
  uint32_t o[4];
  const float sff = fp4_scale_value<F>(sfb);
  const uint32_t words[2] = {w0, 0u};
  NVFP4KV_KV_UNROLL
  for (int i = 0; i < 4; ++i) {
    float x[2];
    NVFP4KV_KV_UNROLL
    for (int k = 0; k < 2; ++k) {
      const uint32_t code = kvfmt::chunk_code(words, 2 * i + k);
      x[k] = F == kvfmt::kNvfp4 ? kvfmt::nvfp4_value(code, sff, s_dec) : kvfmt::fp4_block16_value(code, sff);
    }
    o[i] = kvfmt::pack_half2_rn(x[0], x[1], kOutF16);
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}

/// The reference per-element fp8 path for 8 bytes holding a NaN code (0x7F / 0xFF).
template <bool kOutF16>
__device__ __noinline__ uint4 decode_fp8_slow(uint32_t w0, uint32_t w1, float s_dec) {
  const uint32_t w[2] = {w0, w1};
  uint32_t o[4];
  NVFP4KV_KV_UNROLL
  for (int i = 0; i < 4; ++i) {
    const uint32_t b2 = (w[i >> 1] >> (16 * (i & 1))) & 0xFFFFu;
    o[i] = kvfmt::pack_half2_rn(kvfmt::fp8_value(static_cast<uint8_t>(b2), s_dec),
                                kvfmt::fp8_value(static_cast<uint8_t>(b2 >> 8), s_dec), kOutF16);
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}

template <int F, bool kOutF16>
__global__ void __launch_bounds__(kThreads, 5) dequantize_kv_fast_kernel(const __grid_constant__ FastDeqParams p) {
  extern __shared__ int64_t prefix[];  // [batch + 1]
  __shared__ int64_t warp_sums[kThreads / 32];
  // Per row of the tile and tensor: byte offsets of the row's (page, slot) in the data and scale
  // views (-1: the row is written as zeros) and of the row in the output.
  __shared__ int64_t s_src[2][kMaxTileRows];
  __shared__ int64_t s_sfo[2][kMaxTileRows];
  __shared__ int64_t s_dst[2][kMaxTileRows];
  // FP4: the lookup table of every scale byte, per tensor (built once per CTA; 8 KiB).
  __shared__ uint4 s_tab[kvfmt::kNvfp4 == F || kvfmt::kFp4Block16 == F ? 2 : 1][256];
  constexpr bool kPlain = F == kvfmt::kBF16 || F == kvfmt::kF16;
  constexpr bool kFp4 = F == kvfmt::kNvfp4 || F == kvfmt::kFp4Block16;
  constexpr int kElemBytes = kPlain ? 2 : 1;
  constexpr int kUnitElems = 8;  // 16 output bytes
  constexpr int kOutWords = 4;
  constexpr int kInBytes = kPlain ? 16 : F == kvfmt::kFP8 ? 8 : 4;
  constexpr int kUnroll = kPlain ? 2 : 3;  // units per thread and pass, each K and V
  constexpr bool kSame = kPlain && ((F == kvfmt::kF16) == kOutF16);
  const bool scaled = F == kvfmt::kFP8 || F == kvfmt::kNvfp4;
  const float dec0 = scaled ? __ldg(p.dec[0]) : 1.0f, dec1 = scaled ? __ldg(p.dec[1]) : 1.0f;
  // A NaN or infinite decode scale makes every nvfp4 table NaN (0 · Inf): reference path.
  const bool bad0 = !(fabsf(dec0) <= fmt::kFltMax), bad1 = !(fabsf(dec1) <= fmt::kFltMax);
  if constexpr (kFp4) {
    static_assert(kThreads == 256, "one table entry per thread");
    s_tab[0][threadIdx.x] = fp4_table<F, kOutF16>(threadIdx.x, dec0);
    s_tab[1][threadIdx.x] = fp4_table<F, kOutF16>(threadIdx.x, dec1);
  }
  scan_lengths(p.seq_lens, p.sl_stride, p.batch, prefix, warp_sums);  // its barriers order s_tab too
  const int64_t covered = prefix[p.batch];
  const uint32_t uph_mask = (1u << p.uph_log2) - 1u;

  // Each CTA takes an equal contiguous range of rows (no tail wave), in tiles.
  const int64_t row_begin = static_cast<int64_t>(blockIdx.x) * p.total_tokens / gridDim.x;
  const int64_t row_end = static_cast<int64_t>(blockIdx.x + 1) * p.total_tokens / gridDim.x;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += p.tile_rows) {
    const int64_t left = row_end - r0;
    const uint32_t rows = left < p.tile_rows ? static_cast<uint32_t>(left) : p.tile_rows;
    if (threadIdx.x < rows) {
      const int64_t r = r0 + threadIdx.x;
      int32_t page = -1;
      int64_t off = 0;
      if (r < covered) {
        // Sequence of row r: the last b with prefix[b] <= r.
        int lo = 0, hi = p.batch - 1;
        while (lo < hi) {
          const int mid = (lo + hi + 1) >> 1;
          if (prefix[mid] <= r) lo = mid; else hi = mid - 1;
        }
        const int64_t pos = r - prefix[lo];
        const int64_t j = pos / p.page_size;
        off = pos - j * p.page_size;
        if (j < p.max_pages) {
          const int32_t pg = p.block_tables[lo * p.bt_stride0 + j * p.bt_stride1];
          if (pg >= 0 && pg < p.num_pages) page = pg;
        }
      }
      NVFP4KV_KV_UNROLL
      for (int t = 0; t < 2; ++t) {
        s_src[t][threadIdx.x] = page < 0 ? -1 : (page * p.ds[t].page + off * p.ds[t].token) * kElemBytes;
        if constexpr (kFp4) s_sfo[t][threadIdx.x] = page * p.ss[t].page + off * p.ss[t].token;
        s_dst[t][threadIdx.x] = r * p.o_token[t] * 2;
      }
    }
    __syncthreads();
    const uint32_t n = rows * p.upr;  // units per tensor; a thread does K and V of a unit
    for (uint32_t base = threadIdx.x; base < n; base += kThreads * kUnroll) {
      // Unit j → (row_local rl, head h, unit u of the head row); recomputed in the store loop
      // rather than kept live across the loads (registers).
      auto decompose = [&](uint32_t j, uint32_t& rl, uint32_t& h, uint32_t& u) {
        rl = p.upr_magic ? __umulhi(j, p.upr_magic) : j / p.upr;
        const uint32_t jr = j - rl * p.upr;
        h = jr >> p.uph_log2;
        u = jr & uph_mask;
      };
      uint4 raw[kUnroll][2];
      uint32_t sfw[kUnroll][2];
      uint32_t zero = 0;  // bit k: unit k is written as zeros (the row has no valid page)
      NVFP4KV_KV_UNROLL
      for (int k = 0; k < kUnroll; ++k) {
        const uint32_t j = base + k * kThreads;
        NVFP4KV_KV_UNROLL
        for (int t = 0; t < 2; ++t) {
          raw[k][t] = make_uint4(0, 0, 0, 0);
          sfw[k][t] = 0;
        }
        if (j >= n) continue;
        uint32_t rl, h, u;
        decompose(j, rl, h, u);
        if (s_src[0][rl] < 0) {  // K and V of a row share its page
          zero |= 1u << k;
          continue;
        }
        NVFP4KV_KV_UNROLL
        for (int t = 0; t < 2; ++t) {
          const uint8_t* src = p.data[t] + s_src[t][rl] + h * p.hs_bytes[t] + u * kInBytes;
          if constexpr (kInBytes == 16) {
            raw[k][t] = __ldg(reinterpret_cast<const uint4*>(src));
          } else if constexpr (kInBytes == 8) {
            const uint2 a = __ldg(reinterpret_cast<const uint2*>(src));
            raw[k][t].x = a.x;
            raw[k][t].y = a.y;
          } else {
            raw[k][t].x = __ldg(reinterpret_cast<const uint32_t*>(src));
          }
          if constexpr (kFp4) {
            sfw[k][t] = __ldg(p.sf[t] + s_sfo[t][rl] + h * p.ss[t].head + (u >> 1));  // 2 units per block
          }
        }
      }
      NVFP4KV_KV_UNROLL
      for (int k = 0; k < kUnroll; ++k) {
        const uint32_t j = base + k * kThreads;
        if (j >= n) continue;
        uint32_t rl, h, u;
        decompose(j, rl, h, u);
        NVFP4KV_KV_UNROLL
        for (int t = 0; t < 2; ++t) {
          uint8_t* dst = p.out[t] + s_dst[t][rl] + h * p.ohs_bytes[t] + u * (kUnitElems * 2);
          const float sd = t ? dec1 : dec0;
          uint32_t o[kOutWords];
          const uint32_t rw[4] = {raw[k][t].x, raw[k][t].y, raw[k][t].z, raw[k][t].w};
          if (zero & (1u << k)) {
            NVFP4KV_KV_UNROLL
            for (int i = 0; i < kOutWords; ++i) o[i] = 0;
          } else if constexpr (kSame) {
            NVFP4KV_KV_UNROLL
            for (int i = 0; i < 4; ++i) o[i] = rw[i];
          } else if constexpr (kPlain) {
            // f16 cache into bf16 out or the reverse: software RNE as on the CPU (keeps payloads).
            NVFP4KV_KV_UNROLL
            for (int i = 0; i < 4; ++i) {
              const float lo = kvfmt::half_to_float(static_cast<uint16_t>(rw[i]), F == kvfmt::kF16);
              const float hi = kvfmt::half_to_float(static_cast<uint16_t>(rw[i] >> 16), F == kvfmt::kF16);
              o[i] = static_cast<uint32_t>(kvfmt::float_to_half(lo, kOutF16)) |
                     (static_cast<uint32_t>(kvfmt::float_to_half(hi, kOutF16)) << 16);
            }
          } else if constexpr (F == kvfmt::kFP8) {
            // A byte 0x7F / 0xFF (NaN) anywhere in the unit: the per-element reference path.
            uint32_t nan = 0;
            NVFP4KV_KV_UNROLL
            for (int i = 0; i < 2; ++i) nan |= ((rw[i] & 0x7F7F7F7Fu) + 0x01010101u) & 0x80808080u;
            if (nan == 0) {
              NVFP4KV_KV_UNROLL
              for (int i = 0; i < 4; ++i) {
                const uint32_t b2 = (rw[i >> 1] >> (16 * (i & 1))) & 0xFFFFu;
                uint32_t h2;
                asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(static_cast<unsigned short>(b2)));
                const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h2));
                o[i] = cvt_pair<kOutF16>(fmt::fmul_rn(f.x, sd), fmt::fmul_rn(f.y, sd));
              }
            } else {
              const uint4 r = decode_fp8_slow<kOutF16>(rw[0], rw[1], sd);  // out of line
              o[0] = r.x;
              o[1] = r.y;
              o[2] = r.z;
              o[3] = r.w;
            }
          } else {
            if (fp4_table_nan<F>(sfw[k][t], t ? bad1 : bad0)) {
              const uint4 r = decode_fp4_word_slow<F, kOutF16>(rw[0], sfw[k][t], sd);  // out of line
              o[0] = r.x;
              o[1] = r.y;
              o[2] = r.z;
              o[3] = r.w;
            } else {
              const uint4 tab = s_tab[t][sfw[k][t]];
              lookup8(rw[0], tab.x, tab.y, tab.z, tab.w, o);
            }
          }
          *reinterpret_cast<uint4*>(dst) = make_uint4(o[0], o[1], o[2], o[3]);
        }
      }
    }
    __syncthreads();
  }
}

RowStrides row_strides(const TensorView& v, KvLayout layout) {
  if (layout == KvLayout::kNHD) return {v.strides[0], v.strides[1], v.strides[2]};
  return {v.strides[0], v.strides[2], v.strides[1]};
}

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

bool strides_aligned(const RowStrides& s, int64_t elem_bytes, int64_t bytes) {
  return (s.page * elem_bytes) % bytes == 0 && (s.token * elem_bytes) % bytes == 0 &&
         (s.head * elem_bytes) % bytes == 0;
}

/// Sets the dynamic shared-memory limit if needed and launches one persistent CTA per resident
/// slot (SMs × occupancy), at most one per tile.
template <int F, bool kOutF16>
cudaError_t launch_fast(const FastDeqParams& f, std::size_t smem, int sms, cudaStream_t stream) {
  auto kernel = dequantize_kv_fast_kernel<F, kOutF16>;
  cudaError_t err = cudaSuccess;
  if (smem > 40 * 1024) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  int occ = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, kThreads, smem);
  if (err != cudaSuccess) return err;
  const uint64_t slots = static_cast<uint64_t>(sms) * static_cast<uint64_t>(occ < 1 ? 1 : occ);
  const unsigned blocks = static_cast<unsigned>(f.num_tiles < slots ? f.num_tiles : slots);
  kernel<<<blocks, kThreads, smem, stream>>>(f);
  return cudaSuccess;
}

}  // namespace

Status launch_dequantize_kv(const KvCacheView& c, const TensorView& block_tables, const TensorView& seq_lens,
                            const TensorView& out_k, const TensorView& out_v, Stream stream) {
  DequantParams p{};
  p.k_data = static_cast<const uint8_t*>(c.k_data.data);
  p.v_data = static_cast<const uint8_t*>(c.v_data.data);
  p.kd = row_strides(c.k_data, c.layout);
  p.vd = row_strides(c.v_data, c.layout);
  const bool fp4 = kv_format_is_fp4(c.format);
  if (fp4) {
    p.k_sf = static_cast<const uint8_t*>(c.k_scales.data);
    p.v_sf = static_cast<const uint8_t*>(c.v_scales.data);
    p.ks = row_strides(c.k_scales, c.layout);
    p.vs = row_strides(c.v_scales, c.layout);
  }
  p.k_scale = c.k_scale;
  p.v_scale = c.v_scale;
  p.block_tables = static_cast<const int32_t*>(block_tables.data);
  p.bt_stride0 = block_tables.strides[0];
  p.bt_stride1 = block_tables.strides[1];
  p.seq_lens = static_cast<const int32_t*>(seq_lens.data);
  p.sl_stride = seq_lens.strides[0];
  p.batch = static_cast<int>(seq_lens.shape[0]);
  p.max_pages = block_tables.shape[1];
  p.num_pages = c.num_pages;
  p.page_size = c.page_size;
  p.out_k = static_cast<uint8_t*>(out_k.data);
  p.out_v = static_cast<uint8_t*>(out_v.data);
  p.ok_token = out_k.strides[0];
  p.ok_head = out_k.strides[1];
  p.ov_token = out_v.strides[0];
  p.ov_head = out_v.strides[1];
  p.total_tokens = out_k.shape[0];
  p.chunks = static_cast<uint32_t>(c.head_dim / kvfmt::kChunk);
  p.chunks_log2 = p.chunks == 4 ? 2 : p.chunks == 8 ? 3 : 4;
  p.num_kv_heads = static_cast<int>(c.num_kv_heads);
  p.num_items = p.total_tokens * c.num_kv_heads * p.chunks;
  p.out_kind = out_k.dtype == DType::kF32 ? 0 : out_k.dtype == DType::kBF16 ? 1 : 2;
  const int64_t es = static_cast<int64_t>(dtype_size(c.k_data.dtype));
  const int64_t chunk_bytes = fp4 ? 8 : 16 * es;
  const int64_t want = chunk_bytes > 16 ? 16 : chunk_bytes;
  p.vec_in = aligned(p.k_data, want) && aligned(p.v_data, want) && strides_aligned(p.kd, es, want) &&
             strides_aligned(p.vd, es, want);
  const int64_t oes = static_cast<int64_t>(dtype_size(out_k.dtype));
  p.vec_out = aligned(out_k.data, 16) && aligned(out_v.data, 16) && (out_k.strides[0] * oes) % 16 == 0 &&
              (out_k.strides[1] * oes) % 16 == 0 && (out_v.strides[0] * oes) % 16 == 0 &&
              (out_v.strides[1] * oes) % 16 == 0;
  if (p.num_items == 0) return Status();
  if (p.num_items >= (int64_t(1) << 31)) {
    return Status(StatusCode::kInvalidArgument,
                  "dequantize_kv: total_tokens · num_kv_heads · head_dim / 16 must be < 2^31");
  }
  // With batch 0 every row is past Σ seq_lens and written as zeros; the scan needs one slot.
  const std::size_t smem = sizeof(int64_t) * (static_cast<std::size_t>(p.batch) + 1);
  const int64_t unit_in = fp4 ? 4 : 8 * es;  // cache bytes of 8 elements
  const bool unit_aligned = aligned(p.k_data, unit_in) && aligned(p.v_data, unit_in) &&
                            strides_aligned(p.kd, es, unit_in) && strides_aligned(p.vd, es, unit_in);
  if (p.out_kind != 0 && p.vec_out && unit_aligned) {
    FastDeqParams f{};
    copy_cache_sides(f, p);
    f.block_tables = p.block_tables;
    f.bt_stride0 = p.bt_stride0;
    f.bt_stride1 = p.bt_stride1;
    f.seq_lens = p.seq_lens;
    f.sl_stride = p.sl_stride;
    f.batch = p.batch;
    f.max_pages = p.max_pages;
    f.num_pages = p.num_pages;
    f.page_size = p.page_size;
    f.out[0] = p.out_k;
    f.out[1] = p.out_v;
    f.o_token[0] = p.ok_token;
    f.o_head[0] = p.ok_head;
    f.o_token[1] = p.ov_token;
    f.o_head[1] = p.ov_head;
    f.total_tokens = p.total_tokens;
    f.hs_bytes[0] = p.kd.head * es;
    f.hs_bytes[1] = p.vd.head * es;
    f.ohs_bytes[0] = p.ok_head * 2;
    f.ohs_bytes[1] = p.ov_head * 2;
    const int64_t uph = c.head_dim / 8;  // 8-element units per head row
    f.uph_log2 = 0;
    while ((int64_t(1) << f.uph_log2) < uph) ++f.uph_log2;
    const uint64_t upr = static_cast<uint64_t>(c.num_kv_heads) << f.uph_log2;
    if (upr * 2 * kMaxTileRows >= (uint64_t(1) << 31)) {
      return Status(StatusCode::kInvalidArgument, "dequantize_kv: num_kv_heads · head_dim too large");
    }
    f.upr = static_cast<uint32_t>(upr);
    // About 2304 units of K and of V per tile (3 passes of 3 units per thread for FP4/fp8),
    // at most kMaxTileRows rows.
    uint64_t tr = 2304 / upr;
    tr = tr < 1 ? 1 : (tr > kMaxTileRows ? kMaxTileRows : tr);
    f.tile_rows = static_cast<uint32_t>(tr);
    f.num_tiles = static_cast<uint32_t>((p.total_tokens + static_cast<int64_t>(tr) - 1) / static_cast<int64_t>(tr));
    // q = floor(j · m / 2^32) with m = ceil(2^32 / upr) is exact while j · (m · upr − 2^32) < 2^32.
    const uint64_t m = ((uint64_t(1) << 32) + upr - 1) / upr;
    const uint64_t e = m * upr - (uint64_t(1) << 32);
    const uint64_t jmax = tr * upr;
    f.upr_magic = (m < (uint64_t(1) << 32) && jmax * e < (uint64_t(1) << 32)) ? static_cast<uint32_t>(m) : 0u;
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      sms = 132;
    }
    const bool of16 = p.out_kind == 2;
    cudaError_t fattr = cudaSuccess;
    switch (c.format) {
      case KvFormat::kBF16:
        fattr = of16 ? launch_fast<kvfmt::kBF16, true>(f, smem, sms, stream) : launch_fast<kvfmt::kBF16, false>(f, smem, sms, stream);
        break;
      case KvFormat::kF16:
        fattr = of16 ? launch_fast<kvfmt::kF16, true>(f, smem, sms, stream) : launch_fast<kvfmt::kF16, false>(f, smem, sms, stream);
        break;
      case KvFormat::kFP8E4M3:
        fattr = of16 ? launch_fast<kvfmt::kFP8, true>(f, smem, sms, stream) : launch_fast<kvfmt::kFP8, false>(f, smem, sms, stream);
        break;
      case KvFormat::kNvfp4:
        fattr = of16 ? launch_fast<kvfmt::kNvfp4, true>(f, smem, sms, stream) : launch_fast<kvfmt::kNvfp4, false>(f, smem, sms, stream);
        break;
      case KvFormat::kFp4Block16:
        fattr = of16 ? launch_fast<kvfmt::kFp4Block16, true>(f, smem, sms, stream)
                     : launch_fast<kvfmt::kFp4Block16, false>(f, smem, sms, stream);
        break;
    }
    if (fattr != cudaSuccess) {
      (void)cudaGetLastError();
      return Status(StatusCode::kCudaError, std::string("dequantize_kv: kernel setup failed: ") +
                                                cudaGetErrorString(fattr));
    }
    const cudaError_t ferr = cudaGetLastError();
    if (ferr != cudaSuccess) {
      return Status(StatusCode::kCudaError, std::string("dequantize_kv launch failed: ") + cudaGetErrorString(ferr));
    }
    return Status();
  }
  const int64_t blocks_needed = (p.num_items + kThreads - 1) / kThreads;
  // Enough CTAs to fill the GPU several times over; each pays for one scan of seq_lens.
  const unsigned blocks = static_cast<unsigned>(blocks_needed < 2048 ? blocks_needed : 2048);
  cudaError_t attr = cudaSuccess;
  switch (c.format) {
#define NVFP4KV_DEQ_CASE(KF, F)                                                                     \
  case KvFormat::KF:                                                                               \
    if (smem > 48 * 1024)                                                                          \
      attr = cudaFuncSetAttribute(dequantize_kv_kernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                  static_cast<int>(smem));                                          \
    if (attr == cudaSuccess) dequantize_kv_kernel<F><<<blocks, kThreads, smem, stream>>>(p);        \
    break;
    NVFP4KV_DEQ_CASE(kBF16, kvfmt::kBF16)
    NVFP4KV_DEQ_CASE(kF16, kvfmt::kF16)
    NVFP4KV_DEQ_CASE(kFP8E4M3, kvfmt::kFP8)
    NVFP4KV_DEQ_CASE(kNvfp4, kvfmt::kNvfp4)
    NVFP4KV_DEQ_CASE(kFp4Block16, kvfmt::kFp4Block16)
#undef NVFP4KV_DEQ_CASE
  }
  if (attr != cudaSuccess) {
    (void)cudaGetLastError();
    return Status(StatusCode::kCudaError, std::string("dequantize_kv: cudaFuncSetAttribute failed: ") +
                                              cudaGetErrorString(attr));
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status(StatusCode::kCudaError, std::string("dequantize_kv launch failed: ") + cudaGetErrorString(err));
  }
  return Status();
}

}  // namespace nvfp4kv::cuda
