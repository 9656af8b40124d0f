// nvfp4kv — safetensors reader and writer (format described in include/nvfp4kv/safetensors.h).
//
// The validation rules follow the reference implementation (huggingface/safetensors,
// `SafeTensors::deserialize`): 8-byte little-endian header length, a 100 MB header limit, a
// JSON object header, dtype/shape/data_offsets per tensor, byte span == numel · element size,
// offsets inside the buffer. We additionally reject duplicate names (the JSON parser would
// otherwise silently keep the last one) and overlapping tensors, and we allow gaps.
// nlohmann::json throws on malformed input; every call is wrapped so that nothing escapes
// the API.
#include "nvfp4kv/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace nvfp4kv {
namespace {

using json = nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kSupportedDtypes = "F32, F16, BF16, F8_E4M3, U8, I32, I64";

Status io_error(const std::string& message) { return Status(StatusCode::kIoError, message); }
Status invalid(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, message);
}

const char* json_type_name(const json& j) { return j.type_name(); }

// Reads a non-negative JSON integer that fits in int64 (shapes and offsets).
bool json_to_nonneg_int64(const json& j, int64_t* out) {
  if (!j.is_number_integer()) return false;  // floats, strings, booleans are rejected
  if (j.is_number_unsigned()) {
    const uint64_t u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  const int64_t s = j.get<int64_t>();
  if (s < 0) return false;
  *out = s;
  return true;
}

// numel · element size with overflow detection (a corrupt shape must not wrap around).
bool checked_span_bytes(const std::vector<int64_t>& shape, std::size_t elem_bytes, int64_t* out) {
  int64_t n = static_cast<int64_t>(elem_bytes);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  *out = n;
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kFP8E4M3: return "F8_E4M3";
    case DType::kU8: return "U8";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

bool parse_safetensors_dtype(std::string_view name, DType* dtype) {
  static constexpr DType kAll[] = {DType::kF32, DType::kF16,  DType::kBF16, DType::kFP8E4M3,
                                   DType::kU8,  DType::kI32, DType::kI64};
  for (DType d : kAll) {
    if (name == safetensors_dtype_name(d)) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string SafetensorsTensor::describe() const {
  return std::string(safetensors_dtype_name(dtype)) + shape_string(shape);
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

SafetensorsTensor* SafetensorsFile::find(std::string_view name) {
  for (auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string SafetensorsFile::metadata_or(const std::string& key, const std::string& fallback) const {
  const auto it = metadata.find(key);
  return it == metadata.end() ? fallback : it->second;
}

Status parse_safetensors(const uint8_t* image, std::size_t image_bytes, SafetensorsFile* file) {
  if (file == nullptr) return invalid("parse_safetensors: `file` is null");
  *file = SafetensorsFile();
  if (image == nullptr && image_bytes != 0) return invalid("parse_safetensors: `image` is null");
  if (image_bytes < 8) {
    return io_error("file is " + std::to_string(image_bytes) +
                    " bytes, shorter than the 8-byte header length field");
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = header_bytes << 8 | image[i];  // little-endian
  if (header_bytes > kSafetensorsMaxHeaderBytes) {
    return io_error("header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                    std::to_string(kSafetensorsMaxHeaderBytes) + " bytes (corrupt length field?)");
  }
  if (header_bytes > image_bytes - 8) {
    return io_error("header length " + std::to_string(header_bytes) +
                    " exceeds the file size (" + std::to_string(image_bytes - 8) +
                    " bytes follow the length field)");
  }
  if (header_bytes == 0) return io_error("header length is 0; expected a JSON object");
  const char* header_begin = reinterpret_cast<const char*>(image + 8);
  const char* header_end = header_begin + header_bytes;
  const uint8_t* buffer = image + 8 + header_bytes;
  const uint64_t buffer_bytes = image_bytes - 8 - header_bytes;

  // nlohmann's parser stops at a NUL byte as if the input ended there, which would silently
  // ignore whatever follows; JSON never contains a raw NUL, so reject it up front.
  if (const void* nul = std::memchr(header_begin, 0, header_bytes)) {
    return io_error("header is not valid JSON: NUL byte at header offset " +
                    std::to_string(static_cast<const char*>(nul) - header_begin));
  }
  // Duplicate top-level keys: nlohmann keeps the last one silently, so watch the key events.
  std::set<std::string> seen_keys;
  std::string duplicate;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(header_begin, header_end, on_event, /*allow_exceptions=*/true);
  } catch (const std::exception& e) {
    return io_error(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) {
    return io_error(std::string("header is a JSON ") + json_type_name(header) +
                    ", expected an object");
  }
  if (!duplicate.empty()) return io_error("duplicate tensor name '" + duplicate + "' in header");

  struct Entry {
    SafetensorsTensor tensor;
    int64_t begin = 0;
    int64_t end = 0;
  };
  std::vector<Entry> entries;
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const json& value = it.value();
      if (key == kMetadataKey) {
        if (!value.is_object()) {
          return io_error(std::string("__metadata__ is a JSON ") + json_type_name(value) +
                          ", expected an object of strings");
        }
        for (auto m = value.begin(); m != value.end(); ++m) {
          if (!m.value().is_string()) {
            return io_error("__metadata__ value of '" + m.key() + "' is a JSON " +
                            json_type_name(m.value()) + ", expected a string");
          }
          file->metadata[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = "tensor '" + key + "': ";
      if (!value.is_object()) {
        return io_error(where + "entry is a JSON " + json_type_name(value) + ", expected an object");
      }
      Entry e;
      e.tensor.name = key;
      const auto dt = value.find("dtype");
      if (dt == value.end()) return io_error(where + "missing field 'dtype'");
      if (!dt->is_string()) {
        return io_error(where + "'dtype' is a JSON " + json_type_name(*dt) + ", expected a string");
      }
      const std::string dtype_str = dt->get<std::string>();
      if (!parse_safetensors_dtype(dtype_str, &e.tensor.dtype)) {
        return io_error(where + "unknown dtype '" + dtype_str + "' (supported: " +
                        kSupportedDtypes + ")");
      }
      const auto sh = value.find("shape");
      if (sh == value.end()) return io_error(where + "missing field 'shape'");
      if (!sh->is_array()) {
        return io_error(where + "'shape' is a JSON " + json_type_name(*sh) +
                        ", expected an array of non-negative integers");
      }
      for (const json& d : *sh) {
        int64_t extent = 0;
        if (!json_to_nonneg_int64(d, &extent)) {
          return io_error(where + "'shape' entry " + d.dump() + " is not a non-negative integer");
        }
        e.tensor.shape.push_back(extent);
      }
      const auto off = value.find("data_offsets");
      if (off == value.end()) return io_error(where + "missing field 'data_offsets'");
      if (!off->is_array() || off->size() != 2 || !json_to_nonneg_int64((*off)[0], &e.begin) ||
          !json_to_nonneg_int64((*off)[1], &e.end)) {
        return io_error(where + "'data_offsets' is " + off->dump() +
                        ", expected [begin, end] with non-negative integers");
      }
      if (e.end < e.begin) {
        return io_error(where + "data_offsets [" + std::to_string(e.begin) + ", " +
                        std::to_string(e.end) + "] are reversed (end < begin)");
      }
      if (static_cast<uint64_t>(e.end) > buffer_bytes) {
        return io_error(where + "data_offsets [" + std::to_string(e.begin) + ", " +
                        std::to_string(e.end) + "] exceed the data buffer of " +
                        std::to_string(buffer_bytes) + " bytes (truncated file or bad offsets)");
      }
      int64_t span = 0;
      const bool fits = checked_span_bytes(e.tensor.shape, dtype_size(e.tensor.dtype), &span);
      if (!fits || span != e.end - e.begin) {
        return io_error(where + dtype_str + " shape " + shape_string(e.tensor.shape) + " needs " +
                        (fits ? std::to_string(span) : std::string("more than 2^63")) +
                        " bytes but data_offsets [" + std::to_string(e.begin) + ", " +
                        std::to_string(e.end) + "] span " + std::to_string(e.end - e.begin));
      }
      entries.push_back(std::move(e));
    }
  } catch (const std::exception& e) {
    // Not expected (every access is type-checked first); keeps the no-throw promise.
    return io_error(std::string("malformed header: ") + e.what());
  }

  // Data-buffer order; empty tensors cannot overlap anything.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (prev != nullptr && e.begin < prev->end) {
      return io_error("tensors '" + prev->tensor.name + "' [" + std::to_string(prev->begin) + ", " +
                      std::to_string(prev->end) + ") and '" + e.tensor.name + "' [" +
                      std::to_string(e.begin) + ", " + std::to_string(e.end) +
                      ") overlap in the data buffer");
    }
    prev = &e;
  }
  file->tensors.reserve(entries.size());
  for (Entry& e : entries) {
    e.tensor.bytes.assign(buffer + e.begin, buffer + e.end);
    file->tensors.push_back(std::move(e.tensor));
  }
  return Status();
}

Status serialize_safetensors(const SafetensorsFile& file, std::vector<uint8_t>* image) {
  if (image == nullptr) return invalid("serialize_safetensors: `image` is null");
  image->clear();
  std::set<std::string> names;
  for (const auto& t : file.tensors) {
    if (t.name == kMetadataKey) return invalid("tensor name '__metadata__' is reserved");
    if (!names.insert(t.name).second) return invalid("duplicate tensor name '" + t.name + "'");
    int64_t span = 0;
    if (!checked_span_bytes(t.shape, dtype_size(t.dtype), &span)) {
      return invalid("tensor '" + t.name + "': shape " + shape_string(t.shape) +
                     " has a negative extent or overflows");
    }
    if (span != static_cast<int64_t>(t.bytes.size())) {
      return invalid("tensor '" + t.name + "': " + t.describe() + " needs " + std::to_string(span) +
                     " bytes, but `bytes` holds " + std::to_string(t.bytes.size()));
    }
  }
  // Largest elements first, then by name: with an 8-aligned buffer start every tensor then
  // starts at a multiple of its element size, so readers can map it in place.
  std::vector<std::size_t> order(file.tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& ta = file.tensors[a];
    const auto& tb = file.tensors[b];
    const std::size_t sa = dtype_size(ta.dtype), sb = dtype_size(tb.dtype);
    return sa != sb ? sa > sb : ta.name < tb.name;
  });
  std::string header_text;
  uint64_t buffer_bytes = 0;
  try {
    json header = json::object();
    if (!file.metadata.empty()) {
      json meta = json::object();
      for (const auto& [k, v] : file.metadata) meta[k] = v;
      header[kMetadataKey] = std::move(meta);
    }
    for (std::size_t i : order) {
      const auto& t = file.tensors[i];
      const uint64_t begin = buffer_bytes;
      buffer_bytes += t.bytes.size();
      header[t.name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                        {"shape", t.shape},
                        {"data_offsets", {begin, buffer_bytes}}};
    }
    header_text = header.dump();  // strict UTF-8 check: throws on invalid strings
  } catch (const std::exception& e) {
    return invalid(std::string("cannot encode the safetensors header: ") + e.what());
  }
  // Pad with spaces (JSON whitespace) so the data buffer starts 8-byte aligned.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t n = header_text.size();
  image->resize(8 + n + buffer_bytes);
  uint8_t* p = image->data();
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(p + 8, header_text.data(), n);
  uint8_t* dst = p + 8 + n;
  for (std::size_t i : order) {
    const auto& t = file.tensors[i];
    if (!t.bytes.empty()) std::memcpy(dst, t.bytes.data(), t.bytes.size());
    dst += t.bytes.size();
  }
  return Status();
}

Status read_safetensors(const std::string& path, SafetensorsFile* file) {
  if (file == nullptr) return invalid("read_safetensors: `file` is null");
  *file = SafetensorsFile();
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return io_error(path + ": cannot open for reading (" + std::strerror(errno) + ")");
  const std::streamoff size = in.tellg();
  if (size < 0) return io_error(path + ": cannot determine the file size");
  std::vector<uint8_t> image(static_cast<std::size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(image.data()), size)) {
    return io_error(path + ": read failed after " + std::to_string(in.gcount()) + " of " +
                    std::to_string(size) + " bytes");
  }
  const Status s = parse_safetensors(image.data(), image.size(), file);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  return Status();
}

Status write_safetensors(const std::string& path, const SafetensorsFile& file) {
  std::vector<uint8_t> image;
  const Status s = serialize_safetensors(file, &image);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return io_error(path + ": cannot open for writing (" + std::strerror(errno) + ")");
  out.write(reinterpret_cast<const char*>(image.data()), static_cast<std::streamsize>(image.size()));
  out.close();
  if (!out) return io_error(path + ": write of " + std::to_string(image.size()) + " bytes failed");
  return Status();
}

Status safetensors_cpu_view(SafetensorsTensor& tensor, TensorView* view) {
  if (view == nullptr) return invalid("safetensors_cpu_view: `view` is null");
  if (tensor.shape.size() > static_cast<std::size_t>(kMaxDims)) {
    return invalid("tensor '" + tensor.name + "' has rank " + std::to_string(tensor.shape.size()) +
                   ", a TensorView holds at most " + std::to_string(kMaxDims));
  }
  int64_t span = 0;
  if (!checked_span_bytes(tensor.shape, dtype_size(tensor.dtype), &span) ||
      span != static_cast<int64_t>(tensor.bytes.size())) {
    return invalid("tensor '" + tensor.name + "': " + tensor.describe() + " does not match its " +
                   std::to_string(tensor.bytes.size()) + " bytes");
  }
  TensorView v;
  v.data = tensor.bytes.empty() ? nullptr : tensor.bytes.data();
  v.dtype = tensor.dtype;
  v.device = Device::kCpu;
  v.ndim = static_cast<int>(tensor.shape.size());
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.shape[d] = tensor.shape[d];
    v.strides[d] = stride;
    stride *= tensor.shape[d];
  }
  *view = v;
  return Status();
}

Status safetensors_tensor_from_view(const std::string& name, const TensorView& view,
                                    SafetensorsTensor* tensor) {
  if (tensor == nullptr) return invalid("safetensors_tensor_from_view: `tensor` is null");
  if (view.device != Device::kCpu) {
    return invalid("safetensors_tensor_from_view: view " + view.describe() + " must be on the cpu");
  }
  if (view.ndim < 0 || view.ndim > kMaxDims) {
    return invalid("safetensors_tensor_from_view: rank " + std::to_string(view.ndim) +
                   " outside 0.." + std::to_string(kMaxDims));
  }
  for (int d = 0; d < view.ndim; ++d) {
    if (view.shape[d] < 0) return invalid("view " + view.describe() + " has a negative extent");
  }
  const int64_t n = view.numel();
  if (n > 0 && view.data == nullptr) return invalid("view " + view.describe() + " has null data");
  SafetensorsTensor t;
  t.name = name;
  t.dtype = view.dtype;
  t.shape.assign(view.shape, view.shape + view.ndim);
  const std::size_t esize = dtype_size(view.dtype);
  t.bytes.resize(static_cast<std::size_t>(n) * esize);
  if (n > 0) {
    // Walk the multi-index in row-major order, copying one element at a time.
    int64_t idx[kMaxDims] = {};
    const auto* src = static_cast<const uint8_t*>(view.data);
    for (int64_t i = 0; i < n; ++i) {
      int64_t off = 0;
      for (int d = 0; d < view.ndim; ++d) off += idx[d] * view.strides[d];
      std::memcpy(t.bytes.data() + static_cast<std::size_t>(i) * esize, src + off * static_cast<int64_t>(esize), esize);
      for (int d = view.ndim - 1; d >= 0; --d) {
        if (++idx[d] < view.shape[d]) break;
        idx[d] = 0;
      }
    }
  }
  *tensor = std::move(t);
  return Status();
}

}  // namespace nvfp4kv
