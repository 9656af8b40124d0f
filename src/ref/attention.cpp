// nvfp4kv — CPU reference of decode attention: plain loops, fp64 logits, softmax and output,
// over the cache dequantized exactly (SPEC.md §5). The oracle of tests/attention and
// tests/cuda/test_decode, and the CPU backend of decode_attention.
#include "ref/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/format.h"

namespace nvfp4kv::ref {
namespace {

// Element offset (in elements of the view's dtype) of (page, offset, head, x) in a KV view of
// the given layout: the layout only decides which stride belongs to the token and the head.
int64_t kv_offset(const TensorView& v, KvLayout layout, int64_t page, int64_t offset, int64_t head,
                  int64_t x) {
  const int64_t token_stride = layout == KvLayout::kNHD ? v.strides[1] : v.strides[2];
  const int64_t head_stride = layout == KvLayout::kNHD ? v.strides[2] : v.strides[1];
  return page * v.strides[0] + offset * token_stride + head * head_stride + x * v.strides[3];
}

double load_16bit(const TensorView& t, int64_t elem_offset) {
  const uint16_t bits = static_cast<const uint16_t*>(t.data)[elem_offset];
  return t.dtype == DType::kBF16 ? fmt::bf16_bits_to_float(bits) : fmt::f16_bits_to_float(bits);
}

void store_16bit(const TensorView& t, int64_t elem_offset, double x) {
  const float f = static_cast<float>(x);
  static_cast<uint16_t*>(t.data)[elem_offset] =
      t.dtype == DType::kBF16 ? fmt::float_to_bf16_bits(f) : fmt::float_to_f16_bits(f);
}

}  // namespace

double kv_element(const KvCacheView& cache, bool value, int64_t page, int64_t offset, int64_t head,
                  int64_t dim) {
  const TensorView& data = value ? cache.v_data : cache.k_data;
  switch (cache.format) {
    case KvFormat::kBF16:
    case KvFormat::kF16:
      return load_16bit(data, kv_offset(data, cache.layout, page, offset, head, dim));
    case KvFormat::kFP8E4M3: {
      const uint8_t byte =
          static_cast<const uint8_t*>(data.data)[kv_offset(data, cache.layout, page, offset, head, dim)];
      return fmt::e4m3_to_float(byte);
    }
    case KvFormat::kNvfp4:
    case KvFormat::kFp4Block16: {
      const uint8_t byte = static_cast<const uint8_t*>(
          data.data)[kv_offset(data, cache.layout, page, offset, head, dim / 2)];
      const uint32_t code = (dim % 2 == 0) ? (byte & 0xFu) : (byte >> 4);
      const TensorView& scales = value ? cache.v_scales : cache.k_scales;
      const uint8_t sf = static_cast<const uint8_t*>(
          scales.data)[kv_offset(scales, cache.layout, page, offset, head, dim / 16)];
      const double block_scale = cache.format == KvFormat::kNvfp4 ? fmt::e4m3_to_float(sf)
                                                                  : fmt::ue8m0_to_float(sf);
      // Both factors are exact in fp64 and so is their product.
      return static_cast<double>(fmt::e2m1_to_float(code)) * block_scale;
    }
  }
  return 0.0;
}

double kv_global_scale(const KvCacheView& cache, bool value) {
  if (cache.format != KvFormat::kFP8E4M3 && cache.format != KvFormat::kNvfp4) return 1.0;
  const float* s = value ? cache.v_scale : cache.k_scale;
  return s ? static_cast<double>(*s) : 1.0;
}

void decode_attention_f64(const TensorView& q, const KvCacheView& cache,
                          const TensorView& block_tables, const TensorView& seq_lens,
                          double sm_scale, double logits_soft_cap, int window_left,
                          std::vector<double>* out, std::vector<double>* lse) {
  const int64_t batch = q.shape[0], qo_len = q.shape[1], num_qo_heads = q.shape[2];
  const int64_t head_dim = q.shape[3];
  const int64_t group_size = num_qo_heads / cache.num_kv_heads;
  const int64_t max_pages = block_tables.shape[1];
  const double k_scale = kv_global_scale(cache, false);
  const double v_scale = kv_global_scale(cache, true);
  const double logit_scale = sm_scale * k_scale;
  const auto* tables = static_cast<const int32_t*>(block_tables.data);
  const auto* lens = static_cast<const int32_t*>(seq_lens.data);
  const double neg_inf = -std::numeric_limits<double>::infinity();

  out->assign(static_cast<std::size_t>(batch * qo_len * num_qo_heads * head_dim), 0.0);
  lse->assign(static_cast<std::size_t>(batch * qo_len * num_qo_heads), neg_inf);
  std::vector<double> qrow(head_dim), logits, acc(head_dim);
  std::vector<int64_t> pages, offsets;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t kv_len = std::clamp<int64_t>(lens[b * seq_lens.strides[0]], 0,
                                               max_pages * cache.page_size);
    for (int64_t t = 0; t < qo_len; ++t) {
      const int64_t pos = kv_len - qo_len + t;
      const int64_t first = window_left >= 0 ? std::max<int64_t>(0, pos - window_left) : 0;
      for (int64_t hq = 0; hq < num_qo_heads; ++hq) {
        const int64_t h = hq / group_size;
        for (int64_t d = 0; d < head_dim; ++d)
          qrow[d] = load_16bit(q, b * q.strides[0] + t * q.strides[1] + hq * q.strides[2] +
                                      d * q.strides[3]);
        logits.clear();
        pages.clear();
        offsets.clear();
        double max_logit = neg_inf;
        for (int64_t j = first; j <= pos; ++j) {
          const int64_t page =
              tables[b * block_tables.strides[0] + (j / cache.page_size) * block_tables.strides[1]];
          if (page < 0 || page >= cache.num_pages) continue;  // invisible (documented)
          const int64_t off = j % cache.page_size;
          double dot = 0.0;
          for (int64_t d = 0; d < head_dim; ++d) dot += qrow[d] * kv_element(cache, false, page, off, h, d);
          double s = logit_scale * dot;
          if (logits_soft_cap > 0) s = logits_soft_cap * std::tanh(s / logits_soft_cap);
          logits.push_back(s);
          pages.push_back(page);
          offsets.push_back(off);
          max_logit = std::max(max_logit, s);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0.0;
        for (std::size_t i = 0; i < logits.size(); ++i) {
          const double p = std::exp(logits[i] - max_logit);
          sum += p;
          for (int64_t d = 0; d < head_dim; ++d)
            acc[d] += p * kv_element(cache, true, pages[i], offsets[i], h, d);
        }
        const int64_t row = (b * qo_len + t) * num_qo_heads + hq;
        for (int64_t d = 0; d < head_dim; ++d)
          (*out)[row * head_dim + d] = sum > 0 ? v_scale * acc[d] / sum : 0.0;
        (*lse)[row] = sum > 0 ? max_logit + std::log(sum) : neg_inf;
      }
    }
  }
}

void decode_attention(const TensorView& q, const KvCacheView& cache,
                      const TensorView& block_tables, const TensorView& seq_lens,
                      const TensorView& out, const TensorView& lse, double sm_scale,
                      double logits_soft_cap, int window_left) {
  std::vector<double> o, l;
  decode_attention_f64(q, cache, block_tables, seq_lens, sm_scale, logits_soft_cap, window_left,
                       &o, &l);
  const int64_t batch = q.shape[0], qo_len = q.shape[1], heads = q.shape[2], hd = q.shape[3];
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < qo_len; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t row = (b * qo_len + t) * heads + h;
        const int64_t base = b * out.strides[0] + t * out.strides[1] + h * out.strides[2];
        for (int64_t d = 0; d < hd; ++d) store_16bit(out, base + d * out.strides[3], o[row * hd + d]);
        if (lse.data != nullptr)
          static_cast<float*>(lse.data)[b * lse.strides[0] + t * lse.strides[1] + h * lse.strides[2]] =
              static_cast<float>(l[row]);
      }
}

}  // namespace nvfp4kv::ref
