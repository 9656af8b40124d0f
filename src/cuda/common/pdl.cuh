// nvfp4kv — programmatic dependent launch (PDL, sm_90): a kernel launched with
// launch_pdl() may be scheduled while the previous kernel in the stream is still finishing; it
// calls pdl_wait() before its first global-memory access, which blocks until that previous grid
// has completed and its writes are visible. So the only overlap is launch and CTA scheduling
// with the predecessor's tail (the gap between back-to-back kernels), never data: correct after
// any producer, PDL-aware or not. A kernel calls pdl_trigger() to let its own successor be
// scheduled early. NVFP4KV_NO_PDL=1 in the environment launches plainly (A/B knob).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

namespace nvfp4kv::cuda {

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

/// Whether launch_pdl() sets the PDL attribute (read once per process).
inline bool pdl_enabled() {
  static const bool on = std::getenv("NVFP4KV_NO_PDL") == nullptr;
  return on;
}

/// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization
/// allowed (graph-capturable: capture records a programmatic edge). Returns the launch error.
template <typename... Params, typename... Args>
cudaError_t launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace nvfp4kv::cuda
