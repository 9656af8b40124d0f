// nvfp4kv — bodies of include/nvfp4kv/quantize.h: names, scale shapes, argument validation, and
// dispatch to the CPU reference (src/ref) or the CUDA launchers (src/cuda/quantize).
#include <cmath>
#include <string>
#include <vector>

#include "api/check.h"
#include "common/format.h"
#include "nvfp4kv/quantize.h"
#include "ref/ref.h"

#if NVFP4KV_HAVE_CUDA
#include "cuda/quantize/launch.h"
#endif

namespace nvfp4kv {
namespace {

using detail::concat;

bool valid_recipe(Recipe r) {
  return r == Recipe::kNvfp4 || r == Recipe::kNvfp4FourOverSix || r == Recipe::kMxfp4 ||
         r == Recipe::kFp4Block16;
}
bool valid_layout(SfLayout l) {
  return l == SfLayout::kLinear || l == SfLayout::k128x4 || l == SfLayout::k8x4;
}
bool valid_metric(ErrorMetric m) { return m == ErrorMetric::kMse || m == ErrorMetric::kMae; }
bool valid_mode(GlobalScaleMode m) {
  return m == GlobalScaleMode::kPerTensor || m == GlobalScaleMode::kPerRow ||
         m == GlobalScaleMode::kGiven;
}

/// An expected shape (rank ≤ 3 here): a fixed array, so that validating a call allocates nothing
/// (the API is on the per-call path of every kernel launch; strings are built only on error).
struct Shape {
  int n = 0;
  int64_t d[3] = {0, 0, 0};
  size_t size() const { return static_cast<size_t>(n); }
  int64_t operator[](size_t i) const { return d[i]; }
  /// Prepends a leading (batch) extent.
  void push_front(int64_t v) {
    for (int i = n; i > 0; --i) d[i] = d[i - 1];
    d[0] = v;
    ++n;
  }
};

Shape make_shape(std::initializer_list<int64_t> dims) {
  Shape s;
  for (int64_t v : dims) s.d[s.n++] = v;
  return s;
}

std::string shape_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// An empty view stands for "no tensor" (the global scale of mxfp4/fp4_block16).
bool is_empty_view(const TensorView& v) { return v.data == nullptr && v.ndim == 0; }

/// Rank in range, non-negative extents and strides: what every other check relies on.
Status check_well_formed(const TensorView& v, const char* name) {
  NVFP4KV_CHECK_ARG(v.ndim >= 0 && v.ndim <= kMaxDims, name, ": expected rank 0..", kMaxDims,
                    ", got rank ", v.ndim);
  for (int d = 0; d < v.ndim; ++d) {
    NVFP4KV_CHECK_ARG(v.shape[d] >= 0, name, ": expected non-negative extents, got ",
                      v.describe());
    NVFP4KV_CHECK_ARG(v.strides[d] >= 0, name, ": expected non-negative strides, got ",
                      v.describe());
  }
  return Status::ok_status();
}

/// Exact shape match; the message (built only on failure) names the argument, the expected
/// shape and what it is (`what` parts, concatenated).
template <class... What>
Status check_shape(const TensorView& v, const char* name, const Shape& expected, const What&... what) {
  bool match = v.ndim == static_cast<int>(expected.size());
  for (int d = 0; match && d < v.ndim; ++d) match = v.shape[d] == expected[static_cast<size_t>(d)];
  NVFP4KV_CHECK_ARG(match, name, ": expected shape ", shape_string(expected), " (", what...,
                    "), got ", v.describe());
  return Status::ok_status();
}

Status check_last_dim_contiguous(const TensorView& v, const char* name) {
  NVFP4KV_CHECK_ARG(v.ndim == 0 || v.shape[v.ndim - 1] <= 1 || v.strides[v.ndim - 1] == 1, name,
                    ": expected a contiguous last dimension (stride 1), got ", v.describe());
  return Status::ok_status();
}

Status check_contiguous(const TensorView& v, const char* name) {
  NVFP4KV_CHECK_ARG(v.is_contiguous(), name, ": expected a contiguous (row-major) tensor, got ",
                    v.describe());
  return Status::ok_status();
}

Status check_not_null(const TensorView& v, const char* name) {
  NVFP4KV_CHECK_ARG(v.data != nullptr || v.numel() == 0, name,
                    ": expected a non-null data pointer, got ", v.describe());
  return Status::ok_status();
}

Status check_options(Recipe recipe, SfLayout layout) {
  NVFP4KV_CHECK_ARG(valid_recipe(recipe),
                    "options.recipe: expected nvfp4, nvfp4_4over6, mxfp4 or fp4_block16, got ",
                    static_cast<int>(recipe));
  NVFP4KV_CHECK_ARG(valid_layout(layout),
                    "options.sf_layout: expected linear, 128x4 or 8x4, got ",
                    static_cast<int>(layout));
  return Status::ok_status();
}

/// Dimensions of the element tensor (input of quantize, output of dequantize).
struct Dims {
  int rank = 2;
  int64_t batch = 1, rows = 0, cols = 0;
  int block = 16;
};

/// Checks the element tensor `elems` (rank, K) and the packed `data`, `scales` views that go with
/// it; shared by quantize and dequantize. The views have passed check_well_formed.
Status check_common(const TensorView& elems, const char* elems_name, const TensorView& data,
                    const TensorView& scales, Recipe recipe, SfLayout layout, Dims* dims) {
  NVFP4KV_CHECK_ARG(elems.ndim == 2 || elems.ndim == 3, elems_name,
                    ": expected rank 2 [M, K] or rank 3 [B, M, K], got ", elems.describe());
  Dims d;
  d.rank = elems.ndim;
  d.batch = d.rank == 3 ? elems.shape[0] : 1;
  d.rows = elems.shape[d.rank - 2];
  d.cols = elems.shape[d.rank - 1];
  d.block = recipe_block_elems(recipe);
  NVFP4KV_CHECK_ARG(d.cols > 0 && d.cols % d.block == 0, elems_name,
                    ": expected the last dimension K to be a positive multiple of ", d.block,
                    " (the ", recipe_name(recipe), " block), got K = ", d.cols);
  NVFP4KV_RETURN_IF_ERROR(check_last_dim_contiguous(elems, elems_name));
  NVFP4KV_RETURN_IF_ERROR(check_not_null(elems, elems_name));

  Shape data_shape = make_shape({d.rows, d.cols / 2});
  if (d.rank == 3) data_shape.push_front(d.batch);
  NVFP4KV_CHECK_ARG(data.dtype == DType::kU8, "data: expected dtype u8 (packed E2M1 pairs), got ",
                    data.describe());
  NVFP4KV_RETURN_IF_ERROR(check_shape(data, "data", data_shape, "K/2 packed bytes per row"));
  NVFP4KV_RETURN_IF_ERROR(check_last_dim_contiguous(data, "data"));
  NVFP4KV_RETURN_IF_ERROR(check_not_null(data, "data"));

  const ScaleShape ss = scale_shape(recipe, layout, d.rows, d.cols);
  Shape scale_dims = make_shape({ss.rows, ss.cols});
  if (d.rank == 3) scale_dims.push_front(d.batch);
  if (recipe_has_global_scale(recipe)) {
    NVFP4KV_CHECK_ARG(scales.dtype == DType::kU8 || scales.dtype == DType::kFP8E4M3,
                      "scales: expected dtype u8 or fp8_e4m3 (E4M3 scale bytes of ",
                      recipe_name(recipe), "), got ", scales.describe());
  } else {
    NVFP4KV_CHECK_ARG(scales.dtype == DType::kU8, "scales: expected dtype u8 (UE8M0 scale bytes of ",
                      recipe_name(recipe), "), got ", scales.describe());
  }
  NVFP4KV_RETURN_IF_ERROR(check_shape(scales, "scales", scale_dims, sf_layout_name(layout), " layout of ",
                                      recipe_name(recipe), " scales, padding included"));
  NVFP4KV_RETURN_IF_ERROR(check_contiguous(scales, "scales"));
  NVFP4KV_RETURN_IF_ERROR(check_not_null(scales, "scales"));
  *dims = d;
  return Status::ok_status();
}

/// Global-scale view rules. `per_row` asks for [M] (rank 2) or [B, M] (rank 3); otherwise [1].
Status check_global_scale(const TensorView& gs, Recipe recipe, const Dims& d, bool allow_per_row,
                          bool allow_per_tensor) {
  if (!recipe_has_global_scale(recipe)) {
    NVFP4KV_CHECK_ARG(is_empty_view(gs), "global_scale: expected an empty view (recipe ",
                      recipe_name(recipe), " has no global scale), got ", gs.describe());
    return Status::ok_status();
  }
  NVFP4KV_CHECK_ARG(!is_empty_view(gs), "global_scale: expected an f32 decode-scale view (recipe ",
                    recipe_name(recipe), " has a global scale), got an empty view");
  NVFP4KV_CHECK_ARG(gs.dtype == DType::kF32, "global_scale: expected dtype f32, got ",
                    gs.describe());
  Shape per_row = make_shape({d.rows});
  if (d.rank == 3) per_row.push_front(d.batch);
  const Shape one = make_shape({1});
  const bool is_one = gs.ndim == 1 && gs.shape[0] == 1;
  bool is_row = gs.ndim == static_cast<int>(per_row.size());
  for (int i = 0; is_row && i < gs.ndim; ++i) is_row = gs.shape[i] == per_row[static_cast<size_t>(i)];
  if (allow_per_row && allow_per_tensor) {
    NVFP4KV_CHECK_ARG(is_one || is_row, "global_scale: expected shape [1] (one decode scale) or ",
                      shape_string(per_row), " (one per row), got ", gs.describe());
  } else if (allow_per_row) {
    NVFP4KV_RETURN_IF_ERROR(check_shape(gs, "global_scale", per_row, "one decode scale per row"));
  } else {
    NVFP4KV_RETURN_IF_ERROR(check_shape(gs, "global_scale", one, "one decode scale"));
  }
  NVFP4KV_RETURN_IF_ERROR(check_contiguous(gs, "global_scale"));
  NVFP4KV_RETURN_IF_ERROR(check_not_null(gs, "global_scale"));
  return Status::ok_status();
}

Status check_same_device(std::initializer_list<std::pair<const TensorView*, const char*>> views) {
  const TensorView* first = nullptr;
  const char* first_name = "";
  for (const auto& [v, name] : views) {
    if (is_empty_view(*v)) continue;
    if (!first) {
      first = v;
      first_name = name;
      continue;
    }
    NVFP4KV_CHECK_ARG(v->device == first->device, name, ": expected device ",
                      device_name(first->device), " (the device of ", first_name, "), got ",
                      v->describe());
  }
  return Status::ok_status();
}

Status validate_quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                         const TensorView& global_scale, const QuantizeOptions& options) {
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(input, "input"));
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(data, "data"));
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(scales, "scales"));
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(global_scale, "global_scale"));
  NVFP4KV_RETURN_IF_ERROR(check_options(options.recipe, options.sf_layout));
  NVFP4KV_CHECK_ARG(valid_metric(options.metric), "options.metric: expected mse or mae, got ",
                    static_cast<int>(options.metric));
  NVFP4KV_CHECK_ARG(valid_mode(options.global_scale_mode),
                    "options.global_scale_mode: expected kPerTensor, kPerRow or kGiven, got ",
                    static_cast<int>(options.global_scale_mode));
  const Recipe recipe = options.recipe;
  const bool has_global = recipe_has_global_scale(recipe);
  if (has_global) {
    NVFP4KV_CHECK_ARG(input.dtype == DType::kF32 || input.dtype == DType::kF16 ||
                          input.dtype == DType::kBF16 || input.dtype == DType::kFP8E4M3,
                      "input: expected dtype f32, f16, bf16 or fp8_e4m3 for recipe ",
                      recipe_name(recipe), ", got ", input.describe());
  } else {
    NVFP4KV_CHECK_ARG(input.dtype == DType::kF32 || input.dtype == DType::kF16 ||
                          input.dtype == DType::kBF16,
                      "input: expected dtype f32, f16 or bf16 for recipe ", recipe_name(recipe),
                      " (fp8_e4m3 input is for the nvfp4 recipes only), got ", input.describe());
  }
  Dims d;
  NVFP4KV_RETURN_IF_ERROR(
      check_common(input, "input", data, scales, recipe, options.sf_layout, &d));
  const bool per_row = options.global_scale_mode == GlobalScaleMode::kPerRow;
  NVFP4KV_RETURN_IF_ERROR(check_global_scale(global_scale, recipe, d, per_row, !per_row));
  NVFP4KV_RETURN_IF_ERROR(check_same_device({{&input, "input"},
                                             {&data, "data"},
                                             {&scales, "scales"},
                                             {&global_scale, "global_scale"}}));
  if (has_global && options.global_scale_mode == GlobalScaleMode::kGiven &&
      global_scale.device == Device::kCpu) {
    // A device-resident scale cannot be read here without a synchronising copy; the kernels
    // then use it as given (SPEC.md §3.1), so a non-positive or non-finite value there gives
    // undefined (but memory-safe) results.
    const float s_dec = *static_cast<const float*>(global_scale.data);
    NVFP4KV_CHECK_ARG(std::isfinite(s_dec) && s_dec > 0.0f,
                      "global_scale: expected a finite decode scale > 0 (kGiven), got ", s_dec);
    // SPEC.md §3.1 takes S_enc = rn(1 / S_dec); below 1/FLT_MAX that is +Inf and an all-zero
    // block would store the NaN scale byte (0 · Inf). Rejecting those scales keeps every
    // accepted input bit-exact with the literal SPEC rule (the math in src/common clamps to
    // FLT_MAX so device-resident scales, which cannot be checked here, still never give NaN).
    NVFP4KV_CHECK_ARG(std::isfinite(1.0f / s_dec),
                      "global_scale: expected a decode scale >= 1/FLT_MAX (2.94e-39) so that "
                      "1/S_dec is finite, got ", s_dec);
  }
  return Status::ok_status();
}

