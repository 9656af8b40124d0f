// nvfp4kv CLI — sections of `nvfp4kv demo` (tools/cmd_demo.cpp runs them in order). Each section
// prints a human-readable table to `out` and stores its results under its own key of `json`.
#pragma once

#include <cstdint>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace nvfp4kv::cli {

/// Settings shared by the demo sections.
struct DemoOptions {
  int64_t rows = 1024;   ///< rows (tokens) of each synthetic tensor
  int64_t cols = 4096;   ///< elements per row; a multiple of 32
  uint64_t seed = 2024;  ///< seed of the synthetic data (same seed, same tables)
};

/// Quantization section, on the CPU reference: quantizes synthetic bf16 tensors (gaussian,
/// Student-t ν=3, K-cache-like gaussian with outlier channels ×20) with every recipe, and prints
/// relative L2 error, max |error| / amax, bits per value (scales and global scale included) and,
/// for nvfp4_4over6, how many blocks took the map-to-4 scale. Results go to (*json)["quantize"].
/// Returns kExitOk, kExitMismatch if an internal consistency check failed (the stored 4over6
/// scale byte is neither candidate, or a NaN appeared), or kExitError on a library error (the
/// message is printed to stderr).
int demo_quantize(const DemoOptions& options, std::FILE* out, nlohmann::json* json);

/// Decode section (tools/demo_decode.cpp): one decode step (batch 16 × kv_len 8K, 32/8 heads,
/// head_dim 128, K with outlier channels) over a paged bf16 / fp8_e4m3 / nvfp4 / nvfp4_4over6
/// cache on the GPU: bytes per token, µs, TB/s, % of the measured copy bandwidth, relative error
/// vs fp64 attention on the original K/V. Without a GPU: the CPU reference at a small size
/// (says so, no timings). Results go to (*json)["decode"]. Returns kExitOk, kExitMismatch on a
/// non-finite output, kExitError on a library error (printed to stderr).
int demo_decode(const DemoOptions& options, std::FILE* out, nlohmann::json* json);

}  // namespace nvfp4kv::cli
