// nvfp4kv — minimal device-memory helpers so that tools and tests need no CUDA headers.
#pragma once

#include <cstddef>
#include <string>

#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"

namespace nvfp4kv {

/// True if this build contains the CUDA kernels.
bool built_with_cuda();
/// Number of usable CUDA devices (0 without CUDA or without a GPU); never fails.
int cuda_device_count();
/// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 50 MiB L2" for the current device, or why none.
std::string cuda_device_description();

/// Owning buffer of device memory (cudaMalloc/cudaFree). Move-only. Empty when size is 0.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  /// Allocates `bytes` of device memory (previous contents are freed).
  Status allocate(std::size_t bytes);
  /// Device pointer, or nullptr when empty.
  void* data() const { return ptr_; }
  /// Size in bytes.
  std::size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

/// Copies `bytes` from host to device (synchronous).
Status copy_to_device(void* dst_device, const void* src_host, std::size_t bytes);
/// Copies `bytes` from device to host (synchronous).
Status copy_to_host(void* dst_host, const void* src_device, std::size_t bytes);
/// Fills `bytes` of device memory with `value` (synchronous).
Status fill_device(void* dst_device, int value, std::size_t bytes);
/// Waits for all work on the current device.
Status device_synchronize();

}  // namespace nvfp4kv
