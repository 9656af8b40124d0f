// nvfp4kv — element types, devices and non-owning tensor views. Plain C++, no CUDA headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

/// Opaque CUDA stream handle (the same type as `cudaStream_t`), so public headers need no CUDA.
struct CUstream_st;

namespace nvfp4kv {

/// A CUDA stream; nullptr is the legacy default stream. Ignored by CPU tensors.
using Stream = CUstream_st*;

/// Element type of a tensor.
enum class DType {
  kF32,      ///< IEEE binary32
  kF16,      ///< IEEE binary16
  kBF16,     ///< bfloat16
  kFP8E4M3,  ///< OCP FP8 E4M3 ("fn": no infinities, 0x7F/0xFF NaN, max 448)
  kU8,       ///< raw bytes (packed FP4 pairs, scale bytes)
  kI32,      ///< int32 (block tables, sequence lengths)
  kI64,      ///< int64 (slot mappings)
};

/// Bytes per element of `dtype`.
std::size_t dtype_size(DType dtype);
/// Short name of `dtype`: "f32", "f16", "bf16", "fp8_e4m3", "u8", "i32", "i64".
const char* dtype_name(DType dtype);

/// Where a tensor's memory lives.
enum class Device {
  kCpu,   ///< host memory
  kCuda,  ///< CUDA device memory (the current device)
};

/// Short name of `device`: "cpu" or "cuda".
const char* device_name(Device device);

/// Maximum rank of a TensorView.
inline constexpr int kMaxDims = 6;

/// A non-owning view of a strided tensor: pointer, element type, device, shape and strides
/// (both in elements, outermost first). Strides may be any non-negative values; most
/// operations require the last dimension to be contiguous (stride 1).
struct TensorView {
  void* data = nullptr;           ///< first element; not owned
  DType dtype = DType::kU8;       ///< element type
  Device device = Device::kCpu;   ///< where `data` points
  int ndim = 0;                   ///< rank, 0..kMaxDims
  int64_t shape[kMaxDims] = {};   ///< extent of each dimension
  int64_t strides[kMaxDims] = {}; ///< distance in elements between neighbours of each dimension

  /// Number of elements (product of the shape; 1 for rank 0).
  int64_t numel() const;
  /// True if the strides describe a dense row-major tensor.
  bool is_contiguous() const;
  /// "bf16[4, 128] strides [256, 1] on cuda" — used in error messages.
  std::string describe() const;
};

/// A contiguous (row-major) view of `data` with the given shape.
TensorView make_view(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape);
/// A view of `data` with explicit shape and strides (in elements). `shape.size()` must equal
/// `strides.size()` and be at most kMaxDims; extra entries are ignored.
TensorView make_strided_view(void* data, DType dtype, Device device,
                             std::initializer_list<int64_t> shape,
                             std::initializer_list<int64_t> strides);

}  // namespace nvfp4kv
