// nvfp4kv — Status, dtype names and TensorView helpers.
#include <sstream>

#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kOutOfRange: return "out of range";
    case StatusCode::kResourceExhausted: return "resource exhausted";
    case StatusCode::kCudaError: return "CUDA error";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  return std::string(status_code_name(code_)) + ": " + message_;
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kFP8E4M3: return 1;
    case DType::kU8: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kFP8E4M3: return "fp8_e4m3";
    case DType::kU8: return "u8";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::kCuda ? "cuda" : "cpu"; }

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << shape[i];
  os << "] strides [";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << strides[i];
  os << "] on " << device_name(device);
  if (data == nullptr) os << " (null)";
  return os.str();
}

TensorView make_view(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.ndim = static_cast<int>(shape.size() < kMaxDims ? shape.size() : kMaxDims);
  int i = 0;
  for (int64_t s : shape) {
    if (i >= kMaxDims) break;
    v.shape[i++] = s;
  }
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.strides[d] = stride;
    stride *= v.shape[d];
  }
  return v;
}

TensorView make_strided_view(void* data, DType dtype, Device device,
                             std::initializer_list<int64_t> shape,
                             std::initializer_list<int64_t> strides) {
  TensorView v = make_view(data, dtype, device, shape);
  int i = 0;
  for (int64_t s : strides) {
    if (i >= v.ndim) break;
    v.strides[i++] = s;
  }
  return v;
}

}  // namespace nvfp4kv
