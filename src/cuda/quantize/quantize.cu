// nvfp4kv — quantize kernels for a given or per-tensor global scale, and the launcher
// cuda::launch_quantize (src/cuda/quantize/launch.h) behind nvfp4kv::quantize on device views.
//
// In:  input [B, M, K] f32/f16/bf16 (fp8_e4m3 for nvfp4 recipes), any row/batch stride, last dim
//      contiguous. Out: data [B, M, K/2] u8 (any row stride), scales [B, rows_pad, cols_pad] u8
//      in the linear / 128x4 / 8x4 layout (padding written 0x00), and for computed scales the
//      decode scale(s) in global_scale. Bytes are those of the CPU reference (SPEC.md §3-4).
// Map: one thread per 64-element chunk of a row (quantize_chunk.cuh); 128 threads per block;
//      the flat chunk index runs over (batch, padded row, chunk), so padding rows and columns of
//      the 128x4 / 8x4 layouts are written by the same launch. A warp loads its 32 chunks
//      cooperatively (each 16-byte load instruction covers whole 128-byte lines, staged through
//      shared memory; 4 KB per warp for bf16, all loads issued before the first use) and stores
//      the packed codes the same way; per-lane 16-byte loads of a lane's own 128 bytes ran at
//      57% of copy on an H200 (every instruction touched 32 lines).
// Per-tensor scale: memset(global_scale) → amax kernel (amax.cu) → this kernel (reads the amax)
//      → finalize kernel (writes S_dec): stream-ordered, no host sync, no allocation, capturable.
// Per-row scale: quantize_per_row.cu.
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "api/check.h"
#include "cuda/quantize/launch.h"
#include "cuda/quantize/quantize_chunk.cuh"
#include "cuda/common/launch_status.cuh"