Status validate_dequantize(const TensorView& data, const TensorView& scales,
                           const TensorView& global_scale, const TensorView& output,
                           const DequantizeOptions& options) {
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(data, "data"));
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(scales, "scales"));
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(global_scale, "global_scale"));
  NVFP4KV_RETURN_IF_ERROR(check_well_formed(output, "output"));
  NVFP4KV_RETURN_IF_ERROR(check_options(options.recipe, options.sf_layout));
  NVFP4KV_CHECK_ARG(output.dtype == DType::kF32 || output.dtype == DType::kF16 ||
                        output.dtype == DType::kBF16,
                    "output: expected dtype f32, f16 or bf16, got ", output.describe());
  Dims d;
  NVFP4KV_RETURN_IF_ERROR(
      check_common(output, "output", data, scales, options.recipe, options.sf_layout, &d));
  NVFP4KV_RETURN_IF_ERROR(check_global_scale(global_scale, options.recipe, d, true, true));
  NVFP4KV_RETURN_IF_ERROR(check_same_device({{&output, "output"},
                                             {&data, "data"},
                                             {&scales, "scales"},
                                             {&global_scale, "global_scale"}}));
  return Status::ok_status();
}

Device device_of(const TensorView& v) { return v.device; }

}  // namespace

int recipe_block_elems(Recipe recipe) { return recipe == Recipe::kMxfp4 ? 32 : 16; }

