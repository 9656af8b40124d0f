// nvfp4kv — append_kv kernel: writes new K/V rows into their paged-cache slots, quantizing them
// to the cache format (SPEC.md §5; nvfp4 §3.1/§3.2, fp4_block16 §3.4, fp8 e4m3(rn(x / scale))).
//
// In:  keys, values [num_tokens, num_kv_heads, head_dim] bf16/f16, any token/head stride;
//      slot_mapping [num_tokens] i64 (slot = page · page_size + offset; < 0 skip; ≥ capacity skip:
//      the kernel never writes outside the cache); per-layer fp32 decode scales by pointer.
// Out: the cache's data (and FP4 scale) views, NHD or HND, strides from the views.
// Mapping: FP4 formats with 16-byte aligned views: append_fp4_fast_kernel, one thread per
//      (K or V, token, head, 32 elements = 2 FP4 blocks); everything else: append_kv_kernel, one
//      thread per (token, head, 16-element chunk) doing that chunk of both K and V. Consecutive
//      threads take consecutive pieces of a row, so a warp reads and writes contiguous runs; a
//      chunk is exactly one FP4 block, so no cross-thread reduction is needed.
// One launch, no host synchronisation, no allocation: CUDA-graph safe (slots and scales are
// read on the device at run time).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "api/check.h"
#include "common/kv_format.h"
#include "cuda/kv/launch.h"
#include "cuda/common/bits.cuh"
#include "cuda/common/launch_status.cuh"

namespace nvfp4kv::cuda {
namespace {

/// Strides (elements of the view) of the page, in-page token and head dimensions.
struct RowStrides {
  int64_t page, token, head;
};

struct AppendParams {
  const uint16_t* keys;    // [num_tokens, num_kv_heads, head_dim] bf16/f16 bits
  const uint16_t* values;  // same shape, own strides
  int64_t key_token_stride, key_head_stride, value_token_stride, value_head_stride;
  const int64_t* slots;    // [num_tokens] i64, stride slot_stride
  int64_t slot_stride;
  uint8_t* k_data;         // cache data, element size data_elem_bytes
  uint8_t* v_data;
  RowStrides kd, vd;
  uint8_t* k_sf;           // FP4 scales [.., head_dim/16] u8 (null otherwise)
  uint8_t* v_sf;
  RowStrides ks, vs;
  const float* k_scale;    // fp32 decode scales (fp8, nvfp4)
  const float* v_scale;
  int64_t num_items;       // num_tokens · num_kv_heads · chunks
  int64_t page_size;
  int64_t capacity;        // num_pages · page_size
  int num_kv_heads;
  uint32_t chunks;         // head_dim / 16 (4, 8 or 16)
  uint32_t chunks_log2;
  int fp4_mode;            // kvfmt::Fp4Mode
  bool in_f16;             // selects the kernel instantiation
  bool vec_in;             // 16-byte loads possible for both inputs
  bool vec_out;            // full-width stores possible for the data views
};

/// 16 input elements as raw bits (two 16-byte loads when aligned).
__device__ __forceinline__ void load_bits(const uint16_t* p, bool vec, uint16_t* bits) {
  if (vec) {
    const uint4 a = __ldg(reinterpret_cast<const uint4*>(p));
    const uint4 b = __ldg(reinterpret_cast<const uint4*>(p) + 1);
    const uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 8; ++i) {
      bits[2 * i] = static_cast<uint16_t>(w[i]);
      bits[2 * i + 1] = static_cast<uint16_t>(w[i] >> 16);
    }
  } else {
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) bits[i] = __ldg(p + i);
  }
}