namespace nvfp4kv::cuda {
namespace {

constexpr int kThreads = 128;

template <QuantInput I, QuantKind K>
__global__ void __launch_bounds__(kThreads) quantize_kernel(const __grid_constant__ QuantizeParams p) {
  __shared__ uint4 stage_all[kThreads / 32][detail::kWarpStageBytes<I> / 16];
  uint4* stage = stage_all[threadIdx.x / 32];
  const int64_t block = p.reverse ? (gridDim.x - 1 - blockIdx.x) : blockIdx.x;
  const int64_t idx = block * kThreads + threadIdx.x;
  const int64_t total = p.batch * p.rows_grid * p.chunks_per_row;
  const bool active = idx < total;
  int64_t row = 0, c = 0;
  if (total <= 0xFFFFFFFFll) {  // 32-bit division where it suffices
    const uint32_t r32 = static_cast<uint32_t>(idx) / static_cast<uint32_t>(p.chunks_per_row);
    row = r32;
    c = idx - row * p.chunks_per_row;
  } else {
    row = idx / p.chunks_per_row;
    c = idx - row * p.chunks_per_row;
  }
  const int64_t b = row / p.rows_grid;
  const int64_t m = row - b * p.rows_grid;
  const int valid_subs = active ? detail::chunk_valid_subs<K>(p, m, c) : 0;
  constexpr int kChunkBytes = 64 * detail::InputTraits<I>::kBytes;
  const uint8_t* src = static_cast<const uint8_t*>(p.input) +
                       ((b * p.in_batch_stride + m * p.in_row_stride) * detail::InputTraits<I>::kBytes + c * kChunkBytes);
  detail::ChunkBits<I> bits;
  if (p.in_vec16) {
    detail::load_chunk_warp<I>(src, valid_subs, stage, bits);  // every lane takes part
  } else if (valid_subs > 0) {
    detail::load_chunk<I>(src - c * kChunkBytes, c, valid_subs, false, bits);
  }
  detail::GlobalScales g;
  if constexpr (K != QuantKind::kMx32 && K != QuantKind::kMx16) {
    if (p.source == ScaleSource::kGiven) g = detail::scales_from_decode(p.global_scale[0]);
    else g = detail::scales_from_amax(p.global_scale[0], p.numerator);
  }
  uint32_t words[8] = {};
  bool deferred = false;
  if (active) deferred = detail::quantize_chunk<I, K>(p, b, m, c, valid_subs, bits, g, true, words);
  uint8_t* out = p.data + b * p.data_batch_stride + m * p.data_row_stride + c * 32;
  detail::store_codes_warp(out, deferred, words, stage);  // every lane takes part
}

template <QuantInput I>
void launch_kind(const QuantizeParams& p, QuantKind kind, unsigned grid, Stream stream) {
  switch (kind) {
    case QuantKind::kNvfp4: quantize_kernel<I, QuantKind::kNvfp4><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantKind::kFourOverSixMse: quantize_kernel<I, QuantKind::kFourOverSixMse><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantKind::kFourOverSixMae: quantize_kernel<I, QuantKind::kFourOverSixMae><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantKind::kMx32:
      if constexpr (I != QuantInput::kFP8E4M3) quantize_kernel<I, QuantKind::kMx32><<<grid, kThreads, 0, stream>>>(p);
      break;
    case QuantKind::kMx16:
      if constexpr (I != QuantInput::kFP8E4M3) quantize_kernel<I, QuantKind::kMx16><<<grid, kThreads, 0, stream>>>(p);
      break;
  }
}

bool aligned(const void* ptr, int64_t bytes_a, int64_t bytes_b, int64_t n) {
  return reinterpret_cast<uintptr_t>(ptr) % n == 0 && bytes_a % n == 0 && bytes_b % n == 0;
}

int layout_index(SfLayout layout) {
  return layout == SfLayout::k128x4 ? 1 : layout == SfLayout::k8x4 ? 2 : 0;
}

}  // namespace

Status launch_quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                       const TensorView& global_scale, const QuantizeOptions& options,
                       Stream stream) {
  const int d = input.ndim;
  QuantizeParams p;
  p.batch = d == 3 ? input.shape[0] : 1;
  p.rows = input.shape[d - 2];
  p.k = input.shape[d - 1];
  p.input = input.data;
  p.in_row_stride = input.strides[d - 2];
  p.in_batch_stride = d == 3 ? input.strides[0] : 0;
  p.data = static_cast<uint8_t*>(data.data);
  p.data_row_stride = data.strides[d - 2];
  p.data_batch_stride = d == 3 ? data.strides[0] : 0;
  p.scales = static_cast<uint8_t*>(scales.data);
  p.layout = layout_index(options.sf_layout);
  const int block = recipe_block_elems(options.recipe);
  p.kv = p.k / block;
  p.rows_grid = fmt::sf_padded_rows(p.layout, p.rows);
  p.cols_grid = fmt::sf_padded_cols(p.layout, p.kv);
  p.scales_batch_stride = p.rows_grid * p.cols_grid;
  const int blocks_per_chunk = 64 / block;
  p.chunks_per_row = (p.cols_grid + blocks_per_chunk - 1) / blocks_per_chunk;
  p.global_scale = static_cast<float*>(global_scale.data);

  QuantInput in = QuantInput::kBF16;
  switch (input.dtype) {
    case DType::kF32: in = QuantInput::kF32; break;
    case DType::kF16: in = QuantInput::kF16; break;
    case DType::kBF16: in = QuantInput::kBF16; break;
    case DType::kFP8E4M3: in = QuantInput::kFP8E4M3; break;
    default:
      return Status(StatusCode::kInvalidArgument, "input: unsupported dtype " + input.describe());
  }
  const int64_t esize = static_cast<int64_t>(dtype_size(input.dtype));
  p.in_vec16 = aligned(input.data, p.in_row_stride * esize, p.in_batch_stride * esize, 16);
  p.data_align = aligned(data.data, p.data_row_stride, p.data_batch_stride, 16)  ? 16
                 : aligned(data.data, p.data_row_stride, p.data_batch_stride, 8) ? 8
                                                                                 : 1;
  // Padded layouts: a chunk's 4 (or 2) scale columns start at k % 4 == 0 (or 2) and are
  // consecutive bytes at a multiple of 4 (2). Linear: only when every row starts aligned.
  const int sf_word = blocks_per_chunk;
  p.sf_vec = aligned(scales.data, p.layout == 0 ? p.kv : 0, p.scales_batch_stride, sf_word);

  QuantKind kind = QuantKind::kNvfp4;
  switch (options.recipe) {
    case Recipe::kNvfp4: kind = QuantKind::kNvfp4; break;
    case Recipe::kNvfp4FourOverSix:
      kind = options.metric == ErrorMetric::kMae ? QuantKind::kFourOverSixMae : QuantKind::kFourOverSixMse;
      break;
    case Recipe::kMxfp4: kind = QuantKind::kMx32; break;
    case Recipe::kFp4Block16: kind = QuantKind::kMx16; break;
  }
  const bool has_global = recipe_has_global_scale(options.recipe);
  p.numerator = options.recipe == Recipe::kNvfp4FourOverSix ? fmt::kFourOverSixGlobalNumerator
                                                             : fmt::kNvfp4GlobalNumerator;
  if (!has_global) {
    p.source = ScaleSource::kNone;
  } else if (options.global_scale_mode == GlobalScaleMode::kGiven) {
    p.source = ScaleSource::kGiven;
  } else if (options.global_scale_mode == GlobalScaleMode::kPerRow) {
    p.source = ScaleSource::kPerRow;
    return launch_quantize_per_row(p, in, kind, stream);
  } else {
    p.source = ScaleSource::kAmax;
    if (cudaMemsetAsync(p.global_scale, 0, sizeof(float), stream) != cudaSuccess) {
      return last_launch_status("quantize: zeroing the amax");
    }
    NVFP4KV_RETURN_IF_ERROR(launch_tensor_amax(p, in, stream));
    p.reverse = true;
  }

  const int64_t total = p.batch * p.rows_grid * p.chunks_per_row;
  // NVFP4KV_QUANTIZE_GENERIC=1 (read once) keeps every launch on the general kernel: an A/B knob
  // for the benchmark (bench/NOTES.md compares both in one process), not a user setting.
  static const bool generic_only = [] {
    const char* e = std::getenv("NVFP4KV_QUANTIZE_GENERIC");
    return e != nullptr && e[0] == '1';
  }();
  if (total > 0 && !generic_only && fast_quantize_applies(p, in)) {
    NVFP4KV_RETURN_IF_ERROR(launch_quantize_fast(p, in, kind, stream));
  } else if (total > 0) {
    const int64_t grid = (total + kThreads - 1) / kThreads;
    if (grid > 0x7FFFFFFFll) {
      return Status(StatusCode::kUnsupported, "input: tensor too large for one launch (" + input.describe() + ")");
    }
    switch (in) {
      case QuantInput::kF32: launch_kind<QuantInput::kF32>(p, kind, static_cast<unsigned>(grid), stream); break;
      case QuantInput::kF16: launch_kind<QuantInput::kF16>(p, kind, static_cast<unsigned>(grid), stream); break;
      case QuantInput::kBF16: launch_kind<QuantInput::kBF16>(p, kind, static_cast<unsigned>(grid), stream); break;
      case QuantInput::kFP8E4M3: launch_kind<QuantInput::kFP8E4M3>(p, kind, static_cast<unsigned>(grid), stream); break;
    }
    NVFP4KV_RETURN_IF_ERROR(last_launch_status("quantize kernel launch"));
  }
  if (p.source == ScaleSource::kAmax) {
    NVFP4KV_RETURN_IF_ERROR(launch_amax_to_decode_scale(p.global_scale, p.numerator, stream));
  }
  return Status();
}

}  // namespace nvfp4kv::cuda
