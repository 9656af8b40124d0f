// nvfp4kv — CUDA-free parameter blocks of the quantize kernels (src/cuda/quantize/*.cu).
//
// The launchers (quantize.cu, dequantize.cu) turn validated TensorViews into these structs; the
// kernels take them by value as __grid_constant__ parameters. Strides of element tensors are in
// elements, strides of byte tensors in bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "common/format.h"
#include "cuda/quantize/fast_div.h"
#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv::cuda {

/// Input element type of the quantize kernels (template dispatch key).
enum class QuantInput : int { kF32, kF16, kBF16, kFP8E4M3 };

/// Kernel variant: the recipe, with the 4over6 metric folded in (it changes the inner loop).
enum class QuantKind : int { kNvfp4, kFourOverSixMse, kFourOverSixMae, kMx32, kMx16 };

/// Where the nvfp4 global scale comes from inside the kernel.
enum class ScaleSource : int {
  kNone,       ///< mxfp4 / fp4_block16
  kGiven,      ///< global_scale[0] holds the decode scale S_dec
  kAmax,       ///< global_scale[0] holds the tensor amax (written by the amax kernel)
  kPerRow,     ///< computed from each row by the per-row kernel
};

/// One quantize launch. Rows are (batch, row) pairs; a thread handles one "chunk" of 64
/// consecutive elements of a row (4 scale blocks of 16, or 2 of 32) and the matching scale
/// bytes; chunks of padded scale rows/columns write only 0x00 scale bytes.
struct QuantizeParams {
  const void* input = nullptr;   // [batch, rows, k] elements, last dim contiguous
  int64_t in_batch_stride = 0;   // elements
  int64_t in_row_stride = 0;     // elements
  uint8_t* data = nullptr;       // [batch, rows, k/2] u8, element 2j in the low nibble of byte j
  int64_t data_batch_stride = 0; // bytes
  int64_t data_row_stride = 0;   // bytes
  uint8_t* scales = nullptr;     // [batch, rows_pad, cols_pad] u8 in the SPEC §4 layout, contiguous
  int64_t scales_batch_stride = 0;  // bytes: rows_pad · cols_pad
  float* global_scale = nullptr; // kGiven: [1] S_dec; kAmax: [1] amax in, S_dec out (finalize);
                                 // kPerRow: [batch · rows] decode scales out
  int64_t batch = 1;
  int64_t rows = 0;              // M
  int64_t k = 0;                 // K elements per row
  int64_t kv = 0;                // K / block scale columns
  int64_t rows_grid = 0;         // M (linear) or M padded to 128 / 8
  int64_t cols_grid = 0;         // kv (linear) or kv padded to 4
  int64_t chunks_per_row = 0;    // ceil(cols_grid / blocks per chunk)
  int layout = 0;                // 0 linear, 1 128x4, 2 8x4 (fmt::sf_offset)
  ScaleSource source = ScaleSource::kNone;
  float numerator = 0.0f;        // 2688 (nvfp4) or 1536 (4over6) for computed scales
  bool in_vec16 = false;         // input rows allow 16-byte loads
  int data_align = 1;            // 16, 8 or 1: widest store the data rows allow
  bool sf_vec = false;           // a chunk's scale bytes may be stored as one word
  bool reverse = false;          // visit thread blocks last-first (reuse what the amax pass left in L2)
};

/// One dequantize launch: a thread rebuilds one 64-element chunk of a row.
struct DequantizeParams {
  const uint8_t* data = nullptr;    // [batch, rows, k/2] u8
  int64_t data_batch_stride = 0;    // bytes
  int64_t data_row_stride = 0;      // bytes
  const uint8_t* scales = nullptr;  // [batch, rows_pad, cols_pad] u8, contiguous
  int64_t scales_batch_stride = 0;  // bytes
  const float* global_scale = nullptr;  // [1] or [batch · rows] decode scales (nvfp4 recipes)
  bool per_row_scale = false;
  void* output = nullptr;           // [batch, rows, k] f32/f16/bf16, last dim contiguous
  int64_t out_batch_stride = 0;     // elements
  int64_t out_row_stride = 0;       // elements
  int64_t batch = 1, rows = 0, k = 0, kv = 0;
  int64_t chunks_per_row = 0;       // ceil(k / 64)
  int layout = 0;
  bool data_vec16 = false;          // data rows allow 16-byte loads
  bool out_vec16 = false;           // output rows allow 16-byte stores
};

/// Output element type of the dequantize kernel.
enum class DequantOutput : int { kF32, kF16, kBF16 };
/// Dequantize variant: E4M3 scale × global scale (nvfp4 recipes), or UE8M0 scale, block 32/16.
enum class DequantKind : int { kNvfp4, kMx32, kMx16 };

