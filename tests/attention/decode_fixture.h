// nvfp4kv tests — decode-attention fixture shared by tests/attention (CPU) and
// tests/cuda/test_decode.cpp (GPU): a paged host cache filled with append_kv from random K/V
// (outlier channels, all-zero tokens), optionally with padded strides or K and V in one
// combined [num_pages, 2, ...] buffer; random requests over shuffled pages; random queries.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/format.h"
#include "nvfp4kv/attention.h"
#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::test {

/// Shape and storage variant of a test cache.
struct CacheSpec {
  KvFormat format = KvFormat::kNvfp4;
  KvLayout layout = KvLayout::kNHD;
  int64_t page_size = 16;
  int64_t num_kv_heads = 2;
  int64_t head_dim = 128;
  int64_t num_pages = 8;
  bool padded = false;    ///< extra bytes after every head row, token and page
  bool combined = false;  ///< K and V of a page next to each other in one buffer
  DType value_dtype = DType::kBF16;  ///< dtype of q/out (and of a 16-bit cache)
};

inline std::string describe(const CacheSpec& s) {
  return std::string(kv_format_name(s.format)) + " " + kv_layout_name(s.layout) + " ps" +
         std::to_string(s.page_size) + " H" + std::to_string(s.num_kv_heads) + " D" +
         std::to_string(s.head_dim) + (s.padded ? " padded" : "") + (s.combined ? " combined" : "") +
         " q=" + dtype_name(s.value_dtype);
}

inline uint16_t to_bits(DType t, float x) {
  return t == DType::kBF16 ? fmt::float_to_bf16_bits(x) : fmt::float_to_f16_bits(x);
}

/// A paged cache in host memory; the same bytes can be copied to the device and viewed with
/// the same strides (view(...) takes the base pointers).
struct HostKv {
  CacheSpec spec;
  DType data_dtype = DType::kU8;
  int64_t x = 0, sx = 0;  // data and scale elements per row
  int64_t data_strides[4] = {}, scale_strides[4] = {};  // elements, in view (layout) order
  int64_t k_data_off = 0, v_data_off = 0, k_scale_off = 0, v_scale_off = 0;  // elements
  std::vector<uint8_t> data, scales;
  float k_scale = 1.0f, v_scale = 1.0f;

  /// View of the cache with data/scales at the given bases (host or device copies of `data`).
  KvCacheView view(void* data_base, void* scale_base, const float* ks, const float* vs, Device dev) const {
    KvCacheView c;
    c.format = spec.format;
    c.layout = spec.layout;
    c.num_pages = spec.num_pages;
    c.page_size = spec.page_size;
    c.num_kv_heads = spec.num_kv_heads;
    c.head_dim = spec.head_dim;
    const int64_t d1 = spec.layout == KvLayout::kNHD ? spec.page_size : spec.num_kv_heads;
    const int64_t d2 = spec.layout == KvLayout::kNHD ? spec.num_kv_heads : spec.page_size;
    const int64_t es = static_cast<int64_t>(dtype_size(data_dtype));
    auto mk = [&](void* base, int64_t off_elems, int64_t es_, DType dt, int64_t last, const int64_t* st) {
      return make_strided_view(static_cast<uint8_t*>(base) + off_elems * es_, dt, dev,
                               {spec.num_pages, d1, d2, last}, {st[0], st[1], st[2], st[3]});
    };
    c.k_data = mk(data_base, k_data_off, es, data_dtype, x, data_strides);
    c.v_data = mk(data_base, v_data_off, es, data_dtype, x, data_strides);
    if (kv_format_is_fp4(spec.format)) {
      c.k_scales = mk(scale_base, k_scale_off, 1, DType::kU8, sx, scale_strides);
      c.v_scales = mk(scale_base, v_scale_off, 1, DType::kU8, sx, scale_strides);
    }
    c.k_scale = ks;
    c.v_scale = vs;
    return c;
  }
  KvCacheView host_view() { return view(data.data(), scales.data(), &k_scale, &v_scale, Device::kCpu); }
};

/// Layout strides (elements) of rows of `row` elements, optional padding of `pad` elements per
/// row, per token group and per page; K/V combined doubles the page stride.
inline void make_strides(const CacheSpec& s, int64_t row, int64_t pad, int64_t* st, int64_t* page_elems) {
  const int64_t inner_n = s.layout == KvLayout::kNHD ? s.num_kv_heads : s.page_size;
  const int64_t outer_n = s.layout == KvLayout::kNHD ? s.page_size : s.num_kv_heads;
  st[3] = 1;
  st[2] = row + pad;
  st[1] = st[2] * inner_n + pad;
  *page_elems = st[1] * outer_n + 2 * pad;
  st[0] = s.combined ? 2 * *page_elems : *page_elems;
}

