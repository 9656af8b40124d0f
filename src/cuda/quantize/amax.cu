// nvfp4kv — per-tensor amax for the computed global scale (SPEC.md §3.1), with no host
// synchronisation: the launcher zeroes global_scale[0], this kernel folds max |x| into it with
// atomicMax on the fp32 bit pattern (|x| ≥ +0, so unsigned order is float order; NaN is skipped
// as fmaxf skips it), the quantize kernel reads the amax from there, and a one-thread kernel
// finally replaces it by the decode scale rn(1 / S_enc).
//
// Grid: a grid-stride loop over 64-element chunks of all rows (batch included), sized to a few
// waves of the SMs so that only a few thousand atomics hit the one word. It walks the tensor
// front to back; the quantize kernel then walks back to front to find the tail still in L2.
#include <cuda_runtime.h>

#include <string>

#include "cuda/quantize/quantize_chunk.cuh"

namespace nvfp4kv::cuda {
namespace {

constexpr int kThreads = 128;

template <QuantInput I>
__global__ void __launch_bounds__(kThreads) tensor_amax_kernel(const __grid_constant__ QuantizeParams p) {
  __shared__ uint4 stage_all[kThreads / 32][detail::kWarpStageBytes<I> / 16];
  uint4* stage = stage_all[threadIdx.x / 32];
  const int64_t chunks_per_row = (p.k + 63) / 64;
  const int64_t total = p.batch * p.rows * chunks_per_row;
  constexpr int kChunkBytes = 64 * detail::InputTraits<I>::kBytes;
  float v = 0.0f;
  // The loop bound is per warp (warp_base), so all 32 lanes stay together for the cooperative load.
  for (int64_t warp_base = static_cast<int64_t>(blockIdx.x) * kThreads + (threadIdx.x & ~31); warp_base < total;
       warp_base += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t idx = warp_base + (threadIdx.x & 31);
    const bool active = idx < total;
    const int64_t row = idx / chunks_per_row;
    const int64_t c = idx - row * chunks_per_row;
    const int64_t b = row / p.rows;
    const int64_t m = row - b * p.rows;
    const int64_t rem = (p.k - c * 64) / 16;
    const int valid_subs = !active ? 0 : (rem >= 4 ? 4 : static_cast<int>(rem));
    const uint8_t* in_row = static_cast<const uint8_t*>(p.input) +
                            (b * p.in_batch_stride + m * p.in_row_stride) * detail::InputTraits<I>::kBytes;
    detail::ChunkBits<I> bits;
    if (p.in_vec16) {
      detail::load_chunk_warp<I>(in_row + c * kChunkBytes, valid_subs, stage, bits);
    } else if (valid_subs > 0) {
      detail::load_chunk<I>(in_row, c, valid_subs, false, bits);
    } else {
      continue;
    }
    v = fmaxf(v, detail::chunk_abs_max<I>(bits));
  }
  // Warp, then block reduction on the bit patterns, then one atomic per block.
  uint32_t u = __reduce_max_sync(0xFFFFFFFFu, __float_as_uint(v));
  __shared__ uint32_t warp_max[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = u;
  __syncthreads();
  if (threadIdx.x < 32) {
    u = threadIdx.x < kThreads / 32 ? warp_max[threadIdx.x] : 0u;
    u = __reduce_max_sync(0xFFFFFFFFu, u);
    if (threadIdx.x == 0 && u != 0u) atomicMax(reinterpret_cast<unsigned int*>(p.global_scale), u);
  }
}

__global__ void amax_to_decode_scale_kernel(float* global_scale, float numerator) {
  const float amax = global_scale[0];
  global_scale[0] = fmt::reciprocal_rn(fmt::global_encode_scale(amax, numerator));
}

Status launch_error(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

Status launch_tensor_amax(const QuantizeParams& p, QuantInput in, Stream stream) {
  const int64_t chunks = p.batch * p.rows * ((p.k + 63) / 64);
  if (chunks == 0) return Status();
  int dev = 0, sms = 132;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    return launch_error("tensor amax: device query");
  }
  const int64_t want = (chunks + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sms) * 16;  // 16 blocks of 128 fill an SM's 2048 threads
  const unsigned grid = static_cast<unsigned>(want < cap ? want : cap);
  switch (in) {
    case QuantInput::kF32: tensor_amax_kernel<QuantInput::kF32><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantInput::kF16: tensor_amax_kernel<QuantInput::kF16><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantInput::kBF16: tensor_amax_kernel<QuantInput::kBF16><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantInput::kFP8E4M3: tensor_amax_kernel<QuantInput::kFP8E4M3><<<grid, kThreads, 0, stream>>>(p); break;
  }
  return launch_error("tensor amax kernel launch");
}

Status launch_amax_to_decode_scale(float* global_scale, float numerator, Stream stream) {
  amax_to_decode_scale_kernel<<<1, 1, 0, stream>>>(global_scale, numerator);
  return launch_error("amax to decode scale kernel launch");
}

}  // namespace nvfp4kv::cuda
