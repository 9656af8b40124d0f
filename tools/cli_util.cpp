// nvfp4kv CLI — shared helpers (see cli_util.h).
#include "cli_util.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/format.h"

namespace nvfp4kv::cli {

std::string ParsedArgs::get(const std::string& name, const std::string& fallback) const {
  const auto it = options.find(name);
  return it == options.end() ? fallback : it->second;
}

bool ParsedArgs::flag(const std::string& name) const {
  return std::find(flags.begin(), flags.end(), name) != flags.end();
}

bool parse_args(const std::vector<std::string>& args, const std::vector<std::string>& value_options,
                const std::vector<std::string>& flag_options, ParsedArgs* out, std::string* error) {
  *out = ParsedArgs();
  const auto is_in = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  bool options_done = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_done || a.size() < 2 || a[0] != '-') {
      out->positionals.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      out->help = true;
      continue;
    }
    std::string name = a, value;
    bool inline_value = false;
    if (const auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      inline_value = true;
    }
    if (is_in(flag_options, name)) {
      if (inline_value) {
        *error = "option " + name + " takes no value";
        return false;
      }
      if (out->flag(name)) {
        *error = "option " + name + " given twice";
        return false;
      }
      out->flags.push_back(name);
      continue;
    }
    if (!is_in(value_options, name)) {
      *error = "unknown option '" + name + "'";
      return false;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        *error = "option " + name + " needs a value";
        return false;
      }
      value = args[++i];
    }
    if (out->has(name)) {
      *error = "option " + name + " given twice";
      return false;
    }
    out->options[name] = value;
  }
  return true;
}

int fail(const char* command, int exit_code, const std::string& message) {
  std::fprintf(stderr, "nvfp4kv %s: %s\n", command, message.c_str());
  return exit_code;
}

int usage_error(const char* command, const std::string& message) {
  std::fprintf(stderr, "nvfp4kv %s: %s\n(run 'nvfp4kv %s --help' for usage)\n", command,
               message.c_str(), command);
  return kExitUsage;
}

int status_error(const char* command, const Status& status) {
  return fail(command, kExitError, status.to_string());
}