/// Quantizes and stores one chunk of K or V (format F) at data/scale element offsets.
template <int F, bool kInF16>
__device__ __forceinline__ void store_chunk(const AppendParams& p, const uint16_t* bits, uint8_t* data,
                                            uint8_t* sf, float s_dec, const kvfmt::Nvfp4Scales& nv) {
  if constexpr (F == kvfmt::kBF16 || F == kvfmt::kF16) {
    uint32_t w[8];
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t lo = kvfmt::plain_element(bits[2 * i], kInF16, F == kvfmt::kF16);
      const uint32_t hi = kvfmt::plain_element(bits[2 * i + 1], kInF16, F == kvfmt::kF16);
      w[i] = lo | (hi << 16);
    }
    if (p.vec_out) {
      reinterpret_cast<uint4*>(data)[0] = make_uint4(w[0], w[1], w[2], w[3]);
      reinterpret_cast<uint4*>(data)[1] = make_uint4(w[4], w[5], w[6], w[7]);
    } else {
      uint16_t* d = reinterpret_cast<uint16_t*>(data);
      NVFP4KV_KV_UNROLL
      for (int i = 0; i < 8; ++i) {
        d[2 * i] = static_cast<uint16_t>(w[i]);
        d[2 * i + 1] = static_cast<uint16_t>(w[i] >> 16);
      }
    }
  } else if constexpr (F == kvfmt::kFP8) {
    uint32_t w[4];
    NVFP4KV_KV_UNROLL
    for (int j = 0; j < 4; ++j) {
      float q[4];
      NVFP4KV_KV_UNROLL
      for (int k = 0; k < 4; ++k) q[k] = fmt::fdiv_rn(kvfmt::half_to_float(bits[4 * j + k], kInF16), s_dec);
      w[j] = kvfmt::e4m3x2(q[0], q[1]) | (kvfmt::e4m3x2(q[2], q[3]) << 16);
    }
    if (p.vec_out) {
      *reinterpret_cast<uint4*>(data) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
      NVFP4KV_KV_UNROLL
      for (int i = 0; i < 16; ++i) data[i] = static_cast<uint8_t>(w[i >> 2] >> (8 * (i & 3)));
    }
  } else {
    float x[16];
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) x[i] = kvfmt::half_to_float(bits[i], kInF16);
    uint32_t w[2];
    uint8_t s;
    if constexpr (F == kvfmt::kNvfp4) {
      s = kvfmt::nvfp4_chunk(x, nv, p.fp4_mode, w);
    } else {
      s = kvfmt::fp4_block16_chunk(x, w);
    }
    if (p.vec_out) {
      *reinterpret_cast<uint2*>(data) = make_uint2(w[0], w[1]);
    } else {
      NVFP4KV_KV_UNROLL
      for (int i = 0; i < 8; ++i) data[i] = static_cast<uint8_t>(w[i >> 2] >> (8 * (i & 3)));
    }
    *sf = s;
  }
}

// Slot → (page, offset in page); 32-bit division when capacity < 2^31 (then page_size is too).
__device__ __forceinline__ void split_slot(int64_t slot, int64_t capacity, int64_t page_size, int64_t& page,
                                           int64_t& off) {
  if (capacity <= 0x7FFFFFFF) {
    const uint32_t s32 = static_cast<uint32_t>(slot), ps = static_cast<uint32_t>(page_size);
    const uint32_t pg = s32 / ps;
    page = pg;
    off = s32 - pg * ps;
  } else {
    page = slot / page_size;
    off = slot - page * page_size;
  }
}

