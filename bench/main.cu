// nvfp4kv benchmarks — harness: measures copy bandwidth, runs the selected benchmarks, prints
// their tables and writes every row to a JSON file.
//
//   nvfp4kv_bench [--filter SUBSTR|=NAME[,...]] [--json FILE] [--quick] [--runs N] [--list]
#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>

#include "harness.h"
#include "cuda/common/l2_flush.h"
#include "nvfp4kv/device.h"

namespace nvfp4kv::bench {
namespace {
std::vector<Benchmark>& registry() {
  static std::vector<Benchmark> r;
  return r;
}
}  // namespace

bool register_benchmark(const Benchmark& b) {
  registry().push_back(b);
  return true;
}

void fail(const char* file, int line, const char* expr, const std::string& msg) {
  std::fprintf(stderr, "bench: %s:%d: %s: %s\n", file, line, expr, msg.c_str());
  std::exit(3);
}

std::string fmt(const char* format, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  return buf;
}

void print_table(const std::string& title, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) w[i] = header[i].size();
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  std::printf("\n%s\n", title.c_str());
  auto line = [&](const std::vector<std::string>& r) {
    for (std::size_t i = 0; i < w.size(); ++i)
      std::printf("%s%*s", i ? "  " : "", static_cast<int>(w[i]), i < r.size() ? r[i].c_str() : "");
    std::printf("\n");
  };
  line(header);
  std::size_t total = 0;
  for (auto x : w) total += x + 2;
  std::printf("%s\n", std::string(total > 2 ? total - 2 : 0, '-').c_str());
  for (const auto& r : rows) line(r);
  std::fflush(stdout);
}

int Context::rotation_count(std::size_t bytes) const {
  if (bytes == 0) return 1;
  const std::size_t want = 2 * l2_bytes;
  std::size_t n = (want + bytes - 1) / bytes;
  return static_cast<int>(std::clamp<std::size_t>(n, 1, 64));
}

void Context::flush_l2() {
  if (l2_scratch == nullptr) {
    l2_scratch_bytes = std::max<std::size_t>(2 * l2_bytes, 64u << 20);
    BENCH_CUDA(cudaMalloc(&l2_scratch, l2_scratch_bytes));
  }
  BENCH_CUDA(cudaMemsetAsync(l2_scratch, 0x5A, l2_scratch_bytes));
}

void Context::flush_l2_clean(cudaStream_t stream) {
  if (l2_scratch == nullptr) {
    flush_l2();
    BENCH_CUDA(cudaDeviceSynchronize());
  }
  const Status st = cuda::flush_l2_by_reading(l2_scratch, l2_scratch_bytes / 16 * 16, stream);
  BENCH_CHECK(st.ok(), st.to_string());
}

double Context::time_us(const std::function<void(int)>& fn, bool flush, int warmup) {
  for (int i = 0; i < warmup; ++i) fn(i);
  BENCH_CUDA(cudaGetLastError());
  BENCH_CUDA(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms(min_runs);
  for (int i = 0; i < min_runs; ++i) {
    if (flush) flush_l2();
    BENCH_CUDA(cudaEventRecord(start));
    fn(warmup + i);
    BENCH_CUDA(cudaEventRecord(stop));
    BENCH_CUDA(cudaEventSynchronize(stop));
    BENCH_CUDA(cudaEventElapsedTime(&ms[i], start, stop));
  }
  BENCH_CUDA(cudaGetLastError());
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  const double med = (min_runs % 2) ? ms[min_runs / 2] : 0.5 * (ms[min_runs / 2 - 1] + ms[min_runs / 2]);
  return med * 1000.0;
}

double measure_copy_tbps(std::size_t bytes) {
  void *a = nullptr, *b = nullptr;
  BENCH_CUDA(cudaMalloc(&a, bytes));
  BENCH_CUDA(cudaMalloc(&b, bytes));
  BENCH_CUDA(cudaMemset(a, 1, bytes));
  BENCH_CUDA(cudaMemset(b, 2, bytes));
  Context tmp;
  tmp.min_runs = 30;
  const double us = tmp.time_us([&](int i) {
    if (i % 2) BENCH_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    else BENCH_CUDA(cudaMemcpyAsync(a, b, bytes, cudaMemcpyDeviceToDevice));
  });
  BENCH_CUDA(cudaFree(a));
  BENCH_CUDA(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / (us * 1e-6) / 1e12;
}

}  // namespace nvfp4kv::bench

int main(int argc, char** argv) {
  using namespace nvfp4kv::bench;
  std::vector<std::string> filters;
  std::string json_path;
  Context ctx;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--filter") {
      std::stringstream ss(next());
      for (std::string f; std::getline(ss, f, ',');) filters.push_back(f);
    } else if (a == "--json") {
      json_path = next();
    } else if (a == "--quick") {
      ctx.quick = true;
    } else if (a == "--runs") {
      ctx.min_runs = std::max(20, std::atoi(next().c_str()));
    } else if (a == "--list") {
      list = true;
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: nvfp4kv_bench [--filter SUBSTR|=NAME[,..]] [--json FILE] [--quick] [--runs N>=20] [--list]\n");
      return 0;
    } else {
      std::fprintf(stderr, "bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto& benches = registry();
  std::sort(benches.begin(), benches.end(),
            [](const Benchmark& x, const Benchmark& y) { return std::string(x.name) < y.name; });
  if (list) {
    for (const auto& b : benches) std::printf("%-24s %s\n", b.name, b.description);
    return 0;
  }
  if (nvfp4kv::cuda_device_count() == 0) {
    std::fprintf(stderr, "bench: no CUDA device visible\n");
    return 3;
  }
  int dev = 0;
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaGetDeviceProperties(&prop, dev));
  ctx.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  ctx.copy_tbps = measure_copy_tbps(std::size_t(1) << 30);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::printf("nvfp4kv_bench on %s (%d SMs, %d MiB L2), %s\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, date);
  std::printf("device-to-device copy (1 GiB, read+write counted): %.3f TB/s\n", ctx.copy_tbps);
  // The selected benchmarks, in the order of the filter terms (each term's matches in registration
  // order; a benchmark runs once): the order matters, since a benchmark can leave state in the
  // process that slows later ones (bench/NOTES.md, quantize v21: the decode read floors).
  auto matches = [](const std::string& f, const char* name) {
    return !f.empty() && f[0] == '=' ? f.compare(1, std::string::npos, name) == 0 : std::string(name).find(f) != std::string::npos;
  };
  std::vector<const Benchmark*> selected;
  if (filters.empty()) {
    for (const auto& b : benches) selected.push_back(&b);
  } else {
    for (const auto& f : filters)
      for (const auto& b : benches)
        if (matches(f, b.name) && std::find(selected.begin(), selected.end(), &b) == selected.end()) selected.push_back(&b);
  }
  int ran = 0;
  for (const Benchmark* bp : selected) {
    const Benchmark& b = *bp;
    std::printf("\n=== %s: %s ===\n", b.name, b.description);
    std::fflush(stdout);
    b.run(ctx);
    ++ran;
  }
  if (!json_path.empty()) {
    nlohmann::json out = {{"device", prop.name}, {"date", date}, {"copy_tbps", ctx.copy_tbps},
                          {"rows", ctx.rows}};
    std::ofstream(json_path) << out.dump(1) << "\n";
  }
  if (ctx.l2_scratch) cudaFree(ctx.l2_scratch);
  std::printf("\nran %d benchmark(s)\n", ran);
  return 0;
}
