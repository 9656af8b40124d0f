// nvfp4kv — CPU reference of the quantization formats (SPEC.md §1-4): the oracle every kernel is
// tested against, and the CPU backend of nvfp4kv::quantize / nvfp4kv::dequantize.
//
// Everything here is plain loops over SPEC.md's formulas, written with src/common/format.h (the
// only place format math lives) and compiled with -ffp-contract=off, so each rn(·) of SPEC.md is
// one IEEE fp32 operation. Functions taking views expect views the API layer has validated
// (src/api/quantize.cpp): CPU memory, shapes consistent, last dimension contiguous.
#pragma once

#include <cstdint>

#include "nvfp4kv/quantize.h"
#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv::ref {

/// Element `index` of a CPU row starting at `row`, widened exactly to f32.
/// `dtype` is f32, f16, bf16 or fp8_e4m3 (0x7F/0xFF decode to NaN).
float load_element(const void* row, DType dtype, int64_t index);

/// Stores `value` at element `index` of a CPU row, rounded to nearest-even into `dtype`
/// (f32, f16 or bf16; f16/bf16 overflow to ±Inf as IEEE rounding does).
void store_element(void* row, DType dtype, int64_t index, float value);

/// Numerator of the global encode scale: 2688 = 448·6 (nvfp4) or 1536 = 256·6 (nvfp4_4over6),
/// SPEC.md §3.1/§3.2; 0 for recipes without a global scale.
float global_scale_numerator(Recipe recipe);

/// Largest |x| over `n` values, NaN ignored (the amax of SPEC.md §3.1, starting from +0).
float abs_max(const float* x, int64_t n);

/// One quantized block.
struct BlockResult {
  uint8_t scale = 0;       ///< stored scale byte: E4M3 (nvfp4 recipes) or UE8M0 (mx recipes)
  uint8_t codes[32] = {};  ///< E2M1 codes (low 4 bits), element order, `n` of them valid
  bool map_to_4 = false;   ///< nvfp4_4over6 only: the block kept the map-to-4 candidate
};

/// Quantizes one block of `n` values (16, or 32 for mxfp4) by SPEC.md §3.
/// @param s_enc, s_dec the block's global encode and decode scales (nvfp4 recipes; ignored by
///        mxfp4 / fp4_block16).
/// @param metric the 4over6 error measure (nvfp4_4over6 only).
BlockResult quantize_block(Recipe recipe, ErrorMetric metric, const float* x, int n, float s_enc,
                           float s_dec);

/// Dequantizes one element (before rounding to the output type):
/// nvfp4 recipes rn(rn(e2m1(code) · e4m3(scale)) · s_dec); mx recipes rn(e2m1(code) · 2^(scale−127)).
float dequantize_element(Recipe recipe, uint32_t code, uint8_t scale, float s_dec);

/// Counters filled by quantize() when asked (the CLI demo reports how often 4over6 moves a block).
struct QuantizeStats {
  int64_t blocks = 0;           ///< blocks quantized
  int64_t blocks_map_to_4 = 0;  ///< nvfp4_4over6 blocks that kept the map-to-4 candidate
};

/// Reference quantize on validated CPU views (shapes, dtypes, ranks and the kGiven scale value
/// as nvfp4kv::quantize documents and checks). Zeroes every scale byte of `scales` (padding
/// included) before writing the real ones. `stats` may be null.
Status quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                const TensorView& global_scale, const QuantizeOptions& options,
                QuantizeStats* stats = nullptr);

/// Reference dequantize on validated CPU views (as nvfp4kv::dequantize documents and checks).
/// For the nvfp4 recipes a `global_scale` of shape [1] is one decode scale for the whole tensor;
/// shape [M] (rank-2 data) or [B, M] (rank-3 data) is one decode scale per row.
Status dequantize(const TensorView& data, const TensorView& scales, const TensorView& global_scale,
                  const TensorView& output, const DequantizeOptions& options);

}  // namespace nvfp4kv::ref
