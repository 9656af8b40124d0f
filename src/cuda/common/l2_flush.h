// nvfp4kv — evicting the L2 cache before a timed GPU call, for the library's timers
// (time_decode_attention) and the benchmarks. CUDA-free declaration; src/cuda/common/l2_flush.cu.
#pragma once

#include <cstddef>

#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv::cuda {

/// Enqueues on `stream` a kernel that reads `bytes` (a multiple of 16, ≥ 2 × the L2 size) of
/// `scratch` (16-byte aligned device memory) and writes nothing, so the L2 then holds only clean
/// lines of the scratch: the next kernel reads its data from HBM and is not charged for writing
/// back a flush's dirty lines (a memset flush leaves 2 × L2 of them). Graph-capturable.
Status flush_l2_by_reading(const void* scratch, std::size_t bytes, Stream stream);

}  // namespace nvfp4kv::cuda