bool parse_int64(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

bool parse_float(const std::string& s, float* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const float v = std::strtof(s.c_str(), &end);
  if (errno == ERANGE && !std::isfinite(v)) return false;
  if (end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool parse_shape_string(const std::string& s, std::vector<int64_t>* shape) {
  shape->clear();
  std::string t;
  for (char c : s) {
    if (c != ' ') t += c;
  }
  if (t.size() < 2 || t.front() != '[' || t.back() != ']') return false;
  t = t.substr(1, t.size() - 2);
  if (t.empty()) return true;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = t.find(',', pos);
    const std::string item = t.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    int64_t v = 0;
    if (!parse_int64(item, &v) || v < 0) return false;
    shape->push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return true;
}

float element_as_float(const SafetensorsTensor& t, int64_t i) {
  const uint8_t* p = t.bytes.data() + i * static_cast<int64_t>(dtype_size(t.dtype));
  switch (t.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kF16: return fmt::f16_bits_to_float(static_cast<uint16_t>(p[0] | p[1] << 8));
    case DType::kBF16: return fmt::bf16_bits_to_float(static_cast<uint16_t>(p[0] | p[1] << 8));
    case DType::kFP8E4M3: return fmt::e4m3_to_float(p[0]);
    case DType::kU8: return static_cast<float>(p[0]);
    case DType::kI32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return static_cast<float>(v);
    }
    case DType::kI64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<float>(v);
    }
  }
  return 0.0f;
}

const char* global_scale_mode_name(Recipe recipe, GlobalScaleMode mode) {
  if (!recipe_has_global_scale(recipe)) return "none";
  switch (mode) {
    case GlobalScaleMode::kPerTensor: return "per-tensor";
    case GlobalScaleMode::kPerRow: return "per-token";
    case GlobalScaleMode::kGiven: return "given";
  }
  return "?";
}

bool looks_quantized(const SafetensorsFile& file) {
  return file.metadata_or(meta::kFormat) == meta::kFormatQuantized;
}

namespace {
Status bad(const std::string& message) { return Status(StatusCode::kIoError, message); }

Status expect_tensor(const SafetensorsFile& file, const char* name, DType dtype,
                     const std::vector<int64_t>& shape, const SafetensorsTensor** out) {
  const SafetensorsTensor* t = file.find(name);
  if (t == nullptr) return bad(std::string("quantized file has no tensor '") + name + "'");
  if (t->dtype != dtype || t->shape != shape) {
    return bad(std::string("tensor '") + name + "' is " + t->describe() + ", expected " +
               safetensors_dtype_name(dtype) + shape_string(shape));
  }
  *out = t;
  return Status();
}
}  // namespace

Status load_quantized(const SafetensorsFile& file, QuantizedFile* q) {
  *q = QuantizedFile();
  const auto need = [&](const char* key, std::string* value) -> Status {
    const auto it = file.metadata.find(key);
    if (it == file.metadata.end()) {
      return bad(std::string("metadata has no '") + key +
                 "' entry (was the file written by 'nvfp4kv quantize'?)");
    }
    *value = it->second;
    return Status();
  };
  std::string recipe, layout, shape, rows, cols;
  NVFP4KV_CLI_RETURN_IF_ERROR(need(meta::kRecipe, &recipe));
  NVFP4KV_CLI_RETURN_IF_ERROR(need(meta::kSfLayout, &layout));
  NVFP4KV_CLI_RETURN_IF_ERROR(need(meta::kShape, &shape));
  NVFP4KV_CLI_RETURN_IF_ERROR(need(meta::kRows, &rows));
  NVFP4KV_CLI_RETURN_IF_ERROR(need(meta::kCols, &cols));
  if (!parse_recipe(recipe, &q->recipe)) return bad("metadata recipe '" + recipe + "' is unknown");
  if (!parse_sf_layout(layout, &q->sf_layout)) {
    return bad("metadata sf_layout '" + layout + "' is unknown");
  }
  if (!parse_shape_string(shape, &q->shape) || q->shape.empty()) {
    return bad("metadata shape '" + shape + "' is not a list like [4, 64]");
  }
  if (!parse_int64(rows, &q->rows) || !parse_int64(cols, &q->cols) || q->rows < 0 || q->cols <= 0) {
    return bad("metadata rows '" + rows + "' / cols '" + cols + "' are not valid extents");
  }
  int64_t numel = 1;
  for (int64_t d : q->shape) {
    if (__builtin_mul_overflow(numel, d, &numel)) return bad("metadata shape " + shape + " overflows");
  }
  if (q->shape.back() != q->cols || numel != q->rows * q->cols) {
    return bad("metadata shape " + shape + " does not flatten to rows " + rows + " x cols " + cols);
  }
  const int block = recipe_block_elems(q->recipe);
  if (q->cols % block != 0) {
    return bad("metadata cols " + cols + " is not a multiple of the " + recipe + " block (" +
               std::to_string(block) + ")");
  }
  q->source_dtype = file.metadata_or(meta::kSourceDtype);
  NVFP4KV_CLI_RETURN_IF_ERROR(expect_tensor(file, "data", DType::kU8, {q->rows, q->cols / 2}, &q->data));
  const ScaleShape ss = scale_shape(q->recipe, q->sf_layout, q->rows, q->cols);
  NVFP4KV_CLI_RETURN_IF_ERROR(expect_tensor(file, "scales", DType::kU8, {ss.rows, ss.cols}, &q->scales));
  if (recipe_has_global_scale(q->recipe)) {
    const SafetensorsTensor* g = file.find("global_scale");
    if (g == nullptr) return bad("quantized file has no tensor 'global_scale' (recipe " + recipe + ")");
    const bool ok_shape = g->shape == std::vector<int64_t>{1} ||
                          g->shape == std::vector<int64_t>{q->rows};
    if (g->dtype != DType::kF32 || !ok_shape) {
      return bad("tensor 'global_scale' is " + g->describe() + ", expected F32[1] or F32[" + rows + "]");
    }
    q->global_scale = g;
  }
  return Status();
}

}  // namespace nvfp4kv::cli
