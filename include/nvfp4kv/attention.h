// nvfp4kv — decode attention over a paged KV cache (DESIGN.md capability 3, SPEC.md §5).
//
// One call computes, for every request b, query token t (0 ≤ t < qo_len) and query head hq
// (kv head h = hq / group_size, group_size = num_qo_heads / num_kv_heads):
//
//   pos_t      = kv_len_b − qo_len + t                     (the query's own position)
//   visible j  : 0 ≤ j ≤ pos_t, and j ≥ pos_t − window_left when window_left ≥ 0
//   s_j        = sm_scale · k_scale · (q · k̂_j)            (k̂ = stored K dequantized exactly,
//                                                           without the global k_scale)
//   s_j        ← cap · tanh(s_j / cap)                      if logits_soft_cap = cap > 0
//   out        = v_scale · Σ_j softmax(s)_j · v̂_j
//   lse        = ln Σ_j exp(s_j)                           (natural log)
//
// A query row that sees no key (kv_len 0, or pos_t < 0 when kv_len < qo_len) outputs 0 and
// lse −inf. Stored values are dequantized as SPEC.md §5 says; the global decode scales of
// fp8_e4m3 and nvfp4 are folded into the logit scale and the output (fp4_block16, bf16 and f16
// ignore k_scale / v_scale).
#pragma once

#include <cstddef>
#include <cstdint>

#include "nvfp4kv/kv_cache.h"
#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv {

/// Options of decode_attention.
struct DecodeOptions {
  /// Softmax scale applied to q·k; ≤ 0 selects 1/sqrt(head_dim).
  float sm_scale = 0.0f;
  /// Logit soft cap (Gemma-2 / FlashInfer): s ← cap·tanh(s/cap) after sm_scale; 0 = off.
  float logits_soft_cap = 0.0f;
  /// Sliding window: a query at position p sees keys p − window_left .. p; −1 = off.
  int window_left = -1;
  /// KV splits per (request, kv head) for the CUDA kernel (flash-decoding): 0 = chosen from
  /// batch × heads × SM count, 1 = no split (no workspace needed), N = N splits (≤ 1024).
  /// Any choice is raised where needed so one split spans ≤ 2048 pages (the kernel stages a
  /// split's page-table entries in shared memory): only then can "1" still split.
  int num_splits = 0;
};

/// Bytes of device workspace decode_attention needs on a CUDA cache for these sizes
/// (`max_pages` = block_tables.shape[1]); 0 when no split is used or on CPU. The value depends
/// only on the arguments (and the current device's SM count for num_splits = 0), so one
/// allocation serves every step of a CUDA graph with the same shapes.
std::size_t decode_workspace_bytes(int64_t batch_size, int64_t qo_len, int64_t num_qo_heads,
                                   int64_t num_kv_heads, int64_t head_dim, int64_t max_pages,
                                   int64_t page_size, const DecodeOptions& options);

/// True if decode_attention supports these arguments on their device (same checks as the
/// call itself, nothing launched). On failure `reason` (if not null) gets the Status.
bool can_run_decode(const TensorView& q, const KvCacheView& cache, const TensorView& block_tables,
                    const TensorView& seq_lens, const TensorView& out, const TensorView& lse,
                    const DecodeOptions& options, Status* reason = nullptr);

/// Decode attention (see the file comment for the exact function).
///
/// - `q`: [batch, qo_len, num_qo_heads, head_dim] bf16 or f16, qo_len 1..8 (speculative
///   decoding: causal among the new tokens), last dimension contiguous, any other strides.
/// - `cache`: KvCacheView (kv_cache.h); bf16/f16 caches must have q's dtype; head_dim 64, 128
///   or 256; num_qo_heads must be a multiple of num_kv_heads.
/// - `block_tables`: [batch, max_pages] i32, page ids of each request in order (row stride
///   free, last dim contiguous); entries past a request's last page are not read.
/// - `seq_lens`: [batch] i32, kv_len of each request *including* its qo_len new tokens (whose
///   K/V must already be in the cache). Read on the device: a CUDA graph can change them.
///   Values are clamped to [0, max_pages·page_size]; a page id outside [0, num_pages) makes its
///   tokens invisible (a precondition violation the kernel survives, not a supported input).
/// - `out`: like q (same dtype and shape, any strides with the last dimension contiguous).
/// - `lse`: optional [batch, qo_len, num_qo_heads] f32 (an empty view, data == nullptr, means
///   none), natural-log sum of exp of the final logits.
/// - `workspace`: ≥ decode_workspace_bytes(...) bytes of device memory (256-byte aligned), may
///   be null when that is 0; its contents need no initialisation. Each call leaves the
///   counters it used (the first 16 bytes per output row: round counters of the dynamic
///   rounds, arrival counters of the merge in the decode kernel) tagged and zeroed for the
///   next call, so no memset precedes the kernel; a call that finds them untagged (fresh or
///   reused memory) is correct and only loses the dynamic balance of its rounds (and takes
///   one compare-and-swap more per arrival). Keep the workspace for decode between calls to
///   get that back. No allocation, no host synchronisation: graph-capturable.
/// CPU tensors run the fp64 reference (src/ref); CUDA tensors the tensor-core kernel on
/// `stream`. All tensors must be on one device.
Status decode_attention(const TensorView& q, const KvCacheView& cache,
                        const TensorView& block_tables, const TensorView& seq_lens,
                        const TensorView& out, const TensorView& lse, const DecodeOptions& options,
                        void* workspace, std::size_t workspace_bytes, Stream stream);

/// Device time in microseconds of one decode_attention call on CUDA views, as an engine runs its
/// decode step: a CUDA graph of 10 × (L2 flush, call) and one of the 10 flushes alone, each
/// replayed `runs` (≥ 1) times after a warm-up replay; the median difference / 10. The flush reads
/// a 2 × L2 scratch buffer, so the KV comes from HBM and no dirty lines are left to write back;
/// the host's per-call API work is not included. Synchronises `stream` first. For tools and demos.
Status time_decode_attention(const TensorView& q, const KvCacheView& cache,
                             const TensorView& block_tables, const TensorView& seq_lens,
                             const TensorView& out, const TensorView& lse,
                             const DecodeOptions& options, void* workspace,
                             std::size_t workspace_bytes, Stream stream, int runs,
                             float* median_us);

/// Device-to-device copy bandwidth of the current GPU in TB/s (bytes read + written), median of
/// 20 copies of `bytes` bytes timed with CUDA events: the yardstick the decode figures are
/// quoted against ("% of copy"). kUnsupported without CUDA.
Status measure_copy_tbps(std::size_t bytes, double* tbps);

}  // namespace nvfp4kv