/// Random K/V values [tokens, heads, head_dim] with a few outlier channels (×24 on K) and some
/// all-zero tokens; quantized into every slot of every page with append_kv (CPU reference).
inline HostKv make_host_kv(const CacheSpec& spec, std::mt19937& rng, double zero_token_fraction = 0.05) {
  HostKv kv;
  kv.spec = spec;
  const bool fp4 = kv_format_is_fp4(spec.format);
  kv.data_dtype = spec.format == KvFormat::kBF16   ? DType::kBF16
                  : spec.format == KvFormat::kF16  ? DType::kF16
                  : spec.format == KvFormat::kFP8E4M3 ? DType::kFP8E4M3
                                                      : DType::kU8;
  kv.x = fp4 ? spec.head_dim / 2 : spec.head_dim;
  kv.sx = spec.head_dim / 16;
  const int64_t es = static_cast<int64_t>(dtype_size(kv.data_dtype));
  int64_t page_elems = 0, spage = 0;
  make_strides(spec, kv.x, spec.padded ? 32 / es : 0, kv.data_strides, &page_elems);
  make_strides(spec, kv.sx, spec.padded ? 4 : 0, kv.scale_strides, &spage);
  kv.k_data_off = 0;
  kv.v_data_off = spec.combined ? page_elems : spec.num_pages * page_elems;
  kv.k_scale_off = 0;
  kv.v_scale_off = spec.combined ? spage : spec.num_pages * spage;
  std::uniform_int_distribution<int> byte(0, 255);
  kv.data.resize(static_cast<size_t>(2 * spec.num_pages * page_elems * es));
  for (auto& b : kv.data) b = static_cast<uint8_t>(byte(rng));  // padding keeps garbage
  if (fp4) {
    kv.scales.resize(static_cast<size_t>(2 * spec.num_pages * spage));
    for (auto& b : kv.scales) b = static_cast<uint8_t>(byte(rng) & 0x3F);  // no NaN bytes
  }

  // Values to append.
  const int64_t tokens = spec.num_pages * spec.page_size;
  const int64_t H = spec.num_kv_heads, D = spec.head_dim;
  const DType in_dtype = spec.format == KvFormat::kBF16 ? DType::kBF16
                         : spec.format == KvFormat::kF16 ? DType::kF16
                                                         : spec.value_dtype;
  std::vector<uint16_t> keys(tokens * H * D), values(tokens * H * D);
  std::vector<float> kf(tokens * H * D), vf(tokens * H * D);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<double> ud(0, 1);
  std::vector<int> outlier(D, 0);
  for (int i = 0; i < 3; ++i) outlier[std::uniform_int_distribution<int>(0, static_cast<int>(D) - 1)(rng)] = 1;
  for (int64_t t = 0; t < tokens; ++t) {
    const bool zero = ud(rng) < zero_token_fraction;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = (t * H + h) * D + d;
        kf[i] = zero ? 0.f : nd(rng) * (outlier[d] ? 24.f : 1.f) + 0.3f;
        vf[i] = zero ? 0.f : nd(rng);
        keys[i] = to_bits(in_dtype, kf[i]);
        values[i] = to_bits(in_dtype, vf[i]);
      }
  }
  TensorView kview = make_view(keys.data(), in_dtype, Device::kCpu, {tokens, H, D});
  TensorView vview = make_view(values.data(), in_dtype, Device::kCpu, {tokens, H, D});
  EXPECT_TRUE(calibrate_kv_scale(kview, spec.format, false, &kv.k_scale).ok());
  EXPECT_TRUE(calibrate_kv_scale(vview, spec.format, false, &kv.v_scale).ok());
  std::vector<int64_t> slots(tokens);
  std::iota(slots.begin(), slots.end(), 0);
  TensorView sview = make_view(slots.data(), DType::kI64, Device::kCpu, {tokens});
  const Status st = append_kv(kv.host_view(), kview, vview, sview);
  EXPECT_TRUE(st.ok()) << st.to_string() << " for " << describe(spec);
  return kv;
}

/// A batch of requests: seq_lens and block tables over shuffled pages (pages may be shared by
/// requests when the cache is small); unused table entries hold −7 (never read).
struct Requests {
  int64_t batch = 0, max_pages = 0;
  std::vector<int32_t> seq_lens, block_tables;
};

inline Requests make_requests(const std::vector<int>& lens, const CacheSpec& spec, std::mt19937& rng,
                              int64_t extra_pages = 1) {
  Requests r;
  r.batch = static_cast<int64_t>(lens.size());
  int64_t need = 1;
  for (int l : lens) need = std::max<int64_t>(need, (l + spec.page_size - 1) / spec.page_size);
  r.max_pages = need + extra_pages;
  r.seq_lens.assign(lens.begin(), lens.end());
  r.block_tables.assign(static_cast<size_t>(r.batch * r.max_pages), -7);
  std::vector<int32_t> pool(spec.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  size_t next = 0;
  for (int64_t b = 0; b < r.batch; ++b) {
    const int64_t pages = (lens[b] + spec.page_size - 1) / spec.page_size;
    for (int64_t i = 0; i < pages; ++i) {
      if (next == pool.size()) {
        std::shuffle(pool.begin(), pool.end(), rng);
        next = 0;
      }
      r.block_tables[b * r.max_pages + i] = pool[next++];
    }
  }
  return r;
}

/// Random queries [batch, qo_len, heads, head_dim] (16-bit bits).
inline std::vector<uint16_t> make_queries(int64_t n, DType dtype, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> q(n);
  for (auto& v : q) v = to_bits(dtype, nd(rng) * scale);
  return q;
}

inline double bits_to_double(DType t, uint16_t b) {
  return t == DType::kBF16 ? fmt::bf16_bits_to_float(b) : fmt::f16_bits_to_float(b);
}

/// ‖a − ref‖ / ‖ref‖ (ref ≠ 0) or ‖a‖ (ref = 0).
inline double rel_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace nvfp4kv::test
