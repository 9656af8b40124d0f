// nvfp4kv — CPU reference of decode attention (fp64 over the exactly dequantized cache).
// Also the CPU backend of decode_attention; arguments are validated by src/api/attention.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "nvfp4kv/attention.h"
#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::ref {

/// Stored element `dim` of token (page, offset) and kv head `head` of K (`value` false) or V,
/// dequantized exactly (SPEC.md §5) *without* the global k_scale / v_scale: bf16/f16 as is,
/// fp8_e4m3 the E4M3 value, nvfp4 e2m1 · E4M3 block scale, fp4_block16 e2m1 · 2^(code−127).
/// CPU views only; no bounds checks (the caller validated the view).
double kv_element(const KvCacheView& cache, bool value, int64_t page, int64_t offset,
                  int64_t head, int64_t dim);

/// The global decode scale applied to K (`value` false) or V: *k_scale / *v_scale for
/// fp8_e4m3 and nvfp4 (host pointers), 1 otherwise.
double kv_global_scale(const KvCacheView& cache, bool value);

/// fp64 decode attention into dense fp64 arrays: `out` [batch, qo_len, num_qo_heads, head_dim]
/// (v_scale applied), `lse` [batch, qo_len, num_qo_heads] (natural log, −inf for rows that see
/// no key). The oracle of the tests (no rounding to the output type).
void decode_attention_f64(const TensorView& q, const KvCacheView& cache,
                          const TensorView& block_tables, const TensorView& seq_lens,
                          double sm_scale, double logits_soft_cap, int window_left,
                          std::vector<double>* out, std::vector<double>* lse);

/// fp64 decode attention (attention.h gives the function); CPU views, already validated.
/// `sm_scale` is the resolved scale (> 0).
void decode_attention(const TensorView& q, const KvCacheView& cache,
                      const TensorView& block_tables, const TensorView& seq_lens,
                      const TensorView& out, const TensorView& lse, double sm_scale,
                      double logits_soft_cap, int window_left);

}  // namespace nvfp4kv::ref
