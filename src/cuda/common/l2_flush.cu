// nvfp4kv — L2 eviction by reading a scratch buffer (see l2_flush.h).
#include "cuda/common/l2_flush.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/launch_status.cuh"

namespace nvfp4kv::cuda {
namespace {

// Reads n uint4 and stores only if `sink` is set (never, at run time), so the loads stay live.
__global__ void read_flush_kernel(const uint4* __restrict__ src, std::size_t n, uint4* sink) {
  uint32_t acc = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = src[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (sink != nullptr) sink[0].x = acc;
}

}  // namespace

Status flush_l2_by_reading(const void* scratch, std::size_t bytes, Stream stream) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return last_launch_status("flush_l2_by_reading: device query");
  read_flush_kernel<<<sms * 8, 256, 0, reinterpret_cast<cudaStream_t>(stream)>>>(static_cast<const uint4*>(scratch),
                                                                                 bytes / 16, nullptr);
  return last_launch_status("flush_l2_by_reading launch");
}

}  // namespace nvfp4kv::cuda
