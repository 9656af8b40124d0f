// nvfp4kv — public KV-cache operations: names, validation (DESIGN.md reliability contract), then
// the CPU reference (src/ref/kv_cache.cpp) or the CUDA launchers (src/cuda/kv/launch.h).
#include "nvfp4kv/kv_cache.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "api/check.h"
#include "common/format.h"
#include "nvfp4kv/device.h"
#include "ref/kv_cache.h"
#if NVFP4KV_HAVE_CUDA
#include "cuda/kv/launch.h"
#endif

namespace nvfp4kv {

const char* kv_format_name(KvFormat format) {
  switch (format) {
    case KvFormat::kBF16: return "bf16";
    case KvFormat::kF16: return "f16";
    case KvFormat::kFP8E4M3: return "fp8_e4m3";
    case KvFormat::kNvfp4: return "nvfp4";
    case KvFormat::kFp4Block16: return "fp4_block16";
  }
  return "?";
}

bool parse_kv_format(std::string_view name, KvFormat* format) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kF16, KvFormat::kFP8E4M3, KvFormat::kNvfp4,
                     KvFormat::kFp4Block16}) {
    if (name == kv_format_name(f)) {
      if (format != nullptr) *format = f;
      return true;
    }
  }
  return false;
}

const char* kv_layout_name(KvLayout layout) { return layout == KvLayout::kHND ? "HND" : "NHD"; }

