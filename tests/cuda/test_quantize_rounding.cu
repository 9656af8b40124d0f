// nvfp4kv tests — the GPU-oriented E2M1 helpers of src/cuda/quantize/e2m1_rounding.h agree with
// (all five were also checked over all 2^32 patterns on the CPU once: 0 mismatches)
// the reference codec of src/common/format.h: on the CPU for every float whose magnitude lies in
// [2^-8, 16) (where all rounding boundaries are) plus a sample of all other bit patterns, and on
// the GPU for all 2^32 bit patterns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "common/format.h"
#include "cuda/gpu_test_util.h"
#include "common/kv_format.h"
#include "cuda/quantize/e2m1_rounding.h"
#include "cuda/quantize/fast_div.h"
#include "cuda/common/bits.cuh"

namespace nvfp4kv {
namespace {

namespace fmt = nvfp4kv::fmt;

/// 0 if the three helpers agree with the reference for bit pattern `u` (the grid value of a NaN
/// must be NaN), else a bit saying which failed (1: code by bits, 2: grid value, 4: code of grid
/// value, 8: code by fp32, 16: magnitude code of the grid value by fp32, 32: kvfmt::e2m1_code_magic, 64: grid value from
/// the magic code, 128: hardware E4M3 conversion — only meaningful on the GPU, 256 / 512: the
/// 4over6 reduced encode below 7, 1024: div6_rn_16bit of u < 2^16 as bf16 / f16).
__host__ __device__ uint32_t check_pattern(uint32_t u) {
  const float y = fmt::bits_float(u);
  const uint32_t ref = fmt::float_to_e2m1(y);
  uint32_t bad = cuda::e2m1_code_by_bits(y) != ref ? 1u : 0u;
  const float q = cuda::e2m1_grid_value(y);
  if (fmt::is_nan(y) ? !fmt::is_nan(q) : fmt::float_bits(q) != fmt::float_bits(fmt::e2m1_to_float(ref))) bad |= 2u;
  if (cuda::e2m1_code_of_grid_value(q) != ref) bad |= 4u;
  if (cuda::e2m1_code_by_fp32(y) != ref) bad |= 8u;
  if (!fmt::is_nan(y)) {
    const float mf = cuda::e2m1_magnitude_code_of_grid_value_f(fmt::abs_f(q));
    if (fmt::float_bits(fmt::fadd_rn(mf, 0x1p23f)) - 0x4B000000u != (ref & 7u)) bad |= 16u;
  }
  // The fast kernels' encode (kvfmt::e2m1_code_magic) and grid value from its result.
  const float c = kvfmt::e2m1_code_magic(fmt::abs_f(y));
  if (fmt::float_bits(c) - 0x4A800000u != (ref & 7u)) bad |= 32u;
  if (!fmt::is_nan(y) && fmt::float_bits(cuda::e2m1_grid_from_magic(c)) != fmt::float_bits(fmt::e2m1_to_float(ref & 7u)))
    bad |= 64u;
  // The hardware E4M3 conversion the fast kernels use for scale bytes (on the GPU; the host
  // build of kvfmt::e4m3x2 is the reference itself), for every non-NaN input.
  if (!fmt::is_nan(y) && (kvfmt::e4m3x2(y, 0.0f) & 0xFFu) != fmt::float_to_e4m3(y)) bad |= 128u;
  if (!fmt::is_nan(y) && (kvfmt::e4m3x2(0.0f, y) >> 8) != fmt::float_to_e4m3(y)) bad |= 128u;
  // The 4over6 kernel's reduced encodes on their domains (y ≥ +0 below 7 / below 4.5).
  if (u < fmt::float_bits(7.0f) && fmt::float_bits(cuda::e2m1_code_magic_below7(y)) != fmt::float_bits(c)) bad |= 256u;
  // Its bit-pattern form (one three-way unsigned minimum, VIMNMX3 on sm_90) on the same domain.
  if (u < fmt::float_bits(7.0f) && cuda::e2m1_code_magic_below7_bits(y) != fmt::float_bits(c)) bad |= 2048u;
  // rn(v / 6) without division for the 16-bit block maxima: u < 2^16 is taken as a bf16 and as
  // an f16 pattern (every finite one except −0).
  if (u < 0x10000u && u != 0x8000u) {
    const float vb = fmt::bf16_bits_to_float(static_cast<uint16_t>(u));
    const float vh = fmt::f16_bits_to_float(static_cast<uint16_t>(u));
    if (std::isfinite(vb) && fmt::float_bits(cuda::div6_rn_16bit(vb)) != fmt::float_bits(fmt::fdiv_rn(vb, 6.0f))) bad |= 1024u;
    if (std::isfinite(vh) && fmt::float_bits(cuda::div6_rn_16bit(vh)) != fmt::float_bits(fmt::fdiv_rn(vh, 6.0f))) bad |= 1024u;
  }
  return bad;
}

TEST(CudaQuantizeRounding, HelpersMatchReferenceOnCpu) {
  uint64_t checked = 0;
  auto check = [&](uint32_t u) {
    ++checked;
    const uint32_t bad = check_pattern(u);
    if (bad) {
      ADD_FAILURE() << "bit pattern 0x" << std::hex << u << " (" << fmt::bits_float(u) << ") failed check mask " << bad;
      return false;
    }
    return true;
  };
  // Every pattern with |y| in [2^-8, 16), both signs: all boundaries 0.25 .. 6 and saturation.
  for (uint32_t sign : {0u, 0x80000000u})
    for (uint32_t a = 0x3B800000u; a < 0x41800000u; ++a)
      if (!check(sign | a)) return;
  // Everything else sampled with an odd stride (hits zero, subnormals, huge, Inf, NaN too).
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 4099)
    if (!check(static_cast<uint32_t>(u))) return;
  for (uint32_t u : {0u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F7FFFFFu, 1u})
    if (!check(u)) return;
  EXPECT_GT(checked, 100000000u);
}

/// The 4over6 fast path's helpers over their whole domains on the CPU: e2m1_code_magic_below7
/// for every float in [+0, 7) (equal to kvfmt::e2m1_code_magic there, which covers the bound the
/// kernel tests per block), div6_rn_16bit against fmt::fdiv_rn(v, 6) for every finite bf16 and
/// f16 value except −0, and e2m1_grid_times_sf_from_magic for every scale byte × code.
TEST(CudaQuantizeRounding, FourOverSixFastHelpersExhaustiveOnCpu) {
  const uint32_t end7 = fmt::float_bits(7.0f);
  for (uint32_t u = 0; u < end7; ++u) {
    const float y = fmt::bits_float(u);
    if (fmt::float_bits(cuda::e2m1_code_magic_below7(y)) != fmt::float_bits(kvfmt::e2m1_code_magic(y))) {
      ADD_FAILURE() << "e2m1_code_magic_below7 differs at 0x" << std::hex << u;
      return;
    }
    if (cuda::e2m1_code_magic_below7_bits(y) != fmt::float_bits(kvfmt::e2m1_code_magic(y))) {
      ADD_FAILURE() << "e2m1_code_magic_below7_bits differs at 0x" << std::hex << u;
      return;
    }
  }
  // The bound is needed: at 7 the reduced form gives code 8 instead of 7.
  EXPECT_NE(fmt::float_bits(cuda::e2m1_code_magic_below7(7.0f)), fmt::float_bits(kvfmt::e2m1_code_magic(7.0f)));
  int64_t plain_differs = 0;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if (h == 0x8000u) continue;
    for (int f16 = 0; f16 < 2; ++f16) {
      const float v = f16 ? fmt::f16_bits_to_float(static_cast<uint16_t>(h)) : fmt::bf16_bits_to_float(static_cast<uint16_t>(h));
      if (!std::isfinite(v)) continue;
      const float want = fmt::fdiv_rn(v, 6.0f);
      ASSERT_EQ(fmt::float_bits(cuda::div6_rn_16bit(v)), fmt::float_bits(want)) << (f16 ? "f16 0x" : "bf16 0x") << std::hex << h;
      plain_differs += fmt::float_bits(fmt::fmul_rn(v, fmt::kOneSixth)) != fmt::float_bits(want);
    }
  }
  EXPECT_GT(plain_differs, 0);  // the correction step is needed
  for (uint32_t b = 0; b < 256; ++b) {
    const float sf = fmt::e4m3_to_float(b);
    for (uint32_t m = 0; m < 8; ++m) {
      const float c = fmt::bits_float(0x4A800000u + m);
      const float got = cuda::e2m1_grid_times_sf_from_magic(c, sf);
      const float want = fmt::fmul_rn(fmt::e2m1_to_float(m), sf);
      if (fmt::is_nan(sf)) {
        EXPECT_TRUE(fmt::is_nan(got) || m == 0) << "byte " << b << " code " << m;
        continue;
      }
      // Bit-equal, except that code 0 of a negative scale byte (never produced: block maxima are
      // ≥ 0) gives +0 instead of −0 — the same d², |d| in the 4over6 error either way.
      auto same = [](float a, float b) { return fmt::float_bits(a) == fmt::float_bits(b) || (a == 0.0f && b == 0.0f); };
      ASSERT_TRUE(same(got, want)) << "scale byte 0x" << std::hex << b << " code " << m;
      if (b < 0x80u) ASSERT_EQ(fmt::float_bits(got), fmt::float_bits(want)) << "scale byte 0x" << std::hex << b << " code " << m;
      // …and the full dequantized value after the one rounding by S_dec, for a few decode scales.
      for (float s_dec : {1.0f, 16.0f / 2688.0f, 1.0f / 1536.0f, 3.0e-39f, 1.0e30f, 0.1f})
        ASSERT_TRUE(same(fmt::fmul_rn(got, s_dec), fmt::nvfp4_dequant(m, sf, s_dec))) << "byte " << b << " code " << m;
    }
  }
}

