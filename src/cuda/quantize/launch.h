// nvfp4kv — CUDA-free entry points of the quantize kernels (src/cuda/quantize/*.cu).
// Called by src/api/quantize.cpp after it has validated every view; all views are on the device.
#pragma once

#include "nvfp4kv/quantize.h"

namespace nvfp4kv::cuda {

/// Runs quantize() on device views (already validated by the API layer).
Status launch_quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                       const TensorView& global_scale, const QuantizeOptions& options,
                       Stream stream);

/// Runs dequantize() on device views (already validated by the API layer).
Status launch_dequantize(const TensorView& data, const TensorView& scales,
                         const TensorView& global_scale, const TensorView& output,
                         const DequantizeOptions& options, Stream stream);

}  // namespace nvfp4kv::cuda
