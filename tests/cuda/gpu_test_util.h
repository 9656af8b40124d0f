// nvfp4kv GPU tests — shared helpers: skip without a GPU, device buffers filled from host vectors.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "nvfp4kv/device.h"

/// Skips the current test, saying why, when no CUDA device is visible (or CUDA is not built).
#define NVFP4KV_SKIP_WITHOUT_GPU()                                                         \
  do {                                                                                     \
    if (!::nvfp4kv::built_with_cuda()) GTEST_SKIP() << "nvfp4kv was built without CUDA";  \
    if (::nvfp4kv::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";     \
  } while (0)

namespace nvfp4kv::test {

/// Device copy of a host vector (fails the test on error).
template <class T>
DeviceBuffer to_device(const std::vector<T>& host) {
  DeviceBuffer buf;
  EXPECT_TRUE(buf.allocate(host.size() * sizeof(T)).ok());
  if (!host.empty()) {
    EXPECT_TRUE(copy_to_device(buf.data(), host.data(), host.size() * sizeof(T)).ok());
  }
  return buf;
}

/// Host copy of `count` elements of a device buffer.
template <class T>
std::vector<T> to_host(const DeviceBuffer& buf, std::size_t count) {
  std::vector<T> host(count);
  if (count) {
    EXPECT_TRUE(copy_to_host(host.data(), buf.data(), count * sizeof(T)).ok());
  }
  return host;
}

}  // namespace nvfp4kv::test