/// Per-tensor amax pass (amax.cu): global_scale[0] = bits of max |x| over the input (NaN
/// ignored), combined with atomicMax on the float bits; the caller zeroes it first.
Status launch_tensor_amax(const QuantizeParams& p, QuantInput in, Stream stream);
/// Per-row global scales (quantize_per_row.cu): one thread block per row computes the row amax,
/// writes its decode scale (0 for an all-zero row, SPEC.md §3.5) and quantizes the row.
Status launch_quantize_per_row(const QuantizeParams& p, QuantInput in, QuantKind kind, Stream stream);
/// Turns the amax in global_scale[0] into the decode scale rn(1 / S_enc) (amax.cu).
Status launch_amax_to_decode_scale(float* global_scale, float numerator, Stream stream);

/// One launch of the fast 16-bit-input kernel (quantize_fast.cu): 32-bit unit indices, byte
/// strides, precomputed divisors. A unit is 32 consecutive elements of a row (2 blocks of 16, or
/// 1 mxfp4 block) and its scale column(s); the flat unit index runs over (batch, padded row, unit).
struct FastQuantizeParams {
  const void* input = nullptr;
  int64_t in_batch_bytes = 0, in_row_bytes = 0;
  uint8_t* data = nullptr;
  int64_t data_batch_bytes = 0, data_row_bytes = 0;
  uint8_t* scales = nullptr;
  int64_t scales_batch_bytes = 0;
  float* global_scale = nullptr;  // kGiven: S_dec; kAmax: the tensor amax
  ScaleSource source = ScaleSource::kNone;
  float numerator = 0.0f;
  uint32_t batch = 1, rows = 0, rows_grid = 0, k = 0, kv = 0, cols_grid = 0;
  uint32_t units_per_row = 0;
  uint32_t total_units = 0;       // < 2^30
  FastDiv units_div;              // ÷ units_per_row
  FastDiv rows_div;               // ÷ rows_grid
  int layout = 0;
  bool reverse = false;           // walk units last-first (the amax pass left the tail in L2)
  bool sf_vec2 = false;           // a unit's two scale bytes may be stored as one 16-bit word
  /// Unit order. 0: row-major (flat index = padded row · units_per_row + unit column).
  /// 1 (128x4) / 2 (8x4): "sector order": each aligned group of 256 flat indices (one CTA's
  /// share of one loop step) is 8 rows × 32 consecutive unit columns, the 8 rows whose scale
  /// bytes share the 32-byte sectors of the 16 (8 for mxfp4) scale tiles the group touches
  /// (128x4: rows 2j, 2j+1, +32, +33, +64, +65, +96, +97 of a 128-row band; 8x4: the 8 rows of a
  /// band), so every scale sector is completed by one CTA in one step (needs units_per_row % 32 == 0).
  /// 3 (128x4) / 4 (8x4): "warp-sector order" (v7): the same 8 rows × 32 units per CTA step,
  /// but each warp takes all 8 rows × 4 unit columns (lane = 4 · row + column), so one warp's
  /// 2-byte scale stores cover two whole 32-byte sectors (the LSU merges them into full-sector
  /// writes) and its code stores 8 rows × 64 bytes (whole sectors too); sector order (1 / 2)
  /// left each sector to 8 partial stores from 8 warps.
  uint32_t order = 0;
  uint32_t groups_per_row = 0;    // units_per_row / 32
  uint32_t groups_per_band = 0;   // 16 · groups_per_row (128x4) or groups_per_row (8x4)
  FastDiv groups_div;             // ÷ groups_per_row
  FastDiv band_div;               // ÷ groups_per_band
  uint32_t total_blocks = 0;      // batch · rows_grid · cols_grid (the block kernel's index space)
  FastDiv blocks_div;             // ÷ cols_grid
  /// Block kernel order (quantize v16). 0: row-major (flat index = padded row · cols_grid +
  /// block column). 1 (128x4) / 2 (8x4), "sector order": each aligned group of 32 flat indices
  /// (one warp's step) is the 32 blocks whose scale bytes fill one 32-byte sector — 128x4: rows
  /// 2s, 2s + 1, 2s + 32, 2s + 33, 2s + 64, 2s + 65, 2s + 96, 2s + 97 of a 128-row band × 4
  /// block columns; 8x4: the 8 rows of a band × 4 block columns — lane = 4 · row index + column;
  /// consecutive groups take consecutive 4-column tiles, then (128x4) the next s, then the next
  /// band. Needs cols_grid % 4 == 0 and whole bands (the tiled layouts pad to both).
  uint32_t block_order = 0;
  uint32_t col_tiles = 0;         // cols_grid / 4 (block_order ≠ 0)
  FastDiv tiles_div;              // ÷ col_tiles
  uint32_t bands_per_batch = 0;   // rows_grid / 128 (order 1) or / 8 (order 2)
  FastDiv bands_div;              // ÷ bands_per_batch
  /// Block kernel, batch 1 in forward order (step_ok): the grid stride in rows and columns
  /// (stride / cols_grid, stride % cols_grid), so that a thread's next block follows from its
  /// current one by one add and one carry instead of two divisions (quantize v16).
  bool step_ok = false;
  uint32_t step_rows = 0, step_cols = 0;
  /// Block kernel (quantize v17): fmt::sf_offset_terms(layout, kv), so that the kernel finds a
  /// block's scale byte by fmt::sf_offset_by_terms, without a layout switch.
  fmt::SfOffsetTerms sf_terms;
  /// Quantize v22: batch 1, no padding rows or block columns, input and data row strides below
  /// 2^32 bytes. The block kernel's plain-nvfp4 paths then skip the validity tests, compute
  /// addresses from 32-bit products, and (where the decode scale allows) take the reciprocal
  /// without its range check.
  bool lean = false;
};