bool parse_kv_layout(std::string_view name, KvLayout* layout) {
  std::string up(name);
  for (char& ch : up) ch = static_cast<char>(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
  if (up != "NHD" && up != "HND") return false;
  if (layout != nullptr) *layout = up == "NHD" ? KvLayout::kNHD : KvLayout::kHND;
  return true;
}

bool kv_format_is_fp4(KvFormat format) {
  return format == KvFormat::kNvfp4 || format == KvFormat::kFp4Block16;
}

int64_t kv_bytes_per_token(KvFormat format, int64_t num_kv_heads, int64_t head_dim) {
  if (num_kv_heads <= 0 || head_dim <= 0) return 0;
  switch (format) {
    case KvFormat::kBF16:
    case KvFormat::kF16: return 2 * num_kv_heads * head_dim * 2;
    case KvFormat::kFP8E4M3: return 2 * num_kv_heads * head_dim;
    case KvFormat::kNvfp4:
    case KvFormat::kFp4Block16:
      if (head_dim % 16 != 0) return 0;
      return 2 * num_kv_heads * (head_dim / 2 + head_dim / 16);
  }
  return 0;
}

namespace {

bool known_format(KvFormat f) {
  return f == KvFormat::kBF16 || f == KvFormat::kF16 || f == KvFormat::kFP8E4M3 ||
         f == KvFormat::kNvfp4 || f == KvFormat::kFp4Block16;
}

bool format_has_decode_scale(KvFormat f) { return f == KvFormat::kFP8E4M3 || f == KvFormat::kNvfp4; }

/// dtype the data views of `f` must have.
DType data_dtype(KvFormat f) {
  switch (f) {
    case KvFormat::kBF16: return DType::kBF16;
    case KvFormat::kF16: return DType::kF16;
    case KvFormat::kFP8E4M3: return DType::kFP8E4M3;
    default: return DType::kU8;
  }
}

bool is_empty_view(const TensorView& v) { return v.data == nullptr && v.ndim == 0; }

std::string shape_str(const int64_t* s, int n) {
  std::string r = "[";
  for (int i = 0; i < n; ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

/// Checks one 4-D page view: dtype, shape per layout, strides, last dim contiguous, pointer,
/// alignment to the element size.
Status check_page_view(const KvCacheView& c, const TensorView& v, const char* name, DType dtype,
                       bool alt_ok, DType alt, int64_t x, Device device) {
  NVFP4KV_CHECK_ARG(v.data != nullptr, name, " must not be null for KV format ",
                    kv_format_name(c.format), " (got ", v.describe(), ")");
  NVFP4KV_CHECK_ARG(v.dtype == dtype || (alt_ok && v.dtype == alt), name, " must have dtype ",
                    dtype_name(dtype), alt_ok ? std::string(" or ") + dtype_name(alt) : std::string(),
                    " for KV format ", kv_format_name(c.format), " (got ", v.describe(), ")");
  NVFP4KV_CHECK_ARG(v.device == device, name, " must be on ", device_name(device),
                    " like cache.k_data (got ", v.describe(), ")");
  int64_t want[4];
  if (c.layout == KvLayout::kNHD) {
    want[0] = c.num_pages; want[1] = c.page_size; want[2] = c.num_kv_heads; want[3] = x;
  } else {
    want[0] = c.num_pages; want[1] = c.num_kv_heads; want[2] = c.page_size; want[3] = x;
  }
  NVFP4KV_CHECK_ARG(v.ndim == 4 && std::equal(want, want + 4, v.shape), name, " must have shape ",
                    shape_str(want, 4), " ([num_pages, ", c.layout == KvLayout::kNHD ?
                    "page_size, num_kv_heads" : "num_kv_heads, page_size", ", X] for layout ",
                    kv_layout_name(c.layout), ") (got ", v.describe(), ")");
  NVFP4KV_CHECK_ARG(v.strides[3] == 1, name, " must have a contiguous last dimension (stride 1) (got ",
                    v.describe(), ")");
  for (int d = 0; d < 3; ++d) {
    NVFP4KV_CHECK_ARG(v.strides[d] >= 0, name, " strides must be non-negative (got ", v.describe(), ")");
  }
  const std::size_t es = dtype_size(v.dtype);
  NVFP4KV_CHECK_ARG(reinterpret_cast<uintptr_t>(v.data) % es == 0, name,
                    " must be aligned to its element size ", es, " bytes");
  return Status();
}

Status check_host_scale(const float* p, const char* name, KvFormat f) {
  const float s = *p;
  NVFP4KV_CHECK_ARG(std::isfinite(s) && s > 0.0f, name, " must be a finite decode scale > 0 for KV format ",
                    kv_format_name(f), " (got ", s, ")");
  return Status();
}

/// Validates the cache view (every field); `device` receives the cache's device.
Status check_cache(const KvCacheView& c, Device* device) {
  NVFP4KV_CHECK_ARG(known_format(c.format), "cache.format must be a KvFormat enumerator (got ",
                    static_cast<int>(c.format), ")");
  NVFP4KV_CHECK_ARG(c.layout == KvLayout::kNHD || c.layout == KvLayout::kHND,
                    "cache.layout must be kNHD or kHND (got ", static_cast<int>(c.layout), ")");
  NVFP4KV_CHECK_ARG(c.num_pages >= 1, "cache.num_pages must be >= 1 (got ", c.num_pages, ")");
  NVFP4KV_CHECK_ARG(c.page_size >= 1, "cache.page_size must be >= 1 (got ", c.page_size, ")");
  NVFP4KV_CHECK_ARG(c.num_kv_heads >= 1, "cache.num_kv_heads must be >= 1 (got ", c.num_kv_heads, ")");
  NVFP4KV_CHECK_ARG(c.head_dim == 64 || c.head_dim == 128 || c.head_dim == 256,
                    "cache.head_dim must be 64, 128 or 256 (got ", c.head_dim, ")");
  NVFP4KV_CHECK_ARG(c.num_pages <= (int64_t(1) << 40) / c.page_size,
                    "cache.num_pages · page_size must be < 2^40 (got ", c.num_pages, " · ", c.page_size, ")");
  const Device dev = c.k_data.device;
  *device = dev;
  const bool fp4 = kv_format_is_fp4(c.format);
  const int64_t x = fp4 ? c.head_dim / 2 : c.head_dim;
  const DType dt = data_dtype(c.format);
  NVFP4KV_RETURN_IF_ERROR(check_page_view(c, c.k_data, "cache.k_data", dt, false, dt, x, dev));
  NVFP4KV_RETURN_IF_ERROR(check_page_view(c, c.v_data, "cache.v_data", dt, false, dt, x, dev));
  if (fp4) {
    const bool alt = c.format == KvFormat::kNvfp4;
    NVFP4KV_RETURN_IF_ERROR(check_page_view(c, c.k_scales, "cache.k_scales", DType::kU8, alt,
                                            DType::kFP8E4M3, c.head_dim / 16, dev));
    NVFP4KV_RETURN_IF_ERROR(check_page_view(c, c.v_scales, "cache.v_scales", DType::kU8, alt,
                                            DType::kFP8E4M3, c.head_dim / 16, dev));
  } else {
    NVFP4KV_CHECK_ARG(is_empty_view(c.k_scales) && is_empty_view(c.v_scales),
                      "cache.k_scales and cache.v_scales must be empty views for KV format ",
                      kv_format_name(c.format), " (block scales exist only for nvfp4 and fp4_block16; got ",
                      c.k_scales.describe(), " and ", c.v_scales.describe(), ")");
  }
  if (format_has_decode_scale(c.format)) {
    NVFP4KV_CHECK_ARG(c.k_scale != nullptr && c.v_scale != nullptr,
                      "cache.k_scale and cache.v_scale must point to fp32 decode scales (",
                      device_name(dev), " memory) for KV format ", kv_format_name(c.format));
    NVFP4KV_CHECK_ARG(reinterpret_cast<uintptr_t>(c.k_scale) % 4 == 0 &&
                      reinterpret_cast<uintptr_t>(c.v_scale) % 4 == 0,
                      "cache.k_scale and cache.v_scale must be 4-byte aligned");
    if (dev == Device::kCpu) {
      NVFP4KV_RETURN_IF_ERROR(check_host_scale(c.k_scale, "*cache.k_scale", c.format));
      NVFP4KV_RETURN_IF_ERROR(check_host_scale(c.v_scale, "*cache.v_scale", c.format));
    }
  }
  if (dev == Device::kCuda) {
    NVFP4KV_CHECK_ARG(built_with_cuda(), "cache views are on cuda but nvfp4kv was built without CUDA");
  }
  return Status();
}

/// Checks a [num_tokens, num_kv_heads, head_dim] (or [total_tokens, ...]) dense tensor.
Status check_rows(const KvCacheView& c, const TensorView& v, const char* name, int64_t rows,
                  Device dev) {
  const int64_t want[3] = {rows, c.num_kv_heads, c.head_dim};
  NVFP4KV_CHECK_ARG(v.ndim == 3 && std::equal(want, want + 3, v.shape), name, " must have shape ",
                    shape_str(want, 3), " (got ", v.describe(), ")");
  NVFP4KV_CHECK_ARG(v.strides[2] == 1, name, " must have a contiguous last dimension (got ",
                    v.describe(), ")");
  NVFP4KV_CHECK_ARG(v.strides[0] >= 0 && v.strides[1] >= 0, name,
                    " strides must be non-negative (got ", v.describe(), ")");
  NVFP4KV_CHECK_ARG(v.device == dev, name, " must be on ", device_name(dev), " like the cache (got ",
                    v.describe(), ")");
  if (rows > 0) {
    NVFP4KV_CHECK_ARG(v.data != nullptr, name, " must not be null (got ", v.describe(), ")");
    NVFP4KV_CHECK_ARG(reinterpret_cast<uintptr_t>(v.data) % dtype_size(v.dtype) == 0, name,
                      " must be aligned to its element size");
  }
  return Status();
}

Status check_append(const KvCacheView& c, const TensorView& keys, const TensorView& values,
                    const TensorView& slots, const AppendOptions& o, Device* dev) {
  NVFP4KV_RETURN_IF_ERROR(check_cache(c, dev));
  NVFP4KV_CHECK_ARG(keys.ndim == 3, "keys must be 3-D [num_tokens, num_kv_heads, head_dim] (got ",
                    keys.describe(), ")");
  NVFP4KV_CHECK_ARG(keys.dtype == DType::kBF16 || keys.dtype == DType::kF16,
                    "keys must have dtype bf16 or f16 (got ", keys.describe(), ")");
  NVFP4KV_CHECK_ARG(values.dtype == keys.dtype, "values must have the dtype of keys (",
                    dtype_name(keys.dtype), "; got ", values.describe(), ")");
  const int64_t n = keys.shape[0];
  NVFP4KV_CHECK_ARG(n >= 0, "keys.shape[0] (num_tokens) must be >= 0 (got ", n, ")");
  NVFP4KV_RETURN_IF_ERROR(check_rows(c, keys, "keys", n, *dev));
  NVFP4KV_RETURN_IF_ERROR(check_rows(c, values, "values", n, *dev));
  NVFP4KV_CHECK_ARG(slots.ndim == 1 && slots.shape[0] == n && slots.dtype == DType::kI64,
                    "slot_mapping must be i64[", n, "] (num_tokens of keys) (got ", slots.describe(), ")");
  NVFP4KV_CHECK_ARG(slots.strides[0] >= 0, "slot_mapping stride must be non-negative (got ",
                    slots.describe(), ")");
  NVFP4KV_CHECK_ARG(slots.device == *dev, "slot_mapping must be on ", device_name(*dev),
                    " like the cache (got ", slots.describe(), ")");
  if (n > 0) {
    NVFP4KV_CHECK_ARG(slots.data != nullptr && reinterpret_cast<uintptr_t>(slots.data) % 8 == 0,
                      "slot_mapping must be a non-null, 8-byte aligned pointer (got ", slots.describe(), ")");
  }
  NVFP4KV_CHECK_ARG(o.metric == ErrorMetric::kMse || o.metric == ErrorMetric::kMae,
                    "options.metric must be kMse or kMae (got ", static_cast<int>(o.metric), ")");
  NVFP4KV_CHECK_ARG(!o.four_over_six || c.format == KvFormat::kNvfp4,
                    "options.four_over_six applies only to KV format nvfp4 (cache format is ",
                    kv_format_name(c.format), ")");
  NVFP4KV_CHECK_ARG(n <= (int64_t(1) << 31) / 16, "num_tokens must be < 2^27 (got ", n, ")");
  return Status();
}

}  // namespace

Status can_run_append_kv(const KvCacheView& cache, const TensorView& keys, const TensorView& values,
                         const TensorView& slot_mapping, const AppendOptions& options) {
  Device dev;
  return check_append(cache, keys, values, slot_mapping, options, &dev);
}

Status append_kv(const KvCacheView& cache, const TensorView& keys, const TensorView& values,
                 const TensorView& slot_mapping, const AppendOptions& options, Stream stream) {
  Device dev;
  NVFP4KV_RETURN_IF_ERROR(check_append(cache, keys, values, slot_mapping, options, &dev));
  const int64_t n = keys.shape[0];
  if (n == 0) return Status();
  if (dev == Device::kCpu) {
    // Every slot is checked before anything is written, so an error leaves the cache unchanged.
    const int64_t capacity = cache.num_pages * cache.page_size;
    const int64_t* s = static_cast<const int64_t*>(slot_mapping.data);
    std::vector<int64_t> used;
    used.reserve(static_cast<std::size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t slot = s[t * slot_mapping.strides[0]];
      if (slot >= capacity) {
        return Status(StatusCode::kOutOfRange,
                      detail::concat("slot_mapping[", t, "] = ", slot, " must be < num_pages · page_size = ",
                                     capacity, " (or negative to skip the token)"));
      }
      if (slot >= 0) used.push_back(slot);
    }
    std::sort(used.begin(), used.end());
    const auto dup = std::adjacent_find(used.begin(), used.end());
    NVFP4KV_CHECK_ARG(dup == used.end(), "slot_mapping must not repeat a slot (slot ",
                      dup == used.end() ? 0 : *dup, " appears more than once)");
    ref::append_kv(cache, keys, values, slot_mapping, options);
    return Status();
  }
#if NVFP4KV_HAVE_CUDA
  return cuda::launch_append_kv(cache, keys, values, slot_mapping, options, stream);
#else
  (void)stream;
  return Status(StatusCode::kUnsupported, "append_kv: views are on cuda but nvfp4kv was built without CUDA");
#endif
}

Status dequantize_kv(const KvCacheView& cache, const TensorView& block_tables,
                     const TensorView& seq_lens, const TensorView& out_k, const TensorView& out_v,
                     Stream stream) {
  Device dev;
  NVFP4KV_RETURN_IF_ERROR(check_cache(cache, &dev));
  NVFP4KV_CHECK_ARG(block_tables.ndim == 2 && block_tables.dtype == DType::kI32,
                    "block_tables must be i32 [batch, max_pages] (got ", block_tables.describe(), ")");
  const int64_t batch = block_tables.shape[0], max_pages = block_tables.shape[1];
  NVFP4KV_CHECK_ARG(batch >= 0 && max_pages >= 0 && block_tables.strides[0] >= 0 &&
                    block_tables.strides[1] >= 0,
                    "block_tables shape and strides must be non-negative (got ", block_tables.describe(), ")");
  NVFP4KV_CHECK_ARG(seq_lens.ndim == 1 && seq_lens.dtype == DType::kI32 && seq_lens.shape[0] == batch &&
                    seq_lens.strides[0] >= 0,
                    "seq_lens must be i32 [", batch, "] (batch of block_tables) (got ", seq_lens.describe(), ")");
  NVFP4KV_CHECK_ARG(block_tables.device == dev && seq_lens.device == dev, "block_tables and seq_lens must be on ",
                    device_name(dev), " like the cache (got ", block_tables.describe(), " and ",
                    seq_lens.describe(), ")");
  NVFP4KV_CHECK_ARG(out_k.ndim == 3, "out_k must be 3-D [total_tokens, num_kv_heads, head_dim] (got ",
                    out_k.describe(), ")");
  NVFP4KV_CHECK_ARG(out_k.dtype == DType::kF32 || out_k.dtype == DType::kBF16 || out_k.dtype == DType::kF16,
                    "out_k must have dtype f32, bf16 or f16 (got ", out_k.describe(), ")");
  NVFP4KV_CHECK_ARG(out_v.dtype == out_k.dtype, "out_v must have the dtype of out_k (",
                    dtype_name(out_k.dtype), "; got ", out_v.describe(), ")");
  const int64_t total = out_k.shape[0];
  NVFP4KV_CHECK_ARG(total >= 0 && total < (int64_t(1) << 31), "out_k.shape[0] (total_tokens) must be in [0, 2^31) (got ",
                    total, ")");
  NVFP4KV_RETURN_IF_ERROR(check_rows(cache, out_k, "out_k", total, dev));
  NVFP4KV_RETURN_IF_ERROR(check_rows(cache, out_v, "out_v", total, dev));
  if (batch > 0) {
    NVFP4KV_CHECK_ARG(seq_lens.data != nullptr, "seq_lens must not be null");
    NVFP4KV_CHECK_ARG(max_pages == 0 || block_tables.data != nullptr, "block_tables must not be null");
  }
  if (dev == Device::kCpu) {
    const int32_t* lens = static_cast<const int32_t*>(seq_lens.data);
    const int32_t* tables = static_cast<const int32_t*>(block_tables.data);
    int64_t sum = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t len = lens[b * seq_lens.strides[0]];
      NVFP4KV_CHECK_ARG(len >= 0, "seq_lens[", b, "] must be >= 0 (got ", len, ")");
      if (len > max_pages * cache.page_size) {
        return Status(StatusCode::kOutOfRange,
                      detail::concat("seq_lens[", b, "] = ", len, " needs more than the ", max_pages,
                                     " pages of block_tables (page_size ", cache.page_size, ")"));
      }
      for (int64_t j = 0; j < fmt::ceil_div(len, cache.page_size); ++j) {
        const int64_t page = tables[b * block_tables.strides[0] + j * block_tables.strides[1]];
        if (page < 0 || page >= cache.num_pages) {
          return Status(StatusCode::kOutOfRange,
                        detail::concat("block_tables[", b, ", ", j, "] = ", page, " must be in [0, ",
                                       cache.num_pages, ") (num_pages)"));
        }
      }
      sum += len;
    }
    NVFP4KV_CHECK_ARG(sum == total, "out_k.shape[0] must equal the sum of seq_lens (", sum, "; got ", total, ")");
    ref::dequantize_kv(cache, block_tables, seq_lens, out_k, out_v);
    return Status();
  }
  NVFP4KV_CHECK_ARG(batch <= kMaxDequantizeKvBatch, "block_tables batch must be <= ", kMaxDequantizeKvBatch,
                    " for device views (got ", batch, ")");
#if NVFP4KV_HAVE_CUDA
  return cuda::launch_dequantize_kv(cache, block_tables, seq_lens, out_k, out_v, stream);
#else
  (void)stream;
  return Status(StatusCode::kUnsupported, "dequantize_kv: views are on cuda but nvfp4kv was built without CUDA");
#endif
}

Status calibrate_kv_scale(const TensorView& x, KvFormat format, bool four_over_six,
                          float* decode_scale_host, Stream stream) {
  NVFP4KV_CHECK_ARG(known_format(format), "format must be a KvFormat enumerator (got ",
                    static_cast<int>(format), ")");
  NVFP4KV_CHECK_ARG(decode_scale_host != nullptr, "decode_scale_host must not be null");
  NVFP4KV_CHECK_ARG(!four_over_six || format == KvFormat::kNvfp4,
                    "four_over_six applies only to KV format nvfp4 (got ", kv_format_name(format), ")");
  NVFP4KV_CHECK_ARG(x.ndim >= 1 && x.ndim <= kMaxDims, "x must have rank 1..", kMaxDims, " (got ",
                    x.describe(), ")");
  NVFP4KV_CHECK_ARG(x.dtype == DType::kF32 || x.dtype == DType::kF16 || x.dtype == DType::kBF16,
                    "x must have dtype f32, f16 or bf16 (got ", x.describe(), ")");
  for (int d = 0; d < x.ndim; ++d) {
    NVFP4KV_CHECK_ARG(x.shape[d] >= 0 && x.strides[d] >= 0, "x shape and strides must be non-negative (got ",
                      x.describe(), ")");
  }
  NVFP4KV_CHECK_ARG(x.numel() == 0 || x.data != nullptr, "x must not be null (got ", x.describe(), ")");
  if (!format_has_decode_scale(format)) {
    *decode_scale_host = 1.0f;
    return Status();
  }
  float amax = 0.0f;
  if (x.numel() > 0) {
    if (x.device == Device::kCpu) {
      amax = ref::kv_amax(x);
    } else {
#if NVFP4KV_HAVE_CUDA
      DeviceBuffer buf;
      NVFP4KV_RETURN_IF_ERROR(buf.allocate(sizeof(float)));
      NVFP4KV_RETURN_IF_ERROR(cuda::launch_kv_amax(x, static_cast<float*>(buf.data()), stream));
      NVFP4KV_RETURN_IF_ERROR(device_synchronize());
      NVFP4KV_RETURN_IF_ERROR(copy_to_host(&amax, buf.data(), sizeof(float)));
#else
      (void)stream;
      return Status(StatusCode::kUnsupported, "calibrate_kv_scale: x is on cuda but nvfp4kv was built without CUDA");
#endif
    }
  }
  NVFP4KV_CHECK_ARG(std::isfinite(amax), "x must not contain ±Inf (max |x| = ", amax,
                    "; no finite decode scale covers it)");
  if (amax == 0.0f) {
    *decode_scale_host = 1.0f;
    return Status();
  }
  const float div = format == KvFormat::kFP8E4M3 ? fmt::kE4m3Max
                    : four_over_six            ? fmt::kFourOverSixGlobalNumerator
                                               : fmt::kNvfp4GlobalNumerator;
  *decode_scale_host = std::max(fmt::fdiv_rn(amax, div), FLT_MIN);
  return Status();
}

}  // namespace nvfp4kv