bool recipe_has_global_scale(Recipe recipe) {
  return recipe == Recipe::kNvfp4 || recipe == Recipe::kNvfp4FourOverSix;
}

const char* recipe_name(Recipe recipe) {
  switch (recipe) {
    case Recipe::kNvfp4: return "nvfp4";
    case Recipe::kNvfp4FourOverSix: return "nvfp4_4over6";
    case Recipe::kMxfp4: return "mxfp4";
    case Recipe::kFp4Block16: return "fp4_block16";
  }
  return "?";
}

bool parse_recipe(std::string_view name, Recipe* recipe) {
  for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix, Recipe::kMxfp4, Recipe::kFp4Block16}) {
    if (name == recipe_name(r)) {
      *recipe = r;
      return true;
    }
  }
  return false;
}

const char* sf_layout_name(SfLayout layout) {
  switch (layout) {
    case SfLayout::kLinear: return "linear";
    case SfLayout::k128x4: return "128x4";
    case SfLayout::k8x4: return "8x4";
  }
  return "?";
}

bool parse_sf_layout(std::string_view name, SfLayout* layout) {
  for (SfLayout l : {SfLayout::kLinear, SfLayout::k128x4, SfLayout::k8x4}) {
    if (name == sf_layout_name(l)) {
      *layout = l;
      return true;
    }
  }
  return false;
}

