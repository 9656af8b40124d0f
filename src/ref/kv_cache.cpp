// nvfp4kv — CPU reference of append_kv / dequantize_kv / the calibration amax (SPEC.md §5).
// Loops over (token, head, 16-element chunk); the per-chunk rules come from
// src/common/kv_format.h, the same code the kernels run, so the two agree bit for bit.
#include "ref/kv_cache.h"

#include <cstring>

#include "common/kv_format.h"

namespace nvfp4kv::ref {
namespace {

/// Strides (elements) of a cache view's page, in-page token and head dimensions.
struct PageStrides {
  int64_t page, token, head;
};

PageStrides page_strides(const TensorView& v, KvLayout layout) {
  if (layout == KvLayout::kNHD) return {v.strides[0], v.strides[1], v.strides[2]};
  return {v.strides[0], v.strides[2], v.strides[1]};
}

/// Element offset of row (page, token-in-page, head) of a cache view.
int64_t row_offset(const PageStrides& s, int64_t page, int64_t offset, int64_t head) {
  return page * s.page + offset * s.token + head * s.head;
}

/// Reads 16 input values (bf16/f16) as raw bits and as fp32.
void load_chunk(const uint16_t* p, bool is_f16, uint16_t* bits, float* x) {
  for (int i = 0; i < kvfmt::kChunk; ++i) {
    bits[i] = p[i];
    x[i] = kvfmt::half_to_float(p[i], is_f16);
  }
}

/// Writes one chunk of one row of K or V into the cache.
void store_chunk(const KvCacheView& c, const TensorView& data, const TensorView& scales,
                 int64_t data_off, int64_t scale_off, int chunk, const uint16_t* bits,
                 const float* x, bool in_f16, float s_dec, int fp4_mode) {
  switch (c.format) {
    case KvFormat::kBF16:
    case KvFormat::kF16: {
      uint16_t* dst = static_cast<uint16_t*>(data.data) + data_off + chunk * kvfmt::kChunk;
      const bool cache_f16 = c.format == KvFormat::kF16;
      for (int i = 0; i < kvfmt::kChunk; ++i) dst[i] = kvfmt::plain_element(bits[i], in_f16, cache_f16);
      break;
    }
    case KvFormat::kFP8E4M3: {
      uint8_t* dst = static_cast<uint8_t*>(data.data) + data_off + chunk * kvfmt::kChunk;
      for (int i = 0; i < kvfmt::kChunk; ++i) dst[i] = kvfmt::fp8_element(x[i], s_dec);
      break;
    }
    case KvFormat::kNvfp4:
    case KvFormat::kFp4Block16: {
      uint32_t words[2];
      uint8_t sf;
      if (c.format == KvFormat::kNvfp4) {
        sf = kvfmt::nvfp4_chunk(x, kvfmt::nvfp4_scales(s_dec), fp4_mode, words);
      } else {
        sf = kvfmt::fp4_block16_chunk(x, words);
      }
      uint8_t* dst = static_cast<uint8_t*>(data.data) + data_off + chunk * (kvfmt::kChunk / 2);
      for (int j = 0; j < 8; ++j) dst[j] = static_cast<uint8_t>(words[j >> 2] >> (8 * (j & 3)));
      static_cast<uint8_t*>(scales.data)[scale_off + chunk] = sf;
      break;
    }
  }
}

/// Reads one chunk of one row of K or V back as fp32.
void read_chunk(const KvCacheView& c, const TensorView& data, const TensorView& scales,
                int64_t data_off, int64_t scale_off, int chunk, float s_dec, float* x,
                uint16_t* plain_bits) {
  switch (c.format) {
    case KvFormat::kBF16:
    case KvFormat::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(data.data) + data_off + chunk * kvfmt::kChunk;
      for (int i = 0; i < kvfmt::kChunk; ++i) {
        plain_bits[i] = src[i];
        x[i] = kvfmt::half_to_float(src[i], c.format == KvFormat::kF16);
      }
      break;
    }
    case KvFormat::kFP8E4M3: {
      const uint8_t* src = static_cast<const uint8_t*>(data.data) + data_off + chunk * kvfmt::kChunk;
      for (int i = 0; i < kvfmt::kChunk; ++i) x[i] = kvfmt::fp8_value(src[i], s_dec);
      break;
    }
    case KvFormat::kNvfp4:
    case KvFormat::kFp4Block16: {
      const uint8_t* src = static_cast<const uint8_t*>(data.data) + data_off + chunk * (kvfmt::kChunk / 2);
      const uint8_t sf = static_cast<const uint8_t*>(scales.data)[scale_off + chunk];
      const bool nv = c.format == KvFormat::kNvfp4;
      const float sfv = nv ? fmt::e4m3_to_float(sf) : fmt::ue8m0_to_float(sf);
      for (int i = 0; i < kvfmt::kChunk; ++i) {
        const uint32_t code = (src[i / 2] >> (4 * (i & 1))) & 0xFu;
        x[i] = nv ? kvfmt::nvfp4_value(code, sfv, s_dec) : kvfmt::fp4_block16_value(code, sfv);
      }
      break;
    }
  }
}

}  // namespace

