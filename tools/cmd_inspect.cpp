// nvfp4kv CLI — `nvfp4kv inspect`: lists a safetensors file's tensors and metadata; for a file
// written by `nvfp4kv quantize` also a table of its first blocks, decoded with the format math
// of src/common/format.h (display only; the numbers are SPEC.md's dequantization).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli.h"
#include "cli_util.h"
#include "common/format.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/safetensors.h"

namespace nvfp4kv::cli {
namespace {

constexpr const char* kCmd = "inspect";

constexpr const char* kHelp =
    "usage: nvfp4kv inspect [options] FILE.safetensors\n"
    "\n"
    "Prints the tensors (name, dtype, shape, bytes) and the __metadata__ of a safetensors file.\n"
    "For a file written by 'nvfp4kv quantize' it also prints a table of the first blocks in\n"
    "row-major order: row, block, the E2M1 codes (hex nibbles in element order; bit 3 is the\n"
    "sign), the scale byte and its value (E4M3 for the nvfp4 recipes, UE8M0 2^(e-127) for\n"
    "mxfp4/fp4_block16), the global decode scale and the decoded values.\n"
    "\n"
    "options:\n"
    "  --blocks N     number of blocks to tabulate (default 4; 0 for none)\n"
    "  --tensor NAME  list only this tensor and print its first values (16 per block asked)\n"
    "  -h, --help     this text\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 3 library or file error\n";

int layout_index(SfLayout l) { return l == SfLayout::k128x4 ? 1 : l == SfLayout::k8x4 ? 2 : 0; }

std::string format_value(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", static_cast<double>(v));
  return buf;
}

void print_tensor_table(const std::vector<const SafetensorsTensor*>& tensors) {
  std::size_t name_w = 4, dtype_w = 5, shape_w = 5;
  for (const auto* t : tensors) {
    name_w = std::max(name_w, t->name.size());
    dtype_w = std::max(dtype_w, std::strlen(safetensors_dtype_name(t->dtype)));
    shape_w = std::max(shape_w, shape_string(t->shape).size());
  }
  std::printf("  %-*s  %-*s  %-*s  %12s\n", static_cast<int>(name_w), "name", static_cast<int>(dtype_w),
              "dtype", static_cast<int>(shape_w), "shape", "bytes");
  for (const auto* t : tensors) {
    std::printf("  %-*s  %-*s  %-*s  %12zu\n", static_cast<int>(name_w), t->name.c_str(),
                static_cast<int>(dtype_w), safetensors_dtype_name(t->dtype),
                static_cast<int>(shape_w), shape_string(t->shape).c_str(), t->bytes.size());
  }
}

// Row-major table of the first `max_blocks` blocks of a quantized file.
void print_block_table(const QuantizedFile& q, int64_t max_blocks) {
  const int block = recipe_block_elems(q.recipe);
  const int64_t kv = q.cols / block;
  const int64_t total = q.rows * kv;
  const int64_t n = std::min(max_blocks, total);
  const bool nv = recipe_has_global_scale(q.recipe);
  std::printf("\nquantized: recipe %s, sf_layout %s, shape %s = %" PRId64 " rows x %" PRId64
              " cols, %" PRId64 " blocks of %d\n",
              recipe_name(q.recipe), sf_layout_name(q.sf_layout), shape_string(q.shape).c_str(),
              q.rows, q.cols, total, block);
  if (n <= 0) return;
  std::printf("first %" PRId64 " block(s): value = e2m1(code) * scale%s\n", n,
              nv ? " * global (SPEC.md 3.1)" : " (SPEC.md 3.3)");
  const std::size_t codes_w = static_cast<std::size_t>(block) * 2 - 1;
  std::printf("  %6s %6s  %-*s  %-16s %-12s %s\n", "row", "block", static_cast<int>(codes_w),
              "codes", "scale", nv ? "global" : "", "decoded");
  const uint8_t* data = q.data->bytes.data();
  const uint8_t* scales = q.scales->bytes.data();
  for (int64_t b = 0; b < n; ++b) {
    const int64_t row = b / kv, kb = b % kv;
    const uint8_t sf = scales[fmt::sf_offset(layout_index(q.sf_layout), row, kb, kv)];
    float gs = 1.0f;
    if (nv) {
      const int64_t gi = q.global_scale->shape[0] == 1 ? 0 : row;
      std::memcpy(&gs, q.global_scale->bytes.data() + gi * 4, 4);
    }
    std::string codes, decoded;
    for (int i = 0; i < block; ++i) {
      const int64_t e = row * q.cols + kb * block + i;  // element index; 2 per byte
      const uint32_t byte = data[e / 2];
      const uint32_t c = (e % 2 == 0) ? (byte & 0xFu) : (byte >> 4);
      char hex[4];
      std::snprintf(hex, sizeof hex, "%X", c);
      if (i) codes += ' ';
      codes += hex;
      const float v = nv ? fmt::nvfp4_dequant(c, fmt::e4m3_to_float(sf), gs) : fmt::mx_dequant(c, sf);
      if (i) decoded += ' ';
      decoded += format_value(v);
    }
    char scale_txt[40];
    if (nv) {
      std::snprintf(scale_txt, sizeof scale_txt, "0x%02X=%s", sf, format_value(fmt::e4m3_to_float(sf)).c_str());
    } else {
      std::snprintf(scale_txt, sizeof scale_txt, "0x%02X=2^%d", sf, static_cast<int>(sf) - 127);
    }
    std::printf("  %6" PRId64 " %6" PRId64 "  %-*s  %-16s %-12s %s\n", row, kb, static_cast<int>(codes_w),
                codes.c_str(), scale_txt, nv ? format_value(gs).c_str() : "", decoded.c_str());
  }
}

void print_values(const SafetensorsTensor& t, int64_t max_values) {
  const int64_t n = std::min(max_values, t.numel());
  std::printf("\nfirst %" PRId64 " of %" PRId64 " values of '%s' (row-major):\n", n, t.numel(),
              t.name.c_str());
  for (int64_t i = 0; i < n; ++i) {
    std::string v;
    if (t.dtype == DType::kI64) {
      int64_t x;
      std::memcpy(&x, t.bytes.data() + i * 8, 8);
      v = std::to_string(x);
    } else if (t.dtype == DType::kU8) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", t.bytes[static_cast<std::size_t>(i)]);
      v = hex;
    } else {
      v = format_value(element_as_float(t, i));
    }
    std::printf("%s%s", i % 16 == 0 ? "  " : " ", v.c_str());
    if (i % 16 == 15 || i + 1 == n) std::printf("\n");
  }
}

int run_inspect(const std::vector<std::string>& args) {
  ParsedArgs a;
  std::string err;
  if (!parse_args(args, {"--blocks", "--tensor"}, {}, &a, &err)) return usage_error(kCmd, err);
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (a.positionals.size() != 1) {
    return usage_error(kCmd, "expected one FILE.safetensors, got " +
                                 std::to_string(a.positionals.size()) + " positional argument(s)");
  }
  int64_t blocks = 4;
  if (a.has("--blocks") && (!parse_int64(a.get("--blocks", ""), &blocks) || blocks < 0)) {
    return usage_error(kCmd, "--blocks '" + a.get("--blocks", "") + "': expected an integer >= 0");
  }
  const std::string& path = a.positionals[0];
  SafetensorsFile f;
  if (Status s = read_safetensors(path, &f); !s.ok()) return status_error(kCmd, s);

  std::vector<const SafetensorsTensor*> shown;
  const SafetensorsTensor* only = nullptr;
  if (a.has("--tensor")) {
    only = f.find(a.get("--tensor", ""));
    if (only == nullptr) {
      return fail(kCmd, kExitError, path + " has no tensor '" + a.get("--tensor", "") + "'");
    }
    shown.push_back(only);
  } else {
    for (const auto& t : f.tensors) shown.push_back(&t);
  }
  std::size_t total_bytes = 0;
  for (const auto& t : f.tensors) total_bytes += t.bytes.size();
  std::printf("%s: %zu tensor(s), %zu data bytes\n", path.c_str(), f.tensors.size(), total_bytes);
  print_tensor_table(shown);
  if (!f.metadata.empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : f.metadata) std::printf("  %s = %s\n", k.c_str(), v.c_str());
  }
  if (only != nullptr) print_values(*only, blocks * 16);
  if (looks_quantized(f) && (only == nullptr || only->name == "data" || only->name == "scales" ||
                             only->name == "global_scale")) {
    QuantizedFile q;
    if (Status s = load_quantized(f, &q); !s.ok()) return fail(kCmd, kExitError, path + ": " + s.message());
    print_block_table(q, blocks);
  }
  return kExitOk;
}

}  // namespace

NVFP4KV_CLI_COMMAND("inspect", "list tensors and metadata; decode the first blocks of a quantized file",
                    run_inspect);

}  // namespace nvfp4kv::cli
