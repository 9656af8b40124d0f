// nvfp4kv — CUDA-free parameters and launcher of the decode-attention kernels
// (src/cuda/attention/decode.cu). Filled and validated by src/api/attention.cpp.
#pragma once

#include <algorithm>
#include <vector>
#include <cstddef>
#include <cstdint>

#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv::cuda {

/// Byte strides of one KV view (data or scales) with the layout resolved.
struct KvStrides {
  int64_t page = 0;   ///< bytes between pages
  int64_t token = 0;  ///< bytes between tokens of a page
  int64_t head = 0;   ///< bytes between kv heads
};

/// Everything the decode kernels read. Pointers are device pointers.
struct DecodeParams {
  int q_is_f16 = 0;   ///< 0: q/out bf16, 1: f16
  int format = 0;     ///< static_cast<int>(KvFormat)
  int head_dim = 0;   ///< 64, 128, 256
  const void* q = nullptr;       // [batch, qo_len, num_qo_heads, head_dim] bf16/f16
  int64_t q_stride[3] = {};      // elements: batch, token, head
  void* out = nullptr;           // like q
  int64_t out_stride[3] = {};
  float* lse = nullptr;          // [batch, qo_len, num_qo_heads] f32 or null
  int64_t lse_stride[3] = {};
  const uint8_t* k_data = nullptr;    // paged K (see kv_cache.h)
  const uint8_t* v_data = nullptr;    // paged V
  const uint8_t* k_scales = nullptr;  // FP4 block scales of K (u8), null otherwise
  const uint8_t* v_scales = nullptr;
  KvStrides k_data_strides, v_data_strides, k_scale_strides, v_scale_strides;
  const int32_t* block_tables = nullptr;  // [batch, max_pages] i32
  int64_t block_table_stride = 0;         // elements between rows
  const int32_t* seq_lens = nullptr;      // [batch] i32
  int64_t seq_len_stride = 0;
  const float* k_scale = nullptr;  // device fp32 decode scale (fp8_e4m3, nvfp4), else null
  const float* v_scale = nullptr;
  int batch = 0, qo_len = 0, num_qo_heads = 0, num_kv_heads = 0, group_size = 0;
  int page_size = 0, num_pages = 0, max_pages = 0;
  float sm_scale = 0;         // resolved (> 0)
  float logits_soft_cap = 0;  // 0 = off
  int window_left = -1;
  int num_splits = 1;         // ≥ 1; > 1 uses the workspace and the merge kernel
  int heads_per_cta = 1;      // kv heads per CTA: decode_heads_per_cta(format, head_dim, num_kv_heads)
  int lin_ratio = 0;          // > 0: every view's page stride = lin_ratio × its token stride (decode_lin_ratio)
  int narrow = 0;             // 1: the narrow tile (≤ 8 query rows per kv head; decode_use_narrow_tile)
  int tma = 1;                // 1: the nvfp4 narrow tiles' ring may be filled by TMA where the views allow (decode v22)
  float* partial_out = nullptr;  // workspace: [batch, qo_len, num_qo_heads, num_splits, head_dim]
  float* partial_lse = nullptr;  // workspace: [batch, qo_len, num_qo_heads, num_splits] (log2)
  // Workspace: one round counter per (request, head group, row tile), or null for fixed splits
  // (kept only where decode_dynamic_rounds() allows). Each is two 32-bit words {count, tag}:
  // the merge kernel leaves every counter it used at {0, kDecodeTicketTag}, so that the next
  // call needs no memset node; a counter with another tag (a fresh or reused workspace) makes
  // its request's CTAs take fixed round-robin rounds instead (decode.cu, "Round counters").
  unsigned long long* round_tickets = nullptr;
  // Workspace: one arrival counter per (request, warp unit) for the merge in the decode kernel
  // (decode_fused_merge), or null (the merge kernel combines the splits). Same {count, tag}
  // words as the round counters; the last warp of a unit to arrive combines its rows and leaves
  // the counter at {0, kDecodeTicketTag}. Round counter k is round_tickets[2k], arrival counter
  // k is done_counters[2k] (= the region's word 2k + 1): the two share 16-byte entries.
  unsigned long long* done_counters = nullptr;
  // Dynamic rounds: splits ≥ this start late (the launch grid has the split index slowest) and
  // join a request only while enough of it is left; = num_splits: none late.
  int dyn_first_splits = 1;
};