void append_kv(const KvCacheView& c, const TensorView& keys, const TensorView& values,
               const TensorView& slot_mapping, const AppendOptions& options) {
  const int64_t num_tokens = keys.shape[0];
  const bool in_f16 = keys.dtype == DType::kF16;
  const bool fp4 = kv_format_is_fp4(c.format);
  const bool has_scale = c.format == KvFormat::kFP8E4M3 || c.format == KvFormat::kNvfp4;
  const float k_dec = has_scale ? *c.k_scale : 1.0f;
  const float v_dec = has_scale ? *c.v_scale : 1.0f;
  int mode = kvfmt::kModePlain;
  if (options.four_over_six) {
    mode = options.metric == ErrorMetric::kMae ? kvfmt::kModeFourOverSixMae : kvfmt::kModeFourOverSixMse;
  }
  const PageStrides kd = page_strides(c.k_data, c.layout), vd = page_strides(c.v_data, c.layout);
  PageStrides ks{}, vs{};
  if (fp4) {
    ks = page_strides(c.k_scales, c.layout);
    vs = page_strides(c.v_scales, c.layout);
  }
  const int chunks = static_cast<int>(c.head_dim / kvfmt::kChunk);
  const int64_t* slots = static_cast<const int64_t*>(slot_mapping.data);
  uint16_t bits[kvfmt::kChunk];
  float x[kvfmt::kChunk];
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slots[t * slot_mapping.strides[0]];
    if (slot < 0) continue;
    const int64_t page = slot / c.page_size, off = slot % c.page_size;
    for (int64_t h = 0; h < c.num_kv_heads; ++h) {
      const uint16_t* krow = static_cast<const uint16_t*>(keys.data) + t * keys.strides[0] + h * keys.strides[1];
      const uint16_t* vrow = static_cast<const uint16_t*>(values.data) + t * values.strides[0] + h * values.strides[1];
      const int64_t kdo = row_offset(kd, page, off, h), vdo = row_offset(vd, page, off, h);
      const int64_t kso = fp4 ? row_offset(ks, page, off, h) : 0;
      const int64_t vso = fp4 ? row_offset(vs, page, off, h) : 0;
      for (int ch = 0; ch < chunks; ++ch) {
        load_chunk(krow + ch * kvfmt::kChunk, in_f16, bits, x);
        store_chunk(c, c.k_data, c.k_scales, kdo, kso, ch, bits, x, in_f16, k_dec, mode);
        load_chunk(vrow + ch * kvfmt::kChunk, in_f16, bits, x);
        store_chunk(c, c.v_data, c.v_scales, vdo, vso, ch, bits, x, in_f16, v_dec, mode);
      }
    }
  }
}

