// nvfp4kv — dequantize kernels and cuda::launch_dequantize (src/cuda/quantize/launch.h).
//
// In:  data [B, M, K/2] u8 (any row stride), scales [B, rows_pad, cols_pad] u8 (layout of
//      SPEC.md §4), global_scale [1] or [B · M] f32 decode scales (nvfp4 recipes).
// Out: [B, M, K] f32/f16/bf16, any row stride: x̂ = rn(rn(e2m1 · sf) · S_dec) (nvfp4 recipes) or
//      rn(e2m1 · 2^(code − 127)) (mx recipes), rounded to nearest-even into the output type —
//      the bytes of the CPU reference (src/ref/quantize.cpp).
// Map: one thread per 64-element chunk (32 data bytes, 4 or 2 scale bytes); 128 threads per
//      block; the output of full chunks is staged in shared memory and written by the warp as
//      whole 128-byte lines (16-byte stores), the rest element by element.
#include <cuda_runtime.h>

#include <string>

#include "cuda/quantize/launch.h"
#include "cuda/quantize/quantize_chunk.cuh"
#include "cuda/common/launch_status.cuh"

namespace nvfp4kv::cuda {
namespace {

namespace fmt = nvfp4kv::fmt;
constexpr int kThreads = 128;

template <DequantOutput O> struct OutTraits;
template <> struct OutTraits<DequantOutput::kF32> { static constexpr int kBytes = 4; };
template <> struct OutTraits<DequantOutput::kF16> { static constexpr int kBytes = 2; };
template <> struct OutTraits<DequantOutput::kBF16> { static constexpr int kBytes = 2; };

/// fp32 → output bits with the reference's rounding: the hardware conversions round to
/// nearest-even like fmt::float_to_{f16,bf16}_bits; NaN goes through the reference helper so
/// the payload matches too.
template <DequantOutput O>
__device__ __forceinline__ uint32_t to_out_bits(float x) {
  if constexpr (O == DequantOutput::kF32) {
    return __float_as_uint(x);
  } else if constexpr (O == DequantOutput::kF16) {
    // NaN: fmt::float_to_f16_bits keeps the sign and the top payload bits, quiet bit set.
    const uint32_t u = __float_as_uint(x);
    const uint32_t nan = ((u >> 16) & 0x8000u) | 0x7E00u | ((u >> 13) & 0x1FFu);
    return fmt::is_nan(x) ? nan : static_cast<uint32_t>(__half_as_ushort(__float2half_rn(x)));
  } else {
    // NaN: fmt::float_to_bf16_bits keeps the top half with the quiet bit set.
    const uint32_t u = __float_as_uint(x);
    return fmt::is_nan(x) ? ((u >> 16) | 0x40u) : static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(x)));
  }
}

template <DequantOutput O, DequantKind K>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const __grid_constant__ DequantizeParams p) {
  constexpr int kBlock = K == DequantKind::kMx32 ? 32 : 16;
  constexpr int kBlocksPerChunk = 64 / kBlock;
  constexpr int kOutBytes = OutTraits<O>::kBytes;
  constexpr int kPieces = 64 * kOutBytes / 16;  // 16-byte pieces of one output chunk
  __shared__ uint4 stage_all[kThreads / 32][32 * kPieces];
  uint4* stage = stage_all[threadIdx.x / 32];
  const int lane = threadIdx.x & 31;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t total = p.batch * p.rows * p.chunks_per_row;
  const bool active = idx < total;
  const int64_t row = idx / p.chunks_per_row;
  const int64_t c = idx - row * p.chunks_per_row;
  const int64_t b = row / p.rows;
  const int64_t m = row - b * p.rows;
  const int64_t rem = (p.k - c * 64) / 16;
  const int valid_subs = !active ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));

  uint32_t out_words[64 * kOutBytes / 4];
  if (valid_subs > 0) {
    const uint8_t* src = p.data + b * p.data_batch_stride + m * p.data_row_stride + c * 32;
    uint32_t words[8];
    if (valid_subs == 4 && p.data_vec16) {
      const uint4 a = __ldg(reinterpret_cast<const uint4*>(src));
      const uint4 d = __ldg(reinterpret_cast<const uint4*>(src) + 1);
      words[0] = a.x; words[1] = a.y; words[2] = a.z; words[3] = a.w;
      words[4] = d.x; words[5] = d.y; words[6] = d.z; words[7] = d.w;
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        uint32_t w = 0;
        if (j / 2 < valid_subs) {
#pragma unroll
          for (int t = 0; t < 4; ++t) w |= static_cast<uint32_t>(__ldg(src + 4 * j + t)) << (8 * t);
        }
        words[j] = w;
      }
    }
    const uint8_t* sf_row = p.scales + b * p.scales_batch_stride;
    float s_dec = 0.0f;
    if constexpr (K == DequantKind::kNvfp4) s_dec = p.per_row_scale ? p.global_scale[b * p.rows + m] : p.global_scale[0];
    float block_scale[kBlocksPerChunk];