template <int F, bool kInF16>
__global__ void __launch_bounds__(256) append_kv_kernel(const __grid_constant__ AppendParams p) {
  constexpr int kElemBytes = (F == kvfmt::kBF16 || F == kvfmt::kF16) ? 2 : 1;
  constexpr int kChunkBytes = (F == kvfmt::kBF16 || F == kvfmt::kF16) ? 32 : F == kvfmt::kFP8 ? 16 : 8;
  constexpr bool kHasScale = F == kvfmt::kFP8 || F == kvfmt::kNvfp4;
  constexpr bool kFp4 = F == kvfmt::kNvfp4 || F == kvfmt::kFp4Block16;
  // Per-layer constants once per thread (S_enc = rn(1/S_dec) and rn(S_enc/6) for nvfp4).
  const float k_dec = kHasScale ? *p.k_scale : 1.0f;
  const float v_dec = kHasScale ? *p.v_scale : 1.0f;
  kvfmt::Nvfp4Scales k_nv{}, v_nv{};
  if constexpr (F == kvfmt::kNvfp4) {
    k_nv = kvfmt::nvfp4_scales(k_dec);
    v_nv = kvfmt::nvfp4_scales(v_dec);
  }
  // 32-bit index math: the launcher guarantees num_items < 2^31; chunks is 4, 8 or 16.
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t heads = static_cast<uint32_t>(p.num_kv_heads);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<uint32_t>(p.num_items); i += stride) {
    const uint32_t c = i & (p.chunks - 1);
    const uint32_t row = i >> p.chunks_log2;
    const uint32_t t = row / heads;
    const uint32_t h = row - t * heads;
    const int64_t slot = p.slots[static_cast<int64_t>(t) * p.slot_stride];
    // Negative slots are skipped by contract; slots past the cache cannot be reported from
    // here, so they are skipped too (never a write outside the cache).
    if (slot < 0 || slot >= p.capacity) continue;
    int64_t page, off;
    split_slot(slot, p.capacity, p.page_size, page, off);
    uint16_t kb[16], vb[16];
    load_bits(p.keys + t * p.key_token_stride + h * p.key_head_stride + c * 16, p.vec_in, kb);
    load_bits(p.values + t * p.value_token_stride + h * p.value_head_stride + c * 16, p.vec_in, vb);
    const int64_t kdo = page * p.kd.page + off * p.kd.token + h * p.kd.head;
    const int64_t vdo = page * p.vd.page + off * p.vd.token + h * p.vd.head;
    uint8_t* ksf = nullptr;
    uint8_t* vsf = nullptr;
    if constexpr (kFp4) {
      ksf = p.k_sf + page * p.ks.page + off * p.ks.token + h * p.ks.head + c;
      vsf = p.v_sf + page * p.vs.page + off * p.vs.token + h * p.vs.head + c;
    }
    store_chunk<F, kInF16>(p, kb, p.k_data + kdo * kElemBytes + c * kChunkBytes, ksf, k_dec, k_nv);
    store_chunk<F, kInF16>(p, vb, p.v_data + vdo * kElemBytes + c * kChunkBytes, vsf, v_dec, v_nv);
  }
}

// ---------------------------------------------------------------------------------------------
// Fast FP4 path (nvfp4, nvfp4 4over6, fp4_block16) for 16-byte aligned inputs and data views.
// Mapping: one thread per (tensor, token, head, 32-element pair of blocks): blockIdx.y picks K
// or V; four 16-byte loads, one 16-byte data store and two scale bytes. Per element: one unpack,
// half a packed max, one FMUL, the 6-instruction E2M1 encode of kvfmt::e2m1_code_magic and
// ~1.6 PRMT/LOP3 to pack codes and signs (v2 spent ~55 lane-instructions per element).
// A block holding a NaN input takes the reference chunk code (rare; keeps NaN → 0x7 exact).

struct FastAppendParams {
  const uint16_t* in[2];  // keys, values
  int64_t in_token[2], in_head[2];
  uint8_t* data[2];       // FP4 data views (u8: strides in bytes)
  RowStrides ds[2];
  uint8_t* sf[2];         // scale views (1-byte elements)
  RowStrides ss[2];
  const float* dec[2];    // decode scales (nvfp4)
  const int64_t* slots;
  int64_t slot_stride;
  int64_t capacity;
  uint32_t items;         // num_tokens · num_kv_heads · head_dim / 32 (per tensor)
  uint32_t pairs_log2;    // log2(head_dim / 32)
  uint32_t heads;
  int64_t page_size;
  bool mae;               // 4over6 error metric
};