const char* error_metric_name(ErrorMetric metric) {
  switch (metric) {
    case ErrorMetric::kMse: return "mse";
    case ErrorMetric::kMae: return "mae";
  }
  return "?";
}

bool parse_error_metric(std::string_view name, ErrorMetric* metric) {
  for (ErrorMetric m : {ErrorMetric::kMse, ErrorMetric::kMae}) {
    if (name == error_metric_name(m)) {
      *metric = m;
      return true;
    }
  }
  return false;
}

ScaleShape scale_shape(Recipe recipe, SfLayout layout, int64_t m, int64_t k) {
  const int index = layout == SfLayout::k128x4 ? 1 : layout == SfLayout::k8x4 ? 2 : 0;
  ScaleShape s;
  if (m < 0 || k < 0) return s;
  s.rows = fmt::sf_padded_rows(index, m);
  s.cols = fmt::sf_padded_cols(index, k / recipe_block_elems(recipe));
  return s;
}

Status can_run_quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                        const TensorView& global_scale, const QuantizeOptions& options) {
  NVFP4KV_RETURN_IF_ERROR(validate_quantize(input, data, scales, global_scale, options));
  if (device_of(input) == Device::kCuda && !NVFP4KV_HAVE_CUDA) {
    return Status(StatusCode::kUnsupported,
                  "input: CUDA tensors given, but nvfp4kv was built without CUDA");
  }
  return Status::ok_status();
}

