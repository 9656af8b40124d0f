// nvfp4kv — CPU reference quantizer and dequantizer: SPEC.md §3 (recipes) and §4 (scale layouts),
// literally, with the format math of src/common/format.h. Plain loops; no attempt at speed.
#include <cstring>
#include <vector>

#include "common/format.h"
#include "ref/ref.h"

namespace nvfp4kv::ref {
namespace {

namespace fmt = nvfp4kv::fmt;

int layout_index(SfLayout layout) {
  switch (layout) {
    case SfLayout::kLinear: return 0;
    case SfLayout::k128x4: return 1;
    case SfLayout::k8x4: return 2;
  }
  return 0;
}

/// Geometry shared by quantize and dequantize: [B, M, K] elements, Kv scale columns.
struct Geometry {
  int64_t batch = 1, rows = 0, cols = 0;  // B, M, K
  int block = 16;
  int64_t kv = 0;                         // K / block
  int layout = 0;
  int64_t matrix_scale_bytes = 0;         // padded rows · padded cols of one [M, K] matrix
};

Geometry make_geometry(const TensorView& elems, Recipe recipe, SfLayout layout) {
  Geometry g;
  const int d = elems.ndim;
  g.batch = d == 3 ? elems.shape[0] : 1;
  g.rows = elems.shape[d - 2];
  g.cols = elems.shape[d - 1];
  g.block = recipe_block_elems(recipe);
  g.kv = g.cols / g.block;
  g.layout = layout_index(layout);
  g.matrix_scale_bytes = fmt::sf_padded_rows(g.layout, g.rows) * fmt::sf_padded_cols(g.layout, g.kv);
  return g;
}

/// Byte address of row (b, m) of a rank-2 or rank-3 view.
template <class Ptr>
Ptr row_address(const TensorView& v, int64_t b, int64_t m) {
  const int d = v.ndim;
  const int64_t offset = (d == 3 ? b * v.strides[0] : 0) + m * v.strides[d - 2];
  return static_cast<Ptr>(v.data) + offset * static_cast<int64_t>(dtype_size(v.dtype));
}

void load_row(const TensorView& input, int64_t b, int64_t m, int64_t k, float* out) {
  const auto* row = row_address<const uint8_t*>(input, b, m);
  for (int64_t i = 0; i < k; ++i) out[i] = load_element(row, input.dtype, i);
}

}  // namespace

float load_element(const void* row, DType dtype, int64_t index) {
  const auto* p = static_cast<const uint8_t*>(row);
  switch (dtype) {
    case DType::kF32: {
      float x;
      std::memcpy(&x, p + index * 4, 4);
      return x;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, p + index * 2, 2);
      return fmt::f16_bits_to_float(h);
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + index * 2, 2);
      return fmt::bf16_bits_to_float(h);
    }
    case DType::kFP8E4M3: return fmt::e4m3_to_float(p[index]);
    default: return 0.0f;  // not an element type of quantize (the API layer rejects it)
  }
}

void store_element(void* row, DType dtype, int64_t index, float value) {
  auto* p = static_cast<uint8_t*>(row);
  switch (dtype) {
    case DType::kF32: std::memcpy(p + index * 4, &value, 4); break;
    case DType::kF16: {
      const uint16_t h = fmt::float_to_f16_bits(value);
      std::memcpy(p + index * 2, &h, 2);
      break;
    }
    case DType::kBF16: {
      const uint16_t h = fmt::float_to_bf16_bits(value);
      std::memcpy(p + index * 2, &h, 2);
      break;
    }
    default: break;  // not an output type of dequantize (the API layer rejects it)
  }
}

float global_scale_numerator(Recipe recipe) {
  switch (recipe) {
    case Recipe::kNvfp4: return fmt::kNvfp4GlobalNumerator;
    case Recipe::kNvfp4FourOverSix: return fmt::kFourOverSixGlobalNumerator;
    default: return 0.0f;
  }
}

float abs_max(const float* x, int64_t n) {
  float v = 0.0f;
  for (int64_t i = 0; i < n; ++i) v = fmt::max_f(v, fmt::abs_f(x[i]));
  return v;
}

BlockResult quantize_block(Recipe recipe, ErrorMetric metric, const float* x, int n, float s_enc,
                           float s_dec) {
  BlockResult r;
  const float v = abs_max(x, n);
  switch (recipe) {
    case Recipe::kNvfp4: {
      // SPEC.md §3.1: sf = e4m3(rn(v · rn(S_enc · (1/6)f))), enc from the stored scale.
      const fmt::BlockScale bs = fmt::nvfp4_block_scale(v, fmt::nvfp4_sf_multiplier(s_enc), s_dec);
      r.scale = bs.sf_byte;
      for (int i = 0; i < n; ++i) r.codes[i] = static_cast<uint8_t>(fmt::float_to_e2m1(fmt::fmul_rn(x[i], bs.encode)));
      break;
    }
    case Recipe::kNvfp4FourOverSix: {
      // SPEC.md §3.2: try the block max mapped to 6 and to 4; keep 4 only if strictly better.
      const fmt::FourOverSixCandidates c = fmt::four_over_six_candidates(v, s_enc);
      const bool mae = metric == ErrorMetric::kMae;
      uint32_t codes6[32], codes4[32];
      const float err6 = fmt::four_over_six_candidate_error(x, n, v, c.sf6, s_dec, mae, codes6);
      const float err4 = fmt::four_over_six_candidate_error(x, n, v, c.sf4, s_dec, mae, codes4);
      r.map_to_4 = err4 < err6;
      r.scale = r.map_to_4 ? c.sf4 : c.sf6;
      const uint32_t* codes = r.map_to_4 ? codes4 : codes6;
      for (int i = 0; i < n; ++i) r.codes[i] = static_cast<uint8_t>(codes[i]);
      break;
    }
    case Recipe::kMxfp4:
    case Recipe::kFp4Block16: {
      // SPEC.md §3.3/§3.4: power-of-two scale rounded up, so no element clips.
      const fmt::MxBlockScale ms = fmt::mx_block_scale(v);
      r.scale = ms.code;
      for (int i = 0; i < n; ++i) r.codes[i] = static_cast<uint8_t>(fmt::float_to_e2m1(fmt::fmul_rn(x[i], ms.encode)));
      break;
    }
  }
  return r;
}