/// Rows of one query tile (the m of mma.m16n8k16).
inline constexpr int kDecodeRowsPerTile = 16;

/// Most kv heads one decode CTA may cover for `num_kv_heads`: 8 (the paired tile,
/// decode_use_pair_tile), 4, 2 or 1 (a divisor).
inline int decode_max_heads_per_cta(int64_t num_kv_heads) {
  return num_kv_heads % 8 == 0 ? 8 : num_kv_heads % 4 == 0 ? 4 : (num_kv_heads % 2 == 0 ? 2 : 1);
}

/// KV heads one decode CTA covers. The 16-bit caches at head_dim ≤ 128 load straight into
/// registers, one head per CTA. Every other cache goes through a CTA-wide shared-memory ring
/// whose rounds hold the same tokens of 1, 2 or 4 consecutive heads: with 4, an NHD page row is
/// fetched as one contiguous run (whole lines; bench/NOTES.md, decode v8), but the CTA's share
/// of a request shrinks, so short or few requests take more splits, and their fixed costs
/// (Q fragments of 4 heads, pipeline fill, merge) showed. Rule from the H100 A/B of v8 (32/8
/// heads, hd128, fp8 and nvfp4, graph-timed): 4 heads once batch · kv_heads/4 · m_tiles ≥ 128
/// CTAs (64 × 1K, 64 × 8K, 128 × any); 2 heads from 8K tokens (16 × 8K, 32 × 8K, 8 × 32K,
/// 4 × 64K, 1 × 128K); 1 below. The narrow tile (decode_use_narrow_tile: nvfp4 and fp8 at hd128)
/// takes 4 heads whenever they divide the kv heads: with one warp per head its epilogue stores
/// each warp's rows from registers, no shared-memory merge (v12), and the H100 sweep of v12 (both
/// formats, 1 × 1K … 1 × 128K, 4 × 1K … 128 × 1K, 16 × 8K, 16 × 32K) measured 4 heads fastest or
/// within 1 % everywhere, e.g. nvfp4 32 × 1K 36.4 → 27.2 µs, 1 × 128K 76.4 → 67.5, 16 × 1K 21.3 →
/// 19.1, fp8 32 × 1K 44.1 → 37.0, 1 × 8K 18.0 → 16.2 (before v12: 4 heads only from 32 CTAs per
/// split at ≥ 8K tokens, for nvfp4).
inline int decode_heads_per_cta(int format, int head_dim, int64_t num_kv_heads, int64_t batch, int64_t m_tiles,
                                int64_t max_kv_len, bool narrow = false) {
  const bool direct = format <= 1 && head_dim <= 128;  // KvFormat kBF16 = 0, kF16 = 1
  if (direct) return 1;
  const int hmax = decode_max_heads_per_cta(num_kv_heads);
  if (hmax >= 4 && (narrow || batch * (num_kv_heads / 4) * m_tiles >= 128)) return 4;
  if (hmax >= 2 && max_kv_len >= 8192) return 2;
  return 1;
}

/// Whether the decode kernel takes the narrow tile: Sᵀ = K·Qᵀ with the (≤ 8) query rows of a kv
/// head as the mma's n = 8, instead of S = Q·Kᵀ with 16 padded rows as its m (half the mma and
/// softmax work per token, no V transposes; bench/NOTES.md, decode v9). Written for the nvfp4
/// and fp8_e4m3 caches at head_dim 128 (format 3 = KvFormat::kNvfp4, 2 = kFP8E4M3); `enabled`
/// false forces the wide tile.
inline bool decode_use_narrow_tile(int format, int head_dim, int64_t group_size, int64_t qo_len, bool enabled = true) {
  return enabled && (format == 3 || format == 2) && head_dim == 128 && group_size * qo_len <= 8;
}

