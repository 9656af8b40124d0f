// nvfp4kv — NVFP4 / MXFP4 quantization of activations and weights (SPEC.md §1-4).
#pragma once

#include <cstdint>
#include <string_view>

#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv {

/// How a tensor is quantized (SPEC.md §3).
enum class Recipe {
  kNvfp4,             ///< "nvfp4": 16-element blocks, E4M3 block scale, fp32 global scale
  kNvfp4FourOverSix,  ///< "nvfp4_4over6": nvfp4 storage, each block maps its max to 6 or 4
  kMxfp4,             ///< "mxfp4": 32-element blocks, UE8M0 scale, no global scale
  kFp4Block16,        ///< "fp4_block16": 16-element blocks, UE8M0 scale, no global scale
};

/// Arrangement of the block-scale bytes (SPEC.md §4).
enum class SfLayout {
  kLinear,  ///< "linear": row-major [M, K/block], no padding
  k128x4,   ///< "128x4": cuBLAS/CUTLASS block-scaling layout, rows padded to 128, columns to 4
  k8x4,     ///< "8x4": rows padded to 8, columns to 4
};

/// Error measure the 4over6 recipe minimises when it picks a block's scale (SPEC.md §3.2).
enum class ErrorMetric {
  kMse,  ///< sum of squared errors (default)
  kMae,  ///< sum of absolute errors (TransformerEngine's default)
};

/// Where the fp32 global scale of the nvfp4 recipes comes from.
enum class GlobalScaleMode {
  kPerTensor,  ///< computed from the tensor amax; written as one decode scale to `global_scale[0]`
  kPerRow,     ///< computed from each row's amax; written to `global_scale[row]`
  kGiven,      ///< read from `global_scale[0]`: a decode scale (x̂ = e2m1 · sf · S_dec), > 0, finite
};

/// Elements per scale block of `recipe` (16 or 32).
int recipe_block_elems(Recipe recipe);
/// True for recipes with an fp32 global scale (nvfp4, nvfp4_4over6).
bool recipe_has_global_scale(Recipe recipe);
/// Canonical name: "nvfp4", "nvfp4_4over6", "mxfp4", "fp4_block16".
const char* recipe_name(Recipe recipe);
/// Parses a canonical recipe name; false if unknown.
bool parse_recipe(std::string_view name, Recipe* recipe);
/// Canonical name: "linear", "128x4", "8x4".
const char* sf_layout_name(SfLayout layout);
/// Parses a canonical layout name; false if unknown.
bool parse_sf_layout(std::string_view name, SfLayout* layout);
/// Canonical name: "mse", "mae".
const char* error_metric_name(ErrorMetric metric);
/// Parses "mse" or "mae"; false if unknown.
bool parse_error_metric(std::string_view name, ErrorMetric* metric);

/// Shape of one matrix's scale bytes in a layout: `rows × cols` bytes, padding included.
struct ScaleShape {
  int64_t rows = 0;  ///< M for linear, M rounded up to 128 (128x4) or 8 (8x4)
  int64_t cols = 0;  ///< K/block for linear, rounded up to 4 for 128x4 and 8x4
  /// Bytes of one matrix's scales (rows · cols).
  int64_t bytes() const { return rows * cols; }
};

/// Scale shape for an `m × k` matrix (k a multiple of the recipe block).
ScaleShape scale_shape(Recipe recipe, SfLayout layout, int64_t m, int64_t k);
/// Bytes of packed E2M1 data for one row of `k` elements (k / 2).
inline int64_t packed_row_bytes(int64_t k) { return k / 2; }

/// Options of quantize().
struct QuantizeOptions {
  Recipe recipe = Recipe::kNvfp4;                                ///< SPEC.md §3
  SfLayout sf_layout = SfLayout::kLinear;                        ///< SPEC.md §4
  GlobalScaleMode global_scale_mode = GlobalScaleMode::kPerTensor;  ///< nvfp4 recipes only
  ErrorMetric metric = ErrorMetric::kMse;                        ///< nvfp4_4over6 only
};

/// Quantizes `input` to packed E2M1 codes plus block scales (and a global scale for the nvfp4
/// recipes), bit-exactly as SPEC.md §3 prescribes.
///
/// @param input  `[M, K]` or `[B, M, K]`, f32/f16/bf16 (fp8_e4m3 for nvfp4 only); K a multiple
///               of the recipe block; any row (and batch) stride, last dimension contiguous.
/// @param data   u8 `[M, K/2]` or `[B, M, K/2]` output; element 2j in the low nibble of byte j;
///               any row stride, last dimension contiguous.
/// @param scales u8 (or fp8_e4m3 for the nvfp4 recipes) contiguous `[rows, cols]` or
///               `[B, rows, cols]` output with the shape scale_shape() gives; padding bytes are
///               written as 0x00. E4M3 bytes for nvfp4 recipes, UE8M0 for mxfp4/fp4_block16.
/// @param global_scale f32 decode scale(s), nvfp4 recipes only (pass an empty view otherwise):
///               kPerTensor writes `[1]`, kPerRow writes `[M]` (or `[B, M]`), kGiven reads `[1]`.
/// @param options recipe, layout, global-scale mode, 4over6 metric.
/// @param stream  CUDA stream for device tensors; the call is asynchronous on the device, never
///               synchronises, allocates or reads device memory from the host (CUDA-graph safe).
/// All views must be on the same device. On the CPU the call runs the reference implementation.
Status quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                const TensorView& global_scale, const QuantizeOptions& options,
                Stream stream = nullptr);

/// Checks everything quantize() checks, without running it.
Status can_run_quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                        const TensorView& global_scale, const QuantizeOptions& options);

/// Options of dequantize().
struct DequantizeOptions {
  Recipe recipe = Recipe::kNvfp4;          ///< recipe the data was quantized with
  SfLayout sf_layout = SfLayout::kLinear;  ///< layout of `scales`
};

/// Reconstructs values from quantize()'s outputs (SPEC.md §3.1: x̂ = rn(rn(e2m1 · sf) · S_dec);
/// §3.3: x̂ = rn(e2m1 · 2^(code−127))), rounded once more to the output type.
///
/// @param data         u8 `[M, K/2]` or `[B, M, K/2]`, last dimension contiguous.
/// @param scales       u8/fp8_e4m3, contiguous, shape as scale_shape() gives.
/// @param global_scale f32 decode scale `[1]`, or per row `[M]` / `[B, M]` (nvfp4 recipes);
///                     empty for mxfp4/fp4_block16.
/// @param output       f32/f16/bf16 `[M, K]` or `[B, M, K]`, last dimension contiguous.
Status dequantize(const TensorView& data, const TensorView& scales, const TensorView& global_scale,
                  const TensorView& output, const DequantizeOptions& options,
                  Stream stream = nullptr);

}  // namespace nvfp4kv