Status quantize(const TensorView& input, const TensorView& data, const TensorView& scales,
                const TensorView& global_scale, const QuantizeOptions& options, Stream stream) {
  NVFP4KV_RETURN_IF_ERROR(can_run_quantize(input, data, scales, global_scale, options));
  if (device_of(input) == Device::kCpu) {
    return ref::quantize(input, data, scales, global_scale, options);
  }
#if NVFP4KV_HAVE_CUDA
  return cuda::launch_quantize(input, data, scales, global_scale, options, stream);
#else
  (void)stream;
  return Status(StatusCode::kUnsupported, "input: CUDA tensors given, but nvfp4kv was built without CUDA");
#endif
}

Status dequantize(const TensorView& data, const TensorView& scales, const TensorView& global_scale,
                  const TensorView& output, const DequantizeOptions& options, Stream stream) {
  NVFP4KV_RETURN_IF_ERROR(validate_dequantize(data, scales, global_scale, output, options));
  if (device_of(output) == Device::kCpu) {
    return ref::dequantize(data, scales, global_scale, output, options);
  }
#if NVFP4KV_HAVE_CUDA
  return cuda::launch_dequantize(data, scales, global_scale, output, options, stream);
#else
  (void)stream;
  return Status(StatusCode::kUnsupported,
                "output: CUDA tensors given, but nvfp4kv was built without CUDA");
#endif
}

}  // namespace nvfp4kv
