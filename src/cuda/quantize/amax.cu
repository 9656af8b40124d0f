// nvfp4kv — per-tensor amax for the computed global scale (SPEC.md §3.1), with no host
// synchronisation: the launcher zeroes global_scale[0], this kernel folds max |x| into it with
// atomicMax on the fp32 bit pattern (|x| ≥ +0, so unsigned order is float order; NaN is skipped
// as fmaxf skips it), the quantize kernel reads the amax from there, and a one-thread kernel
// finally replaces it by the decode scale rn(1 / S_enc).
// PDL (src/cuda/common/pdl.cuh; quantize v13): the amax kernels trigger their dependents at once,
// so the quantize kernel (PDL-launched) is scheduled while they run and only waits for their
// completion; the one-thread kernel is PDL-launched and waits for the quantize kernel the same
// way. The amax kernels themselves follow the memset node of global_scale[0] and launch plainly.
//
// Grid: a grid-stride loop over 64-element chunks of all rows (batch included), sized to a few
// waves of the SMs so that only a few thousand atomics hit the one word. It walks the tensor
// front to back; the quantize kernel then walks back to front to find the tail still in L2.
#include <cuda_runtime.h>

#include <string>

#include "cuda/common/launch_status.cuh"
#include "cuda/common/pdl.cuh"
#include "cuda/quantize/quantize_chunk.cuh"

namespace nvfp4kv::cuda {
namespace {

constexpr int kThreads = 128;

template <QuantInput I>
__global__ void __launch_bounds__(kThreads) tensor_amax_kernel(const __grid_constant__ QuantizeParams p) {
  __shared__ uint4 stage_all[kThreads / 32][detail::kWarpStageBytes<I> / 16];
  uint4* stage = stage_all[threadIdx.x / 32];
  pdl_trigger();
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

/// Fast path for bf16/f16 inputs with 16-byte aligned rows: a persistent grid-stride loop over
/// 32-element units (four 16-byte loads), unrolled by two so that the next unit's loads are in
/// flight while the current one is reduced; |x| by masking, packed bf16x2/f16x2 max (IEEE maxNum:
/// a NaN operand is ignored, as fmt::max_f ignores it; max_16x2), 2 instructions per 2 elements.
template <bool kF16>
__device__ __forceinline__ uint32_t max2(uint32_t a, uint32_t b) {
  return max_16x2<!kF16, false>(a, b);
}

__device__ __forceinline__ void amax_load(const FastQuantizeParams& p, uint32_t u, uint4 (&q)[4]) {
  if (u >= p.total_units) return;
  const uint32_t row = fast_div(u, p.units_div);
  const uint32_t col = u - row * p.units_per_row;
  const uint32_t b = p.batch == 1 ? 0u : fast_div(row, p.rows_div);
  const uint32_t m = row - b * p.rows;
  const int64_t rem = static_cast<int64_t>(p.k) - static_cast<int64_t>(col) * 32;
  const int n = rem >= 32 ? 4 : static_cast<int>(rem / 8);  // 16-byte pieces (K is a multiple of 16)
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.input) + b * p.in_batch_bytes +
                                                    m * p.in_row_bytes + col * 64u);
#pragma unroll
  for (int j = 0; j < 4; ++j) q[j] = j < n ? __ldg(src + j) : make_uint4(0u, 0u, 0u, 0u);
}

template <bool kF16>
__device__ __forceinline__ uint32_t amax_fold(uint32_t acc, const uint4 (&q)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    acc = max2<kF16>(acc, q[j].x & 0x7FFF7FFFu);
    acc = max2<kF16>(acc, q[j].y & 0x7FFF7FFFu);
    acc = max2<kF16>(acc, q[j].z & 0x7FFF7FFFu);
    acc = max2<kF16>(acc, q[j].w & 0x7FFF7FFFu);
  }
  return acc;
}