/// e2m1_pack8_by_fp32 (the kernels' packing of 8 codes) against the reference on random
/// 8-tuples: E2M1 ties and grid points scaled by powers of two, random normals over many
/// magnitudes, zeros of both signs, subnormals, huge values, Inf and NaN; encode multipliers 0,
/// powers of two and arbitrary values. A tuple with a non-finite product must be flagged.
TEST(CudaQuantizeRounding, Pack8MatchesReferenceOnCpu) {
  std::mt19937_64 rng(std::random_device{}());
  const uint64_t seed = rng();
  rng.seed(seed);
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  static const float kT[] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 3.5f, 4.0f, 5.0f, 6.0f, 7.0f};
  auto value = [&]() -> float {
    const float r = uni(rng);
    const float sgn = uni(rng) < 0.5f ? -1.0f : 1.0f;
    if (r < 0.5f) return sgn * kT[rng() % 16];
    if (r < 0.8f) return normal(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20);
    if (r < 0.85f) return sgn * 0.0f;
    if (r < 0.90f) return sgn * 1.0e-40f * (1.0f + uni(rng));
    if (r < 0.94f) return sgn * 3.0e38f;
    if (r < 0.97f) return sgn * std::numeric_limits<float>::infinity();
    return std::numeric_limits<float>::quiet_NaN();
  };
  int64_t flagged = 0;
  for (int trial = 0; trial < 2000000; ++trial) {
    float x[8];
    for (float& v : x) v = value();
    const float r = uni(rng);
    const float enc = r < 0.05f ? 0.0f : r < 0.5f ? std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30)
                                                  : std::ldexp(uni(rng) + 0.5f, static_cast<int>(rng() % 60) - 30);
    bool nonfinite = false;
    const uint32_t got = cuda::e2m1_pack8_by_fp32(x, enc, nonfinite);
    uint32_t want = 0;
    bool any_nonfinite = false;
    for (int i = 0; i < 8; ++i) {
      const float y = fmt::fmul_rn(x[i], enc);
      any_nonfinite = any_nonfinite || !std::isfinite(y);
      want |= fmt::float_to_e2m1(y) << (4 * i);
    }
    ASSERT_EQ(nonfinite, any_nonfinite) << "trial " << trial;
    if (nonfinite) {
      ++flagged;
      continue;
    }
    ASSERT_EQ(got, want) << std::hex << "trial " << std::dec << trial << " enc " << enc << " x0 " << x[0];
  }
  EXPECT_GT(flagged, 0);
}

