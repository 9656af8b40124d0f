// nvfp4kv — CPU reference of the paged KV cache operations (SPEC.md §5). Called by
// src/api/kv_cache.cpp after validation (views on the CPU, shapes checked, slots and block
// tables in range); plain loops over tokens, heads and 16-element chunks.
#pragma once

#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::ref {

/// append_kv() on validated CPU views whose slots are all < num_pages · page_size.
void append_kv(const KvCacheView& cache, const TensorView& keys, const TensorView& values,
               const TensorView& slot_mapping, const AppendOptions& options);

/// dequantize_kv() on validated CPU views (lengths, page indices and total rows checked).
void dequantize_kv(const KvCacheView& cache, const TensorView& block_tables,
                   const TensorView& seq_lens, const TensorView& out_k, const TensorView& out_v);

/// max |x| over every element of a CPU f32/f16/bf16 view, NaN ignored (±Inf included).
float kv_amax(const TensorView& x);

}  // namespace nvfp4kv::ref
