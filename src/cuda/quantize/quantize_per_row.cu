// nvfp4kv — quantize with one global scale per row (SPEC.md §3.5, GlobalScaleMode::kPerRow).
//
// In/out as quantize.cu; global_scale [B · M] f32 receives each row's decode scale (0 for an
// all-zero row). Map: one thread block per (batch, padded row). Pass 1 reads the row's chunks
// and reduces max |x| across the block; thread 0 stores the decode scale; pass 2 re-reads the
// row (now in L1/L2) and quantizes it chunk by chunk with the shared code of quantize_chunk.cuh.
// Padding rows of the 128x4 / 8x4 layouts only write their 0x00 scale bytes.
#include <cuda_runtime.h>

#include <string>

#include "cuda/quantize/quantize_chunk.cuh"
#include "cuda/common/launch_status.cuh"

namespace nvfp4kv::cuda {
namespace {

constexpr int kThreads = 128;

template <QuantInput I, QuantKind K>
__global__ void __launch_bounds__(kThreads) quantize_per_row_kernel(const __grid_constant__ QuantizeParams p) {
  const int64_t row = blockIdx.x;
  const int64_t b = row / p.rows_grid;
  const int64_t m = row - b * p.rows_grid;
  detail::GlobalScales g;
  if (m < p.rows) {
    const int64_t data_chunks = (p.k + 63) / 64;
    const uint8_t* in_row = static_cast<const uint8_t*>(p.input) +
                            (b * p.in_batch_stride + m * p.in_row_stride) * detail::InputTraits<I>::kBytes;
    float v = 0.0f;
    for (int64_t c = threadIdx.x; c < data_chunks; c += kThreads) {
      const int64_t rem = (p.k - c * 64) / 16;
      detail::ChunkBits<I> bits;
      detail::load_chunk<I>(in_row, c, rem >= 4 ? 4 : static_cast<int>(rem), p.in_vec16, bits);
      v = fmaxf(v, detail::chunk_abs_max<I>(bits));
    }
    uint32_t u = __reduce_max_sync(0xFFFFFFFFu, __float_as_uint(v));
    __shared__ uint32_t warp_max[kThreads / 32];
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = u;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) u = max(u, warp_max[w]);
    const float amax = __uint_as_float(u);
    g = detail::scales_from_amax(amax, p.numerator);
    if (threadIdx.x == 0) p.global_scale[b * p.rows + m] = amax == 0.0f ? 0.0f : g.s_dec;
  }
  // Per-lane loads here: the loop trip count differs between lanes, so no warp-cooperative I/O.
  const uint8_t* in_row = static_cast<const uint8_t*>(p.input) +
                          (b * p.in_batch_stride + m * p.in_row_stride) * detail::InputTraits<I>::kBytes;
  for (int64_t c = threadIdx.x; c < p.chunks_per_row; c += kThreads) {
    const int valid_subs = detail::chunk_valid_subs<K>(p, m, c);
    detail::ChunkBits<I> bits;
    if (valid_subs > 0) detail::load_chunk<I>(in_row, c, valid_subs, p.in_vec16, bits);
    uint32_t words[8];
    (void)detail::quantize_chunk<I, K>(p, b, m, c, valid_subs, bits, g, false, words);
  }
}

template <QuantInput I>
void launch_kind(const QuantizeParams& p, QuantKind kind, unsigned grid, Stream stream) {
  switch (kind) {
    case QuantKind::kNvfp4: quantize_per_row_kernel<I, QuantKind::kNvfp4><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantKind::kFourOverSixMse:
      quantize_per_row_kernel<I, QuantKind::kFourOverSixMse><<<grid, kThreads, 0, stream>>>(p);
      break;
    case QuantKind::kFourOverSixMae:
      quantize_per_row_kernel<I, QuantKind::kFourOverSixMae><<<grid, kThreads, 0, stream>>>(p);
      break;
    default: break;  // mx recipes have no global scale: never routed here
  }
}

}  // namespace

Status launch_quantize_per_row(const QuantizeParams& p, QuantInput in, QuantKind kind, Stream stream) {
  if (kind == QuantKind::kMx32 || kind == QuantKind::kMx16) {
    return Status(StatusCode::kInternal, "per-row global scale requested for an mx recipe");
  }
  const int64_t grid = p.batch * p.rows_grid;
  if (grid == 0) return Status();
  if (grid > 0x7FFFFFFFll) {
    return Status(StatusCode::kUnsupported, "input: too many rows for one per-row launch");
  }
  const unsigned g = static_cast<unsigned>(grid);
  switch (in) {
    case QuantInput::kF32: launch_kind<QuantInput::kF32>(p, kind, g, stream); break;
    case QuantInput::kF16: launch_kind<QuantInput::kF16>(p, kind, g, stream); break;
    case QuantInput::kBF16: launch_kind<QuantInput::kBF16>(p, kind, g, stream); break;
    case QuantInput::kFP8E4M3: launch_kind<QuantInput::kFP8E4M3>(p, kind, g, stream); break;
  }
  return last_launch_status("per-row quantize kernel launch");
}

}  // namespace nvfp4kv::cuda