/// Whether the narrow nvfp4 tile runs paired: 8 kv heads per CTA, two per warp, each head's
/// ≤ 4 query rows in one half of the mma's n = 8 (decode.cu, compute_chunk_narrow), so that a
/// CTA's ring rounds hold whole NHD token rows (512 bytes at hd128) instead of halves, and the
/// softmax and O-rescale work is shared by two heads. Needs the narrow tile, nvfp4 at hd128,
/// group_size · qo_len ≤ 4 and 8 | num_kv_heads. `mode` (NVFP4KV_DECODE_PAIR): −1 the rule,
/// 0 never, 1 wherever it can run. Rule: from 128 CTAs per split (batch · kv_heads / 8 ≥ 128).
/// H100 A/B against 4 heads per CTA (bench/NOTES.md, decode v18; 32/8 heads, hd128, graph µs):
/// the paired loop issues 6 % fewer instructions (16 × 8K: 33.2 M against 35.4 M) and 128 × 1K
/// ran −6.4 %, 128 × 8K −1.3 %, 64 × 8K −0.6 %, 64 × 32K / 16 × 32K within ±0.5 %; but a CTA of
/// 8 heads covers half the tokens of one of 4, so a call takes twice the splits and writes
/// and merges twice the partial rows: 16 × 8K +3 %, 64 × 1K +5 %, 16 × 1K +18 %.
inline bool decode_use_pair_tile(int format, int head_dim, int64_t group_size, int64_t qo_len, int64_t num_kv_heads,
                                 int64_t batch, bool narrow, int mode = -1) {
  if (mode == 0 || !narrow || format != 3 || head_dim != 128 || group_size * qo_len > 4 || num_kv_heads % 8 != 0)
    return false;
  return mode == 1 || batch * (num_kv_heads / 8) >= 128;
}

/// r > 0 if every given view has page stride = r × token stride (NHD: page_size, HND:
/// num_kv_heads × page_size) and (num_pages − 1) · r + page_size < 2^31, else 0. Then a token's
/// address in each view is base + (page · r + offset) · token_stride (one multiply-add).
inline int decode_lin_ratio(const KvStrides* views, int n_views, int64_t num_pages, int64_t page_size) {
  int64_t r = 0;
  for (int i = 0; i < n_views; ++i) {
    const KvStrides& v = views[i];
    if (v.token <= 0 || v.page <= 0 || v.page % v.token != 0) return 0;
    if (i > 0 && v.page / v.token != r) return 0;
    r = v.page / v.token;
  }
  if (r <= 0 || (num_pages - 1) * r + page_size >= (int64_t{1} << 31)) return 0;
  return static_cast<int>(r);
}


/// Most page-table entries one split may span: a CTA copies its split's entries to shared
/// memory once (so no page-id load sits on the critical path of the KV loads).
inline constexpr int64_t kDecodeMaxSplitPages = 2048;

/// Number of KV splits. `requested` > 0 is taken as is. Otherwise, with `resident_ctas` CTAs
/// fitting on the GPU at once and base = batch × kv heads × row tiles CTAs per split, the
/// split count s ≤ min(kv/256, ⌈2·resident/base⌉) that minimises the number of CTA rounds per
/// unit of work, ⌈base·s/resident⌉ / s (wave quantisation), the smallest within 5 % of the
/// best. Either way s is then raised until no split spans more than kDecodeMaxSplitPages pages.
inline int choose_decode_splits(int64_t batch, int64_t qo_len, int64_t num_qo_heads,
                                int64_t num_kv_heads, int64_t max_pages, int64_t page_size,
                                int requested, int64_t resident_ctas, int heads_per_cta = 1) {
  const int64_t max_kv_len = max_pages * page_size;
  int64_t splits = requested;
  if (requested <= 0) {
    const int64_t group = num_kv_heads > 0 ? num_qo_heads / num_kv_heads : 1;
    const int64_t m_tiles = (group * qo_len + kDecodeRowsPerTile - 1) / kDecodeRowsPerTile;
    const int64_t base = std::max<int64_t>(1, batch * (num_kv_heads / std::max(heads_per_cta, 1)) * m_tiles);
    const int64_t resident = std::max<int64_t>(1, resident_ctas);
    // At least 256 tokens of one head per CTA and split (64 per warp at 4 warps per head), i.e.
    // 256 / heads_per_cta tokens of the split when the CTA's warps each take a head.
    const int64_t limit = std::clamp<int64_t>(
        std::min(max_kv_len * std::max(heads_per_cta, 1) / 256, (2 * resident + base - 1) / base), 1, 1024);
    double best = 1e30;
    std::vector<double> cost(static_cast<size_t>(limit) + 1);
    for (int64_t s = 1; s <= limit; ++s) {
      cost[s] = static_cast<double>((base * s + resident - 1) / resident) / static_cast<double>(s);
      best = std::min(best, cost[s]);
    }
    splits = 1;
    while (cost[splits] > 1.05 * best) ++splits;
  }
  // A split of ceil(L / splits) tokens rounded up to 16 spans at most that / page_size + 2 pages.
  while (splits < 1024) {
    const int64_t per_split = ((max_kv_len + splits - 1) / splits + 15) / 16 * 16;
    if (per_split / page_size + 2 <= kDecodeMaxSplitPages) break;
    ++splits;
  }
  return static_cast<int>(std::clamp<int64_t>(splits, 1, 1024));
}

