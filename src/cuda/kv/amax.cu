// nvfp4kv — max |x| of a strided f32/f16/bf16 device tensor (NaN ignored), for
// calibrate_kv_scale(). Not on a hot path: one thread per element, grid-stride, the index
// unravelled over up to kMaxDims dimensions, one atomicMax per warp on the fp32 bit pattern
// (for non-negative floats the unsigned order of the bits is the numeric order).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/kv_format.h"
#include "cuda/kv/launch.h"

namespace nvfp4kv::cuda {
namespace {

struct AmaxParams {
  const uint8_t* x;  // strided tensor, element size elem_bytes
  int ndim;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
  int64_t numel;
  int kind;          // 0 f32, 1 bf16, 2 f16
  uint32_t* amax_bits;  // [1] fp32 bits, zero-filled before the launch
};

__global__ void __launch_bounds__(256) kv_amax_kernel(const __grid_constant__ AmaxParams p) {
  uint32_t best = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < p.numel; e += stride) {
    int64_t rest = e, off = 0;
    for (int d = p.ndim - 1; d >= 0; --d) {
      off += (rest % p.shape[d]) * p.strides[d];
      rest /= p.shape[d];
    }
    float v;
    if (p.kind == 0) {
      v = reinterpret_cast<const float*>(p.x)[off];
    } else {
      v = kvfmt::half_to_float(reinterpret_cast<const uint16_t*>(p.x)[off], p.kind == 2);
    }
    const uint32_t a = fmt::float_bits(v) & 0x7FFFFFFFu;
    if (a <= 0x7F800000u && a > best) best = a;  // NaN (a > Inf bits) ignored
  }
  for (int d = 16; d > 0; d >>= 1) {
    const uint32_t o = __shfl_xor_sync(0xFFFFFFFFu, best, d);
    best = o > best ? o : best;
  }
  if ((threadIdx.x & 31) == 0 && best != 0) atomicMax(p.amax_bits, best);
}

}  // namespace

Status launch_kv_amax(const TensorView& x, float* amax_device, Stream stream) {
  AmaxParams p{};
  p.x = static_cast<const uint8_t*>(x.data);
  p.ndim = x.ndim;
  for (int d = 0; d < x.ndim; ++d) {
    p.shape[d] = x.shape[d];
    p.strides[d] = x.strides[d];
  }
  p.numel = x.numel();
  p.kind = x.dtype == DType::kF32 ? 0 : x.dtype == DType::kBF16 ? 1 : 2;
  p.amax_bits = reinterpret_cast<uint32_t*>(amax_device);
  cudaError_t err = cudaMemsetAsync(amax_device, 0, sizeof(float), stream);
  if (err == cudaSuccess && p.numel > 0) {
    const int64_t blocks_needed = (p.numel + 255) / 256;
    const unsigned blocks = static_cast<unsigned>(blocks_needed < 4096 ? blocks_needed : 4096);
    kv_amax_kernel<<<blocks, 256, 0, stream>>>(p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) {
    return Status(StatusCode::kCudaError, std::string("kv amax launch failed: ") + cudaGetErrorString(err));
  }
  return Status();
}

}  // namespace nvfp4kv::cuda