/// The multiply-high division of the fast kernels' index split, against '/' (divisors of every
/// size, dividends at the edges and random).
TEST(CudaQuantizeRounding, FastDivMatchesDivision) {
  std::mt19937_64 rng(std::random_device{}());
  const uint64_t seed = rng();
  rng.seed(seed);
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::vector<uint32_t> divisors = {1u, 2u, 3u, 5u, 7u, 64u, 127u, 128u, 129u, 255u, 256u, 1000u, 65535u, 65536u,
                                    (1u << 31) - 1u, 1u << 31};
  for (int i = 0; i < 2000; ++i) divisors.push_back(static_cast<uint32_t>(rng() % (1u << (1 + rng() % 31))) + 1u);
  for (uint32_t d : divisors) {
    const cuda::FastDiv f = cuda::make_fast_div(d);
    std::vector<uint32_t> ns = {0u, 1u, d - 1u, d, d + 1u, 2u * d - 1u, 0xFFFFFFFFu, 0xFFFFFFFEu, 1u << 31, 1u << 30};
    for (int i = 0; i < 500; ++i) ns.push_back(static_cast<uint32_t>(rng()));
    for (uint32_t n : ns) ASSERT_EQ(cuda::fast_div(n, f), n / d) << "n " << n << " d " << d;
  }
}

