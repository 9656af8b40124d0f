// nvfp4kv — small PTX bit-manipulation helpers shared by the quantize, KV-cache and attention
// kernels (one definition instead of one per kernel file).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace nvfp4kv::cuda {

/// Byte permute (PRMT): result byte i = byte sel.nibble(i) of the 8-byte value {b, a}; used for
/// table lookups and byte shuffles in the E2M1 pack/unpack paths.
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

/// E4M3 byte (low 8 bits) → float by the hardware conversion (cvt.rn.f16x2.e4m3x2, then f16 →
/// f32): exact for every E4M3 value (all lie in f16's range and precision); NaN bytes (0x7F,
/// 0xFF) give a NaN whose payload may differ from fmt::e4m3_to_float's.
__device__ __forceinline__ float e4m3_to_float_hw(uint32_t byte) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(byte & 0xFFu), __NV_E4M3);
  return __half2float(__half(h));
}

/// The low byte of an E4M3 pair (cvt.rn.satfinite.e4m3x2's 16-bit result) → float by the hardware
/// conversion, without masking the high byte off (e4m3_to_float_hw masks): exact as that one.
__device__ __forceinline__ float e4m3_lo_to_float_hw(uint32_t pair) {
  uint32_t h2;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(static_cast<unsigned short>(pair)));
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h2 & 0xFFFFu)));
}

/// rn(1 / x) for 2^-126 ≤ |x| < 2^126 (biased exponent 1..252), and NaN for x = ±0: __frcp_rn's
/// fast path (MUFU.RCP, then one Newton step by two FMAs) without its range check and slow path,
/// which __frcp_rn takes for the other exponents. The step's negation -(x·r - 1) is folded into
/// the second FMA; __frcp_rn computes it by FADD.FTZ, the same value because x·r - 1 is never a
/// denormal there. Equal to __frcp_rn bit for bit on the whole range: the GPU test
/// CudaBits.RcpNormalMatchesFrcpRn checks every float of it.
__device__ __forceinline__ float frcp_rn_normal(float x) {
  float r, e, y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  asm("fma.rn.f32 %0, %1, %2, 0fBF800000;" : "=f"(e) : "f"(x), "f"(r));
  asm("fma.rn.f32 %0, %1, %2, %1;" : "=f"(y) : "f"(r), "f"(-e));
  return y;
}

/// Per-half unsigned max (sm_90): on |x| bit patterns of bf16/f16 this is the float max with
/// NaN (and Inf) winning, which is how the fast paths detect blocks needing the reference rules.
__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("max.u16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/// Per-half max of packed bf16x2 (kBf16) or f16x2 values (sm_90 HMNMX2; subnormals compared as
/// they are: no .ftz). kAbsNaN (the quantize block max): max.NaN.xorsign.abs — each half's
/// magnitude bits are the larger magnitude, a NaN in either gives a NaN (the canonical one), the
/// sign bits are the xor of the inputs' (callers mask them). Otherwise (the amax reduction) the
/// IEEE maxNum: a NaN operand is ignored, as fmt::max_f ignores it.
template <bool kBf16, bool kAbsNaN>
__device__ __forceinline__ uint32_t max_16x2(uint32_t a, uint32_t b) {
  uint32_t r;
  if constexpr (kAbsNaN && kBf16) asm("max.NaN.xorsign.abs.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (kAbsNaN) asm("max.NaN.xorsign.abs.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else if constexpr (kBf16) asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/// Packs 8 E2M1 codes into one word (byte j = c[2j] | c[2j+1] << 4, SPEC.md §1): magnitudes from
/// the low bytes of mc[0..7] (kvfmt::e2m1_code_magic results: low byte = code 0..7), signs from
/// the 16-bit input words w[0..3] (element 2k in the low half of w[k]; sign bits 15 and 31).
/// Valid for NaN-free blocks, where the code's sign is the input's (the encode multiplier ≥ +0).
__device__ __forceinline__ uint32_t pack8_magic_codes(const uint32_t* mc, const uint32_t* w) {
  const uint32_t ev = prmt(prmt(mc[0], mc[2], 0x0040u), prmt(mc[4], mc[6], 0x0040u), 0x5410u);
  const uint32_t od = prmt(prmt(mc[1], mc[3], 0x0040u), prmt(mc[5], mc[7], 0x0040u), 0x5410u);
  const uint32_t x01 = prmt(w[0], w[1], 0x7531u);  // sign bytes of elements 0, 1, 2, 3
  const uint32_t x23 = prmt(w[2], w[3], 0x7531u);  // 4, 5, 6, 7
  const uint32_t s_ev = prmt(x01, x23, 0xECA8u);   // 0xFF/0x00 by the sign of 0, 2, 4, 6
  const uint32_t s_od = prmt(x01, x23, 0xFDB9u);   // 1, 3, 5, 7
  return (ev | (od << 4)) | (s_ev & 0x08080808u) | (s_od & 0x80808080u);
}

}  // namespace nvfp4kv::cuda
