// nvfp4kv — host-side check after a kernel launch, shared by every launcher in src/cuda/.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "nvfp4kv/status.h"

namespace nvfp4kv::cuda {

/// Ok if the last CUDA runtime call (a launch) succeeded, else kCudaError "<what>: <error>".
/// Reads (and clears) the last non-sticky error; never synchronises.
inline Status last_launch_status(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace nvfp4kv::cuda
