// nvfp4kv — paged KV cache views (SPEC.md §5). Operations on them are declared below the view.
#pragma once

#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nvfp4kv/device.h"

#include "nvfp4kv/quantize.h"
#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv {

/// Storage format of a KV cache.
enum class KvFormat {
  kBF16,        ///< "bf16": plain bfloat16
  kF16,         ///< "f16": plain float16
  kFP8E4M3,     ///< "fp8_e4m3": e4m3(rn(x / scale)), per-layer fp32 decode scale
  kNvfp4,       ///< "nvfp4": E2M1 + E4M3 scale per 16 + per-layer fp32 decode scale
  kFp4Block16,  ///< "fp4_block16": E2M1 + UE8M0 scale per 16, no global scale
};

/// Order of the page dimensions.
enum class KvLayout {
  kNHD,  ///< [num_pages, page_size, num_kv_heads, X]
  kHND,  ///< [num_pages, num_kv_heads, page_size, X]
};

/// One layer's paged K/V cache: non-owning views plus the per-layer decode scales.
///
/// `k_data`/`v_data` are 4-D: `[num_pages, page_size, num_kv_heads, X]` (NHD) or
/// `[num_pages, num_kv_heads, page_size, X]` (HND), X = head_dim elements (bf16/f16/fp8_e4m3
/// dtype) or head_dim/2 bytes (u8, FP4 formats, element 2j in the low nibble). `k_scales` /
/// `v_scales` (FP4 formats only) have the same leading shape and head_dim/16 u8 scale bytes
/// (E4M3 for nvfp4, UE8M0 for fp4_block16), linear. Each of the four views has its own strides
/// (in elements); only the last dimension must be contiguous, so combined `[num_pages, 2, ...]`
/// tensors, padded pages and separate K/V allocations all work.
struct KvCacheView {
  KvFormat format = KvFormat::kBF16;  ///< storage format
  KvLayout layout = KvLayout::kNHD;   ///< page dimension order
  int64_t num_pages = 0;              ///< pages in the cache
  int64_t page_size = 0;              ///< tokens per page, ≥ 1
  int64_t num_kv_heads = 0;           ///< KV heads
  int64_t head_dim = 0;               ///< 64, 128 or 256
  TensorView k_data;                  ///< keys (see above)
  TensorView v_data;                  ///< values (see above)
  TensorView k_scales;                ///< FP4 block scales of the keys; empty otherwise
  TensorView v_scales;                ///< FP4 block scales of the values; empty otherwise
  /// fp32 decode scale of the keys (x̂ = stored · k_scale), on the cache's device so CUDA graphs
  /// can change it; required for fp8_e4m3 and nvfp4, ignored (may be null) otherwise.
  const float* k_scale = nullptr;
  /// fp32 decode scale of the values, like k_scale.
  const float* v_scale = nullptr;
};

/// Options of append_kv().
struct AppendOptions {
  /// nvfp4 only: pick each 16-element block's scale with the "Four Over Six" rule (SPEC.md
  /// §3.2, map the block max to 6 or to 4, keep the smaller error). The decode scale should
  /// then come from calibrate_kv_scale(..., four_over_six = true, ...) (amax / 1536): that
  /// calibration is the caller's job; append_kv uses whatever k_scale/v_scale hold.
  bool four_over_six = false;
  /// Error the 4over6 choice minimises (ignored unless four_over_six).
  ErrorMetric metric = ErrorMetric::kMse;
};

