// nvfp4kv CLI — `nvfp4kv quantize`: a tensor of a safetensors file → packed FP4 data, block
// scales and (nvfp4 recipes) global decode scale(s), written as a safetensors file whose
// metadata records everything `dequantize` and `inspect` need.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.h"
#include "cli_util.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/safetensors.h"

namespace nvfp4kv::cli {
namespace {

constexpr const char* kCmd = "quantize";

constexpr const char* kHelp =
    "usage: nvfp4kv quantize --recipe R [options] IN.safetensors[:TENSOR] OUT.safetensors\n"
    "\n"
    "Quantizes one tensor (F32, F16, BF16; F8_E4M3 for the nvfp4 recipes) to FP4 (E2M1) as\n"
    "SPEC.md prescribes, bit for bit. An N-D tensor is flattened to rows over its last\n"
    "dimension: [d0, ..., dn-1, K] -> M = d0*...*dn-1 rows of K elements (K a multiple of the\n"
    "block: 16, or 32 for mxfp4). TENSOR may be omitted when IN holds exactly one tensor.\n"
    "\n"
    "options:\n"
    "  --recipe R          nvfp4 | nvfp4_4over6 | mxfp4 | fp4_block16 (required)\n"
    "  --sf-layout L       linear (default) | 128x4 | 8x4: arrangement of the scale bytes\n"
    "  --global-scale G    nvfp4 recipes: auto (default: one scale from the tensor amax),\n"
    "                      per-token (one scale per row from the row amax), or a number: a\n"
    "                      decode scale (x = e2m1 * sf * G), finite and > 0\n"
    "  --metric M          nvfp4_4over6 block-scale choice: mse (default) | mae\n"
    "  --device D          cpu (default, the reference) | cuda (copies to the GPU and back)\n"
    "  -h, --help          this text\n"
    "\n"
    "OUT holds tensors 'data' (U8 [M, K/2], element 2j in the low nibble of byte j), 'scales'\n"
    "(U8 [M, K/block] for linear, the padded [rows, cols] for 128x4/8x4; E4M3 bytes for the\n"
    "nvfp4 recipes, UE8M0 for mxfp4/fp4_block16) and, for the nvfp4 recipes, 'global_scale'\n"
    "(F32 decode scale, [1] or [M] per token); __metadata__ records recipe, sf_layout, shape,\n"
    "rows, cols, metric, global_scale_mode, source_dtype and source_tensor.\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 3 library or file error\n";

// "in.safetensors:name" → (path, name); a path that exists as given is never split.
void split_input_spec(const std::string& spec, std::string* path, std::string* tensor) {
  *path = spec;
  tensor->clear();
  std::error_code ec;
  if (std::filesystem::exists(spec, ec)) return;
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos || colon == 0) return;
  *path = spec.substr(0, colon);
  *tensor = spec.substr(colon + 1);
}

std::string tensor_names(const SafetensorsFile& f) {
  std::string s;
  for (const auto& t : f.tensors) s += (s.empty() ? "" : ", ") + t.name;
  return s.empty() ? "none" : s;
}

// Runs quantize on the GPU: copies the input (and a given global scale) to the device, runs,
// copies the outputs back.
Status quantize_on_cuda(const TensorView& input, std::vector<uint8_t>* data,
                        std::vector<uint8_t>* scales, std::vector<float>* global_scale,
                        const TensorView& data_v, const TensorView& scales_v,
                        const TensorView& gs_v, const QuantizeOptions& opt) {
  const std::size_t in_bytes = static_cast<std::size_t>(input.numel()) * dtype_size(input.dtype);
  DeviceBuffer d_in, d_data, d_scales, d_gs;
  NVFP4KV_CLI_RETURN_IF_ERROR(d_in.allocate(in_bytes));
  NVFP4KV_CLI_RETURN_IF_ERROR(d_data.allocate(data->size()));
  NVFP4KV_CLI_RETURN_IF_ERROR(d_scales.allocate(scales->size()));
  NVFP4KV_CLI_RETURN_IF_ERROR(d_gs.allocate(global_scale->size() * sizeof(float)));
  NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_device(d_in.data(), input.data, in_bytes));
  if (opt.global_scale_mode == GlobalScaleMode::kGiven && !global_scale->empty()) {
    NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_device(d_gs.data(), global_scale->data(), sizeof(float)));
  }
  const auto on_device = [](TensorView v, void* p) {
    v.data = p;
    v.device = Device::kCuda;
    return v;
  };
  TensorView gs_dev = gs_v;
  if (gs_v.data != nullptr) gs_dev = on_device(gs_v, d_gs.data());
  NVFP4KV_CLI_RETURN_IF_ERROR(quantize(on_device(input, d_in.data()), on_device(data_v, d_data.data()),
                                       on_device(scales_v, d_scales.data()), gs_dev, opt));
  NVFP4KV_CLI_RETURN_IF_ERROR(device_synchronize());
  NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_host(data->data(), d_data.data(), data->size()));
  NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_host(scales->data(), d_scales.data(), scales->size()));
  if (!global_scale->empty()) {
    NVFP4KV_CLI_RETURN_IF_ERROR(
        copy_to_host(global_scale->data(), d_gs.data(), global_scale->size() * sizeof(float)));
  }
  return Status();
}

