// nvfp4kv — CUDA-free entry points of the KV-cache kernels (src/cuda/kv/*.cu). Called by
// src/api/kv_cache.cpp after it has validated every view; all views are on the device.
#pragma once

#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::cuda {

/// append_kv() on validated device views (src/cuda/kv/append.cu).
Status launch_append_kv(const KvCacheView& cache, const TensorView& keys, const TensorView& values,
                        const TensorView& slot_mapping, const AppendOptions& options, Stream stream);

/// dequantize_kv() on validated device views (src/cuda/kv/dequantize.cu).
Status launch_dequantize_kv(const KvCacheView& cache, const TensorView& block_tables,
                            const TensorView& seq_lens, const TensorView& out_k,
                            const TensorView& out_v, Stream stream);

/// max |x| (NaN ignored) of a device f32/f16/bf16 view into `amax_device` (one f32, device
/// memory, overwritten) (src/cuda/kv/amax.cu). Two launches on `stream`: a zero fill, a reduction.
Status launch_kv_amax(const TensorView& x, float* amax_device, Stream stream);

/// Copies the K and V cache sides of a launcher's parameters `p` (data bases and strides, scale
/// bases and strides, decode-scale pointers) into a fast kernel's two-sided arrays (index 0 = K,
/// 1 = V): the append and dequantize fast paths share these fields.
template <typename Fast, typename P>
void copy_cache_sides(Fast& f, const P& p) {
  f.data[0] = p.k_data, f.data[1] = p.v_data;
  f.ds[0] = p.kd, f.ds[1] = p.vd;
  f.sf[0] = p.k_sf, f.sf[1] = p.v_sf;
  f.ss[0] = p.ks, f.ss[1] = p.vs;
  f.dec[0] = p.k_scale, f.dec[1] = p.v_scale;
}

}  // namespace nvfp4kv::cuda