/// Writes new keys and values into their cache slots, quantizing them to the cache format.
///
/// Token `t` goes to slot `s = slot_mapping[t]`: page `s / page_size`, offset `s % page_size`
/// (vLLM's slot_mapping); a negative slot skips the token. Per format (SPEC.md §5):
/// - bf16/f16: the value, converted to the cache type with round-to-nearest-even when the input
///   type differs (f16 keys into a bf16 cache round; same type is a bit copy);
/// - fp8_e4m3: e4m3(rn(x / scale)), scale = *k_scale (keys) or *v_scale (values);
/// - nvfp4: SPEC.md §3.1 blocks of 16 along head_dim with the decode scale given
///   (S_enc = rn(1 / scale)), or §3.2 when options.four_over_six;
/// - fp4_block16: SPEC.md §3.4 (UE8M0 scale per 16, no global scale).
/// Only the bytes of the written slots change (data and, for FP4, their scale bytes).
///
/// @param cache        validated as described at KvCacheView; all views on one device.
/// @param keys         `[num_tokens, num_kv_heads, head_dim]` bf16 or f16, any token and head
///                     stride, last dimension contiguous.
/// @param values       like keys (same dtype and shape, its own strides).
/// @param slot_mapping `[num_tokens]` i64, any stride. Slots must be distinct (a repeated slot is
///                     rejected on the CPU; on the GPU which token lands there is unspecified).
///                     On the CPU a slot ≥ num_pages · page_size returns kOutOfRange before
///                     anything is written; on the GPU (device memory, not readable without a
///                     sync) such a token is skipped: the kernel never writes outside the cache.
/// @param options      4over6 choice and metric (nvfp4 only).
/// @param stream       CUDA stream; one kernel launch, asynchronous, no host synchronisation, no
///                     allocation: safe to capture in a CUDA graph. k_scale/v_scale and the slots
///                     are read by the kernel, so a graph replay sees their current values.
/// Scales: on the CPU *k_scale/*v_scale must be > 0 and finite (checked); on the GPU they are
/// device memory and not checked: 0, negative, NaN or Inf there give defined but useless codes.
Status append_kv(const KvCacheView& cache, const TensorView& keys, const TensorView& values,
                 const TensorView& slot_mapping, const AppendOptions& options = AppendOptions(),
                 Stream stream = nullptr);

/// Checks everything append_kv() checks before it launches (slots are not read), without running.
Status can_run_append_kv(const KvCacheView& cache, const TensorView& keys,
                         const TensorView& values, const TensorView& slot_mapping,
                         const AppendOptions& options = AppendOptions());

/// Gathers a batch of sequences from the paged cache back to dense tensors.
///
/// Sequence `b` owns tokens 0..seq_lens[b)-1; token `p` lives in page
/// `block_tables[b, p / page_size]` at offset `p % page_size`. The output rows are the sequences
/// one after another (row of token p of sequence b = seq_lens[0] + … + seq_lens[b-1] + p).
/// Values: bf16/f16 exactly; fp8 rn(e4m3 · scale); nvfp4 rn(rn(e2m1 · sf) · scale) (SPEC.md
/// §3.1); fp4_block16 rn(e2m1 · 2^(code−127)); then rounded (RNE) to the output type.
///
/// @param block_tables `[batch, max_pages]` i32, any strides (entries past a sequence unused).
/// @param seq_lens     `[batch]` i32, any stride; batch ≤ kMaxDequantizeKvBatch on the GPU.
/// @param out_k, out_v `[total_tokens, num_kv_heads, head_dim]` f32/bf16/f16 (both the same
///                     dtype), any token/head stride, last dimension contiguous.
/// On the CPU, negative lengths, Σ seq_lens ≠ total_tokens, a length beyond max_pages pages and a
/// page index outside [0, num_pages) are errors (kInvalidArgument / kOutOfRange). On the GPU
/// (device memory, not checked): negative lengths count as 0, rows of tokens whose page index is
/// outside [0, num_pages) or beyond max_pages are written as zeros, rows past Σ seq_lens are
/// zeros, tokens past total_tokens are dropped. One launch, no sync: CUDA-graph safe.
Status dequantize_kv(const KvCacheView& cache, const TensorView& block_tables,
                     const TensorView& seq_lens, const TensorView& out_k, const TensorView& out_v,
                     Stream stream = nullptr);