/// E4M3 byte → fp32 through the hardware e4m3x2 → f16x2 conversion (exact).
__device__ __forceinline__ float e4m3_byte_to_float(uint32_t byte) {
  uint32_t h2;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(static_cast<unsigned short>(byte)));
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h2)));
}

template <bool kInF16>
__device__ __forceinline__ void unpack16(const uint32_t* w, float* x) {
  NVFP4KV_KV_UNROLL
  for (int k = 0; k < 8; ++k) {
    if constexpr (kInF16) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[k]));
      x[2 * k] = f.x;
      x[2 * k + 1] = f.y;
    } else {
      x[2 * k] = __uint_as_float(w[k] << 16);
      x[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
    }
  }
}

/// E2M1 magnitude (fp32 bits) of code mc's low byte, by PRMT tables of the two varying bytes.
__device__ __forceinline__ uint32_t magnitude_bits(uint32_t mc) {
  // 0, 0.5, 1, 1.5, 2, 3, 4, 6: byte 3 = 00 3F 3F 3F 40 40 40 40, byte 2 = 00 00 80 C0 00 40 80 C0.
  return prmt(0x3F3F3F00u, 0x40404040u, mc << 12) | prmt(0xC0800000u, 0xC0804000u, mc << 8);
}

/// Candidate of the 4over6 rule: codes (magic floats' bits) and error for scale byte `sf`.
__device__ __forceinline__ float candidate(const float* x, float v, uint32_t sf, float s_dec, bool mae,
                                           uint32_t* mc) {
  const float sff = e4m3_byte_to_float(sf);
  const float enc = v == 0.0f ? 0.0f : fminf(fmt::frcp_rn(fmt::fmul_rn(sff, s_dec)), fmt::kFltMax);
  float err = 0.0f;
  NVFP4KV_KV_UNROLL
  for (int i = 0; i < 16; ++i) {
    // On magnitudes: the code's sign is x's (NaN-free block, enc ≥ 0) and rn is symmetric, so
    // d = sign(x) · rn(rn(rn(|q| · sf) · S_dec) − |x|) bit for bit; d² and |d| are unchanged.
    const float ax = fabsf(x[i]);
    mc[i] = __float_as_uint(kvfmt::e2m1_code_magic(fmt::fmul_rn(ax, enc)));
    const float q = __uint_as_float(magnitude_bits(mc[i]));
    const float d = fmt::fsub_rn(fmt::fmul_rn(fmt::fmul_rn(q, sff), s_dec), ax);
    err = fmt::fadd_rn(err, mae ? fabsf(d) : fmt::fmul_rn(d, d));
  }
  return err;
}