/// Most CTAs of 128 threads an SM can hold (2048 threads): the bound decode_workspace_bytes
/// assumes, so that any kernel's actual split count fits the workspace.
inline constexpr int64_t kDecodeMaxCtasPerSm = 16;

/// An upper bound of choose_decode_splits(...) over every resident-CTA count up to
/// num_sms · kDecodeMaxCtasPerSm (the search limit of the automatic choice, then the page cap).
inline int decode_splits_bound(int64_t batch, int64_t qo_len, int64_t num_qo_heads, int64_t num_kv_heads,
                               int64_t max_pages, int64_t page_size, int requested, int num_sms) {
  if (requested > 0)
    return choose_decode_splits(batch, qo_len, num_qo_heads, num_kv_heads, max_pages, page_size, requested, 1);
  const int64_t group = num_kv_heads > 0 ? num_qo_heads / num_kv_heads : 1;
  const int64_t m_tiles = (group * qo_len + kDecodeRowsPerTile - 1) / kDecodeRowsPerTile;
  const int64_t base = std::max<int64_t>(1, batch * (num_kv_heads / decode_max_heads_per_cta(num_kv_heads)) * m_tiles);
  const int64_t resident = std::max<int64_t>(1, num_sms) * kDecodeMaxCtasPerSm;
  const int64_t limit = std::clamp<int64_t>(
      std::min(max_pages * page_size * decode_max_heads_per_cta(num_kv_heads) / 256, (2 * resident + base - 1) / base),
      1, 1024);
  // The page cap only ever raises the count: apply it to the limit as a forced request.
  return choose_decode_splits(batch, qo_len, num_qo_heads, num_kv_heads, max_pages, page_size,
                              static_cast<int>(limit), 1);
}

/// Page-table entries the kernel stages per CTA for `num_splits` (see choose_decode_splits).
inline int64_t decode_split_pages(int64_t max_pages, int64_t page_size, int num_splits) {
  const int64_t max_kv_len = max_pages * page_size;
  const int64_t per_split = ((max_kv_len + num_splits - 1) / num_splits + 15) / 16 * 16;
  return std::min<int64_t>(per_split / page_size + 2, max_pages + 1);
}

/// Tag in the high 32 bits of a round counter that the merge kernel reset: a signalling-NaN bit
/// pattern, which no arithmetic writes (GPUs produce the canonical NaN), so stale partial
/// results in a reused workspace are not taken for a reset counter.
inline constexpr uint32_t kDecodeTicketTag = 0x7FA5C0DEu;

/// Workspace layout for `num_splits` > 1: the counters first (16 bytes per output row: entry k
/// holds round counter k and arrival counter k, 8 bytes each; the output rows bound both
/// request × head group × row tile, since m_tiles ≤ group · qo_len, and request × kv head; at
/// offset 0 so that a counter's place does not move when the batch or the split count changes
/// between calls), then the partial O, then the partial LSEs; each region 256-byte aligned.
inline std::size_t decode_workspace_out_offset(int64_t batch, int64_t qo_len, int64_t num_qo_heads) {
  return ((static_cast<std::size_t>(batch * qo_len * num_qo_heads) * 2 * sizeof(unsigned long long) + 255) / 256) *
         256;
}
inline std::size_t decode_workspace_lse_offset(int64_t batch, int64_t qo_len, int64_t num_qo_heads,
                                               int64_t head_dim, int num_splits) {
  const std::size_t rows = static_cast<std::size_t>(batch * qo_len * num_qo_heads) * num_splits;
  return decode_workspace_out_offset(batch, qo_len, num_qo_heads) +
         ((rows * static_cast<std::size_t>(head_dim) * sizeof(float) + 255) / 256) * 256;
}