/// Largest batch dequantize_kv() accepts for device views (its kernel keeps the prefix sums of
/// seq_lens, 8 bytes each, in shared memory: 96 KiB at this batch).
inline constexpr int64_t kMaxDequantizeKvBatch = 12288;

/// The standard per-layer decode scale for a tensor of keys or values (SPEC.md §5):
/// amax / 2688 (nvfp4), amax / 1536 (nvfp4 with four_over_six), amax / 448 (fp8_e4m3), each one
/// rn() division; amax = max |x| with NaN ignored; amax 0 → 1; a result below FLT_MIN is raised
/// to FLT_MIN so the scale is always a valid (positive, normal) decode scale. Formats without a
/// global scale (bf16, f16, fp4_block16) get 1.
///
/// @param x   any shape (rank ≥ 1), f32/f16/bf16, any strides, CPU or CUDA. For CUDA views this
///            call launches a reduction on `stream` and waits for it (not graph-capturable).
/// @param decode_scale_host  where the scale is written (host memory).
/// Returns kInvalidArgument if x contains ±Inf (no finite scale covers it).
Status calibrate_kv_scale(const TensorView& x, KvFormat format, bool four_over_six,
                          float* decode_scale_host, Stream stream = nullptr);

/// Cache bytes one token occupies in one layer: K and V, data plus FP4 block scales.
/// bf16/f16: 4·H·D; fp8_e4m3: 2·H·D; nvfp4/fp4_block16: 2·H·(D/2 + D/16). (H = num_kv_heads,
/// D = head_dim; D must be a multiple of 16 for FP4 formats, else 0 is returned.)
int64_t kv_bytes_per_token(KvFormat format, int64_t num_kv_heads, int64_t head_dim);

/// Geometry of a KvCachePool.
struct KvCachePoolOptions {
  KvFormat format = KvFormat::kNvfp4;  ///< storage format of every layer
  KvLayout layout = KvLayout::kNHD;    ///< page dimension order
  int64_t num_layers = 1;              ///< layers (each gets its own K/V pages and decode scales)
  int64_t num_kv_heads = 8;            ///< KV heads
  int64_t head_dim = 128;              ///< 64, 128 or 256
  int64_t page_size = 16;              ///< tokens per page, ≥ 1
  Device device = Device::kCuda;       ///< kCuda: device memory; kCpu: host memory (CPU backend, tests)
};

/// A paged KV cache for a whole model: owns the memory of `num_layers` layers (K and V data, FP4
/// block scales, fp32 decode scales) and hands pages to sequences.
///
/// Memory per layer: k_data, v_data, k_scales, v_scales, each a dense
/// `[num_pages, page_size, num_kv_heads, X]` (NHD) or `[num_pages, num_kv_heads, page_size, X]`
/// (HND) region (256-byte aligned), zero-filled at creation; then 2·num_layers fp32 decode scales
/// (k_scale, v_scale per layer, initially 1). Page p holds the same tokens in every layer, so one
/// block table and one slot_mapping serve all layers.
///
/// Allocation is all-or-nothing: extend() either reserves every page it needs or returns
/// kResourceExhausted and changes nothing. Sequences are named by caller-chosen ids. Not
/// thread-safe. Move-only.
class KvCachePool {
 public:
  /// An empty pool (no memory); use create() or create_with_budget().
  KvCachePool() = default;
  KvCachePool(KvCachePool&&) noexcept = default;
  KvCachePool& operator=(KvCachePool&&) noexcept = default;
  KvCachePool(const KvCachePool&) = delete;
  KvCachePool& operator=(const KvCachePool&) = delete;

  /// A pool of exactly `num_pages` pages per layer.
  static Status create(const KvCachePoolOptions& options, int64_t num_pages, KvCachePool* pool);
  /// The largest pool whose total memory (total_bytes()) fits in `budget_bytes`;
  /// kResourceExhausted if not even one page fits.
  static Status create_with_budget(const KvCachePoolOptions& options, int64_t budget_bytes,
                                   KvCachePool* pool);
  /// Total bytes a pool of `num_pages` pages needs (data, scales, alignment, decode scales).
  static int64_t bytes_for_pages(const KvCachePoolOptions& options, int64_t num_pages);

