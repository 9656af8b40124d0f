// Helpers of the reference-quantizer tests: run the public API on host buffers, make seeded
// test data, compare quantized bytes and report the first mismatch as (row, block, nibble).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/format.h"
#include "nvfp4kv/quantize.h"

namespace nvfp4kv::test {

/// A seed for fresh random data: NVFP4KV_TEST_SEED if set, otherwise a new one per call.
inline uint32_t test_seed() {
  if (const char* s = std::getenv("NVFP4KV_TEST_SEED")) return static_cast<uint32_t>(std::strtoul(s, nullptr, 0));
  return std::random_device{}();
}

/// Host outputs of one quantize() call on an [B, M, K] (rank 3) or [M, K] (B == 0) input.
struct Quantized {
  Status status;
  std::vector<uint8_t> data;    // [B, M, K/2]
  std::vector<uint8_t> scales;  // [B, rows, cols] of the layout
  std::vector<float> global;    // [1] or [B·M]
  int64_t batch = 0, rows = 0, cols = 0;
  ScaleShape shape;
};

inline bool is_nvfp4(Recipe r) { return recipe_has_global_scale(r); }

/// Quantizes contiguous f32 `x` of shape [M, K] (batch == 0) or [batch, M, K] with the public API.
/// For kGiven, `given` is the decode scale put in global_scale[0].
inline Quantized quantize_host(const std::vector<float>& x, int64_t batch, int64_t m, int64_t k,
                               const QuantizeOptions& options, float given = 1.0f,
                               DType dtype = DType::kF32) {
  Quantized q;
  q.batch = batch;
  q.rows = m;
  q.cols = k;
  const int64_t b = batch == 0 ? 1 : batch;
  q.shape = scale_shape(options.recipe, options.sf_layout, m, k);
  q.data.assign(static_cast<size_t>(b * m * k / 2), 0xEE);
  q.scales.assign(static_cast<size_t>(b * q.shape.bytes()), 0xCD);  // canary: padding must be 0
  std::vector<uint16_t> half(x.size());
  std::vector<uint8_t> fp8(x.size());
  void* in = const_cast<float*>(x.data());
  if (dtype == DType::kF16 || dtype == DType::kBF16) {
    for (size_t i = 0; i < x.size(); ++i) {
      half[i] = dtype == DType::kF16 ? fmt::float_to_f16_bits(x[i]) : fmt::float_to_bf16_bits(x[i]);
    }
    in = half.data();
  } else if (dtype == DType::kFP8E4M3) {
    for (size_t i = 0; i < x.size(); ++i) fp8[i] = fmt::float_to_e4m3(x[i]);
    in = fp8.data();
  }
  TensorView input, data, scales, global;
  if (batch == 0) {
    input = make_view(in, dtype, Device::kCpu, {m, k});
    data = make_view(q.data.data(), DType::kU8, Device::kCpu, {m, k / 2});
    scales = make_view(q.scales.data(), DType::kU8, Device::kCpu, {q.shape.rows, q.shape.cols});
  } else {
    input = make_view(in, dtype, Device::kCpu, {batch, m, k});
    data = make_view(q.data.data(), DType::kU8, Device::kCpu, {batch, m, k / 2});
    scales = make_view(q.scales.data(), DType::kU8, Device::kCpu, {batch, q.shape.rows, q.shape.cols});
  }
  if (is_nvfp4(options.recipe)) {
    if (options.global_scale_mode == GlobalScaleMode::kPerRow) {
      q.global.assign(static_cast<size_t>(b * m), -1.0f);
      global = batch == 0 ? make_view(q.global.data(), DType::kF32, Device::kCpu, {m})
                          : make_view(q.global.data(), DType::kF32, Device::kCpu, {batch, m});
    } else {
      q.global.assign(1, options.global_scale_mode == GlobalScaleMode::kGiven ? given : -1.0f);
      global = make_view(q.global.data(), DType::kF32, Device::kCpu, {1});
    }
  }
  q.status = quantize(input, data, scales, global, options);
  return q;
}

/// Dequantizes a Quantized result to f32 (or f16/bf16 bits widened back to f32).
inline std::vector<float> dequantize_host(const Quantized& q, const QuantizeOptions& options,
                                          DType out_dtype = DType::kF32, Status* status = nullptr) {
  const int64_t b = q.batch == 0 ? 1 : q.batch;
  std::vector<float> out32(static_cast<size_t>(b * q.rows * q.cols), -7.0f);
  std::vector<uint16_t> out16(out32.size(), 0xFFFF);
  void* out_ptr = out_dtype == DType::kF32 ? static_cast<void*>(out32.data()) : static_cast<void*>(out16.data());
  auto* data = const_cast<uint8_t*>(q.data.data());
  auto* scales = const_cast<uint8_t*>(q.scales.data());
  auto* global = const_cast<float*>(q.global.data());
  TensorView dv, sv, gv, ov;
  if (q.batch == 0) {
    dv = make_view(data, DType::kU8, Device::kCpu, {q.rows, q.cols / 2});
    sv = make_view(scales, DType::kU8, Device::kCpu, {q.shape.rows, q.shape.cols});
    ov = make_view(out_ptr, out_dtype, Device::kCpu, {q.rows, q.cols});
  } else {
    dv = make_view(data, DType::kU8, Device::kCpu, {q.batch, q.rows, q.cols / 2});
    sv = make_view(scales, DType::kU8, Device::kCpu, {q.batch, q.shape.rows, q.shape.cols});
    ov = make_view(out_ptr, out_dtype, Device::kCpu, {q.batch, q.rows, q.cols});
  }
  if (is_nvfp4(options.recipe)) {
    if (q.global.size() == 1) {
      gv = make_view(global, DType::kF32, Device::kCpu, {1});
    } else {
      gv = q.batch == 0 ? make_view(global, DType::kF32, Device::kCpu, {q.rows})
                        : make_view(global, DType::kF32, Device::kCpu, {q.batch, q.rows});
    }
  }
  DequantizeOptions d;
  d.recipe = options.recipe;
  d.sf_layout = options.sf_layout;
  const Status s = dequantize(dv, sv, gv, ov, d);
  if (status) *status = s;
  EXPECT_TRUE(s.ok()) << s.to_string();
  if (out_dtype != DType::kF32) {
    for (size_t i = 0; i < out32.size(); ++i) {
      out32[i] = out_dtype == DType::kF16 ? fmt::f16_bits_to_float(out16[i]) : fmt::bf16_bits_to_float(out16[i]);
    }
  }
  return out32;
}

/// "" if the packed data match, else the first mismatching (batch, row, block, nibble).
inline std::string first_data_mismatch(const Quantized& a, const Quantized& b, int block) {
  const int64_t bytes_per_row = a.cols / 2;
  for (size_t i = 0; i < a.data.size(); ++i) {
    if (a.data[i] == b.data[i]) continue;
    const int64_t row = static_cast<int64_t>(i) / bytes_per_row;
    const int64_t byte = static_cast<int64_t>(i) % bytes_per_row;
    const int nibble = (a.data[i] & 0xF) != (b.data[i] & 0xF) ? 0 : 1;
    return "row " + std::to_string(row) + " (batch " + std::to_string(row / a.rows) + "), block " +
           std::to_string(byte * 2 / block) + ", element " + std::to_string(byte * 2 + nibble) +
           ": " + std::to_string(a.data[i]) + " vs " + std::to_string(b.data[i]);
  }
  return "";
}

/// Seeded test data: gaussian with heavy-tailed outlier channels (×20), some all-zero blocks,
/// some values on exact E2M1 midpoints of a power-of-two grid, and a few negative zeros.
inline std::vector<float> make_test_data(std::mt19937& rng, int64_t rows, int64_t k, int block) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(static_cast<size_t>(rows * k));
  std::vector<bool> outlier_channel(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) outlier_channel[static_cast<size_t>(c)] = pick(rng) < 3;
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::ldexp(1.0f, pick(rng) % 9 - 4);  // rows of different magnitude
    for (int64_t c = 0; c < k; ++c) {
      float v = normal(rng) * row_scale;
      if (outlier_channel[static_cast<size_t>(c)]) v *= 20.0f;
      const int p = pick(rng);
      if (p < 3) v = row_scale * 0.25f * static_cast<float>(pick(rng) % 25 - 12);  // grid values
      if (p == 3) v = -0.0f;
      x[static_cast<size_t>(r * k + c)] = v;
    }
    if (pick(rng) < 10) {  // an all-zero block
      const int64_t blk = pick(rng) % (k / block);
      for (int i = 0; i < block; ++i) x[static_cast<size_t>(r * k + blk * block + i)] = 0.0f;
    }
  }
  return x;
}

}  // namespace nvfp4kv::test
