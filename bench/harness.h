// nvfp4kv benchmarks — one harness (bench/main.cu), one file per operation (bench/bench_*.cu).
//
// Method (DESIGN.md "Performance method"): CUDA events around each call, warm-up, median of
// ≥ 20 timed runs, inputs rotated across buffers larger than L2 (or L2 flushed), output checked
// against the CPU reference once before timing. Bandwidth counts the bytes that must move
// (inputs read once + outputs written once) and is compared with a device-to-device copy
// measured in the same process.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nvfp4kv::bench {

/// Aborts the benchmark run (benchmarks are tools, not library code) with file:line.
#define BENCH_CUDA(expr)                                                                       \
  do {                                                                                         \
    cudaError_t _e = (expr);                                                                   \
    if (_e != cudaSuccess) ::nvfp4kv::bench::fail(__FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
  } while (0)
#define BENCH_CHECK(cond, msg)                                                                 \
  do {                                                                                         \
    if (!(cond)) ::nvfp4kv::bench::fail(__FILE__, __LINE__, #cond, (msg));                    \
  } while (0)

[[noreturn]] void fail(const char* file, int line, const char* expr, const std::string& msg);

/// Shared state of one benchmark run.
struct Context {
  double copy_tbps = 0;     ///< device-to-device copy bandwidth (bytes read + written) measured at start
  int min_runs = 20;        ///< timed runs per measurement (median reported)
  bool quick = false;       ///< --quick: a reduced grid (for smoke tests)
  std::size_t l2_bytes = 0; ///< L2 size of the device
  nlohmann::json rows = nlohmann::json::array();  ///< every measured row, written to --json

  /// Median time in microseconds of `fn(i)` (i = run index, use it to rotate input buffers),
  /// after `warmup` untimed calls, each timed with its own pair of CUDA events.
  /// If `flush_l2` is true the L2 is overwritten before every timed call.
  double time_us(const std::function<void(int)>& fn, bool flush_l2 = false, int warmup = 3);

  /// Overwrites the L2 cache with a scratch buffer (outside any timed region).
  void flush_l2();

  /// Evicts the L2 by reading the scratch buffer on `stream` (graph-capturable): unlike
  /// flush_l2 (a memset) it leaves clean lines, so the next kernel is not charged for writing
  /// back 2 × L2 of the flush's own dirty data.
  void flush_l2_clean(cudaStream_t stream);

  /// Appends one result row (also printed by the benchmark's own table).
  void add_row(nlohmann::json row) { rows.push_back(std::move(row)); }

  /// Number of rotating copies of an input of `bytes` so the set exceeds 2× L2 (≥ 1, ≤ 64).
  int rotation_count(std::size_t bytes) const;

  void* l2_scratch = nullptr;
  std::size_t l2_scratch_bytes = 0;
};

/// A registered benchmark: `name` selects it with --filter (substring match).
struct Benchmark {
  const char* name;
  const char* description;
  void (*run)(Context&);
};

bool register_benchmark(const Benchmark& b);

/// Prints a table: a title line, then aligned columns.
void print_table(const std::string& title, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows);

/// printf-style formatting to std::string.
std::string fmt(const char* format, ...);

/// Measures device-to-device copy bandwidth (bytes read + written, TB/s) with `bytes` per copy.
double measure_copy_tbps(std::size_t bytes);

}  // namespace nvfp4kv::bench

#define NVFP4KV_BENCH_CONCAT2(a, b) a##b
#define NVFP4KV_BENCH_CONCAT(a, b) NVFP4KV_BENCH_CONCAT2(a, b)
/// Registers `fn` (void(Context&)) as benchmark `name`.
#define NVFP4KV_BENCHMARK(name, description, fn)                                        \
  static const bool NVFP4KV_BENCH_CONCAT(nvfp4kv_bench_registered_, __LINE__) =         \
      ::nvfp4kv::bench::register_benchmark(::nvfp4kv::bench::Benchmark{name, description, fn})