#pragma unroll
    for (int blk = 0; blk < kBlocksPerChunk; ++blk) {
      const int64_t kb = c * kBlocksPerChunk + blk;
      const uint32_t byte = kb < p.kv ? sf_row[fmt::sf_offset(p.layout, m, kb, p.kv)] : 0u;
      block_scale[blk] = K == DequantKind::kNvfp4 ? fmt::e4m3_to_float(byte) : fmt::ue8m0_to_float(byte);
    }
    // Fast path (every scale and S_dec finite and non-negative, so no output is NaN): the grid value from the
    // 3 magnitude bits with fp32 .sat arithmetic (FMA pipe; the reference's e2m1_to_float is
    // integer/convert work): q = 2·(sat(m/4) + sat(m/2 − 2) + sat(m − 6)), exact; then
    // rn(rn(q · sf) · S_dec) (nvfp4; q · sf is exact) or rn(q · 2^e) (mx), and the sign bit of
    // the code copied onto the result (rounding is symmetric). Otherwise the reference helpers.
    // (Bit patterns below 0x7F800000: +0 or positive finite; a negative scale would flip the
    // sign the copy below assumes.)
    bool finite = fmt::float_bits(s_dec) < 0x7F800000u || K != DequantKind::kNvfp4;
#pragma unroll
    for (int blk = 0; blk < kBlocksPerChunk; ++blk) finite = finite && fmt::float_bits(block_scale[blk]) < 0x7F800000u;
    if (finite) {
      float vals[64];
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        const uint32_t w = words[i / 8];
        const uint32_t sh = 4 * (i % 8);
        const float mf = __fsub_rn(__uint_as_float(((w >> sh) & 7u) | 0x4B000000u), 0x1p23f);
        const float s1 = __saturatef(__fmul_rn(mf, 0.25f));
        const float s2 = __saturatef(__fmaf_rn(mf, 0.5f, -2.0f));
        const float s3 = __saturatef(__fadd_rn(mf, -6.0f));
        const float q = __fmul_rn(__fadd_rn(__fadd_rn(s1, s2), s3), 2.0f);
        const float sf = block_scale[i / kBlock];
        const float mag = K == DequantKind::kNvfp4 ? __fmul_rn(__fmul_rn(q, sf), s_dec) : __fmul_rn(q, sf);
        const uint32_t sign = (w << (28 - sh)) & 0x80000000u;  // code bit 3 → bit 31
        vals[i] = __uint_as_float(__float_as_uint(mag) | sign);
      }
#pragma unroll
      for (int i = 0; i < 64; i += 2) {
        if constexpr (kOutBytes == 4) {
          out_words[i] = __float_as_uint(vals[i]);
          out_words[i + 1] = __float_as_uint(vals[i + 1]);
        } else if constexpr (O == DequantOutput::kF16) {
          const __half2 h = __floats2half2_rn(vals[i], vals[i + 1]);
          out_words[i / 2] = *reinterpret_cast<const uint32_t*>(&h);
        } else {
          const __nv_bfloat162 h = __floats2bfloat162_rn(vals[i], vals[i + 1]);
          out_words[i / 2] = *reinterpret_cast<const uint32_t*>(&h);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        const uint32_t code = (words[i / 8] >> (4 * (i % 8))) & 0xFu;
        const float sf = block_scale[i / kBlock];
        const float x = K == DequantKind::kNvfp4 ? fmt::nvfp4_dequant(code, sf, s_dec)
                                                  : fmt::fmul_rn(fmt::e2m1_to_float(code), sf);
        const uint32_t bits = to_out_bits<O>(x);
        if constexpr (kOutBytes == 4) {
          out_words[i] = bits;
        } else {
          if (i % 2 == 0) out_words[i / 2] = bits;
          else out_words[i / 2] |= bits << 16;
        }
      }
    }
  }
  uint8_t* dst = static_cast<uint8_t*>(p.output) + (b * p.out_batch_stride + m * p.out_row_stride + c * 64) * kOutBytes;
  // Full chunks with 16-byte aligned rows go through the warp's stage and leave as whole lines
  // (a lane's own 16-byte stores would each touch 32 lines); the rest store their own elements.
  const bool deferred = valid_subs == 4 && p.out_vec16;
  if (valid_subs > 0 && !deferred) {
    constexpr int kWordsPerSub = 16 * kOutBytes / 4;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if (s >= valid_subs) break;
#pragma unroll
      for (int e = 0; e < 16; ++e) {
        const int i = s * 16 + e;
        if constexpr (kOutBytes == 4) {
          reinterpret_cast<uint32_t*>(dst)[i] = out_words[i];
        } else {
          reinterpret_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(out_words[i / 2] >> (16 * (i % 2)));
        }
      }
      (void)kWordsPerSub;
    }
  }
