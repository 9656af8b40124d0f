// nvfp4kv — KvCachePool: owns a model's paged KV memory and hands pages to sequences.
// Memory map (one allocation): for each layer k_data | v_data | k_scales | v_scales, each region
// 256-byte aligned (so kernels get aligned, vectorizable rows), then 2·num_layers fp32 decode
// scales. Page bookkeeping is host-only; nothing here launches a kernel.
#include <cmath>
#include <cstring>
#include <limits>

#include "api/check.h"
#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv {
namespace {

constexpr int64_t kAlign = 256;

int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

/// Bytes of one page of one data (or scale) view of one layer.
int64_t data_page_bytes(const KvCachePoolOptions& o) {
  const int64_t x = kv_format_is_fp4(o.format) ? o.head_dim / 2 : o.head_dim;
  const int64_t es = (o.format == KvFormat::kBF16 || o.format == KvFormat::kF16) ? 2 : 1;
  return o.page_size * o.num_kv_heads * x * es;
}
int64_t scale_page_bytes(const KvCachePoolOptions& o) {
  return kv_format_is_fp4(o.format) ? o.page_size * o.num_kv_heads * (o.head_dim / 16) : 0;
}

/// Region sizes of one layer for `pages` pages.
struct LayerMap {
  int64_t data, scales, layer;
};
LayerMap layer_map(const KvCachePoolOptions& o, int64_t pages) {
  LayerMap m;
  m.data = align_up(data_page_bytes(o) * pages);
  m.scales = align_up(scale_page_bytes(o) * pages);
  m.layer = 2 * m.data + 2 * m.scales;
  return m;
}

Status check_options(const KvCachePoolOptions& o) {
  NVFP4KV_CHECK_ARG(o.format == KvFormat::kBF16 || o.format == KvFormat::kF16 || o.format == KvFormat::kFP8E4M3 ||
                    o.format == KvFormat::kNvfp4 || o.format == KvFormat::kFp4Block16,
                    "options.format must be a KvFormat enumerator (got ", static_cast<int>(o.format), ")");
  NVFP4KV_CHECK_ARG(o.layout == KvLayout::kNHD || o.layout == KvLayout::kHND,
                    "options.layout must be kNHD or kHND (got ", static_cast<int>(o.layout), ")");
  NVFP4KV_CHECK_ARG(o.num_layers >= 1 && o.num_layers <= 4096, "options.num_layers must be in [1, 4096] (got ",
                    o.num_layers, ")");
  NVFP4KV_CHECK_ARG(o.num_kv_heads >= 1 && o.num_kv_heads <= 4096, "options.num_kv_heads must be in [1, 4096] (got ",
                    o.num_kv_heads, ")");
  NVFP4KV_CHECK_ARG(o.head_dim == 64 || o.head_dim == 128 || o.head_dim == 256,
                    "options.head_dim must be 64, 128 or 256 (got ", o.head_dim, ")");
  NVFP4KV_CHECK_ARG(o.page_size >= 1 && o.page_size <= 65536, "options.page_size must be in [1, 65536] (got ",
                    o.page_size, ")");
  NVFP4KV_CHECK_ARG(o.device == Device::kCpu || o.device == Device::kCuda,
                    "options.device must be kCpu or kCuda (got ", static_cast<int>(o.device), ")");
  return Status();
}

TensorView page_view(uint8_t* p, DType dt, Device dev, const KvCachePoolOptions& o, int64_t pages, int64_t x) {
  if (o.layout == KvLayout::kNHD) return make_view(p, dt, dev, {pages, o.page_size, o.num_kv_heads, x});
  return make_view(p, dt, dev, {pages, o.num_kv_heads, o.page_size, x});
}

}  // namespace

int64_t KvCachePool::bytes_for_pages(const KvCachePoolOptions& o, int64_t num_pages) {
  if (!check_options(o).ok() || num_pages < 0) return 0;
  return layer_map(o, num_pages).layer * o.num_layers + align_up(2 * o.num_layers * 4);
}

int64_t KvCachePool::bytes_per_token_per_layer() const {
  return kv_bytes_per_token(options_.format, options_.num_kv_heads, options_.head_dim);
}

