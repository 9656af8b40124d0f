// nvfp4kv CLI — helpers shared by the subcommands: option parsing, error reporting with exit
// codes, and the on-disk contract of a quantized safetensors file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cli.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/safetensors.h"
#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv::cli {

/// Result of parse_args(): options by name ("--recipe" → "nvfp4"), flags, positionals.
struct ParsedArgs {
  std::map<std::string, std::string> options;  ///< value options that were given
  std::vector<std::string> flags;              ///< flag options that were given
  std::vector<std::string> positionals;        ///< everything else, in order
  bool help = false;                           ///< --help or -h was given

  /// True if option `name` was given.
  bool has(const std::string& name) const { return options.count(name) != 0; }
  /// The value of option `name`, or `fallback`.
  std::string get(const std::string& name, const std::string& fallback) const;
  /// True if flag `name` was given.
  bool flag(const std::string& name) const;
};

/// Parses `--name value`, `--name=value` (for names in `value_options`), `--name` (for names in
/// `flag_options`), `--help`/`-h`, and positionals; `--` ends the options. Unknown options,
/// missing values and repeated options are errors (false, message in `*error`).
bool parse_args(const std::vector<std::string>& args, const std::vector<std::string>& value_options,
                const std::vector<std::string>& flag_options, ParsedArgs* out, std::string* error);

/// Prints "nvfp4kv <command>: <message>" to stderr and returns `exit_code`.
int fail(const char* command, int exit_code, const std::string& message);
/// Prints a usage error plus a hint to run --help, returns kExitUsage.
int usage_error(const char* command, const std::string& message);
/// Prints a failed Status and returns kExitError.
int status_error(const char* command, const Status& status);

/// Strict integer / float parsing of a whole string (false on trailing characters or overflow).
bool parse_int64(const std::string& s, int64_t* out);
bool parse_float(const std::string& s, float* out);

/// "[4, 8, 64]".
std::string shape_string(const std::vector<int64_t>& shape);
/// Parses "[4, 8, 64]" (as shape_string writes it); false if malformed.
bool parse_shape_string(const std::string& s, std::vector<int64_t>* shape);

/// Element `i` of a row-major float tensor (f32/f16/bf16/fp8_e4m3) widened exactly to float.
float element_as_float(const SafetensorsTensor& t, int64_t i);

/// Metadata keys of a quantized file written by `nvfp4kv quantize`.
namespace meta {
inline constexpr const char* kFormat = "nvfp4kv_format";  ///< value kFormatQuantized
inline constexpr const char* kFormatQuantized = "quantized";
inline constexpr const char* kRecipe = "recipe";                    ///< recipe_name()
inline constexpr const char* kSfLayout = "sf_layout";               ///< sf_layout_name()
inline constexpr const char* kShape = "shape";                      ///< original shape "[a, b, c]"
inline constexpr const char* kRows = "rows";                        ///< M (product of leading dims)
inline constexpr const char* kCols = "cols";                        ///< K (last dim)
inline constexpr const char* kMetric = "metric";                    ///< "mse" / "mae"
inline constexpr const char* kGlobalScaleMode = "global_scale_mode";  ///< see global_scale_mode_name
inline constexpr const char* kSourceDtype = "source_dtype";         ///< safetensors dtype of input
inline constexpr const char* kSourceTensor = "source_tensor";       ///< input tensor name
}  // namespace meta

/// "per-tensor", "per-token", "given" or "none" (recipes without a global scale).
const char* global_scale_mode_name(Recipe recipe, GlobalScaleMode mode);

/// A quantized file's tensors and metadata, validated against each other.
struct QuantizedFile {
  Recipe recipe = Recipe::kNvfp4;
  SfLayout sf_layout = SfLayout::kLinear;
  std::vector<int64_t> shape;            ///< original shape
  int64_t rows = 0, cols = 0;            ///< M, K
  std::string source_dtype;              ///< as stored (may be empty)
  const SafetensorsTensor* data = nullptr;          ///< U8 [M, K/2]
  const SafetensorsTensor* scales = nullptr;        ///< U8 (padded) [rows, cols] of the layout
  const SafetensorsTensor* global_scale = nullptr;  ///< F32 [1] or [M]; null without global scale
};

/// True if `file` says it was written by `nvfp4kv quantize` (metadata nvfp4kv_format).
bool looks_quantized(const SafetensorsFile& file);
/// Fills `q` from `file` (which must outlive it); kIoError naming the missing or inconsistent
/// tensor/metadata entry otherwise.
Status load_quantized(const SafetensorsFile& file, QuantizedFile* q);

}  // namespace nvfp4kv::cli

/// Returns `expr`'s Status from the enclosing function if it is not ok.
#define NVFP4KV_CLI_RETURN_IF_ERROR(expr)         \
  do {                                            \
    ::nvfp4kv::Status _cli_status = (expr);       \
    if (!_cli_status.ok()) return _cli_status;    \
  } while (0)
