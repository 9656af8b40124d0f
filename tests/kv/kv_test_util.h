// nvfp4kv KV tests — shared by tests/kv (CPU) and tests/cuda/test_kv*.cpp (GPU): cache layouts
// with three stride variants, random inputs, and an oracle written straight from SPEC.md §3/§5
// with the format.h primitives (independent of src/common/kv_format.h and src/ref).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/format.h"
#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::kvtest {

/// How the four cache views sit in memory.
enum class Variant {
  kSeparate,  ///< K, V, K scales, V scales: four dense allocations
  kCombined,  ///< one [num_pages, 2, ...] tensor for data, one for scales (vLLM/FlashInfer style)
  kPadded,    ///< one buffer, every stride padded by an odd amount (breaks 16-byte alignment)
};
inline const char* variant_name(Variant v) {
  return v == Variant::kSeparate ? "separate" : v == Variant::kCombined ? "combined" : "padded";
}

/// One 4-D view inside a byte buffer.
struct ViewSpec {
  int buf = -1;           ///< index into CacheSpec::buf_bytes; -1 = empty view
  int64_t elem_off = 0;   ///< offset of element 0 in elements
  DType dtype = DType::kU8;
  int64_t shape[4] = {};
  int64_t strides[4] = {};
};

/// A cache's geometry and where its views live.
struct CacheSpec {
  KvFormat format;
  KvLayout layout;
  int64_t num_pages, page_size, num_kv_heads, head_dim;
  std::vector<std::size_t> buf_bytes;
  ViewSpec k, v, ks, vs;
};

inline bool has_decode_scale(KvFormat f) { return f == KvFormat::kFP8E4M3 || f == KvFormat::kNvfp4; }

inline DType data_dtype(KvFormat f) {
  return f == KvFormat::kBF16 ? DType::kBF16 : f == KvFormat::kF16 ? DType::kF16
         : f == KvFormat::kFP8E4M3 ? DType::kFP8E4M3 : DType::kU8;
}

/// Lays out the views of one cache in `variant`.
inline CacheSpec make_cache_spec(KvFormat f, KvLayout layout, int64_t num_pages, int64_t page_size,
                                 int64_t heads, int64_t head_dim, Variant variant) {
  CacheSpec s{f, layout, num_pages, page_size, heads, head_dim, {}, {}, {}, {}, {}};
  const bool fp4 = kv_format_is_fp4(f);
  const int64_t d1 = layout == KvLayout::kNHD ? page_size : heads;
  const int64_t d2 = layout == KvLayout::kNHD ? heads : page_size;
  auto place = [&](ViewSpec* kv, ViewSpec* vv, DType dt, int64_t x) {
    const int64_t es = static_cast<int64_t>(dtype_size(dt));
    for (ViewSpec* w : {kv, vv}) {
      w->dtype = dt;
      w->shape[0] = num_pages; w->shape[1] = d1; w->shape[2] = d2; w->shape[3] = x;
      w->strides[3] = 1;
    }
    if (variant == Variant::kSeparate) {
      for (ViewSpec* w : {kv, vv}) {
        w->strides[2] = x; w->strides[1] = d2 * x; w->strides[0] = d1 * d2 * x;
        w->buf = static_cast<int>(s.buf_bytes.size());
        s.buf_bytes.push_back(static_cast<std::size_t>(num_pages * d1 * d2 * x * es));
      }
    } else if (variant == Variant::kCombined) {
      const int64_t half = d1 * d2 * x;
      for (ViewSpec* w : {kv, vv}) {
        w->strides[2] = x; w->strides[1] = d2 * x; w->strides[0] = 2 * half;
        w->buf = static_cast<int>(s.buf_bytes.size());
      }
      vv->elem_off = half;
      s.buf_bytes.push_back(static_cast<std::size_t>(num_pages * 2 * half * es));
    } else {
      const int64_t s2 = x + 3, s1 = d2 * s2 + 5, s0 = d1 * s1 + 7;
      for (ViewSpec* w : {kv, vv}) {
        w->strides[2] = s2; w->strides[1] = s1; w->strides[0] = s0;
        w->buf = static_cast<int>(s.buf_bytes.size());
      }
      kv->elem_off = 9;
      vv->elem_off = 9 + num_pages * s0 + 11;
      s.buf_bytes.push_back(static_cast<std::size_t>((vv->elem_off + num_pages * s0 + 13) * es));
    }
  };
  place(&s.k, &s.v, data_dtype(f), fp4 ? head_dim / 2 : head_dim);
  if (fp4) place(&s.ks, &s.vs, DType::kU8, head_dim / 16);
  return s;
}