Status KvCachePool::create(const KvCachePoolOptions& o, int64_t num_pages, KvCachePool* pool) {
  NVFP4KV_CHECK_ARG(pool != nullptr, "pool must not be null");
  NVFP4KV_RETURN_IF_ERROR(check_options(o));
  NVFP4KV_CHECK_ARG(num_pages >= 1 && num_pages <= std::numeric_limits<int32_t>::max(),
                    "num_pages must be in [1, 2^31) (block tables hold i32 page indices; got ", num_pages, ")");
  NVFP4KV_CHECK_ARG(num_pages <= (int64_t(1) << 40) / o.page_size, "num_pages · page_size must be < 2^40 (got ",
                    num_pages, " · ", o.page_size, ")");
  KvCachePool p;
  p.options_ = o;
  p.num_pages_ = num_pages;
  p.total_bytes_ = bytes_for_pages(o, num_pages);
  if (o.device == Device::kCuda) {
    NVFP4KV_RETURN_IF_ERROR(p.device_memory_.allocate(static_cast<std::size_t>(p.total_bytes_)));
    p.base_ = static_cast<uint8_t*>(p.device_memory_.data());
    NVFP4KV_RETURN_IF_ERROR(fill_device(p.base_, 0, static_cast<std::size_t>(p.total_bytes_)));
  } else {
    p.host_memory_.assign(static_cast<std::size_t>((p.total_bytes_ + 7) / 8), 0);
    p.base_ = reinterpret_cast<uint8_t*>(p.host_memory_.data());
  }
  p.free_.reserve(static_cast<std::size_t>(num_pages));
  for (int64_t i = num_pages - 1; i >= 0; --i) p.free_.push_back(static_cast<int32_t>(i));
  *pool = std::move(p);
  for (int64_t l = 0; l < o.num_layers; ++l) NVFP4KV_RETURN_IF_ERROR(pool->set_decode_scales(l, 1.0f, 1.0f));
  return Status();
}

Status KvCachePool::create_with_budget(const KvCachePoolOptions& o, int64_t budget_bytes, KvCachePool* pool) {
  NVFP4KV_CHECK_ARG(pool != nullptr, "pool must not be null");
  NVFP4KV_RETURN_IF_ERROR(check_options(o));
  // Per page: 2 data + 2 scale pages per layer; alignment adds < 4·256 bytes per layer.
  const int64_t per_page = 2 * (data_page_bytes(o) + scale_page_bytes(o)) * o.num_layers;
  int64_t pages = budget_bytes / per_page;
  while (pages > 0 && bytes_for_pages(o, pages) > budget_bytes) --pages;
  if (pages < 1) {
    return Status(StatusCode::kResourceExhausted,
                  detail::concat("budget_bytes = ", budget_bytes, " cannot hold one page (", bytes_for_pages(o, 1),
                                 " bytes for ", o.num_layers, " layers of format ", kv_format_name(o.format), ")"));
  }
  pages = std::min<int64_t>(pages, std::numeric_limits<int32_t>::max());
  return create(o, pages, pool);
}

Status KvCachePool::add_sequence(int64_t seq_id) {
  NVFP4KV_CHECK_ARG(num_pages_ > 0, "the pool is empty (create it first)");
  NVFP4KV_CHECK_ARG(seqs_.find(seq_id) == seqs_.end(), "seq_id ", seq_id, " is already in the pool");
  seqs_.emplace(seq_id, Sequence{});
  return Status();
}

Status KvCachePool::extend(int64_t seq_id, int64_t num_new_tokens, std::vector<int64_t>* slot_mapping) {
  auto it = seqs_.find(seq_id);
  NVFP4KV_CHECK_ARG(it != seqs_.end(), "seq_id ", seq_id, " is not in the pool (add_sequence first)");
  NVFP4KV_CHECK_ARG(num_new_tokens >= 0, "num_new_tokens must be >= 0 (got ", num_new_tokens, ")");
  Sequence& s = it->second;
  const int64_t ps = options_.page_size;
  const int64_t new_len = s.len + num_new_tokens;
  const int64_t need = (new_len + ps - 1) / ps - static_cast<int64_t>(s.pages.size());
  if (need > free_pages()) {
    return Status(StatusCode::kResourceExhausted,
                  detail::concat("extend(seq_id ", seq_id, ", ", num_new_tokens, " tokens) needs ", need,
                                 " more pages but only ", free_pages(), " of ", num_pages_,
                                 " are free; nothing was allocated"));
  }
  for (int64_t i = 0; i < need; ++i) {
    s.pages.push_back(free_.back());
    free_.pop_back();
  }
  if (slot_mapping != nullptr) {
    for (int64_t p = s.len; p < new_len; ++p) slot_mapping->push_back(int64_t(s.pages[p / ps]) * ps + p % ps);
  }
  s.len = new_len;
  return Status();
}

Status KvCachePool::release(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  NVFP4KV_CHECK_ARG(it != seqs_.end(), "seq_id ", seq_id, " is not in the pool");
  // Freed pages go back in reverse so a following sequence gets them in the same order.
  for (auto p = it->second.pages.rbegin(); p != it->second.pages.rend(); ++p) free_.push_back(*p);
  seqs_.erase(it);
  return Status();
}

