// nvfp4kv CLI — `nvfp4kv dequantize`: a file written by `nvfp4kv quantize` → tensor
// `dequantized` in the original shape (SPEC.md §3: x̂ = e2m1 · sf · S_dec, or e2m1 · 2^(e−127)).
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "cli_util.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/safetensors.h"

namespace nvfp4kv::cli {
namespace {

constexpr const char* kCmd = "dequantize";

constexpr const char* kHelp =
    "usage: nvfp4kv dequantize [options] IN.safetensors OUT.safetensors\n"
    "\n"
    "Reconstructs the values of a file written by 'nvfp4kv quantize' (tensors data, scales,\n"
    "global_scale and the recipe/sf_layout/shape metadata) and writes them as the tensor\n"
    "'dequantized' with the original shape. Values are exact products e2m1 * scale (* global\n"
    "scale), rounded once to the output type.\n"
    "\n"
    "options:\n"
    "  --dtype T      f32 (default) | f16 | bf16: output element type\n"
    "  --device D     cpu (default, the reference) | cuda (copies to the GPU and back)\n"
    "  -h, --help     this text\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 3 library or file error\n";

Status dequantize_on_cuda(const TensorView& data_v, const TensorView& scales_v,
                          const TensorView& gs_v, const TensorView& out_v,
                          std::vector<uint8_t>* out, const DequantizeOptions& opt) {
  const auto bytes_of = [](const TensorView& v) {
    return static_cast<std::size_t>(v.numel()) * dtype_size(v.dtype);
  };
  const auto on_device = [](TensorView v, void* p) {
    v.data = p;
    v.device = Device::kCuda;
    return v;
  };
  DeviceBuffer d_data, d_scales, d_gs, d_out;
  NVFP4KV_CLI_RETURN_IF_ERROR(d_data.allocate(bytes_of(data_v)));
  NVFP4KV_CLI_RETURN_IF_ERROR(d_scales.allocate(bytes_of(scales_v)));
  NVFP4KV_CLI_RETURN_IF_ERROR(d_out.allocate(out->size()));
  NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_device(d_data.data(), data_v.data, bytes_of(data_v)));
  NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_device(d_scales.data(), scales_v.data, bytes_of(scales_v)));
  TensorView gs_dev = gs_v;
  if (gs_v.data != nullptr) {
    NVFP4KV_CLI_RETURN_IF_ERROR(d_gs.allocate(bytes_of(gs_v)));
    NVFP4KV_CLI_RETURN_IF_ERROR(copy_to_device(d_gs.data(), gs_v.data, bytes_of(gs_v)));
    gs_dev = on_device(gs_v, d_gs.data());
  }
  NVFP4KV_CLI_RETURN_IF_ERROR(dequantize(on_device(data_v, d_data.data()),
                                         on_device(scales_v, d_scales.data()), gs_dev,
                                         on_device(out_v, d_out.data()), opt));
  NVFP4KV_CLI_RETURN_IF_ERROR(device_synchronize());
  return copy_to_host(out->data(), d_out.data(), out->size());
}

int run_dequantize(const std::vector<std::string>& args) {
  ParsedArgs a;
  std::string err;
  if (!parse_args(args, {"--dtype", "--device"}, {}, &a, &err)) return usage_error(kCmd, err);
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (a.positionals.size() != 2) {
    return usage_error(kCmd, "expected IN.safetensors and OUT.safetensors, got " +
                                 std::to_string(a.positionals.size()) + " positional argument(s)");
  }
  const std::string dtype_arg = a.get("--dtype", "f32");
  DType out_dtype;
  if (dtype_arg == "f32") {
    out_dtype = DType::kF32;
  } else if (dtype_arg == "f16") {
    out_dtype = DType::kF16;
  } else if (dtype_arg == "bf16") {
    out_dtype = DType::kBF16;
  } else {
    return usage_error(kCmd, "unknown --dtype '" + dtype_arg + "' (expected f32, f16 or bf16)");
  }
  const std::string device = a.get("--device", "cpu");
  if (device != "cpu" && device != "cuda") {
    return usage_error(kCmd, "unknown --device '" + device + "' (expected cpu or cuda)");
  }
  if (device == "cuda" && cuda_device_count() == 0) {
    return fail(kCmd, kExitError,
                std::string("--device cuda: no CUDA device available (") +
                    (built_with_cuda() ? cuda_device_description()
                                       : std::string("this nvfp4kv was built without CUDA")) +
                    ")");
  }
  const std::string& in_path = a.positionals[0];
  const std::string& out_path = a.positionals[1];
  SafetensorsFile in;
  if (Status s = read_safetensors(in_path, &in); !s.ok()) return status_error(kCmd, s);
  QuantizedFile q;
  if (Status s = load_quantized(in, &q); !s.ok()) {
    return fail(kCmd, kExitError, in_path + ": " + s.message());
  }
  // The views only read these tensors; TensorView has no const flavour.
  auto mut = [](const SafetensorsTensor* t) { return const_cast<SafetensorsTensor*>(t); };
  TensorView data_v, scales_v, gs_v;
  Status s = safetensors_cpu_view(*mut(q.data), &data_v);
  if (s.ok()) s = safetensors_cpu_view(*mut(q.scales), &scales_v);
  if (s.ok() && q.global_scale != nullptr) s = safetensors_cpu_view(*mut(q.global_scale), &gs_v);
  if (!s.ok()) return status_error(kCmd, s);

  SafetensorsTensor out_t{"dequantized", out_dtype, q.shape, {}};
  out_t.bytes.resize(static_cast<std::size_t>(q.rows * q.cols) * dtype_size(out_dtype));
  const TensorView out_v = make_view(out_t.bytes.empty() ? nullptr : out_t.bytes.data(), out_dtype,
                                     Device::kCpu, {q.rows, q.cols});
  DequantizeOptions opt;
  opt.recipe = q.recipe;
  opt.sf_layout = q.sf_layout;
  if (device == "cuda") {
    s = dequantize_on_cuda(data_v, scales_v, gs_v, out_v, &out_t.bytes, opt);
  } else {
    s = dequantize(data_v, scales_v, gs_v, out_v, opt);
  }
  if (!s.ok()) return status_error(kCmd, s);

  SafetensorsFile out;
  out.metadata = in.metadata;  // keeps recipe, layout, source dtype: where the values came from
  out.metadata.erase(meta::kFormat);  // the output is a plain tensor, not a quantized file
  out.metadata["dequantized_from"] = in_path;
  out.tensors.push_back(std::move(out_t));
  if (Status w = write_safetensors(out_path, out); !w.ok()) return status_error(kCmd, w);
  std::printf("%s: %s (%s, %s scales) -> dequantized %s%s: wrote %s\n", kCmd, in_path.c_str(),
              recipe_name(q.recipe), sf_layout_name(q.sf_layout),
              safetensors_dtype_name(out_dtype), shape_string(q.shape).c_str(), out_path.c_str());
  return kExitOk;
}

}  // namespace

NVFP4KV_CLI_COMMAND("dequantize", "reconstruct a tensor from a file written by 'quantize'",
                    run_dequantize);

}  // namespace nvfp4kv::cli