/// One 16-element block (8 input words) → two packed data words and the scale byte.
/// kMode: 0 nvfp4 plain (§3.1), 1 nvfp4 4over6 (§3.2), 2 fp4_block16 (§3.4).
template <int kMode, bool kInF16>
__device__ __forceinline__ uint32_t encode_block(const uint32_t* w, const kvfmt::Nvfp4Scales& nv, bool mae,
                                                 uint32_t* out) {
  // max |x| with NaN winning, on the 16-bit patterns (exact: the input type's own order).
  uint32_t m = w[0] & 0x7FFF7FFFu;
  NVFP4KV_KV_UNROLL
  for (int k = 1; k < 8; ++k) m = max_u16x2(m, w[k] & 0x7FFF7FFFu);
  m = max_u16x2(m, m >> 16) & 0xFFFFu;
  float x[16];
  unpack16<kInF16>(w, x);
  if (m >= (kInF16 ? 0x7C00u : 0x7F80u)) {
    // A NaN or an infinity in the block: the reference chunk rules (NaN ignored by the max,
    // coded 0x7). Infinities go here too because with an extreme decode scale the encode
    // multiplier can be 0 and ±Inf · 0 = NaN must still code as the reference does.
    uint8_t s;
    if constexpr (kMode == 2) {
      s = kvfmt::fp4_block16_chunk(x, out);
    } else {
      s = kvfmt::nvfp4_chunk(x, nv, kMode == 0 ? kvfmt::kModePlain
                                                : (mae ? kvfmt::kModeFourOverSixMae : kvfmt::kModeFourOverSixMse), out);
    }
    return s;
  }
  const float v = kInF16 ? __half2float(__ushort_as_half(static_cast<unsigned short>(m))) : __uint_as_float(m << 16);
  uint32_t mc[16];
  uint32_t sf;
  if constexpr (kMode == 1) {
    // SPEC §3.2 with the hardware E4M3 conversion (same RNE/satfinite byte; base is not NaN).
    const float base = fmt::fmul_rn(fmt::fdiv_rn(v, 6.0f), nv.s_enc);
    const uint32_t sf6 = kvfmt::e4m3x2(fminf(base, fmt::kE4m3Max), 0.0f) & 0xFFu;
    const uint32_t sf4 = kvfmt::e4m3x2(fminf(fmt::fmul_rn(base, 1.5f), fmt::kE4m3Max), 0.0f) & 0xFFu;
    uint32_t mc4[16];
    const float err6 = candidate(x, v, sf6, nv.s_dec, mae, mc);
    const float err4 = candidate(x, v, sf4, nv.s_dec, mae, mc4);
    sf = sf6;
    if (err4 < err6) {  // ties (and NaN errors) keep map-to-6
      sf = sf4;
      NVFP4KV_KV_UNROLL
      for (int i = 0; i < 16; ++i) mc[i] = mc4[i];
    }
  } else {
    float enc;
    if constexpr (kMode == 0) {
      sf = kvfmt::e4m3x2(fmt::fmul_rn(v, nv.sf_mult), 0.0f) & 0xFFu;
      enc = v == 0.0f ? 0.0f : fminf(fmt::frcp_rn(fmt::fmul_rn(e4m3_byte_to_float(sf), nv.s_dec)), fmt::kFltMax);
    } else {
      const fmt::MxBlockScale bs = fmt::mx_block_scale(v);
      sf = bs.code;
      enc = bs.encode;
    }
    NVFP4KV_KV_UNROLL
    for (int i = 0; i < 16; ++i) mc[i] = __float_as_uint(kvfmt::e2m1_code_magic(fabsf(fmt::fmul_rn(x[i], enc))));
  }
  out[0] = pack8_magic_codes(mc, w);
  out[1] = pack8_magic_codes(mc + 8, w + 4);
  return sf;
}

template <int kMode, bool kInF16>
__global__ void __launch_bounds__(256) append_fp4_fast_kernel(const __grid_constant__ FastAppendParams p) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.items) return;
  const int ts = blockIdx.y;  // 0 keys, 1 values
  const uint32_t pr = i & ((1u << p.pairs_log2) - 1u);
  const uint32_t row = i >> p.pairs_log2;
  const uint32_t t = row / p.heads;
  const uint32_t h = row - t * p.heads;
  const int64_t slot = __ldg(p.slots + static_cast<int64_t>(t) * p.slot_stride);
  if (slot < 0 || slot >= p.capacity) return;  // skipped (negative) or unreportable (too large)
  int64_t page, off;
  split_slot(slot, p.capacity, p.page_size, page, off);
  const uint4* src = reinterpret_cast<const uint4*>(p.in[ts] + t * p.in_token[ts] + h * p.in_head[ts] + pr * 32);
  const uint4 a0 = __ldg(src), a1 = __ldg(src + 1), a2 = __ldg(src + 2), a3 = __ldg(src + 3);
  kvfmt::Nvfp4Scales nv{};
  if constexpr (kMode != 2) nv = kvfmt::nvfp4_scales(__ldg(p.dec[ts]));
  const uint32_t w[16] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w,
                          a2.x, a2.y, a2.z, a2.w, a3.x, a3.y, a3.z, a3.w};
  uint32_t out[4];
  const uint32_t s0 = encode_block<kMode, kInF16>(w, nv, p.mae, out);
  const uint32_t s1 = encode_block<kMode, kInF16>(w + 8, nv, p.mae, out + 2);
  const RowStrides& d = p.ds[ts];
  *reinterpret_cast<uint4*>(p.data[ts] + page * d.page + off * d.token + h * d.head + pr * 16) =
      make_uint4(out[0], out[1], out[2], out[3]);
  const RowStrides& q = p.ss[ts];
  uint8_t* sfp = p.sf[ts] + page * q.page + off * q.token + h * q.head + pr * 2;
  sfp[0] = static_cast<uint8_t>(s0);
  sfp[1] = static_cast<uint8_t>(s1);
}