int run_quantize(const std::vector<std::string>& args) {
  ParsedArgs a;
  std::string err;
  if (!parse_args(args, {"--recipe", "--sf-layout", "--global-scale", "--metric", "--device"}, {},
                  &a, &err)) {
    return usage_error(kCmd, err);
  }
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (a.positionals.size() != 2) {
    return usage_error(kCmd, "expected IN.safetensors[:TENSOR] and OUT.safetensors, got " +
                                 std::to_string(a.positionals.size()) + " positional argument(s)");
  }
  if (!a.has("--recipe")) return usage_error(kCmd, "--recipe is required (nvfp4, nvfp4_4over6, mxfp4, fp4_block16)");
  QuantizeOptions opt;
  if (!parse_recipe(a.get("--recipe", ""), &opt.recipe)) {
    return usage_error(kCmd, "unknown --recipe '" + a.get("--recipe", "") +
                                 "' (expected nvfp4, nvfp4_4over6, mxfp4 or fp4_block16)");
  }
  if (!parse_sf_layout(a.get("--sf-layout", "linear"), &opt.sf_layout)) {
    return usage_error(kCmd, "unknown --sf-layout '" + a.get("--sf-layout", "") +
                                 "' (expected linear, 128x4 or 8x4)");
  }
  if (!parse_error_metric(a.get("--metric", "mse"), &opt.metric)) {
    return usage_error(kCmd, "unknown --metric '" + a.get("--metric", "") + "' (expected mse or mae)");
  }
  const std::string device = a.get("--device", "cpu");
  if (device != "cpu" && device != "cuda") {
    return usage_error(kCmd, "unknown --device '" + device + "' (expected cpu or cuda)");
  }
  const bool has_global = recipe_has_global_scale(opt.recipe);
  const std::string gs_arg = a.get("--global-scale", "auto");
  float given_scale = 0.0f;
  if (gs_arg == "auto") {
    opt.global_scale_mode = GlobalScaleMode::kPerTensor;
  } else if (gs_arg == "per-token") {
    opt.global_scale_mode = GlobalScaleMode::kPerRow;
  } else if (parse_float(gs_arg, &given_scale)) {
    if (!std::isfinite(given_scale) || !(given_scale > 0.0f)) {
      return usage_error(kCmd, "--global-scale " + gs_arg + ": a decode scale must be finite and > 0");
    }
    opt.global_scale_mode = GlobalScaleMode::kGiven;
  } else {
    return usage_error(kCmd, "--global-scale '" + gs_arg +
                                 "': expected auto, per-token or a decode scale (a number > 0)");
  }
  if (!has_global && gs_arg != "auto") {
    return usage_error(kCmd, std::string("--global-scale ") + gs_arg + ": recipe " +
                                 recipe_name(opt.recipe) + " has no global scale");
  }
  if (device == "cuda" && cuda_device_count() == 0) {
    return fail(kCmd, kExitError,
                std::string("--device cuda: no CUDA device available (") +
                    (built_with_cuda() ? cuda_device_description()
                                       : std::string("this nvfp4kv was built without CUDA")) +
                    ")");
  }

  std::string in_path, tensor_name;
  split_input_spec(a.positionals[0], &in_path, &tensor_name);
  const std::string& out_path = a.positionals[1];
  SafetensorsFile in;
  if (Status s = read_safetensors(in_path, &in); !s.ok()) return status_error(kCmd, s);
  SafetensorsTensor* src = nullptr;
  if (tensor_name.empty()) {
    if (in.tensors.size() != 1) {
      return usage_error(kCmd, in_path + " holds " + std::to_string(in.tensors.size()) +
                                   " tensors (" + tensor_names(in) +
                                   "); name one as IN.safetensors:TENSOR");
    }
    src = &in.tensors[0];
  } else {
    src = in.find(tensor_name);
    if (src == nullptr) {
      return fail(kCmd, kExitError, in_path + " has no tensor '" + tensor_name + "' (it holds " +
                                        tensor_names(in) + ")");
    }
  }
  if (src->dtype != DType::kF32 && src->dtype != DType::kF16 && src->dtype != DType::kBF16 &&
      src->dtype != DType::kFP8E4M3) {
    return fail(kCmd, kExitError, "tensor '" + src->name + "' is " + src->describe() +
                                      "; quantize takes F32, F16, BF16 (or F8_E4M3 for nvfp4)");
  }
  if (src->shape.empty()) {
    return fail(kCmd, kExitError, "tensor '" + src->name + "' is 0-d; quantize needs at least one dimension");
  }
  // Flatten [d0, ..., K] to [M, K]: rows are the contiguous last dimension (SPEC.md §3).
  const int64_t cols = src->shape.back();
  const int64_t rows = cols == 0 ? 0 : src->numel() / cols;
  TensorView input = make_view(src->bytes.empty() ? nullptr : src->bytes.data(), src->dtype,
                               Device::kCpu, {rows, cols});
  const int block = recipe_block_elems(opt.recipe);
  if (cols <= 0 || cols % block != 0) {
    return fail(kCmd, kExitError, "tensor '" + src->name + "' " + src->describe() +
                                      ": the last dimension K = " + std::to_string(cols) +
                                      " must be a positive multiple of the " +
                                      recipe_name(opt.recipe) + " block (" + std::to_string(block) + ")");
  }

  const ScaleShape ss = scale_shape(opt.recipe, opt.sf_layout, rows, cols);
  std::vector<uint8_t> data(static_cast<std::size_t>(rows * packed_row_bytes(cols)));
  std::vector<uint8_t> scales(static_cast<std::size_t>(ss.bytes()));
  std::vector<float> global_scale;
  TensorView gs_v;  // empty view: no global scale
  if (has_global) {
    const int64_t n = opt.global_scale_mode == GlobalScaleMode::kPerRow ? rows : 1;
    global_scale.assign(static_cast<std::size_t>(n), given_scale);
    gs_v = make_view(global_scale.data(), DType::kF32, Device::kCpu, {n});
  }
  const TensorView data_v = make_view(data.data(), DType::kU8, Device::kCpu, {rows, cols / 2});
  const TensorView scales_v = make_view(scales.data(), DType::kU8, Device::kCpu, {ss.rows, ss.cols});
  Status s;
  if (device == "cuda") {
    s = quantize_on_cuda(input, &data, &scales, &global_scale, data_v, scales_v, gs_v, opt);
  } else {
    s = quantize(input, data_v, scales_v, gs_v, opt);
  }
  if (!s.ok()) return status_error(kCmd, s);

  SafetensorsFile out;
  out.metadata[meta::kFormat] = meta::kFormatQuantized;
  out.metadata[meta::kRecipe] = recipe_name(opt.recipe);
  out.metadata[meta::kSfLayout] = sf_layout_name(opt.sf_layout);
  out.metadata[meta::kShape] = shape_string(src->shape);
  out.metadata[meta::kRows] = std::to_string(rows);
  out.metadata[meta::kCols] = std::to_string(cols);
  out.metadata[meta::kMetric] = error_metric_name(opt.metric);
  out.metadata[meta::kGlobalScaleMode] = global_scale_mode_name(opt.recipe, opt.global_scale_mode);
  out.metadata[meta::kSourceDtype] = safetensors_dtype_name(src->dtype);
  out.metadata[meta::kSourceTensor] = src->name;
  out.tensors.push_back({"data", DType::kU8, {rows, cols / 2}, std::move(data)});
  out.tensors.push_back({"scales", DType::kU8, {ss.rows, ss.cols}, std::move(scales)});
  if (has_global) {
    SafetensorsTensor g{"global_scale", DType::kF32, {static_cast<int64_t>(global_scale.size())}, {}};
    g.bytes.resize(global_scale.size() * sizeof(float));
    std::memcpy(g.bytes.data(), global_scale.data(), g.bytes.size());
    out.tensors.push_back(std::move(g));
  }
  if (Status w = write_safetensors(out_path, out); !w.ok()) return status_error(kCmd, w);
  std::printf("%s: %s %s -> %s, %s scales, global scale %s, %lld x %lld on %s: wrote %s\n", kCmd,
              src->name.c_str(), src->describe().c_str(), recipe_name(opt.recipe),
              sf_layout_name(opt.sf_layout), global_scale_mode_name(opt.recipe, opt.global_scale_mode),
              static_cast<long long>(rows), static_cast<long long>(cols), device.c_str(),
              out_path.c_str());
  return kExitOk;
}

}  // namespace

NVFP4KV_CLI_COMMAND("quantize", "quantize a safetensors tensor to NVFP4/MXFP4 (data, scales, global scale)",
                    run_quantize);

}  // namespace nvfp4kv::cli
