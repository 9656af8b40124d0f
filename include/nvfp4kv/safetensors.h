// nvfp4kv — reading and writing safetensors files (the format of Hugging Face's `safetensors`).
//
// File layout: 8-byte little-endian header length N, then N bytes of UTF-8 JSON
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<string value>", ...}}
// then the data buffer; offsets are bytes relative to the start of the buffer, row-major,
// little-endian. Plain C++; the whole file is held in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv {

/// safetensors dtype string of `dtype`: "F32", "F16", "BF16", "F8_E4M3", "U8", "I32", "I64".
const char* safetensors_dtype_name(DType dtype);
/// Parses a safetensors dtype string (one of the names above); false if unknown or unsupported.
bool parse_safetensors_dtype(std::string_view name, DType* dtype);

/// One tensor of a safetensors file: a name, an element type, a shape and its row-major bytes.
struct SafetensorsTensor {
  std::string name;              ///< unique within a file; not "__metadata__"
  DType dtype = DType::kU8;      ///< element type
  std::vector<int64_t> shape;    ///< extents, outermost first; empty for a 0-d (scalar) tensor
  std::vector<uint8_t> bytes;    ///< numel() · dtype_size(dtype) bytes, row-major, little-endian

  /// Number of elements (product of the shape; 1 for a 0-d tensor, 0 if any extent is 0).
  int64_t numel() const;
  /// Expected size of `bytes`: numel() · dtype_size(dtype).
  int64_t expected_bytes() const { return numel() * static_cast<int64_t>(dtype_size(dtype)); }
  /// "BF16[4, 128]" — used in messages.
  std::string describe() const;
};

/// The in-memory contents of a safetensors file.
struct SafetensorsFile {
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" object (string → string)
  std::vector<SafetensorsTensor> tensors;       ///< in the order of the file's data buffer

  /// The tensor called `name`, or nullptr.
  const SafetensorsTensor* find(std::string_view name) const;
  /// The tensor called `name`, or nullptr.
  SafetensorsTensor* find(std::string_view name);
  /// The metadata value of `key`, or `fallback` when absent.
  std::string metadata_or(const std::string& key, const std::string& fallback = "") const;
};

/// Largest header accepted by the reader (the reference implementation's limit, 100 MB), so a
/// corrupt length field cannot make the reader allocate absurd amounts of memory.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

/// Parses a complete safetensors image held in memory. Every inconsistency (short buffer,
/// header length beyond the buffer or above kSafetensorsMaxHeaderBytes, invalid JSON, a header
/// that is not an object, missing or ill-typed fields, unknown dtype, shape × dtype size not
/// equal to the offsets' span, reversed or out-of-range offsets, overlapping tensors, duplicate
/// names, non-string metadata) returns kIoError with a message naming the tensor and field.
/// Gaps between tensors are allowed; the tensors are returned in data-buffer order.
Status parse_safetensors(const uint8_t* image, std::size_t image_bytes, SafetensorsFile* file);

/// Serialises `file`: tensors are packed in the data buffer ordered by element size (largest
/// first) and then name, so that every tensor starts at a multiple of its element size; the
/// header is padded with spaces to a multiple of 8 bytes (as the reference implementation
/// does). kInvalidArgument if a tensor's byte count does not match its shape and dtype, a
/// name is duplicated or reserved, an extent is negative, or a string is not valid UTF-8.
Status serialize_safetensors(const SafetensorsFile& file, std::vector<uint8_t>* image);

/// Reads and parses the file at `path` (kIoError if it cannot be read or is malformed; the
/// message starts with the path).
Status read_safetensors(const std::string& path, SafetensorsFile* file);

/// Serialises `file` and writes it to `path`, replacing any existing file (kIoError if the file
/// cannot be written, kInvalidArgument as serialize_safetensors()).
Status write_safetensors(const std::string& path, const SafetensorsFile& file);

/// A contiguous CPU view of `tensor`'s bytes (the view aliases `tensor.bytes`, which must
/// outlive it and not be resized). kInvalidArgument if the rank exceeds kMaxDims or the byte
/// count does not match the shape.
Status safetensors_cpu_view(SafetensorsTensor& tensor, TensorView* view);

/// Copies a CPU view (any strides) into a new tensor called `name` with the view's dtype and
/// shape, stored row-major. kInvalidArgument for a device view or a null pointer with
/// non-zero elements.
Status safetensors_tensor_from_view(const std::string& name, const TensorView& view,
                                    SafetensorsTensor* tensor);

}  // namespace nvfp4kv
