// nvfp4kv — dequantize_kv kernel: gathers a batch of sequences from the paged cache into dense
// [total_tokens, num_kv_heads, head_dim] f32/bf16/f16 K and V (SPEC.md §5 decode rules).
//
// In:  cache views (NHD/HND, any strides), block_tables [batch, max_pages] i32, seq_lens [batch]
//      i32 (device memory), per-layer fp32 decode scales by pointer.
// Out: out_k, out_v [total_tokens, num_kv_heads, head_dim], any token/head stride.
// Mapping: each CTA first turns seq_lens into exclusive prefix sums in shared memory (a block
//      scan; batch ≤ kMaxDequantizeKvBatch), then its threads walk (row, head, 16-element chunk)
//      items grid-stride, K and V per item; a row finds its sequence by binary search in the
//      prefix sums. Consecutive threads take consecutive chunks, so writes are contiguous.
// Device-side invalid input cannot be reported: negative lengths count as 0, tokens whose page
// index is out of [0, num_pages) or beyond max_pages and rows past Σ seq_lens are written as
// zeros, tokens past total_tokens are dropped; nothing outside out_k/out_v is written.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/kv_format.h"
#include "cuda/kv/launch.h"

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

template <int F>
__global__ void __launch_bounds__(kThreads) dequantize_kv_kernel(const __grid_constant__ DequantParams p) {
  extern __shared__ int64_t prefix[];  // [batch + 1] exclusive prefix sums of seq_lens
  constexpr int kElemBytes = (F == kvfmt::kBF16 || F == kvfmt::kF16) ? 2 : 1;
  constexpr int kChunkBytes = (F == kvfmt::kBF16 || F == kvfmt::kF16) ? 32 : F == kvfmt::kFP8 ? 16 : 8;
  constexpr bool kHasScale = F == kvfmt::kFP8 || F == kvfmt::kNvfp4;
  constexpr bool kFp4 = F == kvfmt::kNvfp4 || F == kvfmt::kFp4Block16;
  __shared__ int64_t warp_sums[kThreads / 32];

  // Block scan of the lengths: each thread sums a contiguous segment, the segment sums are
  // scanned across warps, then each thread writes its segment's running prefix.
  const int per = (p.batch + kThreads - 1) / kThreads;
  const int begin = threadIdx.x * per;
  const int end = begin + per < p.batch ? begin + per : p.batch;
  int64_t local = 0;
  for (int b = begin; b < end; ++b) {
    const int32_t len = p.seq_lens[b * p.sl_stride];
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
  int64_t warp_off = 0;
  for (int w = 0; w < warp; ++w) warp_off += warp_sums[w];
  int64_t run = warp_off + incl - local;
  for (int b = begin; b < end; ++b) {
    prefix[b] = run;
    const int32_t len = p.seq_lens[b * p.sl_stride];
    run += len > 0 ? len : 0;
  }
  if (threadIdx.x == kThreads - 1) prefix[p.batch] = run;
  __syncthreads();

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

RowStrides row_strides(const TensorView& v, KvLayout layout) {
  if (layout == KvLayout::kNHD) return {v.strides[0], v.strides[1], v.strides[2]};
  return {v.strides[0], v.strides[2], v.strides[1]};
}

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

bool strides_aligned(const RowStrides& s, int64_t elem_bytes, int64_t bytes) {
  return (s.page * elem_bytes) % bytes == 0 && (s.token * elem_bytes) % bytes == 0 &&
         (s.head * elem_bytes) % bytes == 0;
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
