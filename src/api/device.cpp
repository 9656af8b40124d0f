// nvfp4kv — device-memory helpers (cudart when built with CUDA, clear errors otherwise).
#include "nvfp4kv/device.h"

#include <sstream>

#if NVFP4KV_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace nvfp4kv {

#if NVFP4KV_HAVE_CUDA
namespace {
Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(err));
}
}  // namespace

bool built_with_cuda() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string cuda_device_description() {
  if (cuda_device_count() == 0) return "no CUDA device visible";
  int dev = 0;
  cudaDeviceProp p{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    return "CUDA device properties unavailable";
  }
  std::ostringstream os;
  os << p.name << ", sm_" << p.major << p.minor << ", " << p.multiProcessorCount << " SMs, "
     << (p.l2CacheSize >> 20) << " MiB L2, " << (p.totalGlobalMem >> 30) << " GiB";
  return os.str();
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) (void)cudaFree(ptr_);
}

Status DeviceBuffer::allocate(std::size_t bytes) {
  if (ptr_ != nullptr) (void)cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  if (bytes == 0) return Status();
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err != cudaSuccess) {
    ptr_ = nullptr;
    (void)cudaGetLastError();
    return Status(StatusCode::kResourceExhausted,
                  "cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(err));
  }
  bytes_ = bytes;
  return Status();
}

Status copy_to_device(void* dst, const void* src, std::size_t bytes) {
  return cuda_status(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy host->device");
}
Status copy_to_host(void* dst, const void* src, std::size_t bytes) {
  return cuda_status(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device->host");
}
Status fill_device(void* dst, int value, std::size_t bytes) {
  return cuda_status(cudaMemset(dst, value, bytes), "cudaMemset");
}
Status device_synchronize() { return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

#else  // !NVFP4KV_HAVE_CUDA

namespace {
Status no_cuda() {
  return Status(StatusCode::kUnsupported, "nvfp4kv was built without CUDA (nvcc not found at configure time)");
}
}  // namespace

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_description() { return "built without CUDA"; }
DeviceBuffer::~DeviceBuffer() = default;
Status DeviceBuffer::allocate(std::size_t bytes) { return bytes == 0 ? Status() : no_cuda(); }
Status copy_to_device(void*, const void*, std::size_t) { return no_cuda(); }
Status copy_to_host(void*, const void*, std::size_t) { return no_cuda(); }
Status fill_device(void*, int, std::size_t) { return no_cuda(); }
Status device_synchronize() { return no_cuda(); }

#endif

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
  other.ptr_ = nullptr;
  other.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    DeviceBuffer tmp(std::move(*this));
    ptr_ = other.ptr_;
    bytes_ = other.bytes_;
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

}  // namespace nvfp4kv