  /// The options the pool was created with.
  const KvCachePoolOptions& options() const { return options_; }
  /// Pages per layer.
  int64_t num_pages() const { return num_pages_; }
  /// Pages not held by any sequence.
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  /// Tokens that fit in the free pages (free_pages · page_size).
  int64_t free_tokens() const { return free_pages() * options_.page_size; }
  /// Cache bytes of one token in one layer (kv_bytes_per_token).
  int64_t bytes_per_token_per_layer() const;
  /// Cache bytes of one token across all layers.
  int64_t bytes_per_token() const { return bytes_per_token_per_layer() * options_.num_layers; }
  /// Bytes of memory the pool owns.
  int64_t total_bytes() const { return total_bytes_; }

  /// Registers sequence `seq_id` with no tokens (kInvalidArgument if it exists).
  Status add_sequence(int64_t seq_id);
  /// Reserves room for `num_new_tokens` more tokens of `seq_id` (new pages as needed) and
  /// appends their slots (page · page_size + offset, positions len..len+n−1) to `*slot_mapping`
  /// if it is not null. kResourceExhausted (nothing changed) when the free pages do not suffice.
  Status extend(int64_t seq_id, int64_t num_new_tokens, std::vector<int64_t>* slot_mapping = nullptr);
  /// Returns every page of `seq_id` to the free list and forgets the sequence.
  Status release(int64_t seq_id);
  /// Tokens of `seq_id` (−1 if unknown).
  int64_t seq_len(int64_t seq_id) const;
  /// Pages of `seq_id` in order (empty if unknown).
  std::vector<int32_t> seq_pages(int64_t seq_id) const;

  /// Fills the decode inputs of a step for sequences `seq_ids` in order: `block_tables`
  /// `[batch, max_pages]` row-major (unused entries 0), `seq_lens` `[batch]`, and `*max_pages`
  /// (the widest sequence's page count; at least 1). Host vectors; copy them to the device.
  Status fill_block_tables(const std::vector<int64_t>& seq_ids, std::vector<int32_t>* block_tables,
                           std::vector<int32_t>* seq_lens, int64_t* max_pages) const;

  /// The cache view of layer `layer` (decode-scale pointers included); an empty view (format
  /// only) if the pool is empty or `layer` is out of range.
  KvCacheView layer_view(int64_t layer) const;
  /// Sets layer `layer`'s decode scales (> 0, finite; synchronous copy for device pools).
  Status set_decode_scales(int64_t layer, float k_scale, float v_scale);

 private:
  struct Sequence {
    std::vector<int32_t> pages;
    int64_t len = 0;
  };
  KvCachePoolOptions options_;
  int64_t num_pages_ = 0;
  int64_t total_bytes_ = 0;
  DeviceBuffer device_memory_;
  std::vector<uint64_t> host_memory_;
  uint8_t* base_ = nullptr;
  std::vector<int32_t> free_;  // stack: the next page handed out is free_.back()
  std::unordered_map<int64_t, Sequence> seqs_;
};

/// Canonical name: "bf16", "f16", "fp8_e4m3", "nvfp4", "fp4_block16".
const char* kv_format_name(KvFormat format);
/// Parses a canonical KV format name; false if unknown.
bool parse_kv_format(std::string_view name, KvFormat* format);
/// Canonical name: "NHD" or "HND".
const char* kv_layout_name(KvLayout layout);
/// Parses "NHD"/"HND" (either case); false if unknown.
bool parse_kv_layout(std::string_view name, KvLayout* layout);
/// True for nvfp4 and fp4_block16.
bool kv_format_is_fp4(KvFormat format);

}  // namespace nvfp4kv
