// nvfp4kv — decode_attention: validation (every Status names the argument and what was
// expected), then the CPU reference or the CUDA launcher.
#include "nvfp4kv/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdint>

#include "api/check.h"
#include "cuda/attention/decode_params.h"
#include "ref/attention.h"

namespace nvfp4kv {
namespace {

bool is_empty_view(const TensorView& t) { return t.data == nullptr && t.ndim == 0; }

// Expected dims of a KV view: [num_pages, page_size, heads, x] (NHD) or [.., heads, page_size, x].
Status check_kv_view(const char* name, const TensorView& v, const KvCacheView& c, int64_t x,
                     bool scales) {
  NVFP4KV_CHECK_ARG(v.data != nullptr, "cache.", name, " must not be null");
  NVFP4KV_CHECK_ARG(v.ndim == 4, "cache.", name, " must be 4-D, got ", v.describe());
  const int64_t d1 = c.layout == KvLayout::kNHD ? c.page_size : c.num_kv_heads;
  const int64_t d2 = c.layout == KvLayout::kNHD ? c.num_kv_heads : c.page_size;
  NVFP4KV_CHECK_ARG(v.shape[0] == c.num_pages && v.shape[1] == d1 && v.shape[2] == d2 &&
                        v.shape[3] == x,
                    "cache.", name, " must have shape [", c.num_pages, ", ", d1, ", ", d2, ", ", x,
                    "] for layout ", kv_layout_name(c.layout), ", got ", v.describe());
  NVFP4KV_CHECK_ARG(v.strides[3] == 1, "cache.", name, " must be contiguous in its last dimension, got ",
                    v.describe());
  if (scales) {
    NVFP4KV_CHECK_ARG(v.dtype == DType::kU8, "cache.", name, " must be u8, got ", v.describe());
  }
  return Status();
}

Status validate(const TensorView& q, const KvCacheView& c, const TensorView& block_tables,
                const TensorView& seq_lens, const TensorView& out, const TensorView& lse,
                const DecodeOptions& o) {
  NVFP4KV_CHECK_ARG(q.data != nullptr && q.ndim == 4,
                    "q must be a 4-D [batch, qo_len, num_qo_heads, head_dim] tensor, got ", q.describe());
  NVFP4KV_CHECK_ARG(q.dtype == DType::kBF16 || q.dtype == DType::kF16, "q must be bf16 or f16, got ",
                    q.describe());
  NVFP4KV_CHECK_ARG(q.shape[0] >= 1, "q batch must be >= 1, got ", q.describe());
  NVFP4KV_CHECK_ARG(q.shape[1] >= 1 && q.shape[1] <= 8, "q qo_len (dim 1) must be 1..8, got ", q.describe());
  NVFP4KV_CHECK_ARG(q.strides[3] == 1, "q must be contiguous in head_dim, got ", q.describe());
  NVFP4KV_CHECK_ARG(c.head_dim == 64 || c.head_dim == 128 || c.head_dim == 256,
                    "cache.head_dim must be 64, 128 or 256, got ", c.head_dim);
  NVFP4KV_CHECK_ARG(q.shape[3] == c.head_dim, "q head_dim (dim 3) must equal cache.head_dim ", c.head_dim,
                    ", got ", q.describe());
  NVFP4KV_CHECK_ARG(c.page_size >= 1, "cache.page_size must be >= 1, got ", c.page_size);
  NVFP4KV_CHECK_ARG(c.num_pages >= 1, "cache.num_pages must be >= 1, got ", c.num_pages);
  NVFP4KV_CHECK_ARG(c.num_kv_heads >= 1, "cache.num_kv_heads must be >= 1, got ", c.num_kv_heads);
  NVFP4KV_CHECK_ARG(q.shape[2] % c.num_kv_heads == 0, "q num_qo_heads (", q.shape[2],
                    ") must be a multiple of cache.num_kv_heads (", c.num_kv_heads, ")");
  const bool fp4 = kv_format_is_fp4(c.format);
  const int64_t x = fp4 ? c.head_dim / 2 : c.head_dim;
  NVFP4KV_RETURN_IF_ERROR(check_kv_view("k_data", c.k_data, c, x, false));
  NVFP4KV_RETURN_IF_ERROR(check_kv_view("v_data", c.v_data, c, x, false));
  switch (c.format) {
    case KvFormat::kBF16:
    case KvFormat::kF16: {
      const DType want = c.format == KvFormat::kBF16 ? DType::kBF16 : DType::kF16;
      NVFP4KV_CHECK_ARG(c.k_data.dtype == want && c.v_data.dtype == want, "cache.k_data/v_data must be ",
                        dtype_name(want), " for format ", kv_format_name(c.format), ", got ",
                        c.k_data.describe(), " / ", c.v_data.describe());
      NVFP4KV_CHECK_ARG(q.dtype == want, "q must have the cache's dtype ", dtype_name(want),
                        " (a 16-bit cache is read without conversion), got ", q.describe());
      break;
    }
    case KvFormat::kFP8E4M3:
      NVFP4KV_CHECK_ARG((c.k_data.dtype == DType::kFP8E4M3 || c.k_data.dtype == DType::kU8) &&
                            (c.v_data.dtype == DType::kFP8E4M3 || c.v_data.dtype == DType::kU8),
                        "cache.k_data/v_data must be fp8_e4m3 (or u8), got ", c.k_data.describe());
      break;
    case KvFormat::kNvfp4:
    case KvFormat::kFp4Block16:
      NVFP4KV_CHECK_ARG(c.k_data.dtype == DType::kU8 && c.v_data.dtype == DType::kU8,
                        "cache.k_data/v_data must be u8 (packed E2M1 pairs), got ", c.k_data.describe());
      NVFP4KV_RETURN_IF_ERROR(check_kv_view("k_scales", c.k_scales, c, c.head_dim / 16, true));
      NVFP4KV_RETURN_IF_ERROR(check_kv_view("v_scales", c.v_scales, c, c.head_dim / 16, true));
      break;
  }
  if (c.format == KvFormat::kFP8E4M3 || c.format == KvFormat::kNvfp4) {
    NVFP4KV_CHECK_ARG(c.k_scale != nullptr && c.v_scale != nullptr, "cache.k_scale and cache.v_scale must be set for format ",
                      kv_format_name(c.format));
  }
  const int64_t batch = q.shape[0];
  NVFP4KV_CHECK_ARG(block_tables.data != nullptr && block_tables.ndim == 2 &&
                        block_tables.dtype == DType::kI32 && block_tables.shape[0] == batch &&
                        block_tables.shape[1] >= 1 && block_tables.strides[1] == 1,
                    "block_tables must be i32 [batch=", batch, ", max_pages >= 1] with contiguous rows, got ",
                    block_tables.describe());
  NVFP4KV_CHECK_ARG(seq_lens.data != nullptr && seq_lens.ndim == 1 && seq_lens.dtype == DType::kI32 &&
                        seq_lens.shape[0] == batch,
                    "seq_lens must be i32 [batch=", batch, "], got ", seq_lens.describe());
  NVFP4KV_CHECK_ARG(out.data != nullptr && out.ndim == 4 && out.dtype == q.dtype && out.shape[0] == q.shape[0] &&
                        out.shape[1] == q.shape[1] && out.shape[2] == q.shape[2] &&
                        out.shape[3] == q.shape[3] && out.strides[3] == 1,
                    "out must have q's dtype and shape ", q.describe(), " (last dim contiguous), got ",
                    out.describe());
  if (!is_empty_view(lse)) {
    NVFP4KV_CHECK_ARG(lse.data != nullptr && lse.ndim == 3 && lse.dtype == DType::kF32 &&
                          lse.shape[0] == batch && lse.shape[1] == q.shape[1] && lse.shape[2] == q.shape[2],
                      "lse must be empty or f32 [batch, qo_len, num_qo_heads] = [", batch, ", ", q.shape[1],
                      ", ", q.shape[2], "], got ", lse.describe());
  }
  const Device dev = q.device;
  NVFP4KV_CHECK_ARG(c.k_data.device == dev && c.v_data.device == dev && block_tables.device == dev &&
                        seq_lens.device == dev && out.device == dev &&
                        (is_empty_view(lse) || lse.device == dev) &&
                        (!fp4 || (c.k_scales.device == dev && c.v_scales.device == dev)),
                    "all tensors must be on q's device (", device_name(dev), ")");
  NVFP4KV_CHECK_ARG(std::isfinite(o.sm_scale), "options.sm_scale must be finite, got ", o.sm_scale);
  NVFP4KV_CHECK_ARG(std::isfinite(o.logits_soft_cap) && o.logits_soft_cap >= 0,
                    "options.logits_soft_cap must be >= 0 (0 = off), got ", o.logits_soft_cap);
  NVFP4KV_CHECK_ARG(o.window_left >= -1, "options.window_left must be >= -1 (-1 = off), got ", o.window_left);
  NVFP4KV_CHECK_ARG(o.num_splits >= 0 && o.num_splits <= 1024, "options.num_splits must be 0..1024, got ",
                    o.num_splits);
  if (dev == Device::kCuda) {
    NVFP4KV_CHECK_ARG(NVFP4KV_HAVE_CUDA, "this build of nvfp4kv has no CUDA kernels (device cuda)");
    // Each lane copies head_dim/4 elements of one token with 8/16-byte cp.async, so those runs
    // must be aligned: every byte stride and base address of the KV views must be a multiple of
    // the run size (capped at 16).
    const int64_t run_bytes = std::min<int64_t>(
        16, (c.head_dim / 4) * (fp4 ? 1 : static_cast<int64_t>(dtype_size(c.k_data.dtype))) / (fp4 ? 2 : 1));
    // Scale bytes are copied as aligned 32-bit words (cp.async moves 4, 8 or 16 bytes).
    const int64_t scale_run = 4;
    auto aligned = [&](const TensorView& v, int64_t a) {
      const int64_t es = static_cast<int64_t>(dtype_size(v.dtype));
      if (reinterpret_cast<uintptr_t>(v.data) % a) return false;
      for (int i = 0; i < 3; ++i)
        if ((v.strides[i] * es) % a) return false;
      return true;
    };
    NVFP4KV_CHECK_ARG(aligned(c.k_data, run_bytes) && aligned(c.v_data, run_bytes),
                      "cache.k_data/v_data base and page/token/head strides must be multiples of ", run_bytes,
                      " bytes on CUDA, got ", c.k_data.describe(), " / ", c.v_data.describe());
    // The kernel forms page and token offsets with 32-bit strides (one IMAD.WIDE per address).
    auto fits32 = [&](const TensorView& v) {
      const int64_t es = static_cast<int64_t>(dtype_size(v.dtype));
      for (int i = 0; i < 3; ++i)
        if (v.strides[i] * es >= (int64_t{1} << 31) || v.strides[i] * es < -(int64_t{1} << 31)) return false;
      return true;
    };
    NVFP4KV_CHECK_ARG(fits32(c.k_data) && fits32(c.v_data) && (!fp4 || (fits32(c.k_scales) && fits32(c.v_scales))),
                      "cache byte strides (page, token, head) must be below 2^31 on CUDA, got ", c.k_data.describe(),
                      " / ", c.v_data.describe());
    if (fp4) {
      NVFP4KV_CHECK_ARG(aligned(c.k_scales, scale_run) && aligned(c.v_scales, scale_run),
                        "cache.k_scales/v_scales base and strides must be multiples of ", scale_run,
                        " bytes on CUDA, got ", c.k_scales.describe());
    }
    NVFP4KV_CHECK_ARG(reinterpret_cast<uintptr_t>(q.data) % 16 == 0 && (q.strides[0] * 2) % 16 == 0 &&
                          (q.strides[1] * 2) % 16 == 0 && (q.strides[2] * 2) % 16 == 0,
                      "q base and strides must be multiples of 16 bytes on CUDA, got ", q.describe());
    NVFP4KV_CHECK_ARG(reinterpret_cast<uintptr_t>(out.data) % 16 == 0 && (out.strides[0] * 2) % 16 == 0 &&
                          (out.strides[1] * 2) % 16 == 0 && (out.strides[2] * 2) % 16 == 0,
                      "out base and strides must be multiples of 16 bytes on CUDA, got ", out.describe());
    NVFP4KV_CHECK_ARG(c.num_pages < (int64_t{1} << 31) && block_tables.shape[1] * c.page_size < (int64_t{1} << 30),
                      "max_pages * page_size must be < 2^30 tokens on CUDA");
  }
  return Status();
}

cuda::KvStrides resolve(const TensorView& v, KvLayout layout) {
  const int64_t es = static_cast<int64_t>(dtype_size(v.dtype));
  cuda::KvStrides s;
  s.page = v.strides[0] * es;
  s.token = (layout == KvLayout::kNHD ? v.strides[1] : v.strides[2]) * es;
  s.head = (layout == KvLayout::kNHD ? v.strides[2] : v.strides[1]) * es;
  return s;
}

float resolved_sm_scale(const DecodeOptions& o, int64_t head_dim) {
  return o.sm_scale > 0 ? o.sm_scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

// An A/B knob of the decode kernel: -1 unset, 0 if set to "0", 1 if set to anything else.
int env_switch(const char* name) {
  const char* e = std::getenv(name);
  return e == nullptr ? -1 : (std::strcmp(e, "0") == 0 ? 0 : 1);
}

// The split count decode_workspace_bytes sizes the workspace for (any occupancy).
int workspace_splits(int64_t batch, int64_t qo_len, int64_t num_qo_heads, int64_t num_kv_heads, int64_t max_pages,
                     int64_t page_size, int requested) {
  int sms = 132;
#if NVFP4KV_HAVE_CUDA
  sms = std::max(cuda::current_device_sm_count(), 1);
#endif
  return cuda::decode_splits_bound(batch, qo_len, num_qo_heads, num_kv_heads, max_pages, page_size, requested, sms);
}

// Split count for these sizes; `params` (when given) names the kernel, whose occupancy then
// decides; without it (workspace sizing) the most CTAs an SM can hold is assumed, an upper bound.
int device_splits(int64_t batch, int64_t qo_len, int64_t num_qo_heads, int64_t num_kv_heads,
                  int64_t max_pages, int64_t page_size, int requested, const cuda::DecodeParams* params) {
  const int hpc = params != nullptr ? params->heads_per_cta : 1;
  int64_t resident = 132 * cuda::kDecodeMaxCtasPerSm;
#if NVFP4KV_HAVE_CUDA
  if (requested <= 0) {
    const int sms = cuda::current_device_sm_count();
    resident = static_cast<int64_t>(std::max(sms, 1)) * cuda::kDecodeMaxCtasPerSm;
    if (params != nullptr) {
      const int64_t r = cuda::decode_resident_ctas(*params);
      if (r > 0) resident = r;
    }
  }
#else
  (void)params;
#endif
  return cuda::choose_decode_splits(batch, qo_len, num_qo_heads, num_kv_heads, max_pages, page_size, requested,
                                    resident, hpc);
}

Status build_params(const TensorView& q, const KvCacheView& c, const TensorView& block_tables,
                    const TensorView& seq_lens, const TensorView& out, const TensorView& lse,
                    const DecodeOptions& o, void* workspace, std::size_t workspace_bytes,
                    cuda::DecodeParams* p) {
  p->q_is_f16 = q.dtype == DType::kF16;
  p->format = static_cast<int>(c.format);
  p->head_dim = static_cast<int>(c.head_dim);
  p->q = q.data;
  p->out = out.data;
  for (int i = 0; i < 3; ++i) {
    p->q_stride[i] = q.strides[i];
    p->out_stride[i] = out.strides[i];
  }
  if (!is_empty_view(lse)) {
    p->lse = static_cast<float*>(lse.data);
    for (int i = 0; i < 3; ++i) p->lse_stride[i] = lse.strides[i];
  }
  p->k_data = static_cast<const uint8_t*>(c.k_data.data);
  p->v_data = static_cast<const uint8_t*>(c.v_data.data);
  p->k_data_strides = resolve(c.k_data, c.layout);
  p->v_data_strides = resolve(c.v_data, c.layout);
  if (kv_format_is_fp4(c.format)) {
    p->k_scales = static_cast<const uint8_t*>(c.k_scales.data);
    p->v_scales = static_cast<const uint8_t*>(c.v_scales.data);
    p->k_scale_strides = resolve(c.k_scales, c.layout);
    p->v_scale_strides = resolve(c.v_scales, c.layout);
  }
  if (c.format == KvFormat::kFP8E4M3 || c.format == KvFormat::kNvfp4) {
    p->k_scale = c.k_scale;
    p->v_scale = c.v_scale;
  }
  p->block_tables = static_cast<const int32_t*>(block_tables.data);
  p->block_table_stride = block_tables.strides[0];
  p->seq_lens = static_cast<const int32_t*>(seq_lens.data);
  p->seq_len_stride = seq_lens.strides[0];
  p->batch = static_cast<int>(q.shape[0]);
  p->qo_len = static_cast<int>(q.shape[1]);
  p->num_qo_heads = static_cast<int>(q.shape[2]);
  p->num_kv_heads = static_cast<int>(c.num_kv_heads);
  p->group_size = static_cast<int>(q.shape[2] / c.num_kv_heads);
  p->page_size = static_cast<int>(c.page_size);
  p->num_pages = static_cast<int>(c.num_pages);
  p->max_pages = static_cast<int>(block_tables.shape[1]);
  p->sm_scale = resolved_sm_scale(o, c.head_dim);
  p->logits_soft_cap = o.logits_soft_cap;
  p->window_left = o.window_left;
  // NVFP4KV_DECODE_NARROW=0 forces the wide tile (A/B benches, tests of both tiles).
  p->narrow = cuda::decode_use_narrow_tile(p->format, p->head_dim, p->group_size, p->qo_len,
                                           env_switch("NVFP4KV_DECODE_NARROW") != 0)
                  ? 1
                  : 0;
  // The ring filled by tensor copies where the kernel can take it (NVFP4KV_DECODE_TMA=0: cp.async).
  p->tma = env_switch("NVFP4KV_DECODE_TMA") != 0 ? 1 : 0;
  const int64_t m_tiles = (p->group_size * p->qo_len + cuda::kDecodeRowsPerTile - 1) / cuda::kDecodeRowsPerTile;
  const int64_t max_kv_len = block_tables.shape[1] * c.page_size;
  p->heads_per_cta = cuda::decode_heads_per_cta(p->format, p->head_dim, c.num_kv_heads, q.shape[0], m_tiles,
                                                max_kv_len, p->narrow != 0);
  // The paired nvfp4 tile: 8 heads per CTA (NVFP4KV_DECODE_PAIR=0|1 forces it off / on where it can run).
  if (cuda::decode_use_pair_tile(p->format, p->head_dim, p->group_size, p->qo_len, c.num_kv_heads, q.shape[0],
                                 p->narrow != 0, env_switch("NVFP4KV_DECODE_PAIR")))
    p->heads_per_cta = 8;
  {
    const cuda::KvStrides views[4] = {p->k_data_strides, p->v_data_strides, p->k_scale_strides, p->v_scale_strides};
    p->lin_ratio = cuda::decode_lin_ratio(views, kv_format_is_fp4(c.format) ? 4 : 2, c.num_pages, c.page_size);
  }
  // Experiment knob (bench/NOTES.md): force 1, 2 or 4 heads per CTA on the ring path (8: the
  // paired tile, where decode_use_pair_tile allows it).
  if (const char* e = std::getenv("NVFP4KV_DECODE_HEADS_PER_CTA"); e != nullptr && (c.format != KvFormat::kBF16 &&
                                                                                     c.format != KvFormat::kF16)) {
    const int h = std::atoi(e);
    if ((h == 1 || h == 2 || h == 4) && c.num_kv_heads % h == 0) p->heads_per_cta = h;
    if (h == 8 && cuda::decode_use_pair_tile(p->format, p->head_dim, p->group_size, p->qo_len, c.num_kv_heads,
                                             q.shape[0], p->narrow != 0, 1))
      p->heads_per_cta = 8;
  }
  p->num_splits = device_splits(q.shape[0], q.shape[1], q.shape[2], c.num_kv_heads, block_tables.shape[1],
                                c.page_size, o.num_splits, p);
  // Dynamic rounds (narrow tile). NVFP4KV_DECODE_DYNAMIC=0 keeps fixed split slices, =1 forces
  // dynamic rounds (A/B benches, tests of both modes); unset: decode_dynamic_rounds' rule.
  bool dynamic = false;
  if (p->narrow && p->num_splits > 1) {
    const int64_t base = static_cast<int64_t>(p->batch) * (p->num_kv_heads / std::max(p->heads_per_cta, 1)) * m_tiles;
    dynamic = cuda::decode_dynamic_rounds(p->num_splits, base, block_tables.shape[1], c.page_size,
                                          env_switch("NVFP4KV_DECODE_DYNAMIC"));
  }
  p->dyn_first_splits = p->num_splits;
  if (dynamic && o.num_splits <= 0) {
    // Late joiners (decode_late_joiners; NVFP4KV_DECODE_LATE=0|1 forces them off / on): as many
    // splits again, started as the first wave's CTAs finish; within the workspace bound.
    const int late = env_switch("NVFP4KV_DECODE_LATE");
    if (late == 1 || (late < 0 && cuda::decode_late_joiners(p->num_splits, max_kv_len, p->heads_per_cta))) {
      const int bound = workspace_splits(q.shape[0], q.shape[1], q.shape[2], c.num_kv_heads, block_tables.shape[1],
                                         c.page_size, o.num_splits);
      p->num_splits = std::min(2 * p->num_splits, std::max(bound, p->num_splits));
    }
  }
  const std::size_t need = cuda::decode_workspace_for(q.shape[0], q.shape[1], q.shape[2], c.head_dim,
                                                      p->num_splits);
  if (need > 0) {
    if (workspace == nullptr || workspace_bytes < need)
      return Status(StatusCode::kResourceExhausted,
                    detail::concat("workspace must be >= ", need, " bytes (decode_workspace_bytes), got ",
                                   workspace_bytes, workspace == nullptr ? " (null)" : ""));
    NVFP4KV_CHECK_ARG(reinterpret_cast<uintptr_t>(workspace) % 256 == 0,
                      "workspace must be 256-byte aligned");
    char* const ws = static_cast<char*>(workspace);
    p->partial_out = reinterpret_cast<float*>(ws + cuda::decode_workspace_out_offset(q.shape[0], q.shape[1], q.shape[2]));
    p->partial_lse = reinterpret_cast<float*>(
        ws + cuda::decode_workspace_lse_offset(q.shape[0], q.shape[1], q.shape[2], c.head_dim, p->num_splits));
    if (dynamic) p->round_tickets = reinterpret_cast<unsigned long long*>(ws);
    // The splits combined in the decode kernel (NVFP4KV_DECODE_FUSED_MERGE=0|1 forces the merge
    // kernel / this wherever it can run); the arrival counters are the odd words of the region.
    const int unit_rows = p->group_size * p->qo_len * (p->heads_per_cta == 8 ? 2 : 1);
    if (cuda::decode_fused_merge(p->narrow != 0, p->heads_per_cta, unit_rows, p->num_splits,
                                 env_switch("NVFP4KV_DECODE_FUSED_MERGE")))
      p->done_counters = reinterpret_cast<unsigned long long*>(ws) + 1;
  }
  return Status();
}

}  // namespace

std::size_t decode_workspace_bytes(int64_t batch_size, int64_t qo_len, int64_t num_qo_heads,
                                   int64_t num_kv_heads, int64_t head_dim, int64_t max_pages,
                                   int64_t page_size, const DecodeOptions& options) {
  if (batch_size <= 0 || qo_len <= 0 || num_qo_heads <= 0 || num_kv_heads <= 0) return 0;
  const int splits =
      workspace_splits(batch_size, qo_len, num_qo_heads, num_kv_heads, max_pages, page_size, options.num_splits);
  return cuda::decode_workspace_for(batch_size, qo_len, num_qo_heads, head_dim, splits);
}

bool can_run_decode(const TensorView& q, const KvCacheView& cache, const TensorView& block_tables,
                    const TensorView& seq_lens, const TensorView& out, const TensorView& lse,
                    const DecodeOptions& options, Status* reason) {
  Status s = validate(q, cache, block_tables, seq_lens, out, lse, options);
  if (reason) *reason = s;
  return s.ok();
}

Status decode_attention(const TensorView& q, const KvCacheView& cache,
                        const TensorView& block_tables, const TensorView& seq_lens,
                        const TensorView& out, const TensorView& lse, const DecodeOptions& options,
                        void* workspace, std::size_t workspace_bytes, Stream stream) {
  NVFP4KV_RETURN_IF_ERROR(validate(q, cache, block_tables, seq_lens, out, lse, options));
  if (q.device == Device::kCpu) {
    ref::decode_attention(q, cache, block_tables, seq_lens, out, lse, resolved_sm_scale(options, cache.head_dim),
                          options.logits_soft_cap, options.window_left);
    return Status();
  }
#if NVFP4KV_HAVE_CUDA
  cuda::DecodeParams p;
  NVFP4KV_RETURN_IF_ERROR(build_params(q, cache, block_tables, seq_lens, out, lse, options, workspace,
                                       workspace_bytes, &p));
  return cuda::launch_decode(p, stream);
#else
  (void)workspace;
  (void)workspace_bytes;
  (void)stream;
  return Status(StatusCode::kUnsupported, "this build of nvfp4kv has no CUDA kernels");
#endif
}

Status time_decode_attention(const TensorView& q, const KvCacheView& cache,
                             const TensorView& block_tables, const TensorView& seq_lens,
                             const TensorView& out, const TensorView& lse,
                             const DecodeOptions& options, void* workspace,
                             std::size_t workspace_bytes, Stream stream, int runs,
                             float* median_us) {
  NVFP4KV_CHECK_ARG(runs >= 1, "runs must be >= 1, got ", runs);
  NVFP4KV_CHECK_ARG(median_us != nullptr, "median_us must not be null");
  NVFP4KV_RETURN_IF_ERROR(validate(q, cache, block_tables, seq_lens, out, lse, options));
  NVFP4KV_CHECK_ARG(q.device == Device::kCuda, "time_decode_attention needs CUDA tensors, got ", q.describe());
#if NVFP4KV_HAVE_CUDA
  cuda::DecodeParams p;
  NVFP4KV_RETURN_IF_ERROR(build_params(q, cache, block_tables, seq_lens, out, lse, options, workspace,
                                       workspace_bytes, &p));
  return cuda::time_decode(p, stream, runs, median_us);
#else
  (void)workspace;
  (void)workspace_bytes;
  (void)stream;
  return Status(StatusCode::kUnsupported, "this build of nvfp4kv has no CUDA kernels");
#endif
}

Status measure_copy_tbps(std::size_t bytes, double* tbps) {
  NVFP4KV_CHECK_ARG(bytes >= (1u << 20), "bytes must be >= 1 MiB, got ", bytes);
  NVFP4KV_CHECK_ARG(tbps != nullptr, "tbps must not be null");
#if NVFP4KV_HAVE_CUDA
  return cuda::measure_copy_tbps(bytes, tbps);
#else
  return Status(StatusCode::kUnsupported, "this build of nvfp4kv has no CUDA kernels");
#endif
}

}  // namespace nvfp4kv