RowStrides row_strides(const TensorView& v, KvLayout layout) {
  if (layout == KvLayout::kNHD) return {v.strides[0], v.strides[1], v.strides[2]};
  return {v.strides[0], v.strides[2], v.strides[1]};
}

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

/// True if every stride (elements of `elem_bytes`) keeps `bytes`-alignment.
bool strides_aligned(const RowStrides& s, int64_t elem_bytes, int64_t bytes) {
  return (s.page * elem_bytes) % bytes == 0 && (s.token * elem_bytes) % bytes == 0 &&
         (s.head * elem_bytes) % bytes == 0;
}

}  // namespace

Status launch_append_kv(const KvCacheView& c, const TensorView& keys, const TensorView& values,
                        const TensorView& slot_mapping, const AppendOptions& options, Stream stream) {
  AppendParams p{};
  p.keys = static_cast<const uint16_t*>(keys.data);
  p.values = static_cast<const uint16_t*>(values.data);
  p.key_token_stride = keys.strides[0];
  p.key_head_stride = keys.strides[1];
  p.value_token_stride = values.strides[0];
  p.value_head_stride = values.strides[1];
  p.slots = static_cast<const int64_t*>(slot_mapping.data);
  p.slot_stride = slot_mapping.strides[0];
  p.k_data = static_cast<uint8_t*>(c.k_data.data);
  p.v_data = static_cast<uint8_t*>(c.v_data.data);
  p.kd = row_strides(c.k_data, c.layout);
  p.vd = row_strides(c.v_data, c.layout);
  const bool fp4 = kv_format_is_fp4(c.format);
  if (fp4) {
    p.k_sf = static_cast<uint8_t*>(c.k_scales.data);
    p.v_sf = static_cast<uint8_t*>(c.v_scales.data);
    p.ks = row_strides(c.k_scales, c.layout);
    p.vs = row_strides(c.v_scales, c.layout);
  }
  p.k_scale = c.k_scale;
  p.v_scale = c.v_scale;
  p.chunks = static_cast<uint32_t>(c.head_dim / kvfmt::kChunk);
  p.chunks_log2 = p.chunks == 4 ? 2 : p.chunks == 8 ? 3 : 4;
  p.num_kv_heads = static_cast<int>(c.num_kv_heads);
  p.num_items = keys.shape[0] * c.num_kv_heads * p.chunks;
  p.page_size = c.page_size;
  p.capacity = c.num_pages * c.page_size;
  p.fp4_mode = !options.four_over_six ? kvfmt::kModePlain
               : options.metric == ErrorMetric::kMae ? kvfmt::kModeFourOverSixMae : kvfmt::kModeFourOverSixMse;
  p.in_f16 = keys.dtype == DType::kF16;
  p.vec_in = aligned(keys.data, 16) && aligned(values.data, 16) && keys.strides[0] % 8 == 0 &&
             keys.strides[1] % 8 == 0 && values.strides[0] % 8 == 0 && values.strides[1] % 8 == 0;
  const int64_t es = static_cast<int64_t>(dtype_size(c.k_data.dtype));
  const int64_t chunk_bytes = fp4 ? 8 : 16 * es;
  const int64_t want = chunk_bytes > 16 ? 16 : chunk_bytes;
  p.vec_out = aligned(c.k_data.data, want) && aligned(c.v_data.data, want) &&
              strides_aligned(p.kd, es, want) && strides_aligned(p.vd, es, want);
  if (p.num_items == 0) return Status();
  if (p.num_items >= (int64_t(1) << 31)) {
    return Status(StatusCode::kInvalidArgument, "append_kv: num_tokens · num_kv_heads · head_dim / 16 must be < 2^31");
  }
  constexpr int kThreads = 256;
  if (fp4 && p.vec_in && aligned(c.k_data.data, 16) && aligned(c.v_data.data, 16) && strides_aligned(p.kd, 1, 16) &&
      strides_aligned(p.vd, 1, 16)) {
    FastAppendParams f{};
    f.in[0] = p.keys;
    f.in[1] = p.values;
    f.in_token[0] = p.key_token_stride;
    f.in_head[0] = p.key_head_stride;
    f.in_token[1] = p.value_token_stride;
    f.in_head[1] = p.value_head_stride;
    copy_cache_sides(f, p);
    f.slots = p.slots;
    f.slot_stride = p.slot_stride;
    f.capacity = p.capacity;
    f.items = static_cast<uint32_t>(p.num_items / 2);  // pairs of chunks
    f.pairs_log2 = p.chunks_log2 - 1;
    f.heads = static_cast<uint32_t>(p.num_kv_heads);
    f.page_size = p.page_size;
    f.mae = p.fp4_mode == kvfmt::kModeFourOverSixMae;
    const dim3 grid(static_cast<unsigned>((f.items + kThreads - 1) / kThreads), 2);
    const bool f16 = p.in_f16;
    if (c.format == KvFormat::kFp4Block16) {
      if (f16) append_fp4_fast_kernel<2, true><<<grid, kThreads, 0, stream>>>(f);
      else append_fp4_fast_kernel<2, false><<<grid, kThreads, 0, stream>>>(f);
    } else if (p.fp4_mode == kvfmt::kModePlain) {
      if (f16) append_fp4_fast_kernel<0, true><<<grid, kThreads, 0, stream>>>(f);
      else append_fp4_fast_kernel<0, false><<<grid, kThreads, 0, stream>>>(f);
    } else {
      if (f16) append_fp4_fast_kernel<1, true><<<grid, kThreads, 0, stream>>>(f);
      else append_fp4_fast_kernel<1, false><<<grid, kThreads, 0, stream>>>(f);
    }
    return last_launch_status("append_kv launch");
  }
  const int64_t blocks_needed = (p.num_items + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(blocks_needed < 65535 * 16 ? blocks_needed : 65535 * 16);
#define NVFP4KV_APPEND_CASE(KF, F)                                                         \
  case KvFormat::KF:                                                                      \
    if (p.in_f16) append_kv_kernel<F, true><<<blocks, kThreads, 0, stream>>>(p);          \
    else append_kv_kernel<F, false><<<blocks, kThreads, 0, stream>>>(p);                 \
    break;
  switch (c.format) {
    NVFP4KV_APPEND_CASE(kBF16, kvfmt::kBF16)
    NVFP4KV_APPEND_CASE(kF16, kvfmt::kF16)
    NVFP4KV_APPEND_CASE(kFP8E4M3, kvfmt::kFP8)
    NVFP4KV_APPEND_CASE(kNvfp4, kvfmt::kNvfp4)
    NVFP4KV_APPEND_CASE(kFp4Block16, kvfmt::kFp4Block16)
  }
#undef NVFP4KV_APPEND_CASE
  return last_launch_status("append_kv launch");
}

}  // namespace nvfp4kv::cuda