int64_t KvCachePool::seq_len(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? -1 : it->second.len;
}

std::vector<int32_t> KvCachePool::seq_pages(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? std::vector<int32_t>() : it->second.pages;
}

Status KvCachePool::fill_block_tables(const std::vector<int64_t>& seq_ids, std::vector<int32_t>* block_tables,
                                      std::vector<int32_t>* seq_lens, int64_t* max_pages) const {
  NVFP4KV_CHECK_ARG(block_tables != nullptr && seq_lens != nullptr && max_pages != nullptr,
                    "block_tables, seq_lens and max_pages must not be null");
  int64_t width = 1;
  for (int64_t id : seq_ids) {
    auto it = seqs_.find(id);
    NVFP4KV_CHECK_ARG(it != seqs_.end(), "seq_ids contains ", id, ", which is not in the pool");
    NVFP4KV_CHECK_ARG(it->second.len <= std::numeric_limits<int32_t>::max(), "sequence ", id,
                      " is longer than an i32 seq_lens entry");
    width = std::max<int64_t>(width, static_cast<int64_t>(it->second.pages.size()));
  }
  block_tables->assign(seq_ids.size() * static_cast<std::size_t>(width), 0);
  seq_lens->assign(seq_ids.size(), 0);
  for (std::size_t b = 0; b < seq_ids.size(); ++b) {
    const Sequence& s = seqs_.at(seq_ids[b]);
    std::copy(s.pages.begin(), s.pages.end(), block_tables->begin() + static_cast<std::ptrdiff_t>(b * width));
    (*seq_lens)[b] = static_cast<int32_t>(s.len);
  }
  *max_pages = width;
  return Status();
}

KvCacheView KvCachePool::layer_view(int64_t layer) const {
  KvCacheView v;
  v.format = options_.format;
  v.layout = options_.layout;
  if (base_ == nullptr || layer < 0 || layer >= options_.num_layers) return v;
  const KvCachePoolOptions& o = options_;
  const LayerMap m = layer_map(o, num_pages_);
  uint8_t* p = base_ + layer * m.layer;
  const bool fp4 = kv_format_is_fp4(o.format);
  const DType dt = o.format == KvFormat::kBF16 ? DType::kBF16 : o.format == KvFormat::kF16 ? DType::kF16
                   : o.format == KvFormat::kFP8E4M3 ? DType::kFP8E4M3 : DType::kU8;
  const int64_t x = fp4 ? o.head_dim / 2 : o.head_dim;
  v.num_pages = num_pages_;
  v.page_size = o.page_size;
  v.num_kv_heads = o.num_kv_heads;
  v.head_dim = o.head_dim;
  v.k_data = page_view(p, dt, o.device, o, num_pages_, x);
  v.v_data = page_view(p + m.data, dt, o.device, o, num_pages_, x);
  if (fp4) {
    v.k_scales = page_view(p + 2 * m.data, DType::kU8, o.device, o, num_pages_, o.head_dim / 16);
    v.v_scales = page_view(p + 2 * m.data + m.scales, DType::kU8, o.device, o, num_pages_, o.head_dim / 16);
  }
  const float* scales = reinterpret_cast<const float*>(base_ + m.layer * o.num_layers);
  v.k_scale = scales + 2 * layer;
  v.v_scale = scales + 2 * layer + 1;
  return v;
}

Status KvCachePool::set_decode_scales(int64_t layer, float k_scale, float v_scale) {
  NVFP4KV_CHECK_ARG(base_ != nullptr, "the pool is empty (create it first)");
  NVFP4KV_CHECK_ARG(layer >= 0 && layer < options_.num_layers, "layer must be in [0, ", options_.num_layers,
                    ") (got ", layer, ")");
  NVFP4KV_CHECK_ARG(std::isfinite(k_scale) && k_scale > 0.0f, "k_scale must be finite and > 0 (got ", k_scale, ")");
  NVFP4KV_CHECK_ARG(std::isfinite(v_scale) && v_scale > 0.0f, "v_scale must be finite and > 0 (got ", v_scale, ")");
  const float pair[2] = {k_scale, v_scale};
  uint8_t* dst = base_ + layer_map(options_, num_pages_).layer * options_.num_layers + 8 * layer;
  if (options_.device == Device::kCuda) return copy_to_device(dst, pair, sizeof pair);
  std::memcpy(dst, pair, sizeof pair);
  return Status();
}

}  // namespace nvfp4kv