template <bool kF16>
__global__ void __launch_bounds__(256) tensor_amax_fast_kernel(const __grid_constant__ FastQuantizeParams p) {
  const uint32_t stride = gridDim.x * 256u;
  uint32_t u = blockIdx.x * 256u + threadIdx.x;
  uint32_t acc = 0u;
  uint4 a[4], c[4];
  pdl_trigger();
  amax_load(p, u, a);
  while (u < p.total_units) {
    const uint32_t u1 = u + stride;
    amax_load(p, u1, c);
    acc = amax_fold<kF16>(acc, a);
    if (u1 >= p.total_units) break;
    const uint32_t u2 = u1 + stride;
    amax_load(p, u2, a);
    acc = amax_fold<kF16>(acc, c);
    u = u2;
  }
  const uint32_t lo = acc & 0xFFFFu, hi = acc >> 16;
  float v;
  if constexpr (kF16) {
    v = fmaxf(__half2float(__ushort_as_half(static_cast<unsigned short>(lo))),
              __half2float(__ushort_as_half(static_cast<unsigned short>(hi))));
  } else {
    v = fmaxf(__uint_as_float(lo << 16), __uint_as_float(hi << 16));
  }
  uint32_t w = __reduce_max_sync(0xFFFFFFFFu, __float_as_uint(v));
  __shared__ uint32_t warp_max[8];
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = w;
  __syncthreads();
  if (threadIdx.x < 32) {
    w = threadIdx.x < 8 ? warp_max[threadIdx.x] : 0u;
    w = __reduce_max_sync(0xFFFFFFFFu, w);
    if (threadIdx.x == 0 && w != 0u) atomicMax(reinterpret_cast<unsigned int*>(p.global_scale), w);
  }
}

__global__ void amax_to_decode_scale_kernel(float* global_scale, float numerator) {
  pdl_wait();  // the quantize kernel has read the amax
  const float amax = global_scale[0];
  global_scale[0] = fmt::reciprocal_rn(fmt::global_encode_scale(amax, numerator));
}

}  // namespace

Status launch_tensor_amax(const QuantizeParams& p, QuantInput in, Stream stream) {
  const int64_t chunks = p.batch * p.rows * ((p.k + 63) / 64);
  if (chunks == 0) return Status();
  const int64_t units = p.batch * p.rows * ((p.k + 31) / 32);
  if ((in == QuantInput::kBF16 || in == QuantInput::kF16) && p.in_vec16 && units < (int64_t(1) << 30) &&
      p.k < (int64_t(1) << 31)) {
    FastQuantizeParams f;
    f.input = p.input;
    f.in_batch_bytes = p.in_batch_stride * 2;
    f.in_row_bytes = p.in_row_stride * 2;
    f.global_scale = p.global_scale;
    f.batch = static_cast<uint32_t>(p.batch);
    f.rows = static_cast<uint32_t>(p.rows);
    f.k = static_cast<uint32_t>(p.k);
    f.units_per_row = static_cast<uint32_t>((p.k + 31) / 32);
    f.total_units = static_cast<uint32_t>(units);
    f.units_div = make_fast_div(f.units_per_row);
    f.rows_div = make_fast_div(f.rows);
    static int resident[2] = {0, 0};
    const bool f16 = in == QuantInput::kF16;
    if (resident[f16] == 0) {
      int n = 0;
      const cudaError_t e = f16 ? cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, tensor_amax_fast_kernel<true>, 256, 0)
                                : cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, tensor_amax_fast_kernel<false>, 256, 0);
      resident[f16] = (e == cudaSuccess && n > 0) ? n : 1;
    }
    const int64_t want = (units + 255) / 256;
    const int64_t cap = static_cast<int64_t>(fast_quantize_sm_count()) * resident[f16];
    const unsigned grid = static_cast<unsigned>(want < cap ? want : cap);
    if (f16) tensor_amax_fast_kernel<true><<<grid, 256, 0, stream>>>(f);
    else tensor_amax_fast_kernel<false><<<grid, 256, 0, stream>>>(f);
    return last_launch_status("tensor amax kernel launch");
  }
  const int sms = fast_quantize_sm_count();
  const int64_t want = (chunks + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sms) * 16;  // 16 blocks of 128 fill an SM's 2048 threads
  const unsigned grid = static_cast<unsigned>(want < cap ? want : cap);
  switch (in) {
    case QuantInput::kF32: tensor_amax_kernel<QuantInput::kF32><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantInput::kF16: tensor_amax_kernel<QuantInput::kF16><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantInput::kBF16: tensor_amax_kernel<QuantInput::kBF16><<<grid, kThreads, 0, stream>>>(p); break;
    case QuantInput::kFP8E4M3: tensor_amax_kernel<QuantInput::kFP8E4M3><<<grid, kThreads, 0, stream>>>(p); break;
  }
  return last_launch_status("tensor amax kernel launch");
}

Status launch_amax_to_decode_scale(float* global_scale, float numerator, Stream stream) {
  (void)launch_pdl(amax_to_decode_scale_kernel, dim3(1), dim3(1), 0, reinterpret_cast<cudaStream_t>(stream),
                   global_scale, numerator);  // its error is also the last error, read here
  return last_launch_status("amax to decode scale kernel launch");
}

}  // namespace nvfp4kv::cuda