inline TensorView bind_view(const ViewSpec& w, const std::vector<uint8_t*>& bases, Device dev) {
  TensorView t;
  if (w.buf < 0) return t;
  t.data = bases[w.buf] + w.elem_off * static_cast<int64_t>(dtype_size(w.dtype));
  t.dtype = w.dtype;
  t.device = dev;
  t.ndim = 4;
  for (int i = 0; i < 4; ++i) {
    t.shape[i] = w.shape[i];
    t.strides[i] = w.strides[i];
  }
  return t;
}

/// The KvCacheView of `s` over buffers at `bases` (host or device pointers).
inline KvCacheView bind_cache(const CacheSpec& s, const std::vector<uint8_t*>& bases, Device dev,
                              const float* k_scale, const float* v_scale) {
  KvCacheView c;
  c.format = s.format;
  c.layout = s.layout;
  c.num_pages = s.num_pages;
  c.page_size = s.page_size;
  c.num_kv_heads = s.num_kv_heads;
  c.head_dim = s.head_dim;
  c.k_data = bind_view(s.k, bases, dev);
  c.v_data = bind_view(s.v, bases, dev);
  c.k_scales = bind_view(s.ks, bases, dev);
  c.v_scales = bind_view(s.vs, bases, dev);
  c.k_scale = k_scale;
  c.v_scale = v_scale;
  return c;
}

/// Byte offset (from the buffer start) of element x of row (page, offset, head) of a view.
inline int64_t byte_at(const CacheSpec& s, const ViewSpec& w, int64_t page, int64_t off, int64_t head, int64_t x) {
  const int64_t i1 = s.layout == KvLayout::kNHD ? off : head;
  const int64_t i2 = s.layout == KvLayout::kNHD ? head : off;
  const int64_t e = w.elem_off + page * w.strides[0] + i1 * w.strides[1] + i2 * w.strides[2] + x;
  return e * static_cast<int64_t>(dtype_size(w.dtype));
}

/// Random buffers (the canaries: every byte the append must not touch keeps its value).
inline std::vector<std::vector<uint8_t>> random_buffers(const CacheSpec& s, std::mt19937_64& rng) {
  std::vector<std::vector<uint8_t>> bufs;
  for (std::size_t n : s.buf_bytes) {
    std::vector<uint8_t> b(n);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    bufs.push_back(std::move(b));
  }
  return bufs;
}

/// Random 16-bit inputs [num_tokens, row_stride] with outlier channels, all-zero chunks, −0.0.
inline std::vector<uint16_t> random_inputs(int64_t elems, int64_t head_dim, bool f16, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<std::size_t>(elems));
  for (int64_t i = 0; i < elems; ++i) {
    float x = nd(rng);
    const int64_t ch = i % head_dim;
    if (ch % 37 == 5) x *= 24.0f;             // outlier channels
    if ((i / 16) % 29 == 3) x = 0.0f;          // all-zero chunks
    if ((i / 16) % 31 == 7 && ch % 16 == 2) x = -0.0f;
    if ((i / 16) % 43 == 11 && ch % 16 == 9) x = std::numeric_limits<float>::quiet_NaN();  // NaN ignored by amax
    if ((i / 16) % 47 == 13 && ch % 16 == 4) x = -std::numeric_limits<float>::quiet_NaN();
    v[i] = f16 ? fmt::float_to_f16_bits(x) : fmt::float_to_bf16_bits(x);
  }
  return v;
}

inline float in_float(uint16_t b, bool f16) {
  return f16 ? fmt::f16_bits_to_float(b) : fmt::bf16_bits_to_float(b);
}