float dequantize_element(Recipe recipe, uint32_t code, uint8_t scale, float s_dec) {
  if (recipe_has_global_scale(recipe)) {
    return fmt::nvfp4_dequant(code, fmt::e4m3_to_float(scale), s_dec);
  }
  return fmt::mx_dequant(code, scale);
}

Status quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                const TensorView& global_scale, const QuantizeOptions& options,
                QuantizeStats* stats) {
  const Recipe recipe = options.recipe;
  const Geometry g = make_geometry(input, recipe, options.sf_layout);
  auto* scale_base = static_cast<uint8_t*>(scales.data);
  // SPEC.md §4: every padded scale entry is 0x00; real entries are overwritten below.
  if (g.batch * g.matrix_scale_bytes > 0) {
    std::memset(scale_base, 0, static_cast<size_t>(g.batch * g.matrix_scale_bytes));
  }

  const bool has_global = recipe_has_global_scale(recipe);
  const float numerator = global_scale_numerator(recipe);
  auto* global = static_cast<float*>(global_scale.data);
  float s_enc = 1.0f, s_dec = 1.0f;
  if (has_global && options.global_scale_mode == GlobalScaleMode::kPerTensor) {
    // amax over the whole input, batch included, NaN ignored.
    std::vector<float> row(static_cast<size_t>(g.cols));
    float amax = 0.0f;
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t m = 0; m < g.rows; ++m) {
        load_row(input, b, m, g.cols, row.data());
        amax = fmt::max_f(amax, abs_max(row.data(), g.cols));
      }
    }
    s_enc = fmt::global_encode_scale(amax, numerator);
    s_dec = fmt::reciprocal_rn(s_enc);
    global[0] = s_dec;
  } else if (has_global && options.global_scale_mode == GlobalScaleMode::kGiven) {
    s_dec = global[0];
    s_enc = fmt::encode_scale_from_decode(s_dec);
  }

  std::vector<float> row(static_cast<size_t>(g.cols));
  for (int64_t b = 0; b < g.batch; ++b) {
    uint8_t* matrix_scales = scale_base + b * g.matrix_scale_bytes;
    for (int64_t m = 0; m < g.rows; ++m) {
      load_row(input, b, m, g.cols, row.data());
      if (has_global && options.global_scale_mode == GlobalScaleMode::kPerRow) {
        // SPEC.md §3.5: the row's own amax; an all-zero row stores decode scale 0 (its blocks
        // all have v == 0, so the scales used below do not affect its bytes).
        const float amax = abs_max(row.data(), g.cols);
        s_enc = fmt::global_encode_scale(amax, numerator);
        s_dec = fmt::reciprocal_rn(s_enc);
        global[b * g.rows + m] = amax == 0.0f ? 0.0f : s_dec;
      }
      auto* out = row_address<uint8_t*>(data, b, m);
      for (int64_t kb = 0; kb < g.kv; ++kb) {
        const float* x = row.data() + kb * g.block;
        const BlockResult r = quantize_block(recipe, options.metric, x, g.block, s_enc, s_dec);
        matrix_scales[fmt::sf_offset(g.layout, m, kb, g.kv)] = r.scale;
        for (int j = 0; j < g.block / 2; ++j) {
          out[kb * g.block / 2 + j] = fmt::pack_e2m1(r.codes[2 * j], r.codes[2 * j + 1]);
        }
        if (stats) {
          ++stats->blocks;
          stats->blocks_map_to_4 += r.map_to_4 ? 1 : 0;
        }
      }
    }
  }
  return Status::ok_status();
}

Status dequantize(const TensorView& data, const TensorView& scales, const TensorView& global_scale,
                  const TensorView& output, const DequantizeOptions& options) {
  const Recipe recipe = options.recipe;
  const Geometry g = make_geometry(output, recipe, options.sf_layout);
  const auto* scale_base = static_cast<const uint8_t*>(scales.data);
  const bool has_global = recipe_has_global_scale(recipe);
  const auto* global = static_cast<const float*>(global_scale.data);
  // [1] is one decode scale for the tensor; [M] or [B, M] one per row (with one element, the
  // two readings are the same).
  const bool per_row = has_global && global_scale.numel() > 1;
  for (int64_t b = 0; b < g.batch; ++b) {
    const uint8_t* matrix_scales = scale_base + b * g.matrix_scale_bytes;
    for (int64_t m = 0; m < g.rows; ++m) {
      const float s_dec = !has_global ? 0.0f : (per_row ? global[b * g.rows + m] : global[0]);
      const auto* in = row_address<const uint8_t*>(data, b, m);
      auto* out = row_address<uint8_t*>(output, b, m);
      for (int64_t i = 0; i < g.cols; ++i) {
        const uint8_t scale = matrix_scales[fmt::sf_offset(g.layout, m, i / g.block, g.kv)];
        const uint32_t code = (in[i / 2] >> ((i & 1) * 4)) & 0xFu;
        store_element(out, output.dtype, i, dequantize_element(recipe, code, scale, s_dec));
      }
    }
  }
  return Status::ok_status();
}

}  // namespace nvfp4kv::ref