/// Workspace bytes for `num_splits` (0 if 1): round counters, partial O, partial LSE.
inline std::size_t decode_workspace_for(int64_t batch, int64_t qo_len, int64_t num_qo_heads,
                                        int64_t head_dim, int num_splits) {
  if (num_splits <= 1) return 0;
  const std::size_t rows = static_cast<std::size_t>(batch * qo_len * num_qo_heads) * num_splits;
  return decode_workspace_lse_offset(batch, qo_len, num_qo_heads, head_dim, num_splits) + rows * sizeof(float);
}

/// Most page-table entries a CTA stages in dynamic-round mode (the whole request: 16 KB).
inline constexpr int64_t kDecodeMaxDynamicPages = 4096;

/// Whether dynamic rounds (decode_dynamic_rounds) also launch late joiners: as many splits
/// again, with the split index slowest in the grid, whose CTAs start as first-wave CTAs finish
/// and join a request while ≥ 4 rounds per first-wave CTA are left. Worth it only for long
/// per-CTA runs, ≥ 32768 head-tokens per first-wave CTA (H100 A/B, bench/NOTES.md decode v10:
/// nvfp4 64 × 32K, 43690 per CTA, 890 → 864 µs; 16 × 32K and 64 × 8K, 10923, 229.5 → 234.5 and
/// 236 → 240; 16 × 8K, 2731, 72.6 → 78.8: a late CTA's ~10 µs to its first data outlasts the
/// rounds left).
inline bool decode_late_joiners(int num_splits, int64_t max_kv_len, int heads_per_cta) {
  return num_splits > 0 && max_kv_len * heads_per_cta / num_splits >= 32768;
}

/// Whether the narrow-tile CTAs of a request take its ring rounds from a shared counter
/// (dynamic rounds) rather than fixed slices, so that CTAs on faster SMs take more: with ≥ 2
/// splits of ≥ 128 tokens each on average (max_pages · page_size / num_splits: ≥ 4 rounds of a
/// 32-token chunk per CTA), when the request's page table fits the staging area. The launch
/// grid then has the split index slowest: a request's CTAs spread over the SMs, and with more
/// CTAs than fit at once the later ones join the requests still running. Each CTA stages the
/// whole table and draws one ticket per round, which costs more than the balance gains when a
/// CTA has only a few rounds. H100 A/B of decode v14 (forced on against the rule below,
/// bench/NOTES.md): fp8 1 × 32K −2.2 %, 2 × 32K −3.7 %, 4 × 8K −2.7 %, 4 × 32K −4.4 %, 8 × 8K −3.5 %,
/// 64 × 1K −2.7 %, 128 × 1K −1.4 %, nvfp4 −0.4 … −2.0 % at those shapes; at 64-87 tokens per split
/// it lost: nvfp4 1 × 8K / 1 × 16K +4.3 %, 16 × 1K +3.5 % (fp8 +1.8 %). (v10-v13 asked for ≥ 32
/// CTAs per split over ≥ 8K tokens; the memset node that made batch 1 × 8K 17.1 → 20.5 µs then
/// is gone since v13.) `mode` (NVFP4KV_DECODE_DYNAMIC): −1 this rule, 0 fixed slices, 1 dynamic
/// wherever splits > 1 and the table fits (tests, A/B). `base_ctas` (batch × head groups × row
/// tiles) is not used by the rule; kept for the callers' A/B logs.
inline bool decode_dynamic_rounds(int num_splits, int64_t base_ctas, int64_t max_pages, int64_t page_size,
                                  int mode = -1) {
  (void)base_ctas;
  if (mode == 0 || num_splits < 2 || max_pages + 1 > kDecodeMaxDynamicPages) return false;
  return mode == 1 || max_pages * page_size >= 128 * static_cast<int64_t>(num_splits);
}