void dequantize_kv(const KvCacheView& c, const TensorView& block_tables, const TensorView& seq_lens,
                   const TensorView& out_k, const TensorView& out_v) {
  const bool fp4 = kv_format_is_fp4(c.format);
  const bool has_scale = c.format == KvFormat::kFP8E4M3 || c.format == KvFormat::kNvfp4;
  const float k_dec = has_scale ? *c.k_scale : 1.0f;
  const float v_dec = has_scale ? *c.v_scale : 1.0f;
  const PageStrides kd = page_strides(c.k_data, c.layout), vd = page_strides(c.v_data, c.layout);
  PageStrides ks{}, vs{};
  if (fp4) {
    ks = page_strides(c.k_scales, c.layout);
    vs = page_strides(c.v_scales, c.layout);
  }
  const bool plain = c.format == KvFormat::kBF16 || c.format == KvFormat::kF16;
  const bool plain_same = (c.format == KvFormat::kBF16 && out_k.dtype == DType::kBF16) ||
                          (c.format == KvFormat::kF16 && out_k.dtype == DType::kF16);
  const int chunks = static_cast<int>(c.head_dim / kvfmt::kChunk);
  const int32_t* tables = static_cast<const int32_t*>(block_tables.data);
  const int32_t* lens = static_cast<const int32_t*>(seq_lens.data);
  float x[kvfmt::kChunk];
  uint16_t bits[kvfmt::kChunk];
  int64_t row = 0;
  auto write = [&](const TensorView& out, int64_t r, int64_t h, int ch) {
    const int64_t o = r * out.strides[0] + h * out.strides[1] + ch * kvfmt::kChunk;
    for (int i = 0; i < kvfmt::kChunk; ++i) {
      if (out.dtype == DType::kF32) {
        static_cast<float*>(out.data)[o + i] = x[i];
      } else if (plain && plain_same) {
        static_cast<uint16_t*>(out.data)[o + i] = bits[i];
      } else {
        static_cast<uint16_t*>(out.data)[o + i] = kvfmt::float_to_half(x[i], out.dtype == DType::kF16);
      }
    }
  };
  for (int64_t b = 0; b < seq_lens.shape[0]; ++b) {
    const int64_t len = lens[b * seq_lens.strides[0]];
    for (int64_t p = 0; p < len; ++p, ++row) {
      const int64_t page = tables[b * block_tables.strides[0] + (p / c.page_size) * block_tables.strides[1]];
      const int64_t off = p % c.page_size;
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        for (int ch = 0; ch < chunks; ++ch) {
          read_chunk(c, c.k_data, c.k_scales, row_offset(kd, page, off, h),
                     fp4 ? row_offset(ks, page, off, h) : 0, ch, k_dec, x, bits);
          write(out_k, row, h, ch);
          read_chunk(c, c.v_data, c.v_scales, row_offset(vd, page, off, h),
                     fp4 ? row_offset(vs, page, off, h) : 0, ch, v_dec, x, bits);
          write(out_v, row, h, ch);
        }
      }
    }
  }
}

float kv_amax(const TensorView& x) {
  float amax = 0.0f;
  if (x.numel() == 0) return amax;
  int64_t idx[kMaxDims] = {};
  const int64_t n = x.numel();
  for (int64_t e = 0; e < n; ++e) {
    int64_t off = 0;
    for (int d = 0; d < x.ndim; ++d) off += idx[d] * x.strides[d];
    float v;
    if (x.dtype == DType::kF32) {
      v = static_cast<const float*>(x.data)[off];
    } else {
      v = kvfmt::half_to_float(static_cast<const uint16_t*>(x.data)[off], x.dtype == DType::kF16);
    }
    amax = fmt::max_f(amax, fmt::abs_f(v));
    for (int d = x.ndim - 1; d >= 0; --d) {
      if (++idx[d] < x.shape[d]) break;
      idx[d] = 0;
    }
  }
  return amax;
}

}  // namespace nvfp4kv::ref