/// Expected cache bytes of one 16-element chunk, literally per SPEC.md (data bytes and scale).
/// mode: 0 plain nvfp4, 1 4over6 MSE, 2 4over6 MAE.
inline void oracle_chunk(KvFormat f, const uint16_t* in, bool in_f16, float s_dec, int mode,
                         uint8_t* data, uint8_t* sf_out) {
  float x[16];
  for (int i = 0; i < 16; ++i) x[i] = in_float(in[i], in_f16);
  if (f == KvFormat::kBF16 || f == KvFormat::kF16) {
    const bool out_f16 = f == KvFormat::kF16;
    for (int i = 0; i < 16; ++i) {
      const uint16_t b = in_f16 == out_f16 ? in[i]
                         : out_f16 ? fmt::float_to_f16_bits(x[i]) : fmt::float_to_bf16_bits(x[i]);
      std::memcpy(data + 2 * i, &b, 2);
    }
    return;
  }
  if (f == KvFormat::kFP8E4M3) {
    // NaN → 0x7F without sign (the KV rule, kv_format.h canonical_nan).
    for (int i = 0; i < 16; ++i) data[i] = fmt::is_nan(x[i] / s_dec) ? 0x7F : fmt::float_to_e4m3(x[i] / s_dec);
    return;
  }
  float v = 0.0f;
  for (int i = 0; i < 16; ++i) v = fmt::max_f(v, std::fabs(x[i]));
  uint32_t codes[16];
  if (f == KvFormat::kFp4Block16) {
    const float v6 = v * fmt::kOneSixth;
    const uint8_t code = fmt::ue8m0_up(v6);
    const float enc = v6 == 0.0f ? 0.0f : code == 0 ? 1.0f : std::ldexp(1.0f, 127 - code);
    for (int i = 0; i < 16; ++i) codes[i] = fmt::float_to_e2m1(x[i] * enc);
    *sf_out = code;
  } else {
    const float s_enc = fmt::min_f(1.0f / s_dec, fmt::kFltMax);
    auto quant = [&](uint8_t sf, uint32_t* c) {
      const float sfv = fmt::e4m3_to_float(sf);
      const float enc = v == 0.0f ? 0.0f : fmt::min_f(1.0f / (sfv * s_dec), fmt::kFltMax);
      float err = 0.0f;
      for (int i = 0; i < 16; ++i) {
        c[i] = fmt::float_to_e2m1(x[i] * enc);
        const float d = (fmt::e2m1_to_float(c[i]) * sfv) * s_dec - x[i];
        err += mode == 2 ? std::fabs(d) : d * d;
      }
      return err;
    };
    if (mode == 0) {
      const uint8_t sf = fmt::float_to_e4m3(v * (s_enc * fmt::kOneSixth));
      quant(sf, codes);
      *sf_out = sf;
    } else {
      const float base = (v / 6.0f) * s_enc;
      const uint8_t sf6 = fmt::float_to_e4m3(fmt::min_f(base, 448.0f));
      const uint8_t sf4 = fmt::float_to_e4m3(fmt::min_f(base * 1.5f, 448.0f));
      uint32_t c4[16];
      const float e6 = quant(sf6, codes);
      const float e4 = quant(sf4, c4);
      *sf_out = sf6;
      if (e4 < e6) {
        *sf_out = sf4;
        std::copy(c4, c4 + 16, codes);
      }
    }
  }
  for (int j = 0; j < 8; ++j) data[j] = static_cast<uint8_t>(codes[2 * j] | (codes[2 * j + 1] << 4));
}

/// Decoded value of element x of a cache row, from raw cache bytes, as fp32 (and raw bits for
/// plain formats). Quantized formats give the one canonical NaN 0x7FFFFFFF.
inline float canon(float v) { return fmt::is_nan(v) ? fmt::bits_float(0x7FFFFFFFu) : v; }
inline float oracle_value(const CacheSpec& s, const std::vector<std::vector<uint8_t>>& bufs, bool is_v,
                          int64_t page, int64_t off, int64_t head, int64_t x, float s_dec, uint16_t* bits) {
  const ViewSpec& w = is_v ? s.v : s.k;
  const uint8_t* d = bufs[w.buf].data();
  switch (s.format) {
    case KvFormat::kBF16:
    case KvFormat::kF16: {
      uint16_t b;
      std::memcpy(&b, d + byte_at(s, w, page, off, head, x), 2);
      *bits = b;
      return in_float(b, s.format == KvFormat::kF16);
    }
    case KvFormat::kFP8E4M3:
      return canon(fmt::e4m3_to_float(d[byte_at(s, w, page, off, head, x)]) * s_dec);
    default: {
      const ViewSpec& sw = is_v ? s.vs : s.ks;
      const uint8_t byte = d[byte_at(s, w, page, off, head, x / 2)];
      const uint32_t code = (x & 1) ? byte >> 4 : byte & 0xF;
      const uint8_t sf = bufs[sw.buf][byte_at(s, sw, page, off, head, x / 16)];
      if (s.format == KvFormat::kNvfp4) return canon((fmt::e2m1_to_float(code) * fmt::e4m3_to_float(sf)) * s_dec);
      return canon(fmt::e2m1_to_float(code) * fmt::ue8m0_to_float(sf));
    }
  }
}

