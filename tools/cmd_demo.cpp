// nvfp4kv CLI — `nvfp4kv demo`: runs the demo sections of demo.h and prints their tables
// (optionally also as JSON).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli_util.h"
#include "demo.h"

namespace nvfp4kv::cli {
namespace {

constexpr const char* kCmd = "demo";

constexpr const char* kHelp =
    "usage: nvfp4kv demo [options]\n"
    "\n"
    "Runs one decode-attention step (batch 16 x kv_len 8K, 32/8 heads, head_dim 128) over a\n"
    "paged bf16 / fp8 / nvfp4 / nvfp4_4over6 KV cache on the GPU (CPU reference at a small size\n"
    "without one): bytes per token, time, TB/s, % of copy bandwidth, error vs fp64. Then\n"
    "quantizes synthetic tensors (gaussian, Student-t nu=3, K-cache-like with outlier\n"
    "channels) with every recipe (nvfp4, nvfp4_4over6 with mse and mae, mxfp4, fp4_block16)\n"
    "on the CPU reference and prints relative L2 error, max error / amax, bits per value and\n"
    "how many blocks 4over6 mapped to 4.\n"
    "\n"
    "options:\n"
    "  --json FILE    also write the results as JSON to FILE\n"
    "  --rows N       rows of each synthetic tensor (default 1024)\n"
    "  --cols K       columns, a multiple of 32 (default 4096)\n"
    "  --seed S       seed of the synthetic data (default 2024)\n"
    "  -h, --help     this text\n"
    "\n"
    "exit codes: 0 ok, 1 an internal consistency check failed, 2 usage, 3 library or file error\n";

int run_demo(const std::vector<std::string>& args) {
  ParsedArgs a;
  std::string err;
  if (!parse_args(args, {"--json", "--rows", "--cols", "--seed"}, {}, &a, &err)) {
    return usage_error(kCmd, err);
  }
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (!a.positionals.empty()) return usage_error(kCmd, "unexpected argument '" + a.positionals[0] + "'");
  DemoOptions o;
  int64_t seed = static_cast<int64_t>(o.seed);
  if ((a.has("--rows") && (!parse_int64(a.get("--rows", ""), &o.rows) || o.rows <= 0)) ||
      (a.has("--cols") && (!parse_int64(a.get("--cols", ""), &o.cols) || o.cols <= 0 || o.cols % 32 != 0)) ||
      (a.has("--seed") && (!parse_int64(a.get("--seed", ""), &seed) || seed < 0))) {
    return usage_error(kCmd, "--rows must be > 0, --cols a positive multiple of 32, --seed >= 0");
  }
  o.seed = static_cast<uint64_t>(seed);

  nlohmann::json j = nlohmann::json::object();
  // Decode over an NVFP4 / FP8 / bf16 KV cache first (the headline), then the quantization table.
  const int rc_decode = demo_decode(o, stdout, &j);
  if (rc_decode == kExitError || rc_decode == kExitUsage) return rc_decode;
  std::fflush(stdout);
  std::printf("== quantization: CPU reference implementation (no GPU used)\n\n");
  std::fflush(stdout);
  j["device"] = "cpu reference";
  int rc = demo_quantize(o, stdout, &j);
  if (rc == kExitError || rc == kExitUsage) return rc;
  if (rc == kExitOk) rc = rc_decode;
  if (a.has("--json")) {
    const std::string path = a.get("--json", "");
    std::ofstream f(path);
    f << j.dump(2) << "\n";
    f.close();
    if (!f) return fail(kCmd, kExitError, path + ": cannot write the JSON results");
  }
  return rc;
}

}  // namespace

NVFP4KV_CLI_COMMAND("demo", "quantize synthetic tensors with every recipe and print the error table",
                    run_demo);

}  // namespace nvfp4kv::cli