#pragma unroll
  for (int s = 0; s < kPieces; ++s) {
    stage[detail::stage_slot<kPieces>(lane, s)] =
        make_uint4(out_words[4 * s], out_words[4 * s + 1], out_words[4 * s + 2], out_words[4 * s + 3]);
  }
  __syncwarp();
  const unsigned long long addr = reinterpret_cast<unsigned long long>(dst);
  constexpr int kOwnersPerStore = 32 / kPieces;
#pragma unroll
  for (int j = 0; j < kPieces; ++j) {
    const int owner = j * kOwnersPerStore + lane / kPieces;
    const int piece = lane % kPieces;
    const unsigned long long oaddr = __shfl_sync(0xFFFFFFFFu, addr, owner);
    const bool od = __shfl_sync(0xFFFFFFFFu, deferred, owner);
    if (od) reinterpret_cast<uint4*>(oaddr)[piece] = stage[detail::stage_slot<kPieces>(owner, piece)];
  }
}

template <DequantOutput O>
void launch_kind(const DequantizeParams& p, DequantKind kind, unsigned grid, Stream stream) {
  switch (kind) {
    case DequantKind::kNvfp4: dequantize_kernel<O, DequantKind::kNvfp4><<<grid, kThreads, 0, stream>>>(p); break;
    case DequantKind::kMx32: dequantize_kernel<O, DequantKind::kMx32><<<grid, kThreads, 0, stream>>>(p); break;
    case DequantKind::kMx16: dequantize_kernel<O, DequantKind::kMx16><<<grid, kThreads, 0, stream>>>(p); break;
  }
}

bool aligned(const void* ptr, int64_t bytes_a, int64_t bytes_b, int64_t n) {
  return reinterpret_cast<uintptr_t>(ptr) % n == 0 && bytes_a % n == 0 && bytes_b % n == 0;
}

}  // namespace

Status launch_dequantize(const TensorView& data, const TensorView& scales,
                         const TensorView& global_scale, const TensorView& output,
                         const DequantizeOptions& options, Stream stream) {
  const int d = output.ndim;
  DequantizeParams p;
  p.batch = d == 3 ? output.shape[0] : 1;
  p.rows = output.shape[d - 2];
  p.k = output.shape[d - 1];
  p.data = static_cast<const uint8_t*>(data.data);
  p.data_row_stride = data.strides[d - 2];
  p.data_batch_stride = d == 3 ? data.strides[0] : 0;
  p.scales = static_cast<const uint8_t*>(scales.data);
  p.layout = options.sf_layout == SfLayout::k128x4 ? 1 : options.sf_layout == SfLayout::k8x4 ? 2 : 0;
  const int block = recipe_block_elems(options.recipe);
  p.kv = p.k / block;
  p.scales_batch_stride = fmt::sf_padded_rows(p.layout, p.rows) * fmt::sf_padded_cols(p.layout, p.kv);
  p.output = output.data;
  p.out_row_stride = output.strides[d - 2];
  p.out_batch_stride = d == 3 ? output.strides[0] : 0;
  p.chunks_per_row = (p.k + 63) / 64;
  const bool has_global = recipe_has_global_scale(options.recipe);
  p.global_scale = static_cast<const float*>(global_scale.data);
  p.per_row_scale = has_global && global_scale.numel() > 1;
  const int64_t osize = static_cast<int64_t>(dtype_size(output.dtype));
  p.data_vec16 = aligned(data.data, p.data_row_stride, p.data_batch_stride, 16);
  p.out_vec16 = aligned(output.data, p.out_row_stride * osize, p.out_batch_stride * osize, 16);

  DequantKind kind = has_global ? DequantKind::kNvfp4
                                : (options.recipe == Recipe::kMxfp4 ? DequantKind::kMx32 : DequantKind::kMx16);
  const int64_t total = p.batch * p.rows * p.chunks_per_row;
  if (total == 0) return Status();
  const int64_t grid = (total + kThreads - 1) / kThreads;
  if (grid > 0x7FFFFFFFll) {
    return Status(StatusCode::kUnsupported, "output: tensor too large for one launch (" + output.describe() + ")");
  }
  const unsigned g = static_cast<unsigned>(grid);
  switch (output.dtype) {
    case DType::kF32: launch_kind<DequantOutput::kF32>(p, kind, g, stream); break;
    case DType::kF16: launch_kind<DequantOutput::kF16>(p, kind, g, stream); break;
    case DType::kBF16: launch_kind<DequantOutput::kBF16>(p, kind, g, stream); break;
    default:
      return Status(StatusCode::kInvalidArgument, "output: unsupported dtype " + output.describe());
  }
  return last_launch_status("dequantize kernel launch");
}

}  // namespace nvfp4kv::cuda