/// Splits per batch of loads of the merge in the decode kernel (fused_merge_rows, decode.cu)
/// for units of ≤ `rows` rows (4 or 8): 24 or 16 float4 loads per lane in flight, the most
/// that fit beside the rest without spills.
inline constexpr int decode_fused_merge_batch(int rows) { return rows <= 4 ? 6 : 2; }

/// Most splits of the merge in the decode kernel at all (one split's LSE per lane).
inline constexpr int kDecodeFusedMergeLimit = 32;

/// Most splits the merge in the decode kernel takes by the rule (decode_fused_merge).
inline constexpr int kDecodeFusedMergeMaxSplits = 3;

/// Whether the splits are combined in the decode kernel instead of by the merge kernel: each
/// warp of the one-warp-per-unit narrow epilogue (4 heads per CTA, or the paired tile) writes
/// its partial rows, counts itself in at its (request, unit) counter, and the last of the
/// unit's num_splits warps reads the others' rows and writes the output (no merge launch, no
/// wait for the whole decode grid). `unit_rows`: query rows per warp (group_size · qo_len, twice
/// that in the paired tile), ≤ 8. Rule: ≤ kDecodeFusedMergeMaxSplits splits. The last warp's
/// path (its rows' store acknowledgements before the release, the atomic, a batch of loads per
/// decode_fused_merge_batch splits) is a few L2 round trips against the merge kernel's wait for
/// the grid, one round trip and a CTA per row; H100 A/B, same calls (bench/NOTES.md, decode
/// v19; 32/8 heads, hd128, graph µs): 2-3 splits gained — nvfp4 64 × 1K 41.0 → 39.9, paired
/// 128 × 1K 75.5 → 72.7 (forced), fp8 128 × 1K 110.2 → 106.4, 64 × 1K 57.5 → 56.6 — 4 splits
/// (48 × 8K) were even, 6 (32 × 8K, 32 × 1K) lost 2-4 % and 12 (16 × 8K) 4-5 %. `mode`
/// (NVFP4KV_DECODE_FUSED_MERGE): −1 this rule, 0 never, 1 wherever it can run (up to
/// kDecodeFusedMergeLimit splits).
inline bool decode_fused_merge(bool narrow, int heads_per_cta, int unit_rows, int num_splits, int mode = -1) {
  if (mode == 0 || !narrow || (heads_per_cta != 4 && heads_per_cta != 8) || unit_rows > 8 || num_splits < 2 ||
      num_splits > kDecodeFusedMergeLimit)
    return false;
  return mode == 1 || num_splits <= kDecodeFusedMergeMaxSplits;
}

/// SM count of the current device (0 if none).
int current_device_sm_count();

/// CTAs of the decode kernel chosen by `params` (q dtype, format, head_dim) that fit on the
/// current GPU at once (occupancy × SMs, with the largest page-table staging); 0 on error.
int64_t decode_resident_ctas(const DecodeParams& params);

/// Launches the decode kernel (and the split merge) on `stream`; no synchronisation.
Status launch_decode(const DecodeParams& params, Stream stream);

#ifdef NVFP4KV_DECODE_TRACE
/// Timeline experiment (built with -DNVFP4KV_DECODE_TRACE only): clears the CTA time stamps.
void decode_trace_reset();
/// Prints the spread of the CTA time stamps of the launches since the reset, the CTAs per SM and
/// the throughput the end of the KV loops loses (from the ring rounds each CTA computed; a model
/// that takes each CTA's rate as constant over its loop) (synchronises).
void decode_trace_report(const char* label);
#endif

/// Median µs of `runs` launches of `params` (L2 flushed before each), CUDA events on `stream`.
Status time_decode(const DecodeParams& params, Stream stream, int runs, float* median_us);

/// Median device-to-device copy bandwidth (TB/s, read + write) over 20 copies of `bytes`.
Status measure_copy_tbps(std::size_t bytes, double* tbps);

}  // namespace nvfp4kv::cuda