__global__ void check_all_patterns(uint64_t start, uint64_t count, unsigned long long* first_bad) {
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint32_t u = static_cast<uint32_t>(start + i);
    if (check_pattern(u)) atomicMin(first_bad, static_cast<unsigned long long>(u));
  }
}

/// Runs `launch(first_bad)` on a device cell set to ~0 and returns the cell: the smallest input a
/// checking kernel flagged (atomicMin), ~0 if none; a CUDA error is a test failure (returns 0).
template <typename Launch>
unsigned long long first_bad_on_gpu(Launch launch) {
  unsigned long long* bad = nullptr;
  const unsigned long long none = ~0ull;
  unsigned long long got = 0;
  if (cudaMalloc(&bad, sizeof *bad) != cudaSuccess) {
    ADD_FAILURE() << "cudaMalloc failed";
    return 0;
  }
  if (cudaMemcpy(bad, &none, sizeof none, cudaMemcpyHostToDevice) == cudaSuccess) {
    launch(bad);
    if (cudaGetLastError() != cudaSuccess || cudaMemcpy(&got, bad, sizeof got, cudaMemcpyDeviceToHost) != cudaSuccess) {
      ADD_FAILURE() << "kernel launch or copy failed";
      got = 0;
    }
  } else {
    ADD_FAILURE() << "cudaMemcpy failed";
  }
  cudaFree(bad);
  return got;
}

TEST(CudaQuantizeRounding, HelpersMatchReferenceOnGpuAllFloats) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned long long got =
      first_bad_on_gpu([](unsigned long long* bad) { check_all_patterns<<<132 * 16, 256>>>(0, 1ull << 32, bad); });
  EXPECT_EQ(got, ~0ull) << "first failing bit pattern 0x" << std::hex << got << " (CPU mask "
                        << check_pattern(static_cast<uint32_t>(got)) << ")";
}

/// frcp_rn_normal (the plain-nvfp4 block path's reciprocal where the decode scale keeps every
/// sf · S_dec in range) against __frcp_rn for every float of both signs with biased exponent
/// 1..252, and its NaN for ±0 (which the kernel's fminf(·, FLT_MAX) turns into FLT_MAX, as the
/// reference's min_f(1 / 0, FLT_MAX)).
__global__ void check_rcp_normal(unsigned long long* first_bad) {
  const uint64_t lo = 0x00800000u, n = 0x7E800000u - 0x00800000u;
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < 2 * n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint32_t u = static_cast<uint32_t>(lo + (i >> 1)) | (static_cast<uint32_t>(i & 1u) << 31);
    const float x = __uint_as_float(u);
    if (__float_as_uint(cuda::frcp_rn_normal(x)) != __float_as_uint(__frcp_rn(x))) atomicMin(first_bad, static_cast<unsigned long long>(u));
  }
  if (blockIdx.x == 0 && threadIdx.x < 2) {
    const float z = threadIdx.x == 0 ? 0.0f : -0.0f;
    const float r = cuda::frcp_rn_normal(z);
    if (r == r || fminf(r, 3.402823466e38f) != 3.402823466e38f) atomicMin(first_bad, static_cast<unsigned long long>(__float_as_uint(z)));
  }
}

TEST(CudaBits, RcpNormalMatchesFrcpRn) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned long long got = first_bad_on_gpu([](unsigned long long* bad) { check_rcp_normal<<<132 * 16, 256>>>(bad); });
  EXPECT_EQ(got, ~0ull) << "first differing input 0x" << std::hex << got;
}

}  // namespace
}  // namespace nvfp4kv
