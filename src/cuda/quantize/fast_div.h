// nvfp4kv — division of 32-bit unsigned indices by a divisor fixed per launch, by multiply-high
// and shift (Granlund & Montgomery, "Division by invariant integers using multiplication", 1994;
// the round-up variant with a 33-bit multiplier, the form CUTLASS's FastDivmod also uses):
// ~4 instructions instead of the ~20 of a run-time 32-bit division. Exact for every n < 2^32
// and d in [1, 2^31] (tests/cuda/test_quantize_rounding.cu checks it on the CPU).
#pragma once

#include <cstdint>

#include "common/format.h"

namespace nvfp4kv::cuda {

/// Precomputed divisor: q = (umulhi(n, mul) + n) >> shift, the sum taken in 64 bits.
struct FastDiv {
  uint32_t mul = 0;
  uint32_t shift = 0;
};

/// Host-side setup for divisor d ≥ 1: shift = ceil(log2 d), mul = floor(2^32 (2^shift − d) / d) + 1.
inline FastDiv make_fast_div(uint32_t d) {
  FastDiv f;
  uint32_t l = 0;
  while (l < 32 && (uint64_t(1) << l) < d) ++l;
  f.shift = l;
  f.mul = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << l) - d)) / d + 1);
  return f;
}

/// n / d for the divisor `f` was made for.
NVFP4KV_HD uint32_t fast_div(uint32_t n, FastDiv f) {
#if defined(__CUDA_ARCH__)
  const uint32_t hi = __umulhi(n, f.mul);
#else
  const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * f.mul) >> 32);
#endif
  return static_cast<uint32_t>((static_cast<uint64_t>(hi) + n) >> f.shift);
}

}  // namespace nvfp4kv::cuda
