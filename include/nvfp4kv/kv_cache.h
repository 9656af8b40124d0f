// nvfp4kv — paged KV cache views (SPEC.md §5). Operations on them are declared below the view.
#pragma once

#include <cstdint>
#include <string_view>

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