/// Bench / test knob: -1 (default) picks the unit order automatically (warp-sector order for
/// inputs ≥ 256 MiB, except mxfp4; row-major otherwise); 0 forces row-major, 1 the (v6) sector
/// order, 2 the warp-sector order, wherever they apply. Not part of the public API (bench A/B,
/// tests).
void set_fast_quantize_order_override(int order);
/// Bench knob: > 0 caps the fast kernel's persistent grid at this many CTAs per SM (0: occupancy).
void set_fast_quantize_ctas_override(int ctas_per_sm);
/// Bench / test knob: 1 balances the persistent grid (fewest CTAs, at most the resident ones,
/// that give every thread the same number of units, so no last round runs with a fraction of the
/// threads); -1 (default) and 0 keep one full wave of resident CTAs (measured faster, v7 A/B).
void set_fast_quantize_balance_override(int mode);
/// Bench / test knob for 4over6's kernel variant: 7 = v11's loop (3 CTAs/SM, the next unit's
/// position computed twice, constant table base); any other value (default -1) = kDq 13 (see
/// quantize_fast.cu).
void set_fast_quantize_4over6_dq_override(int mode);
/// Bench / test knob for nvfp4 and 4over6 in row-major unit order: 1 forces the block kernel
/// (one 16-element block per thread and step), 0 the unit kernel, -1 (default) the launch rule
/// (quantize_fast.cu, kBlockKernelBlocksBelow).
void set_fast_quantize_block_override(int mode);
/// Bench / test knob for the block kernel's order in the tiled layouts: 0 forces row-major, 1 the
/// sector order (block_order) wherever it applies; -1 (default) the launch rule (plain nvfp4 up
/// to 8 MiB of input).
void set_fast_quantize_block_order_override(int mode);
/// Test knob for the block kernel's position update: 0 forces block_at (two divisions per block)
/// everywhere; -1 (default) steps from the previous block where it applies (batch 1, forward).
void set_fast_quantize_block_step_override(int mode);
/// Bench / test knob: > 0 sets the block kernel's CTA size (32, 64, 128 or 256 threads; plain nvfp4
/// only — 4over6 fills its per-CTA tables with 256 threads), 0 (default) the automatic rule
/// (launch_quantize_fast). Not part of the public API.
void set_fast_quantize_block_threads_override(int threads);
/// Bench / test knob for plain nvfp4 in the block kernel: 1 takes the loop-free one-block path
/// (one block per thread, places and addresses before the PDL wait; ≤ 128 registers) wherever one
/// wave of it holds every block, 2 the same path at ≤ 32 registers (8 CTAs of 256 per SM) over as
/// many waves as needed, 0 neither (the loop), -1 (default) the launch rule (quantize_fast.cu,
/// kBlockOneBlocksMax / kBlockWavesBlocksMax). Not part of the public API.
void set_fast_quantize_block_one_override(int mode);
/// Bench / test knob: 0 keeps the block kernel's loop off its lean path (FastQuantizeParams::lean,
/// quantize v22) for every call; any other value (default -1) takes it wherever it applies.
void set_fast_quantize_lean_override(int mode);

#ifdef NVFP4KV_QUANT_TRACE
/// Timeline experiment (built with -DNVFP4KV_QUANT_TRACE only): words per warp record of the plain
/// nvfp4 block kernel — %globaltimer at entry, after pdl_wait, global scale ready, first block's
/// words arrived, first block's stores issued, exit; the input address; the SM; then %clock64
/// after pdl_wait, first block's words arrived, global scale ready, block max, scale byte, encode
/// multiplier, codes, data store issued, scale store issued, exit.
constexpr int kQTraceWords = 18;
/// Clears the record count.
void quant_trace_reset();
/// The records written since the last reset (kQTraceWords words each).
std::vector<unsigned long long> quant_trace_fetch();
#endif

/// True if the fast kernel handles this launch: bf16/f16 input, 16-byte aligned input rows and
/// data rows, given or per-tensor scale (or none), indices within 32 bits.
bool fast_quantize_applies(const QuantizeParams& p, QuantInput in);
/// Runs the fast kernel (quantize_fast.cu); the caller checked fast_quantize_applies.
Status launch_quantize_fast(const QuantizeParams& p, QuantInput in, QuantKind kind, Stream stream);
/// Number of SMs of the current device, cached per device (host-side cost of every launch).
int fast_quantize_sm_count();

}  // namespace nvfp4kv::cuda