/// Sequences of a test batch: their page lists and lengths, plus the step's slot mapping.
struct Batch {
  std::vector<std::vector<int32_t>> pages;  ///< pages of each sequence
  std::vector<int32_t> lens;                ///< tokens of each sequence
  std::vector<int64_t> slots;               ///< slot of each appended token (−1 = skipped)
  std::vector<int64_t> token_seq, token_pos;  ///< sequence and position of each appended token
  int64_t max_pages = 0;
};

/// 3 sequences with random lengths on shuffled pages (a few pages left unused); every position
/// is appended once in shuffled token order, ~8% of the tokens get slot −1.
inline Batch make_batch(int64_t num_pages, int64_t page_size, int64_t max_tokens_per_seq, std::mt19937_64& rng) {
  Batch b;
  std::vector<int32_t> perm(static_cast<std::size_t>(num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::size_t next = 0;
  for (int q = 0; q < 3; ++q) {
    const int64_t len = q == 1 ? 1 : 1 + static_cast<int64_t>(rng() % max_tokens_per_seq);
    const int64_t np = fmt::ceil_div(len, page_size);
    if (next + np > perm.size()) break;
    b.pages.emplace_back(perm.begin() + next, perm.begin() + next + np);
    next += np;
    b.lens.push_back(static_cast<int32_t>(len));
    b.max_pages = std::max(b.max_pages, np);
    for (int64_t p = 0; p < len; ++p) {
      b.token_seq.push_back(q);
      b.token_pos.push_back(p);
    }
  }
  std::vector<std::size_t> order(b.token_seq.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int64_t> ts, tp;
  for (auto i : order) {
    ts.push_back(b.token_seq[i]);
    tp.push_back(b.token_pos[i]);
  }
  b.token_seq = ts;
  b.token_pos = tp;
  for (std::size_t t = 0; t < ts.size(); ++t) {
    const int64_t page = b.pages[ts[t]][tp[t] / page_size];
    b.slots.push_back(rng() % 12 == 0 ? -1 : page * page_size + tp[t] % page_size);
  }
  return b;
}

/// block_tables [batch, max_pages] (unused entries −1... set to a valid page 0 so no reader
/// should care) and the per-sequence lengths.
inline std::vector<int32_t> block_table(const Batch& b) {
  std::vector<int32_t> t(b.pages.size() * static_cast<std::size_t>(b.max_pages), 0);
  for (std::size_t q = 0; q < b.pages.size(); ++q)
    for (std::size_t j = 0; j < b.pages[q].size(); ++j) t[q * b.max_pages + j] = b.pages[q][j];
  return t;
}

/// Input tensors of one append: keys and values in a buffer of `row_elems` per token.
struct Inputs {
  std::vector<uint16_t> buf;
  int64_t token_stride, head_stride, k_off, v_off;
};

/// separate: [n, H, D] keys then values; combined: a fused qkv row [n, 4H, D] (K at head 2H,
/// V at 3H); padded: odd strides.
inline Inputs make_inputs(int64_t n, int64_t heads, int64_t hd, Variant variant, bool f16, std::mt19937_64& rng) {
  Inputs in;
  if (variant == Variant::kSeparate) {
    in.head_stride = hd; in.token_stride = heads * hd; in.k_off = 0; in.v_off = n * heads * hd;
    in.buf = random_inputs(2 * n * heads * hd, hd, f16, rng);
  } else if (variant == Variant::kCombined) {
    in.head_stride = hd; in.token_stride = 4 * heads * hd; in.k_off = 2 * heads * hd; in.v_off = 3 * heads * hd;
    in.buf = random_inputs(std::max<int64_t>(n, 1) * 4 * heads * hd, hd, f16, rng);
  } else {
    in.head_stride = hd + 3; in.token_stride = heads * (hd + 3) + 5; in.k_off = 1;
    in.v_off = 1 + n * in.token_stride + 2;
    in.buf = random_inputs(in.v_off + n * in.token_stride + 7, hd, f16, rng);
  }
  return in;
}

inline TensorView input_view(uint16_t* base, const Inputs& in, bool v, int64_t n, int64_t heads, int64_t hd,
                             bool f16, Device dev) {
  return make_strided_view(base + (v ? in.v_off : in.k_off), f16 ? DType::kF16 : DType::kBF16, dev,
                           {n, heads, hd}, {in.token_stride, in.head_stride, 1});
}

/// Applies the oracle append to host copies of the cache buffers.
inline void oracle_append(const CacheSpec& s, std::vector<std::vector<uint8_t>>& bufs, const Inputs& in,
                          int64_t n, const std::vector<int64_t>& slots, bool in_f16, float k_dec,
                          float v_dec, int mode) {
  const bool fp4 = kv_format_is_fp4(s.format);
  const int64_t chunk_bytes = fp4 ? 8 : s.format == KvFormat::kFP8E4M3 ? 16 : 32;
  for (int64_t t = 0; t < n; ++t) {
    if (slots[t] < 0) continue;
    const int64_t page = slots[t] / s.page_size, off = slots[t] % s.page_size;
    for (int kv = 0; kv < 2; ++kv) {
      const ViewSpec& w = kv ? s.v : s.k;
      const ViewSpec& sw = kv ? s.vs : s.ks;
      for (int64_t h = 0; h < s.num_kv_heads; ++h) {
        for (int64_t c = 0; c < s.head_dim / 16; ++c) {
          const uint16_t* src = in.buf.data() + (kv ? in.v_off : in.k_off) + t * in.token_stride +
                                h * in.head_stride + c * 16;
          uint8_t data[32], sf = 0;
          oracle_chunk(s.format, src, in_f16, kv ? v_dec : k_dec, mode, data, &sf);
          const int64_t xel = fp4 ? c * 8 : c * 16;
          std::memcpy(bufs[w.buf].data() + byte_at(s, w, page, off, h, xel), data, chunk_bytes);
          if (fp4) bufs[sw.buf][byte_at(s, sw, page, off, h, c)] = sf;
        }
      }
    }
  }
}

/// First differing byte of two buffer sets, or "" if equal.
inline std::string first_diff(const std::vector<std::vector<uint8_t>>& a, const std::vector<std::vector<uint8_t>>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = 0; j < a[i].size(); ++j) {
      if (a[i][j] != b[i][j]) {
        return "buffer " + std::to_string(i) + " byte " + std::to_string(j) + ": got 0x" +
               std::to_string(a[i][j]) + " expected 0x" + std::to_string(b[i][j]);
      }
    }
  }
  return "";
}

/// Expected dequantize_kv output (raw bytes of [total, H, D] in `out_dtype`, dense).
inline std::vector<uint8_t> oracle_dequant(const CacheSpec& s, const std::vector<std::vector<uint8_t>>& bufs,
                                           const Batch& b, bool is_v, float s_dec, DType out_dtype) {
  const int64_t es = static_cast<int64_t>(dtype_size(out_dtype));
  int64_t total = 0;
  for (auto l : b.lens) total += l;
  std::vector<uint8_t> out(static_cast<std::size_t>(total * s.num_kv_heads * s.head_dim * es));
  const bool plain_same = (s.format == KvFormat::kBF16 && out_dtype == DType::kBF16) ||
                          (s.format == KvFormat::kF16 && out_dtype == DType::kF16);
  int64_t row = 0;
  for (std::size_t q = 0; q < b.lens.size(); ++q) {
    for (int64_t p = 0; p < b.lens[q]; ++p, ++row) {
      const int64_t page = b.pages[q][p / s.page_size], off = p % s.page_size;
      for (int64_t h = 0; h < s.num_kv_heads; ++h) {
        for (int64_t x = 0; x < s.head_dim; ++x) {
          uint16_t bits = 0;
          const float v = oracle_value(s, bufs, is_v, page, off, h, x, s_dec, &bits);
          uint8_t* dst = out.data() + ((row * s.num_kv_heads + h) * s.head_dim + x) * es;
          if (out_dtype == DType::kF32) {
            std::memcpy(dst, &v, 4);
          } else {
            const uint16_t o = plain_same ? bits
                               : out_dtype == DType::kF16 ? fmt::float_to_f16_bits(v) : fmt::float_to_bf16_bits(v);
            std::memcpy(dst, &o, 2);
          }
        }
      }
    }
  }
  return out;
}

/// One append configuration of the test matrix.
struct Config {
  KvFormat format;
  int mode;  ///< 0 plain, 1 4over6 MSE, 2 4over6 MAE (nvfp4 only)
};

inline AppendOptions options_of(int mode) {
  AppendOptions o;
  o.four_over_six = mode != 0;
  o.metric = mode == 2 ? ErrorMetric::kMae : ErrorMetric::kMse;
  return o;
}

}  // namespace nvfp4kv::kvtest
