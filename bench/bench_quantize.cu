// nvfp4kv benchmark — quantize / dequantize bandwidth (issue 3).
//
// Grid M ∈ {128 .. 128K} × K ∈ {512 .. 32K}, bf16 input, 128x4 scale layout:
//   nvfp4 with a given global scale (the headline), nvfp4 with the per-tensor scale computed on
//   the device (amax pass + quantize pass), nvfp4_4over6 (mse, given scale; time ratio to plain
//   nvfp4), mxfp4, and dequantize nvfp4 → bf16.
// Bytes counted: input read once + packed data + scale bytes written (dequantize: data + scales
// read, bf16 written); the computed-scale row counts the input once although it is read twice.
// % of copy is against the device-to-device copy measured by the harness in the same process
// (one 1 GiB cudaMemcpy, read + write counted: the headline denominator). Two more figures, each
// labelled as such: "% of same-bytes copy" (nvfp4 given) divides by a device-to-device
// cudaMemcpyAsync that moves the same total bytes as the kernel (read + written; copy size = half
// of them), timed exactly like the kernel (CUDA-graph replays over the rotated buffer sets, each
// copy reading that set's input and writing its own destination), i.e. it is the time ratio
// copy µs / kernel µs at equal traffic; and the per-tensor row "2-pass" counts the input twice
// (amax pass + quantize pass), against the 1 GiB copy.
// Times: per call, from CUDA-graph replays of back-to-back calls (see Timer), so the host's API
// validation and launch work is not counted; "call us" is one call between two events.
// Each variant's output is checked before timing against the CPU reference on sampled rows
// (rows are independent given the decode scale: the CPU quantizes just those rows with the same
// decode scale and the bytes must match). Shapes needing more than 24 GiB are skipped.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/format.h"
#include "harness.h"
#include "nvfp4kv/quantize.h"
#include "cuda/common/pdl.cuh"
#include "cuda/quantize/quantize_params.h"

namespace nvfp4kv::bench {
namespace {

namespace ffmt = nvfp4kv::fmt;

/// Largest |x| the fill kernel produces (bound used for the given decode scale).
constexpr float kFillBound = 16.0f;

__device__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

/// Pseudo-random bf16 values in (-16, 16), magnitude varying per 64-element chunk (so block
/// scales vary), never all zero.
__global__ void fill_bf16(uint16_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = hash32(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i));
    const uint32_t hb = hash32(seed + static_cast<uint64_t>(i / 64) * 0x632BE59BD9B4E019ull);
    const float u = (static_cast<float>(h >> 8) + 0.5f) * (2.0f / 16777216.0f) - 1.0f;
    const float mag = ldexpf(1.0f, static_cast<int>(hb % 9) - 4);  // 2^-4 .. 2^4
    p[i] = ffmt::float_to_bf16_bits(u * mag);
  }
}

struct Buffers {
  void* in = nullptr;
  void* data = nullptr;
  void* sf = nullptr;
  void* owner = nullptr;  // make_buffer_sets_in_one: the one allocation (set 0 only), else null
};

/// `rot` rotated buffer sets for an M × K bf16 input: each set's input filled with fresh seeded
/// data (one rng() draw per set, in order), outputs allocated; synchronised before it returns.
std::vector<Buffers> make_buffer_sets(int rot, int64_t M, int64_t K, std::size_t in_bytes, std::size_t data_bytes,
                                      std::size_t sf_bytes, std::mt19937_64& rng) {
  std::vector<Buffers> bufs(static_cast<std::size_t>(rot));
  for (auto& b : bufs) {
    BENCH_CUDA(cudaMalloc(&b.in, in_bytes));
    BENCH_CUDA(cudaMalloc(&b.data, data_bytes));
    BENCH_CUDA(cudaMalloc(&b.sf, sf_bytes));
    fill_bf16<<<1024, 256>>>(static_cast<uint16_t*>(b.in), M * K, rng());
    BENCH_CUDA(cudaGetLastError());
  }
  BENCH_CUDA(cudaDeviceSynchronize());
  return bufs;
}

/// make_buffer_sets with every set carved from one allocation: set i at i · stride, stride the
/// set's bytes (input, data, scales, each 256-byte aligned) rounded up to `align` (q_ctx).
std::vector<Buffers> make_buffer_sets_in_one(int rot, int64_t M, int64_t K, std::size_t in_bytes, std::size_t data_bytes,
                                             std::size_t sf_bytes, std::size_t align, std::mt19937_64& rng) {
  auto up = [](std::size_t x, std::size_t a) { return (x + a - 1) / a * a; };
  const std::size_t o_data = up(in_bytes, 256), o_sf = o_data + up(data_bytes, 256);
  const std::size_t stride = up(o_sf + sf_bytes, align);
  uint8_t* base = nullptr;
  BENCH_CUDA(cudaMalloc(&base, stride * static_cast<std::size_t>(rot)));
  std::vector<Buffers> bufs(static_cast<std::size_t>(rot));
  for (int i = 0; i < rot; ++i) {
    Buffers& b = bufs[static_cast<std::size_t>(i)];
    b.in = base + stride * i;
    b.data = base + stride * i + o_data;
    b.sf = base + stride * i + o_sf;
    fill_bf16<<<1024, 256>>>(static_cast<uint16_t*>(b.in), M * K, rng());
    BENCH_CUDA(cudaGetLastError());
  }
  bufs[0].owner = base;
  BENCH_CUDA(cudaDeviceSynchronize());
  return bufs;
}

void free_buffer_sets(std::vector<Buffers>& bufs) {
  if (!bufs.empty() && bufs[0].owner != nullptr) {
    BENCH_CUDA(cudaFree(bufs[0].owner));
  } else {
    for (auto& b : bufs) {
      BENCH_CUDA(cudaFree(b.in));
      BENCH_CUDA(cudaFree(b.data));
      BENCH_CUDA(cudaFree(b.sf));
    }
  }
  bufs.clear();
}

/// One shape's byte counts (bf16 input, nvfp4 codes, 128x4 scales; q_bytes their sum) and its
/// rotated buffer sets (make_buffer_sets), freed with it.
struct ShapeSets {
  std::size_t in_bytes, data_bytes, sf_bytes, q_bytes;
  int rot;
  std::vector<Buffers> bufs;
  ShapeSets(const Context& ctx, int64_t M, int64_t K, std::mt19937_64& rng)
      : in_bytes(static_cast<std::size_t>(M * K * 2)),
        data_bytes(static_cast<std::size_t>(M * K / 2)),
        sf_bytes(static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes())),
        q_bytes(in_bytes + data_bytes + sf_bytes),
        rot(ctx.rotation_count(q_bytes)),
        bufs(make_buffer_sets(rot, M, K, in_bytes, data_bytes, sf_bytes, rng)) {}
  ShapeSets(const ShapeSets&) = delete;
  ShapeSets& operator=(const ShapeSets&) = delete;
  ~ShapeSets() { free_buffer_sets(bufs); }
};

/// One quantize call on the GPU: buffer set `b` (M × K bf16) → recipe `r` in layout `lay` with
/// the given decode scale `gs_dev` (ignored by recipes without a global scale), on `stream`.
void quantize_given(const Buffers& b, int64_t M, int64_t K, Recipe r, ErrorMetric metric, SfLayout lay, float* gs_dev,
                    cudaStream_t stream) {
  const ScaleShape ss = scale_shape(r, lay, M, K);
  QuantizeOptions o;
  o.recipe = r;
  o.metric = metric;
  o.sf_layout = lay;
  o.global_scale_mode = GlobalScaleMode::kGiven;
  const TensorView gs = recipe_has_global_scale(r) ? make_view(gs_dev, DType::kF32, Device::kCuda, {1}) : TensorView{};
  const Status st = quantize(make_view(b.in, DType::kBF16, Device::kCuda, {M, K}),
                             make_view(b.data, DType::kU8, Device::kCuda, {M, K / 2}),
                             make_view(b.sf, DType::kU8, Device::kCuda, {ss.rows, ss.cols}), gs, o, stream);
  BENCH_CHECK(st.ok(), st.to_string());
}

double geomean(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  double s = 0.0;
  for (double x : v) s += std::log(x);
  return std::exp(s / static_cast<double>(v.size()));
}

/// Checks rows `rows` of device outputs (buffer set `b`) against the CPU reference quantizing
/// the same rows with decode scale `s_dec` (ignored by mxfp4).
void check_rows(const Buffers& b, int64_t M, int64_t K, Recipe recipe, float s_dec, const std::vector<int64_t>& rows,
                const char* what, ErrorMetric metric = ErrorMetric::kMse) {
  const int block = recipe_block_elems(recipe);
  const int64_t kv = K / block;
  const ScaleShape ss = scale_shape(recipe, SfLayout::k128x4, M, K);
  std::vector<uint16_t> in(static_cast<size_t>(K));
  std::vector<uint8_t> data_ref(static_cast<size_t>(K / 2)), data_got(static_cast<size_t>(K / 2));
  std::vector<uint8_t> sf_ref(static_cast<size_t>(kv));
  const int64_t tile_bytes = (ss.cols / 4) * 512;  // one 128-row band of the 128x4 layout
  std::vector<uint8_t> band(static_cast<size_t>(tile_bytes));
  for (int64_t r : rows) {
    BENCH_CUDA(cudaMemcpy(in.data(), static_cast<uint16_t*>(b.in) + r * K, K * 2, cudaMemcpyDeviceToHost));
    BENCH_CUDA(cudaMemcpy(data_got.data(), static_cast<uint8_t*>(b.data) + r * K / 2, K / 2, cudaMemcpyDeviceToHost));
    BENCH_CUDA(cudaMemcpy(band.data(), static_cast<uint8_t*>(b.sf) + (r / 128) * tile_bytes, tile_bytes,
                          cudaMemcpyDeviceToHost));
    QuantizeOptions o;
    o.recipe = recipe;
    o.metric = metric;
    o.sf_layout = SfLayout::kLinear;
    o.global_scale_mode = GlobalScaleMode::kGiven;
    float gs = s_dec;
    const bool has_global = recipe_has_global_scale(recipe);
    const Status st = quantize(make_view(in.data(), DType::kBF16, Device::kCpu, {1, K}),
                               make_view(data_ref.data(), DType::kU8, Device::kCpu, {1, K / 2}),
                               make_view(sf_ref.data(), DType::kU8, Device::kCpu, {1, kv}),
                               has_global ? make_view(&gs, DType::kF32, Device::kCpu, {1}) : TensorView{}, o);
    BENCH_CHECK(st.ok(), st.to_string());
    for (int64_t j = 0; j < K / 2; ++j) {
      BENCH_CHECK(data_got[j] == data_ref[j],
                  fmt("%s M=%lld K=%lld: data mismatch row %lld byte %lld (got 0x%02x want 0x%02x)", what,
                      (long long)M, (long long)K, (long long)r, (long long)j, data_got[j], data_ref[j]));
    }
    for (int64_t k = 0; k < kv; ++k) {
      const uint8_t got = band[ffmt::sf_offset(1, r % 128, k, kv)];
      BENCH_CHECK(got == sf_ref[k], fmt("%s M=%lld K=%lld: scale mismatch row %lld block %lld (got 0x%02x want 0x%02x)",
                                        what, (long long)M, (long long)K, (long long)r, (long long)k, got, sf_ref[k]));
    }
  }
}

/// Checks dequantized bf16 rows (in `out`) against the CPU dequantize of the same data/scales.
void check_dequant_rows(const Buffers& b, const void* out, int64_t M, int64_t K, float s_dec,
                        const std::vector<int64_t>& rows) {
  const int64_t kv = K / 16;
  const ScaleShape ss = scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K);
  const int64_t tile_bytes = (ss.cols / 4) * 512;
  std::vector<uint8_t> data(static_cast<size_t>(K / 2)), band(static_cast<size_t>(tile_bytes)), sf(static_cast<size_t>(kv));
  std::vector<uint16_t> got(static_cast<size_t>(K)), want(static_cast<size_t>(K));
  for (int64_t r : rows) {
    BENCH_CUDA(cudaMemcpy(data.data(), static_cast<uint8_t*>(b.data) + r * K / 2, K / 2, cudaMemcpyDeviceToHost));
    BENCH_CUDA(cudaMemcpy(band.data(), static_cast<uint8_t*>(b.sf) + (r / 128) * tile_bytes, tile_bytes,
                          cudaMemcpyDeviceToHost));
    BENCH_CUDA(cudaMemcpy(got.data(), static_cast<const uint16_t*>(out) + r * K, K * 2, cudaMemcpyDeviceToHost));
    for (int64_t k = 0; k < kv; ++k) sf[k] = band[ffmt::sf_offset(1, r % 128, k, kv)];
    float gs = s_dec;
    DequantizeOptions o;
    o.recipe = Recipe::kNvfp4;
    o.sf_layout = SfLayout::kLinear;
    const Status st = dequantize(make_view(data.data(), DType::kU8, Device::kCpu, {1, K / 2}),
                                 make_view(sf.data(), DType::kU8, Device::kCpu, {1, kv}),
                                 make_view(&gs, DType::kF32, Device::kCpu, {1}),
                                 make_view(want.data(), DType::kBF16, Device::kCpu, {1, K}), o);
    BENCH_CHECK(st.ok(), st.to_string());
    for (int64_t i = 0; i < K; ++i) {
      BENCH_CHECK(got[i] == want[i], fmt("dequantize M=%lld K=%lld: mismatch row %lld element %lld", (long long)M,
                                         (long long)K, (long long)r, (long long)i));
    }
  }
}

/// Device time per call of a variant. graph_us: `reps` calls (cycling through the `rot` buffer
/// sets) captured in one CUDA graph, each replay timed with an event pair, median over
/// ctx.min_runs replays divided by reps; reps is chosen so that a replay lasts ≥ ~1 ms. This
/// keeps the host out of the measurement: with one event pair around one call, the GPU idles
/// while the host validates the views and launches (≈ 10 µs), which dominated small shapes.
/// call_us: one call between two events (what a caller sees per isolated call, host included).
struct Timer {
  Context& ctx;
  cudaStream_t stream;
  int rot;

  double call_us(const std::function<void(int, cudaStream_t)>& fn) {
    for (int i = 0; i < 3; ++i) fn(i, stream);
    BENCH_CUDA(cudaStreamSynchronize(stream));
    cudaEvent_t a, b;
    BENCH_CUDA(cudaEventCreate(&a));
    BENCH_CUDA(cudaEventCreate(&b));
    std::vector<float> ms(static_cast<std::size_t>(ctx.min_runs));
    for (int i = 0; i < ctx.min_runs; ++i) {
      BENCH_CUDA(cudaEventRecord(a, stream));
      fn(3 + i, stream);
      BENCH_CUDA(cudaEventRecord(b, stream));
      BENCH_CUDA(cudaEventSynchronize(b));
      BENCH_CUDA(cudaEventElapsedTime(&ms[static_cast<std::size_t>(i)], a, b));
    }
    BENCH_CUDA(cudaEventDestroy(a));
    BENCH_CUDA(cudaEventDestroy(b));
    std::sort(ms.begin(), ms.end());
    return 1000.0 * ms[ms.size() / 2];
  }

  double replay_ms(cudaGraphExec_t exec, int runs, cudaEvent_t a, cudaEvent_t b) {
    std::vector<float> ms(static_cast<std::size_t>(runs));
    for (int i = 0; i < runs; ++i) {
      BENCH_CUDA(cudaEventRecord(a, stream));
      BENCH_CUDA(cudaGraphLaunch(exec, stream));
      BENCH_CUDA(cudaEventRecord(b, stream));
      BENCH_CUDA(cudaEventSynchronize(b));
      BENCH_CUDA(cudaEventElapsedTime(&ms[static_cast<std::size_t>(i)], a, b));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  cudaGraphExec_t capture(const std::function<void(int, cudaStream_t)>& fn, int reps) {
    cudaGraph_t graph;
    BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < reps; ++i) fn(i, stream);
    BENCH_CUDA(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    BENCH_CUDA(cudaGraphDestroy(graph));
    return exec;
  }

  double graph_us(const std::function<void(int, cudaStream_t)>& fn) {
    cudaEvent_t a, b;
    BENCH_CUDA(cudaEventCreate(&a));
    BENCH_CUDA(cudaEventCreate(&b));
    // Estimate with one pass over the buffer sets, then size the graph.
    cudaGraphExec_t exec = capture(fn, rot);
    BENCH_CUDA(cudaGraphLaunch(exec, stream));
    const double est_ms = replay_ms(exec, 3, a, b) / rot;
    int reps = rot;
    const double target_ms = 1.0;
    while (reps * est_ms < target_ms && reps < 4096) reps += rot;
    if (reps != rot) {
      BENCH_CUDA(cudaGraphExecDestroy(exec));
      exec = capture(fn, reps);
      BENCH_CUDA(cudaGraphLaunch(exec, stream));
    }
    const double ms = replay_ms(exec, ctx.min_runs, a, b);
    BENCH_CUDA(cudaGraphExecDestroy(exec));
    BENCH_CUDA(cudaEventDestroy(a));
    BENCH_CUDA(cudaEventDestroy(b));
    BENCH_CUDA(cudaGetLastError());
    return 1000.0 * ms / reps;
  }
};

/// Device time per call of a cudaMemcpyAsync of `bytes` (device to device) from each rotated
/// set's input into a destination of its own, timed like the kernels (Timer::graph_us): the
/// "same-bytes copy" of the quantize benches (`bytes` = half of the call's traffic).
double same_bytes_copy_us(Timer& timer, const std::vector<Buffers>& bufs, std::size_t bytes) {
  const std::size_t rot = bufs.size();
  std::vector<void*> dst(rot, nullptr);
  for (auto& d : dst) BENCH_CUDA(cudaMalloc(&d, bytes));
  const double us = timer.graph_us([&](int i, cudaStream_t st) {
    const std::size_t k = static_cast<std::size_t>(i) % rot;
    BENCH_CUDA(cudaMemcpyAsync(dst[k], bufs[k].in, bytes, cudaMemcpyDeviceToDevice, st));
  });
  for (auto& d : dst) BENCH_CUDA(cudaFree(d));
  return us;
}

/// The issue-3 grid: M ∈ {128 … 128K} × K ∈ {512 … 32K}; `quick`: 3 × 3 of them.
struct Grid {
  std::vector<int64_t> Ms, Ks;
};
Grid issue3_grid(bool quick) {
  if (quick) return {{128, 2048, 16384}, {512, 4096, 16384}};
  return {{128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072},
          {512, 1024, 2048, 4096, 6144, 8192, 12288, 16384, 32768}};
}

std::vector<std::pair<int64_t, int64_t>> ab_shapes(const std::vector<std::pair<int64_t, int64_t>>& shapes);

void run(Context& ctx) {
  const Grid shape_grid = issue3_grid(ctx.quick);
  const std::vector<int64_t>& Ms = shape_grid.Ms;
  const std::vector<int64_t>& Ks = shape_grid.Ks;
  const std::size_t limit = std::size_t(24) << 30;
  float* gs_dev = nullptr;  // [0] given decode scale, [1] computed (per-tensor) decode scale
  BENCH_CUDA(cudaMalloc(&gs_dev, 2 * sizeof(float)));
  const float s_dec_given = kFillBound / 2688.0f;
  BENCH_CUDA(cudaMemcpy(gs_dev, &s_dec_given, sizeof(float), cudaMemcpyHostToDevice));
  std::mt19937_64 rng(20261121);
  cudaStream_t stream = nullptr;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  std::vector<std::vector<std::string>> table;
  std::vector<double> pct_given, pct_pt, pct_46, pct_mx, pct_dq, ratio_46_big, pct_given_big, pct_pt_big;
  std::vector<double> sb_given, sb_given_big, pt2_big, pt2;  // % of same-bytes copy; per-tensor, both passes counted
  // Diagnosis knobs: QAB_SHAPES restricts the grid to the listed shapes; QGRID_NV_FIRST=1 times
  // nvfp4 (given scale) first for each shape instead of last (bench/NOTES.md, quantize v21).
  std::vector<std::pair<int64_t, int64_t>> all_shapes;
  for (int64_t M : Ms)
    for (int64_t K : Ks) all_shapes.emplace_back(M, K);
  const std::vector<std::pair<int64_t, int64_t>> picked = ab_shapes(all_shapes);
  const bool nv_first = std::getenv("QGRID_NV_FIRST") != nullptr;
  for (int64_t M : Ms) {
    for (int64_t K : Ks) {
      if (std::find(picked.begin(), picked.end(), std::make_pair(M, K)) == picked.end()) continue;
      const std::size_t in_bytes = static_cast<std::size_t>(M * K * 2);
      const std::size_t data_bytes = static_cast<std::size_t>(M * K / 2);
      const std::size_t sf_bytes = static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes());
      const std::size_t sf32_bytes = static_cast<std::size_t>(scale_shape(Recipe::kMxfp4, SfLayout::k128x4, M, K).bytes());
      const std::size_t set_bytes = in_bytes + data_bytes + sf_bytes;
      const int rot = ctx.rotation_count(set_bytes);
      if (rot * set_bytes > limit) {
        std::printf("skip M=%lld K=%lld (%.1f GiB)\n", (long long)M, (long long)K, rot * set_bytes / double(1 << 30));
        continue;
      }
      std::vector<Buffers> bufs = make_buffer_sets(rot, M, K, in_bytes, data_bytes, sf_bytes, rng);
      Timer timer{ctx, stream, rot};
      std::vector<int64_t> rows = {0, M / 2 + 1, M - 1};
      for (int i = 0; i < 3; ++i) rows.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(M)));

      auto views = [&](int i, Recipe r) {
        const ScaleShape ss = scale_shape(r, SfLayout::k128x4, M, K);
        struct V { TensorView in, data, sf; } v;
        v.in = make_view(bufs[i].in, DType::kBF16, Device::kCuda, {M, K});
        v.data = make_view(bufs[i].data, DType::kU8, Device::kCuda, {M, K / 2});
        v.sf = make_view(bufs[i].sf, DType::kU8, Device::kCuda, {ss.rows, ss.cols});
        return v;
      };
      auto quant = [&](int i, Recipe r, GlobalScaleMode mode, cudaStream_t st_ = nullptr) {
        const auto v = views(i % rot, r);
        QuantizeOptions o;
        o.recipe = r;
        o.sf_layout = SfLayout::k128x4;
        o.global_scale_mode = mode;
        const TensorView gs = !recipe_has_global_scale(r) ? TensorView{}
                              : make_view(gs_dev + (mode == GlobalScaleMode::kGiven ? 0 : 1), DType::kF32, Device::kCuda, {1});
        const Status st = quantize(v.in, v.data, v.sf, gs, o, st_);
        BENCH_CHECK(st.ok(), st.to_string());
      };
      auto tbps = [](std::size_t bytes, double us) { return static_cast<double>(bytes) / (us * 1e-6) / 1e12; };
      const std::size_t q_bytes = in_bytes + data_bytes + sf_bytes;

      double us_given = 0.0;
      if (nv_first)
        us_given = timer.graph_us([&](int i, cudaStream_t st) { quant(i, Recipe::kNvfp4, GlobalScaleMode::kGiven, st); });
      // 4over6 (given scale).
      quant(0, Recipe::kNvfp4FourOverSix, GlobalScaleMode::kGiven);
      BENCH_CUDA(cudaDeviceSynchronize());
      check_rows(bufs[0], M, K, Recipe::kNvfp4FourOverSix, s_dec_given, rows, "nvfp4_4over6");
      const double us_46 =
          timer.graph_us([&](int i, cudaStream_t st) { quant(i, Recipe::kNvfp4FourOverSix, GlobalScaleMode::kGiven, st); });
      // mxfp4.
      quant(0, Recipe::kMxfp4, GlobalScaleMode::kGiven);
      BENCH_CUDA(cudaDeviceSynchronize());
      check_rows(bufs[0], M, K, Recipe::kMxfp4, 0.0f, rows, "mxfp4");
      const double us_mx = timer.graph_us([&](int i, cudaStream_t st) { quant(i, Recipe::kMxfp4, GlobalScaleMode::kGiven, st); });
      // nvfp4, per-tensor scale computed on the device.
      quant(0, Recipe::kNvfp4, GlobalScaleMode::kPerTensor);
      BENCH_CUDA(cudaDeviceSynchronize());
      float s_dec_pt = 0.0f;
      BENCH_CUDA(cudaMemcpy(&s_dec_pt, gs_dev + 1, sizeof(float), cudaMemcpyDeviceToHost));
      if (in_bytes <= (std::size_t(512) << 20)) {
        std::vector<uint16_t> all(static_cast<std::size_t>(M * K));
        BENCH_CUDA(cudaMemcpy(all.data(), bufs[0].in, in_bytes, cudaMemcpyDeviceToHost));
        float amax = 0.0f;
        for (uint16_t h : all) amax = ffmt::max_f(amax, ffmt::abs_f(ffmt::bf16_bits_to_float(h)));
        const float want = ffmt::reciprocal_rn(ffmt::global_encode_scale(amax, ffmt::kNvfp4GlobalNumerator));
        BENCH_CHECK(want == s_dec_pt, fmt("per-tensor decode scale M=%lld K=%lld: got %g want %g", (long long)M,
                                          (long long)K, s_dec_pt, want));
      }
      check_rows(bufs[0], M, K, Recipe::kNvfp4, s_dec_pt, rows, "nvfp4 per-tensor");
      const double us_pt = timer.graph_us([&](int i, cudaStream_t st) { quant(i, Recipe::kNvfp4, GlobalScaleMode::kPerTensor, st); });
      // nvfp4, given scale (last, so the buffers hold its output for the dequantize check).
      if (!nv_first)
        us_given = timer.graph_us([&](int i, cudaStream_t st) { quant(i, Recipe::kNvfp4, GlobalScaleMode::kGiven, st); });
      // The same call timed alone between two events (host API time and launch latency included).
      const double us_call = timer.call_us([&](int i, cudaStream_t st) { quant(i, Recipe::kNvfp4, GlobalScaleMode::kGiven, st); });
      for (int i = 0; i < rot; ++i) quant(i, Recipe::kNvfp4, GlobalScaleMode::kGiven);
      BENCH_CUDA(cudaDeviceSynchronize());
      check_rows(bufs[0], M, K, Recipe::kNvfp4, s_dec_given, rows, "nvfp4");
      // Dequantize nvfp4 → bf16 into the next set's input buffer (rot ≥ 2) or over the input.
      auto dequant = [&](int i, cudaStream_t st_ = nullptr) {
        const int s = i % rot;
        void* out = bufs[(s + 1) % rot].in;
        const auto v = views(s, Recipe::kNvfp4);
        DequantizeOptions o;
        o.recipe = Recipe::kNvfp4;
        o.sf_layout = SfLayout::k128x4;
        const Status st = dequantize(v.data, v.sf, make_view(gs_dev, DType::kF32, Device::kCuda, {1}),
                                     make_view(out, DType::kBF16, Device::kCuda, {M, K}), o, st_);
        BENCH_CHECK(st.ok(), st.to_string());
      };
      dequant(0);
      BENCH_CUDA(cudaDeviceSynchronize());
      check_dequant_rows(bufs[0], bufs[1 % rot].in, M, K, s_dec_given, rows);
      const double us_dq = timer.graph_us([&](int i, cudaStream_t st) { dequant(i, st); });

      // Same-bytes copy: cudaMemcpyAsync of q_bytes / 2 (so q_bytes are read + written), timed like
      // the kernel (graph replays, rotated sets: reads set i's input, writes set i's own
      // destination). Measured last: the buffers are no longer needed.
      const double us_cp = same_bytes_copy_us(timer, bufs, q_bytes / 2);
      const double sb = 100.0 * us_cp / us_given;  // % of same-bytes copy (equal traffic: time ratio)

      const double t_given = tbps(q_bytes, us_given), t_pt = tbps(q_bytes, us_pt), t_46 = tbps(q_bytes, us_46);
      const double t_pt2 = tbps(q_bytes + in_bytes, us_pt);  // input read twice counted
      const double t_mx = tbps(in_bytes + data_bytes + sf32_bytes, us_mx);
      const double t_dq = tbps(in_bytes + data_bytes + sf_bytes, us_dq);
      const double pc = 100.0 / ctx.copy_tbps;
      pct_given.push_back(t_given * pc);
      sb_given.push_back(sb);
      pct_pt.push_back(t_pt * pc);
      pt2.push_back(t_pt2 * pc);
      pct_46.push_back(t_46 * pc);
      pct_mx.push_back(t_mx * pc);
      pct_dq.push_back(t_dq * pc);
      const bool big = in_bytes >= (std::size_t(64) << 20);
      if (big) {
        ratio_46_big.push_back(us_46 / us_given);
        pct_given_big.push_back(t_given * pc);
        pct_pt_big.push_back(t_pt * pc);
        sb_given_big.push_back(sb);
        pt2_big.push_back(t_pt2 * pc);
      }
      table.push_back({fmt("%lld", (long long)M), fmt("%lld", (long long)K), fmt("%.1f", in_bytes / 1048576.0),
                       fmt("%.1f", us_given), fmt("%.3f", t_given), fmt("%.1f%%", t_given * pc),
                       fmt("%.1f", us_cp), fmt("%.1f%%", sb),
                       fmt("%.1f%%", t_pt * pc), fmt("%.1f%%", t_pt2 * pc), fmt("%.2f", us_46 / us_given),
                       fmt("%.1f%%", t_mx * pc), fmt("%.1f%%", t_dq * pc), fmt("%.1f", us_call)});
      std::printf("progress M=%lld K=%lld given %.1f us (%.1f%% of copy, %.1f%% of same-bytes copy %.1f us) call %.1f us, "
                  "per-tensor %.1f%% (2-pass counted %.1f%%), 4o6 %.2fx, mx %.1f%%, dq %.1f%%\n",
                  (long long)M, (long long)K, us_given, t_given * pc, sb, us_cp, us_call, t_pt * pc, t_pt2 * pc,
                  us_46 / us_given, t_mx * pc, t_dq * pc);
      std::fflush(stdout);
      const char* names[] = {"nvfp4_given", "nvfp4_per_tensor", "nvfp4_4over6_given", "mxfp4", "dequant_nvfp4_bf16"};
      const double us_all[] = {us_given, us_pt, us_46, us_mx, us_dq};
      const double tb_all[] = {t_given, t_pt, t_46, t_mx, t_dq};
      for (int v = 0; v < 5; ++v) {
        ctx.add_row({{"bench", "quantize"}, {"variant", names[v]}, {"m", M}, {"k", K}, {"input", "bf16"},
                     {"layout", "128x4"}, {"in_bytes", in_bytes}, {"us", us_all[v]}, {"tbps", tb_all[v]},
                     {"pct_copy", tb_all[v] * pc}, {"ratio_to_nvfp4", us_all[v] / us_given},
                     {"timing", "cuda graph replay, per call"}, {"us_single_call_events", v == 0 ? us_call : 0.0}});
      }
      // Extra denominators, in their own rows so no existing field changes meaning.
      ctx.add_row({{"bench", "quantize_extra"}, {"m", M}, {"k", K}, {"in_bytes", in_bytes}, {"moved_bytes", q_bytes},
                   {"same_bytes_copy_us", us_cp},
                   {"same_bytes_copy_note", "cudaMemcpyAsync D2D of moved_bytes/2 (moved_bytes read+written), graph replays, rotated sets"},
                   {"nvfp4_given_pct_same_bytes_copy", sb}, {"nvfp4_4over6_pct_same_bytes_copy", 100.0 * us_cp / us_46},
                   {"per_tensor_pct_same_bytes_copy_input_once", 100.0 * us_cp / us_pt},
                   {"per_tensor_pct_copy_both_passes_counted", t_pt2 * pc}});
      free_buffer_sets(bufs);
    }
  }
  BENCH_CUDA(cudaFree(gs_dev));
  BENCH_CUDA(cudaStreamDestroy(stream));
  print_table("bf16 -> 128x4 layout; times are per call from CUDA-graph replays (host API work excluded; 'call us' = "
              "one call between two events, host included): nvfp4 given scale (TB/s, % of copy), per-tensor computed "
              "scale (% of copy), 4over6/nvfp4 time ratio, mxfp4 and dequantize nvfp4->bf16 (% of copy)",
              {"M", "K", "in MiB", "given us", "TB/s", "%copy", "samebytes copy us", "given %samebytes copy", "pertensor",
               "pertensor 2-pass counted", "4o6 ratio", "mxfp4", "dequant", "call us"},
              table);
  std::printf("columns: %%copy / pertensor / mxfp4 / dequant = TB/s over the 1 GiB copy (%.3f TB/s); 'samebytes copy us' = a "
              "D2D cudaMemcpyAsync moving the same bytes read+written as the nvfp4 kernel, graph-timed like it; 'given "
              "%%samebytes copy' = that copy's time / the nvfp4 given time; 'pertensor 2-pass counted' = per-tensor TB/s "
              "counting the input twice (amax + quantize pass) over the 1 GiB copy\n",
              ctx.copy_tbps);
  auto minv = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); };
  auto maxv = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  std::printf("\nsummary (copy %.3f TB/s):\n", ctx.copy_tbps);
  std::printf("  nvfp4 given      : grid geomean %.1f%% of copy (target >= 70%%); >= 64 MiB inputs: geomean %.1f%%, min %.1f%% (target >= 85%%)\n",
              geomean(pct_given), geomean(pct_given_big), minv(pct_given_big));
  std::printf("  nvfp4 given      : %% of SAME-BYTES copy (graph-timed D2D copy of equal traffic per shape): grid geomean %.1f%%; "
              ">= 64 MiB geomean %.1f%%, min %.1f%%\n",
              geomean(sb_given), geomean(sb_given_big), minv(sb_given_big));
  std::printf("  nvfp4 per-tensor : grid geomean %.1f%%; >= 64 MiB: geomean %.1f%%, min %.1f%% (target >= 60%%, input counted once)\n",
              geomean(pct_pt), geomean(pct_pt_big), minv(pct_pt_big));
  std::printf("  nvfp4 per-tensor : BOTH PASSES counted (input read twice): grid geomean %.1f%%; >= 64 MiB geomean %.1f%%, min %.1f%% of copy\n",
              geomean(pt2), geomean(pt2_big), minv(pt2_big));
  std::printf("  4over6 / nvfp4   : >= 64 MiB time ratio geomean %.2f, max %.2f (target <= 1.5)\n", geomean(ratio_46_big),
              maxv(ratio_46_big));
  std::printf("  4over6           : grid geomean %.1f%% of copy\n", geomean(pct_46));
  std::printf("  mxfp4            : grid geomean %.1f%% of copy\n", geomean(pct_mx));
  std::printf("  dequantize       : grid geomean %.1f%% of copy\n", geomean(pct_dq));
  ctx.add_row({{"bench", "quantize_summary"}, {"copy_tbps", ctx.copy_tbps}, {"nvfp4_given_geomean_pct", geomean(pct_given)},
               {"nvfp4_given_big_geomean_pct", geomean(pct_given_big)}, {"nvfp4_given_big_min_pct", minv(pct_given_big)},
               {"per_tensor_geomean_pct", geomean(pct_pt)}, {"per_tensor_big_geomean_pct", geomean(pct_pt_big)},
               {"four_over_six_ratio_big_geomean", geomean(ratio_46_big)}, {"four_over_six_ratio_big_max", maxv(ratio_46_big)},
               {"mxfp4_geomean_pct", geomean(pct_mx)}, {"dequant_geomean_pct", geomean(pct_dq)},
               {"nvfp4_given_geomean_pct_same_bytes_copy", geomean(sb_given)},
               {"nvfp4_given_big_geomean_pct_same_bytes_copy", geomean(sb_given_big)},
               {"nvfp4_given_big_min_pct_same_bytes_copy", minv(sb_given_big)},
               {"per_tensor_geomean_pct_both_passes_counted", geomean(pt2)},
               {"per_tensor_big_geomean_pct_both_passes_counted", geomean(pt2_big)}});
}

/// The A/B benches' common setup: the given decode scale of the main grid (kFillBound / 2688) in
/// device memory and a non-blocking stream, both released at scope exit.
struct AbSetup {
  float s_dec = kFillBound / 2688.0f;
  float* gs_dev = nullptr;
  cudaStream_t stream = nullptr;
  AbSetup() {
    BENCH_CUDA(cudaMalloc(&gs_dev, sizeof(float)));
    BENCH_CUDA(cudaMemcpy(gs_dev, &s_dec, sizeof(float), cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~AbSetup() {
    BENCH_CUDA(cudaFree(gs_dev));
    BENCH_CUDA(cudaStreamDestroy(stream));
  }
  AbSetup(const AbSetup&) = delete;
  AbSetup& operator=(const AbSetup&) = delete;
};

/// A/B of the fast kernel's unit order (row-major vs sector order) on chosen shapes, nvfp4 given
/// scale and mxfp4, 128x4; nvfp4 with the linear layout (no scattered scale sectors) as a control.
/// Each 128x4 variant is checked on sampled rows (scales poisoned first) before timing.
void run_order(Context& ctx) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {131072, 32768}, {65536, 32768}, {32768, 32768}, {131072, 8192}, {65536, 12288}, {16384, 32768},
      {131072, 4096},  {16384, 8192},  {1024, 32768},  {4096, 8192},   {16384, 2048},  {65536, 512}};
  const AbSetup env;
  float* const gs_dev = env.gs_dev;
  const float s_dec = env.s_dec;
  cudaStream_t stream = env.stream;
  std::mt19937_64 rng(20261122);
  std::vector<std::vector<std::string>> table;
  for (const auto& [M, K] : shapes) {
    const std::size_t in_bytes = static_cast<std::size_t>(M * K * 2), data_bytes = static_cast<std::size_t>(M * K / 2);
    const std::size_t sf_bytes = static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes());
    const std::size_t sf32_bytes = static_cast<std::size_t>(scale_shape(Recipe::kMxfp4, SfLayout::k128x4, M, K).bytes());
    const int rot = ctx.rotation_count(in_bytes + data_bytes + sf_bytes);
    std::vector<Buffers> bufs = make_buffer_sets(rot, M, K, in_bytes, data_bytes, sf_bytes, rng);
    Timer timer{ctx, stream, rot};
    std::vector<int64_t> rows = {0, 1, 33, 97, M / 2 + 1, M - 1};
    for (int i = 0; i < 3; ++i) rows.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(M)));
    auto quant = [&](int i, Recipe r, SfLayout lay, cudaStream_t st_) {
      quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, r, ErrorMetric::kMse, lay, gs_dev, st_);
    };
    const double pc = 100.0 / ctx.copy_tbps;
    auto pct = [&](std::size_t bytes, double us) { return static_cast<double>(bytes) / (us * 1e-6) / 1e12 * pc; };
    std::vector<std::string> row = {fmt("%lld", (long long)M), fmt("%lld", (long long)K), fmt("%.0f", in_bytes / 1048576.0)};
    struct Var {
      const char* name;
      Recipe r;
      SfLayout lay;
      int order;
      int ctas = 0;
    };
    const Var vars[] = {{"nv_rowmajor", Recipe::kNvfp4, SfLayout::k128x4, 0},
                        {"nv_sector", Recipe::kNvfp4, SfLayout::k128x4, 1},
                        {"nv_linear", Recipe::kNvfp4, SfLayout::kLinear, -1},
                        {"mx_rowmajor", Recipe::kMxfp4, SfLayout::k128x4, 0},
                        {"mx_sector", Recipe::kMxfp4, SfLayout::k128x4, 1},
                        {"nv_rowmajor_2cta", Recipe::kNvfp4, SfLayout::k128x4, 0, 2},
                        {"nv_sector_2cta", Recipe::kNvfp4, SfLayout::k128x4, 1, 2},
                        {"nv_rowmajor_again", Recipe::kNvfp4, SfLayout::k128x4, 0},
                        {"nv_sector_again", Recipe::kNvfp4, SfLayout::k128x4, 1},
                        {"nv_auto", Recipe::kNvfp4, SfLayout::k128x4, -1}};
    for (const Var& v : vars) {
      cuda::set_fast_quantize_order_override(v.order);
      cuda::set_fast_quantize_ctas_override(v.ctas);
      if (v.lay == SfLayout::k128x4) {
        BENCH_CUDA(cudaMemset(bufs[0].sf, 0xA5, sf_bytes));
        BENCH_CUDA(cudaMemset(bufs[0].data, 0xA5, data_bytes));
        quant(0, v.r, v.lay, nullptr);
        BENCH_CUDA(cudaDeviceSynchronize());
        check_rows(bufs[0], M, K, v.r, s_dec, rows, v.name);
      }
      const double us = timer.graph_us([&](int i, cudaStream_t st) { quant(i, v.r, v.lay, st); });
      const std::size_t bytes = in_bytes + data_bytes + (v.r == Recipe::kMxfp4 ? sf32_bytes : sf_bytes);
      row.push_back(fmt("%.1f (%.1f%%)", us, pct(bytes, us)));
      ctx.add_row({{"bench", "q128x4_order"}, {"variant", v.name}, {"m", M}, {"k", K}, {"us", us}, {"pct_copy", pct(bytes, us)}});
    }
    cuda::set_fast_quantize_order_override(-1);
    cuda::set_fast_quantize_ctas_override(0);
    std::printf("progress M=%lld K=%lld:", (long long)M, (long long)K);
    for (std::size_t i = 3; i < row.size(); ++i) std::printf(" %s |", row[i].c_str());
    std::printf("\n");
    std::fflush(stdout);
    table.push_back(row);
    free_buffer_sets(bufs);
  }
  print_table(fmt("fast quantize unit order, bf16, given scale: us per call (graph replays) (%% of copy %.3f TB/s)",
                  ctx.copy_tbps),
              {"M", "K", "MiB", "nv128x4 rowmajor", "nv128x4 sector", "nv linear", "mx128x4 rowmajor", "mx128x4 sector",
               "nv rowmajor 2cta", "nv sector 2cta", "nv rowmajor again", "nv sector again", "nv auto (library rule)"},
              table);
}

/// One A/B variant: recipe (MSE for 4over6) and the fast kernel's knobs (-1 = library default).
struct AbVar {
  const char* name;
  Recipe r;
  int order;    // set_fast_quantize_order_override
  int balance;  // set_fast_quantize_balance_override
  int dq;       // set_fast_quantize_4over6_dq_override
  ErrorMetric metric = ErrorMetric::kMse;
  int block = -1;  // set_fast_quantize_block_override
  int block_order = -1;  // set_fast_quantize_block_order_override
  int threads = 0;       // set_fast_quantize_block_threads_override
  int one = -1;          // set_fast_quantize_block_one_override
  int lean = -1;         // set_fast_quantize_lean_override
};

void run_ab_impl(Context& ctx, const std::vector<AbVar>& vars, const std::string& bench_name, const std::string& title,
                 const std::vector<std::string>& headers, const std::vector<std::pair<int64_t, int64_t>>& shapes);

/// v7 A/B on chosen shapes (bf16 → 128x4, given scale; every variant checked on sampled rows with
/// its outputs poisoned first): nvfp4 with the library defaults, without grid balancing, and with
/// each unit order forced (row-major, sector, warp-sector). % of copy against the 1 GiB copy. (Its
/// 4over6 grid variants kDq 0-2 were removed in v12; bench/NOTES.md keeps their figures.)
void run_ab(Context& ctx) {
  const std::vector<AbVar> vars = {{"nv_default", Recipe::kNvfp4, -1, -1, -1},   {"nv_unbalanced", Recipe::kNvfp4, -1, 0, -1},
                                   {"nv_rowmajor", Recipe::kNvfp4, 0, -1, -1},   {"nv_sector", Recipe::kNvfp4, 1, -1, -1},
                                   {"nv_warpsector", Recipe::kNvfp4, 2, -1, -1}};
  run_ab_impl(ctx, vars, "quantize_ab", "quantize v7 A/B",
              {"M", "K", "MiB", "nv default", "nv unbalanced", "nv rowmajor", "nv sector", "nv warpsector"},
              {{4096, 8192},   {16384, 2048},  {65536, 512},   {1024, 32768}, {16384, 4096},  {16384, 16384},
               {32768, 12288}, {131072, 6144}, {65536, 8192},  {32768, 32768}, {65536, 32768}, {131072, 32768}});
}

/// Shapes of an A/B run: `shapes`, or those listed in QAB_SHAPES ("MxK,MxK", e.g. "4096x8192") to
/// keep a device call short.
std::vector<std::pair<int64_t, int64_t>> ab_shapes(const std::vector<std::pair<int64_t, int64_t>>& shapes) {
  const char* e = std::getenv("QAB_SHAPES");
  if (e == nullptr || *e == '\0') return shapes;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const char* c = e; *c != '\0';) {
    long long m = 0, k = 0;
    int n = 0;
    if (std::sscanf(c, "%lldx%lld%n", &m, &k, &n) != 2 || m <= 0 || k <= 0 || k % 32 != 0) {
      std::fprintf(stderr, "QAB_SHAPES: expected MxK[,MxK...] with K a multiple of 32, got '%s'\n", e);
      std::exit(2);
    }
    out.emplace_back(m, k);
    c += n;
    if (*c == ',') ++c;
  }
  return out;
}

void run_ab_impl(Context& ctx, const std::vector<AbVar>& vars, const std::string& bench_name, const std::string& title,
                 const std::vector<std::string>& headers, const std::vector<std::pair<int64_t, int64_t>>& all_shapes) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = ab_shapes(all_shapes);
  const AbSetup env;
  float* const gs_dev = env.gs_dev;
  const float s_dec = env.s_dec;
  cudaStream_t stream = env.stream;
  std::mt19937_64 rng(20261123);
  std::vector<std::vector<std::string>> table;
  for (const auto& [M, K] : shapes) {
    ShapeSets sets(ctx, M, K, rng);
    const std::size_t in_bytes = sets.in_bytes, data_bytes = sets.data_bytes, sf_bytes = sets.sf_bytes;
    const std::size_t q_bytes = sets.q_bytes;
    const int rot = sets.rot;
    std::vector<Buffers>& bufs = sets.bufs;
    Timer timer{ctx, stream, rot};
    std::vector<int64_t> rows = {0, 1, 33, 97, M / 2 + 1, M - 1};
    for (int i = 0; i < 3; ++i) rows.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(M)));
    auto quant = [&](int i, Recipe r, ErrorMetric metric, cudaStream_t st_) {
      quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, r, metric, SfLayout::k128x4, gs_dev, st_);
    };
    const double pc = 100.0 / ctx.copy_tbps;
    std::vector<std::string> row = {fmt("%lld", (long long)M), fmt("%lld", (long long)K), fmt("%.0f", in_bytes / 1048576.0)};
    double us_default = 0.0;
    for (const AbVar& v : vars) {
      cuda::set_fast_quantize_order_override(v.order);
      cuda::set_fast_quantize_balance_override(v.balance);
      cuda::set_fast_quantize_4over6_dq_override(v.dq);
      cuda::set_fast_quantize_block_override(v.block);
      cuda::set_fast_quantize_block_order_override(v.block_order);
      cuda::set_fast_quantize_block_threads_override(v.threads);
      cuda::set_fast_quantize_block_one_override(v.one);
      cuda::set_fast_quantize_lean_override(v.lean);
      BENCH_CUDA(cudaMemset(bufs[0].sf, 0xA5, sf_bytes));
      BENCH_CUDA(cudaMemset(bufs[0].data, 0xA5, data_bytes));
      quant(0, v.r, v.metric, nullptr);
      BENCH_CUDA(cudaDeviceSynchronize());
      check_rows(bufs[0], M, K, v.r, s_dec, rows, v.name, v.metric);
      const double us = timer.graph_us([&](int i, cudaStream_t st) { quant(i, v.r, v.metric, st); });
      if (us_default == 0.0) us_default = us;
      const double pct = static_cast<double>(q_bytes) / (us * 1e-6) / 1e12 * pc;
      if (v.r == Recipe::kNvfp4) row.push_back(fmt("%.1f (%.1f%%)", us, pct));
      else row.push_back(fmt("%.1f (%.2fx)", us, us / us_default));
      ctx.add_row({{"bench", bench_name}, {"variant", v.name}, {"m", M}, {"k", K}, {"us", us}, {"pct_copy", pct},
                   {"ratio_to_nv_default", us / us_default}});
    }
    cuda::set_fast_quantize_order_override(-1);
    cuda::set_fast_quantize_balance_override(-1);
    cuda::set_fast_quantize_4over6_dq_override(-1);
    cuda::set_fast_quantize_block_override(-1);
    cuda::set_fast_quantize_block_order_override(-1);
    cuda::set_fast_quantize_block_threads_override(0);
    cuda::set_fast_quantize_block_one_override(-1);
    cuda::set_fast_quantize_lean_override(-1);
    std::printf("progress M=%lld K=%lld:", (long long)M, (long long)K);
    for (std::size_t i = 3; i < row.size(); ++i) std::printf(" %s |", row[i].c_str());
    std::printf("\n");
    std::fflush(stdout);
    table.push_back(row);
  }
  print_table(fmt("%s, bf16 -> 128x4, given scale: us per call (graph replays); nvfp4 (%% of copy %.3f TB/s), "
                  "4over6 (time / nv_default)",
                  title.c_str(), ctx.copy_tbps),
              headers, table);
}

/// For a profiler (ncu -k regex:quantize_fast): one plain launch per variant (no graph, no
/// timing) on each QAB_SHAPES shape (default 4096 x 8192, bf16 -> 128x4, given scale), after one
/// checked launch of each, so that a profiler's capture of the N-th kernel is a known variant:
/// launch order per shape = the variants below, twice (checked pass, then the profiled pass).
void run_prof(Context& ctx) {
  (void)ctx;
  std::vector<AbVar> vars = {{"nv_default", Recipe::kNvfp4, -1, -1, -1},
                             {"4o6_default", Recipe::kNvfp4FourOverSix, -1, -1, -1},
                             {"4o6_dq7", Recipe::kNvfp4FourOverSix, -1, -1, 7},
                             {"4o6_mae_default", Recipe::kNvfp4FourOverSix, -1, -1, -1, ErrorMetric::kMae}};
  // QPROF_DQ="7,13": MSE 4over6 variants to launch instead of the list above (after nv_default).
  static std::vector<std::string> names;
  if (const char* e = std::getenv("QPROF_DQ"); e != nullptr && *e != '\0') {
    vars.resize(1);
    names.clear();
    names.reserve(16);
    for (const char* c = e; *c != '\0';) {
      char* end = nullptr;
      const long dq = std::strtol(c, &end, 10);
      if (end == c || names.size() == 16) break;
      names.push_back(fmt("4o6_dq%ld", dq));
      vars.push_back({names.back().c_str(), Recipe::kNvfp4FourOverSix, -1, -1, static_cast<int>(dq)});
      c = *end == ',' ? end + 1 : end;
    }
  }
  const AbSetup env;
  std::mt19937_64 rng(20261124);
  for (const auto& [M, K] : ab_shapes({{4096, 8192}})) {
    const std::size_t in_bytes = static_cast<std::size_t>(M * K * 2), data_bytes = static_cast<std::size_t>(M * K / 2);
    const std::size_t sf_bytes = static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes());
    std::vector<Buffers> bufs = make_buffer_sets(1, M, K, in_bytes, data_bytes, sf_bytes, rng);
    const std::vector<int64_t> rows = {0, 1, M / 2 + 1, M - 1};
    for (int pass = 0; pass < 2; ++pass) {
      for (const AbVar& v : vars) {
        cuda::set_fast_quantize_4over6_dq_override(v.dq);
        quantize_given(bufs[0], M, K, v.r, v.metric, SfLayout::k128x4, env.gs_dev, env.stream);
        BENCH_CUDA(cudaStreamSynchronize(env.stream));
        if (pass == 0) check_rows(bufs[0], M, K, v.r, env.s_dec, rows, v.name, v.metric);
        std::printf("q_prof M=%lld K=%lld pass %d: %s launched\n", (long long)M, (long long)K, pass, v.name);
      }
    }
    cuda::set_fast_quantize_4over6_dq_override(-1);
    free_buffer_sets(bufs);
  }
}

/// v12 A/B (64 MiB - 2 GiB): the 4over6 default (kDq 13: 2 CTAs/SM, next unit's position once,
/// one-instruction lookup addresses, lean unit) against v11's default kDq 7, MSE and MAE.
void run_ab12(Context& ctx) {
  const std::vector<AbVar> vars = {{"nv_default", Recipe::kNvfp4, -1, -1, -1},
                                   {"4o6_dq7", Recipe::kNvfp4FourOverSix, -1, -1, 7},
                                   {"4o6_default", Recipe::kNvfp4FourOverSix, -1, -1, -1},
                                   {"4o6_mae_dq7", Recipe::kNvfp4FourOverSix, -1, -1, 7, ErrorMetric::kMae},
                                   {"4o6_mae_default", Recipe::kNvfp4FourOverSix, -1, -1, -1, ErrorMetric::kMae}};
  run_ab_impl(ctx, vars, "quantize_ab12", "quantize v12 A/B",
              {"M", "K", "MiB", "nv default", "4o6 dq7 (v11)", "4o6 dq13 (default)", "4o6 MAE dq7", "4o6 MAE dq13 (default)"},
              {{4096, 8192},   {16384, 2048}, {65536, 512},   {1024, 32768}, {16384, 4096},
               {131072, 512},  {16384, 8192}, {16384, 16384}, {65536, 8192}, {32768, 32768}});
}

/// v14 A/B (0.1-256 MiB): nvfp4 and 4over6 (MSE, MAE) through the unit kernel (two 16-element
/// blocks per thread and step) against the block kernel (one block), and nvfp4 under the
/// library's rule; sizes from one CTA's worth to several waves of either. 4over6 columns: time
/// over the first column (nvfp4, unit kernel).
void run_block_ab(Context& ctx) {
  const std::vector<AbVar> vars = {{"nv_unit", Recipe::kNvfp4, -1, -1, -1, ErrorMetric::kMse, 0},
                                   {"nv_block", Recipe::kNvfp4, -1, -1, -1, ErrorMetric::kMse, 1},
                                   {"nv_default", Recipe::kNvfp4, -1, -1, -1, ErrorMetric::kMse, -1},
                                   {"nv_unit_again", Recipe::kNvfp4, -1, -1, -1, ErrorMetric::kMse, 0},
                                   {"nv_block_again", Recipe::kNvfp4, -1, -1, -1, ErrorMetric::kMse, 1},
                                   {"4o6_unit", Recipe::kNvfp4FourOverSix, -1, -1, -1, ErrorMetric::kMse, 0},
                                   {"4o6_block", Recipe::kNvfp4FourOverSix, -1, -1, -1, ErrorMetric::kMse, 1},
                                   {"4o6_mae_unit", Recipe::kNvfp4FourOverSix, -1, -1, -1, ErrorMetric::kMae, 0},
                                   {"4o6_mae_block", Recipe::kNvfp4FourOverSix, -1, -1, -1, ErrorMetric::kMae, 1}};
  run_ab_impl(ctx, vars, "quantize_block_ab", "quantize v14 A/B (unit vs block kernel)",
              {"M", "K", "MiB", "unit", "block", "default (rule)", "unit again", "block again", "4o6 unit", "4o6 block",
               "4o6 MAE unit", "4o6 MAE block"},
              {{128, 512},    {128, 2048},   {256, 4096},   {128, 16384},  {1024, 2048},  {4096, 512},
               {512, 6144},   {2048, 2048},  {8192, 512},   {512, 12288},  {1024, 8192},  {16384, 512},
               {2048, 6144},  {4096, 4096},  {512, 32768},  {4096, 6144},  {2048, 12288}, {16384, 2048},
               {1024, 32768}, {8192, 6144},  {4096, 16384}, {32768, 4096}});
}

/// The quantize call's traffic without the encode (the floor of the grid target, q_floor, and
/// the q_mix diagnosis of session 17): block i of 16 bf16 (32 bytes) is read, 8 bytes are written
/// at data + 8i and one byte at scales + i (linear; kWhat 4: at its 128x4 place), each a fold of
/// the block's words (so no load can be dropped) — the block kernel's index map. kU blocks per
/// thread and step have their loads in flight together; launched with PDL like the quantize
/// kernels, the thread's first block prefetched into L2 before the wait. kWhat 0 read + write,
/// 1 reads only, 2 writes only, 3 read + the data writes without the scale bytes, 4 as 0 with the
/// scale bytes at their 128x4 places; kLd 0 ld.global.cs, 1 ld.global.nc (the quantize kernels'
/// loads), 2 ld.global.nc with an L2::evict_first policy; kSt 0 plain stores, 1 st.global.cs,
/// 2 an L2::evict_last policy, 3 an L2::evict_first policy.
template <int kLd>
__device__ __forceinline__ uint4 mix_load(const uint4* p, uint64_t pol) {
  if constexpr (kLd == 0) return __ldcs(p);
  else if constexpr (kLd == 1) return __ldg(p);
  else {
    uint4 v;
    asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(pol));
    return v;
  }
}
template <int kSt>
__device__ __forceinline__ void mix_store8(uint2* p, uint2 v, uint64_t pol) {
  if constexpr (kSt == 0) *p = v;
  else if constexpr (kSt == 1) __stcs(p, v);
  else asm volatile("st.global.L2::cache_hint.v2.u32 [%0], {%1,%2}, %3;" ::"l"(p), "r"(v.x), "r"(v.y), "l"(pol) : "memory");
}
template <int kSt>
__device__ __forceinline__ void mix_store1(uint8_t* p, uint32_t v, uint64_t pol) {
  if constexpr (kSt == 0) *p = static_cast<uint8_t>(v);
  else if constexpr (kSt == 1) __stcs(reinterpret_cast<signed char*>(p), static_cast<signed char>(v));
  else asm volatile("st.global.L2::cache_hint.u8 [%0], %1, %2;" ::"l"(p), "r"(v), "l"(pol) : "memory");
}

template <int kU, int kWhat, int kLd, int kSt>
__global__ void __launch_bounds__(256) mix_kernel(const uint4* __restrict__ in, uint2* __restrict__ data,
                                                  uint8_t* __restrict__ sf, uint32_t blocks, uint32_t* sink,
                                                  uint32_t col_shift) {
  uint64_t pol_ld = 0, pol_st = 0;
  if constexpr (kLd == 2) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol_ld));
  if constexpr (kSt == 2) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol_st));
  if constexpr (kSt == 3) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol_st));
  const uint32_t stride = gridDim.x * blockDim.x;
  uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (kWhat != 2 && i < blocks) asm volatile("prefetch.global.L2 [%0];" : : "l"(in + 2 * static_cast<size_t>(i)));
  cuda::pdl_wait();
  cuda::pdl_trigger();
  uint32_t acc = 0;
  for (; i < blocks; i += kU * stride) {
    uint4 a[kU], b[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const uint32_t j = i + u * stride;
      a[u] = b[u] = make_uint4(j, j, j, j);
      if (kWhat != 2 && j < blocks) {
        a[u] = mix_load<kLd>(in + 2 * static_cast<size_t>(j), pol_ld);
        b[u] = mix_load<kLd>(in + 2 * static_cast<size_t>(j) + 1, pol_ld);
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const uint32_t j = i + u * stride;
      if (j < blocks) {
        const uint32_t x = a[u].x ^ a[u].y ^ a[u].z ^ a[u].w, y = b[u].x ^ b[u].y ^ b[u].z ^ b[u].w;
        if constexpr (kWhat == 1) {
          acc ^= x ^ y;
        } else {
          mix_store8<kSt>(data + j, make_uint2(x, y), pol_st);
          if constexpr (kWhat == 4) {
            // The 128x4 layout's place of block j's scale byte (row-major blocks, K / 16 = 2^col_shift).
            const uint32_t m = j >> col_shift, col = j & ((1u << col_shift) - 1u);
            const uint32_t off = (m >> 7) * ((1u << col_shift) / 4u * 512u) + (m & 31u) * 16u + ((m >> 5) & 3u) * 4u +
                                 (col >> 2) * 512u + (col & 3u);
            mix_store1<kSt>(sf + off, x ^ y, pol_st);
          } else if constexpr (kWhat != 3) {
            mix_store1<kSt>(sf + j, x ^ y, pol_st);
          }
        }
      }
    }
  }
  if (kWhat == 1 && acc == 0x9E3779B9u) sink[0] = acc;  // keeps the loads; (almost) never taken
}

/// mix_kernel's signature (any instantiation).
using MixKern = void (*)(const uint4*, uint2*, uint8_t*, uint32_t, uint32_t*, uint32_t);

/// Graph-timed µs per call of `k` over the rotated sets, `ctas` CTAs of 256 per SM (fewer when
/// the blocks need fewer).
double time_mix_kernel(Timer& timer, const std::vector<Buffers>& bufs, MixKern k, int ctas, int sms, uint32_t blocks,
                       uint32_t* sink, uint32_t col_shift) {
  const int64_t want = (static_cast<int64_t>(blocks) + 255) / 256;
  const int64_t cap = static_cast<int64_t>(sms) * ctas;
  const dim3 grid(static_cast<unsigned>(want < cap ? want : cap));
  return timer.graph_us([&](int i, cudaStream_t st) {
    const Buffers& b = bufs[static_cast<std::size_t>(i) % bufs.size()];
    BENCH_CUDA(cuda::launch_pdl(k, grid, dim3(256), 0, st, static_cast<const uint4*>(b.in), static_cast<uint2*>(b.data),
                                static_cast<uint8_t*>(b.sf), blocks, sink, col_shift));
  });
}

/// The same traffic with each thread on two adjacent blocks per step: 64 contiguous bytes read,
/// one 16-byte data store and one 2-byte scale store.
__global__ void __launch_bounds__(256) mix_pair_kernel(const uint4* __restrict__ in, uint4* __restrict__ data,
                                                       uint16_t* __restrict__ sf, uint32_t pairs) {
  const uint32_t stride = gridDim.x * blockDim.x;
  uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < pairs) asm volatile("prefetch.global.L2 [%0];" : : "l"(in + 4 * static_cast<size_t>(i)));
  cuda::pdl_wait();
  cuda::pdl_trigger();
  for (; i < pairs; i += stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = __ldcs(in + 4 * static_cast<size_t>(i) + u);
    uint32_t w[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) w[u] = v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    data[i] = make_uint4(w[0], w[1], w[2], w[3]);
    sf[i] = static_cast<uint16_t>(w[0] ^ w[1] ^ (w[2] << 8) ^ (w[3] << 8));
  }
}

/// The mix kernel's traffic in the "warp sector rows" order (128x4 only, K a multiple of 512): a
/// warp's unit is the 8 rows of one scale-sector set of a 128-row band (2j, 2j + 1, +32, +33, +64,
/// +65, +96, +97) × 32 consecutive block columns; it walks the 8 rows (1 KB contiguous per row and
/// load step, as row-major), puts each row's 32 scale bytes into its own 256-byte slot of shared
/// memory at their sector positions, and after the 8 rows stores the 8 whole sectors (8 bytes per
/// lane). kR rows in flight per lane.
template <int kR>
__global__ void __launch_bounds__(256) mix_ws_kernel(const uint4* __restrict__ in, uint2* __restrict__ data,
                                                     uint8_t* __restrict__ sf, uint32_t blocks, uint32_t* sink,
                                                     uint32_t col_shift) {
  __shared__ __align__(8) uint8_t stage[8][256];
  const uint32_t lane = threadIdx.x & 31u, wib = threadIdx.x >> 5;
  const uint32_t cols = 1u << col_shift, cgroups = cols >> 5, kt = cols >> 2;
  const uint32_t units = (blocks >> col_shift) / 128u * 16u * cgroups;
  const uint32_t nwarps = gridDim.x * (blockDim.x >> 5);
  uint32_t u = blockIdx.x * (blockDim.x >> 5) + wib;
  cuda::pdl_wait();
  cuda::pdl_trigger();
  for (; u < units; u += nwarps) {
    const uint32_t cg = u % cgroups, rest = u / cgroups, j = rest & 15u, band = rest >> 4;
    const uint32_t col = cg * 32u + lane;
#pragma unroll
    for (int r0 = 0; r0 < 8; r0 += kR) {
      uint4 a[kR], b[kR];
#pragma unroll
      for (int q = 0; q < kR; ++q) {
        const int r = r0 + q;
        const uint32_t m = band * 128u + 2u * j + static_cast<uint32_t>(r & 1) + 32u * static_cast<uint32_t>(r >> 1);
        const size_t blk = (static_cast<size_t>(m) << col_shift) + col;
        a[q] = __ldg(in + 2 * blk);
        b[q] = __ldg(in + 2 * blk + 1);
      }
#pragma unroll
      for (int q = 0; q < kR; ++q) {
        const int r = r0 + q;
        const uint32_t m = band * 128u + 2u * j + static_cast<uint32_t>(r & 1) + 32u * static_cast<uint32_t>(r >> 1);
        const size_t blk = (static_cast<size_t>(m) << col_shift) + col;
        const uint32_t x = a[q].x ^ a[q].y ^ a[q].z ^ a[q].w, y = b[q].x ^ b[q].y ^ b[q].z ^ b[q].w;
        data[blk] = make_uint2(x, y);
        stage[wib][(lane >> 2) * 32u + static_cast<uint32_t>(r & 1) * 16u + static_cast<uint32_t>(r >> 1) * 4u + (lane & 3u)] =
            static_cast<uint8_t>(x ^ y);
      }
    }
    __syncwarp();
    const uint2 v = *reinterpret_cast<const uint2*>(&stage[wib][lane * 8u]);
    const size_t off = (static_cast<size_t>(band) * kt + cg * 8u + (lane >> 2)) * 512u + 32u * j + 8u * (lane & 3u);
    *reinterpret_cast<uint2*>(sf + off) = v;
    __syncwarp();
  }
}

/// q_ctx (session 17, diagnosis): what moves the nvfp4 call's time between processes at small
/// sizes. Per shape (QAB_SHAPES): nvfp4 (given scale, 128x4) timed three times on rotated buffer
/// sets allocated three ways — one cudaMalloc per buffer (the benches' way), all sets packed in
/// one allocation, all sets in one allocation at 2 MiB-aligned offsets — and, on the separate
/// sets, around other kernels (does the kernel before change it?).
void run_ctx(Context& ctx) {
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      ab_shapes({{128, 512}, {128, 1024}, {128, 2048}, {1024, 512}, {256, 4096}, {1024, 2048}});
  const AbSetup env;
  std::mt19937_64 rng(20261125);
  std::vector<std::vector<std::string>> table;
  for (const auto& [M, K] : shapes) {
    const std::size_t in_bytes = static_cast<std::size_t>(M * K * 2), data_bytes = static_cast<std::size_t>(M * K / 2);
    const std::size_t sf_bytes = static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes());
    const int rot = ctx.rotation_count(in_bytes + data_bytes + sf_bytes);
    std::vector<std::string> row = {fmt("%lld", (long long)M), fmt("%lld", (long long)K), fmt("%.2f", in_bytes / 1048576.0),
                                    fmt("%d", rot)};
    for (int mode = 0; mode < 3; ++mode) {
      std::vector<Buffers> bufs =
          mode == 0 ? make_buffer_sets(rot, M, K, in_bytes, data_bytes, sf_bytes, rng)
                    : make_buffer_sets_in_one(rot, M, K, in_bytes, data_bytes, sf_bytes, mode == 1 ? 256 : (2u << 20), rng);
      Timer timer{ctx, env.stream, rot};
      std::string cell;
      for (int t = 0; t < 3; ++t) {
        const double us = timer.graph_us([&](int i, cudaStream_t st) {
          quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, Recipe::kNvfp4, ErrorMetric::kMse,
                         SfLayout::k128x4, env.gs_dev, st);
        });
        cell += fmt(t ? " %.2f" : "%.2f", us);
        ctx.add_row({{"bench", "quantize_ctx"}, {"m", M}, {"k", K}, {"alloc", mode}, {"try", t}, {"us", us}});
      }
      row.push_back(cell);
      free_buffer_sets(bufs);
    }
    std::printf("progress M=%lld K=%lld: %s | %s | %s\n", (long long)M, (long long)K, row[4].c_str(), row[5].c_str(),
                row[6].c_str());
    std::fflush(stdout);
    table.push_back(row);
  }
  print_table("nvfp4 (given scale, 128x4) us per call, three timings, on rotated sets allocated three ways",
              {"M", "K", "MiB", "sets", "one cudaMalloc per buffer", "packed in one allocation", "2 MiB-aligned in one"}, table);
}

void run_mix(Context& ctx) {
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      ab_shapes({{4096, 8192}, {16384, 8192}, {65536, 4096}, {32768, 16384}});
  const AbSetup env;
  std::mt19937_64 rng(20261124);
  int sms = 0, dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  uint32_t* sink = nullptr;
  BENCH_CUDA(cudaMalloc(&sink, 4));
  struct Var {
    const char* name;
    MixKern k;
    int ctas;
    int what;  // bytes counted: 0 read + write, 1 read, 2 write, 3 read + data
  };
  const Var vars[] = {
      {"rw ldg", mix_kernel<2, 0, 1, 0>, 8, 0},          {"rw ldg #2", mix_kernel<2, 0, 1, 0>, 8, 0},
      {"rw ldg #3", mix_kernel<2, 0, 1, 0>, 8, 0},       {"rw 8x2 (ld.cs)", mix_kernel<2, 0, 0, 0>, 8, 0},
      {"ro 8x2", mix_kernel<2, 1, 0, 0>, 8, 1},          {"wo 8x2", mix_kernel<2, 2, 0, 0>, 8, 2},
      {"rw st.ef", mix_kernel<2, 0, 0, 3>, 8, 0},        {"rw ldg st.cs", mix_kernel<2, 0, 1, 1>, 8, 0},
      {"rw ldg 4x1", mix_kernel<1, 0, 1, 0>, 4, 0},      {"rw ldg 4x2", mix_kernel<2, 0, 1, 0>, 4, 0},
      {"rw nosf ldg", mix_kernel<2, 3, 1, 0>, 8, 3},     {"rw ldg sf128x4", mix_kernel<2, 4, 1, 0>, 8, 0},
      {"rw ldg sf128x4 4x1", mix_kernel<1, 4, 1, 0>, 4, 0}, {"rw ldg #4", mix_kernel<2, 0, 1, 0>, 8, 0},
      {"rw 8x2 (ld.cs) #2", mix_kernel<2, 0, 0, 0>, 8, 0}, {"rw ldg #5", mix_kernel<2, 0, 1, 0>, 8, 0},
  };
  const double pc = 100.0 / ctx.copy_tbps;
  std::vector<std::string> headers = {"M", "K", "MiB"};
  for (const Var& v : vars) headers.push_back(v.name);
  headers.insert(headers.end(), {"ws 4x(2 rows)", "ws 4x(4 rows)", "pair 8x1", "nvfp4", "nvfp4 linear", "nvfp4 8x4", "same-bytes copy", "ro+wo model"});
  std::vector<std::vector<std::string>> table;
  for (const auto& [M, K] : shapes) {
    ShapeSets sets(ctx, M, K, rng);
    const std::size_t in_bytes = sets.in_bytes, data_bytes = sets.data_bytes, q_bytes = sets.q_bytes;
    const int rot = sets.rot;
    std::vector<Buffers>& bufs = sets.bufs;
    Timer timer{ctx, env.stream, rot};
    const uint32_t blocks = static_cast<uint32_t>(M * K / 16);
    uint32_t col_shift = 0;
    while ((int64_t(1) << (col_shift + 1)) <= K / 16) ++col_shift;
    BENCH_CHECK((int64_t(1) << col_shift) == K / 16 && K >= 512 && M % 128 == 0,
                "q_mix: K / 16 a power of two >= 32, M a multiple of 128");
    std::vector<std::string> row = {fmt("%lld", (long long)M), fmt("%lld", (long long)K), fmt("%.0f", in_bytes / 1048576.0)};
    double us_ro = 0, us_wo = 0;
    for (const Var& v : vars) {
      const double us = time_mix_kernel(timer, bufs, v.k, v.ctas, sms, blocks, sink, col_shift);
      const double bytes = v.what == 0 ? double(in_bytes + data_bytes + blocks)
                           : v.what == 1 ? double(in_bytes)
                           : v.what == 2 ? double(data_bytes + blocks)
                                         : double(in_bytes + data_bytes);
      const double tb = bytes / (us * 1e-6) / 1e12;
      if (std::string(v.name) == "ro 8x2") us_ro = us;  // the model: rw ldg-like traffic split in two
      if (std::string(v.name) == "wo 8x2") us_wo = us;
      row.push_back(fmt("%.1f (%.1f%%)", us, tb * pc));
      ctx.add_row({{"bench", "quantize_mix"}, {"variant", v.name}, {"m", M}, {"k", K}, {"us", us}, {"bytes", bytes},
                   {"tbps", tb}, {"pct_copy", tb * pc}});
    }
    for (int kr : {2, 4}) {
      const dim3 grid(static_cast<unsigned>(sms * 4));
      const double us = timer.graph_us([&](int i, cudaStream_t st) {
        const Buffers& b = bufs[static_cast<std::size_t>(i % rot)];
        BENCH_CUDA(cuda::launch_pdl(kr == 2 ? mix_ws_kernel<2> : mix_ws_kernel<4>, grid, dim3(256), 0, st,
                                    static_cast<const uint4*>(b.in), static_cast<uint2*>(b.data),
                                    static_cast<uint8_t*>(b.sf), blocks, sink, col_shift));
      });
      const double tb = double(in_bytes + data_bytes + blocks) / (us * 1e-6) / 1e12;
      row.push_back(fmt("%.1f (%.1f%%)", us, tb * pc));
      ctx.add_row({{"bench", "quantize_mix"}, {"variant", fmt("ws %d", kr)}, {"m", M}, {"k", K}, {"us", us}, {"tbps", tb}, {"pct_copy", tb * pc}});
    }
    {
      const uint32_t pairs = blocks / 2;
      const int64_t want = (static_cast<int64_t>(pairs) + 255) / 256;
      const dim3 grid(static_cast<unsigned>(std::min<int64_t>(want, static_cast<int64_t>(sms) * 8)));
      const double us = timer.graph_us([&](int i, cudaStream_t st) {
        const Buffers& b = bufs[static_cast<std::size_t>(i % rot)];
        BENCH_CUDA(cuda::launch_pdl(mix_pair_kernel, grid, dim3(256), 0, st, static_cast<const uint4*>(b.in),
                                    static_cast<uint4*>(b.data), static_cast<uint16_t*>(b.sf), pairs));
      });
      const double tb = double(in_bytes + data_bytes + blocks) / (us * 1e-6) / 1e12;
      row.push_back(fmt("%.1f (%.1f%%)", us, tb * pc));
      ctx.add_row({{"bench", "quantize_mix"}, {"variant", "pair 8x1"}, {"m", M}, {"k", K}, {"us", us}, {"tbps", tb}, {"pct_copy", tb * pc}});
    }
    const double us_nv = timer.graph_us([&](int i, cudaStream_t st) {
      quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, Recipe::kNvfp4, ErrorMetric::kMse, SfLayout::k128x4,
                     env.gs_dev, st);
    });
    const double us_lin = timer.graph_us([&](int i, cudaStream_t st) {
      quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, Recipe::kNvfp4, ErrorMetric::kMse, SfLayout::kLinear,
                     env.gs_dev, st);
    });
    const double us_8x4 = timer.graph_us([&](int i, cudaStream_t st) {
      quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, Recipe::kNvfp4, ErrorMetric::kMse, SfLayout::k8x4,
                     env.gs_dev, st);
    });
    const double us_cp = same_bytes_copy_us(timer, bufs, q_bytes / 2);
    for (double us : {us_nv, us_lin, us_8x4, us_cp, us_ro + us_wo}) {
      const double tb = double(q_bytes) / (us * 1e-6) / 1e12;
      row.push_back(fmt("%.1f (%.1f%%)", us, tb * pc));
    }
    ctx.add_row({{"bench", "quantize_mix"}, {"variant", "nvfp4"}, {"m", M}, {"k", K}, {"us", us_nv}});
    ctx.add_row({{"bench", "quantize_mix"}, {"variant", "same_bytes_copy"}, {"m", M}, {"k", K}, {"us", us_cp}});
    std::printf("progress M=%lld K=%lld:", (long long)M, (long long)K);
    for (std::size_t i = 3; i < row.size(); ++i) std::printf(" %s |", row[i].c_str());
    std::printf("\n");
    std::fflush(stdout);
    table.push_back(row);
  }
  BENCH_CUDA(cudaFree(sink));
  print_table(fmt("read/write mix of the nvfp4 call's traffic: us per call (graph replays) and %% of copy %.3f TB/s "
                  "counting the bytes each variant moves",
                  ctx.copy_tbps),
              headers, table);
}

/// Floor of the issue-3 grid: per shape, the best of eight launch shapes of mix_kernel's read +
/// write traffic (CTAs of 256 per SM × blocks in flight per thread × two load kinds), graph-timed over rotated buffer sets exactly
/// like the quantize rows, beside the nvfp4 kernel (given scale, 128x4) and a same-bytes
/// cudaMemcpyAsync in the same loop. Reports each one's % of the 1 GiB copy and grid geomeans:
/// if the floor's geomean is below the target, no kernel that moves these bytes this way meets it.
void run_floor(Context& ctx) {
  const Grid shape_grid = issue3_grid(ctx.quick);
  const std::vector<int64_t>& Ms = shape_grid.Ms;
  const std::vector<int64_t>& Ks = shape_grid.Ks;
  std::vector<std::pair<int64_t, int64_t>> grid_shapes;
  for (int64_t M : Ms)
    for (int64_t K : Ks) grid_shapes.emplace_back(M, K);
  const bool each = std::getenv("QFLOOR_EACH") != nullptr;  // print every launch shape's time
  const std::size_t limit = std::size_t(24) << 30;
  float* gs_dev = nullptr;
  BENCH_CUDA(cudaMalloc(&gs_dev, sizeof(float)));
  const float s_dec_given = kFillBound / 2688.0f;
  BENCH_CUDA(cudaMemcpy(gs_dev, &s_dec_given, sizeof(float), cudaMemcpyHostToDevice));
  std::mt19937_64 rng(20261122);
  cudaStream_t stream = nullptr;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int sms = 0, dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  struct FloorVar {
    const char* name;
    int ctas;
    MixKern k;
  };
  // CTAs of 256 per SM × blocks in flight per thread; ".nc": ld.global.nc loads (as the quantize
  // kernels), faster from 64 MiB (q_mix: 97-99 % of copy against 93-94 % with ld.global.cs).
  const FloorVar fvars[] = {{"8x1", 8, mix_kernel<1, 0, 0, 0>},    {"8x2", 8, mix_kernel<2, 0, 0, 0>},
                            {"4x2", 4, mix_kernel<2, 0, 0, 0>},    {"4x4", 4, mix_kernel<4, 0, 0, 0>},
                            {"8x1.nc", 8, mix_kernel<1, 0, 1, 0>}, {"8x2.nc", 8, mix_kernel<2, 0, 1, 0>},
                            {"4x1.nc", 4, mix_kernel<1, 0, 1, 0>}, {"4x2.nc", 4, mix_kernel<2, 0, 1, 0>}};
  uint32_t* sink = nullptr;
  BENCH_CUDA(cudaMalloc(&sink, 4));
  std::vector<std::vector<std::string>> table;
  std::vector<double> g_floor, g_nv, g_cp, g_ratio;
  for (const auto& [M, K] : ab_shapes(grid_shapes)) {
    {
      const std::size_t in_bytes = static_cast<std::size_t>(M * K * 2);
      const std::size_t data_bytes = static_cast<std::size_t>(M * K / 2);
      const std::size_t sf_bytes = static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes());
      const std::size_t q_bytes = in_bytes + data_bytes + sf_bytes;
      const int rot = ctx.rotation_count(q_bytes);
      if (rot * q_bytes > limit) continue;
      std::vector<Buffers> bufs = make_buffer_sets(rot, M, K, in_bytes, data_bytes, sf_bytes, rng);
      Timer timer{ctx, stream, rot};
      const uint32_t blocks = static_cast<uint32_t>(M * K / 16);
      BENCH_CHECK(sf_bytes >= blocks, "floor: scale bytes below the block count");
      double best = 1e30;
      std::string best_name;
      std::vector<std::string> row = {fmt("%lld", (long long)M), fmt("%lld", (long long)K), fmt("%.1f", in_bytes / 1048576.0)};
      for (const FloorVar& v : fvars) {
        const double us = time_mix_kernel(timer, bufs, v.k, v.ctas, sms, blocks, sink, 0u);
        if (us < best) best = us, best_name = v.name;
        if (each) std::printf("floor M=%lld K=%lld launch shape %s: %.2f us\n", (long long)M, (long long)K, v.name, us);
      }
      const auto nv_call = [&](int i, cudaStream_t st) {
        quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, Recipe::kNvfp4, ErrorMetric::kMse, SfLayout::k128x4,
                       gs_dev, st);
      };
      // QFLOOR_ONE=<mode>: the nvfp4 call with set_fast_quantize_block_one_override(mode) (quantize v20).
      if (const char* e = std::getenv("QFLOOR_ONE")) cuda::set_fast_quantize_block_one_override(std::atoi(e));
      const double us_nv = timer.graph_us(nv_call);
      cuda::set_fast_quantize_block_one_override(-1);
      const double us_cp = same_bytes_copy_us(timer, bufs, q_bytes / 2);
      const double pc = 100.0 / ctx.copy_tbps;
      const auto pct = [&](double us) { return static_cast<double>(q_bytes) / (us * 1e-6) / 1e12 * pc; };
      g_floor.push_back(pct(best));
      g_nv.push_back(pct(us_nv));
      g_cp.push_back(pct(us_cp));
      g_ratio.push_back(us_nv / best);
      row.push_back(fmt("%.2f", best));
      row.push_back(fmt("%.1f%%", pct(best)));
      row.push_back(best_name);
      row.push_back(fmt("%.2f", us_nv));
      row.push_back(fmt("%.1f%%", pct(us_nv)));
      row.push_back(fmt("%.2f", us_cp));
      row.push_back(fmt("%.1f%%", pct(us_cp)));
      row.push_back(fmt("%.2f", us_nv / best));
      ctx.add_row({{"bench", "quantize_floor"}, {"m", M}, {"k", K}, {"floor_us", best}, {"floor_variant", best_name},
                   {"floor_pct_copy", pct(best)}, {"nvfp4_us", us_nv}, {"nvfp4_pct_copy", pct(us_nv)},
                   {"samebytes_copy_us", us_cp}, {"samebytes_copy_pct_copy", pct(us_cp)}, {"nvfp4_over_floor", us_nv / best}});
      std::printf("progress M=%lld K=%lld floor %.2f us (%s) nvfp4 %.2f copy %.2f\n", (long long)M, (long long)K, best,
                  best_name.c_str(), us_nv, us_cp);
      std::fflush(stdout);
      table.push_back(row);
      free_buffer_sets(bufs);
    }
  }
  print_table(fmt("quantize grid floor: a kernel that only moves the nvfp4 call's bytes (best of 8 launch shapes), "
                  "nvfp4 given scale (128x4) and a same-bytes copy, graph-timed, %% of copy %.3f TB/s",
                  ctx.copy_tbps),
              {"M", "K", "in MiB", "floor us", "floor %copy", "floor shape", "nvfp4 us", "nvfp4 %copy", "copy us",
               "copy %copy", "nvfp4/floor"},
              table);
  std::printf("summary: grid geomean %% of copy: floor %.1f%%, nvfp4 %.1f%%, same-bytes copy %.1f%%; nvfp4 / floor time "
              "geomean %.3f (target: nvfp4 grid geomean >= 70%%)\n",
              geomean(g_floor), geomean(g_nv), geomean(g_cp), geomean(g_ratio));
  BENCH_CUDA(cudaFree(sink));
  ctx.add_row({{"bench", "quantize_floor_summary"}, {"floor_geomean_pct", geomean(g_floor)}, {"nvfp4_geomean_pct", geomean(g_nv)},
               {"copy_geomean_pct", geomean(g_cp)}, {"nvfp4_over_floor_geomean", geomean(g_ratio)}});
  BENCH_CUDA(cudaFree(gs_dev));
  BENCH_CUDA(cudaStreamDestroy(stream));
}

#ifdef NVFP4KV_QUANT_TRACE
// Timeline experiment (quantize v18; built with -DNVFP4KV_QUANT_TRACE): the floor kernel (one
// block per thread) with the block kernel's stamps, and q_trace, which runs a graph of
// back-to-back calls (rotated buffer sets, as the timed rows) of the floor and of nvfp4 and
// reports where each call's time goes.
__device__ unsigned long long g_ftrace[1u << 17][cuda::kQTraceWords];
__device__ unsigned int g_ftrace_n;

__device__ __forceinline__ unsigned long long ftrace_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void __launch_bounds__(256) floor_trace_kernel(const uint4* __restrict__ in, uint2* __restrict__ data,
                                                          uint8_t* __restrict__ sf, uint32_t blocks) {
  unsigned long long t[6] = {ftrace_now(), 0, 0, 0, 0, 0};
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < blocks) asm volatile("prefetch.global.L2 [%0];" : : "l"(in + 2 * static_cast<size_t>(i)));
  cuda::pdl_wait();
  cuda::pdl_trigger();
  t[1] = t[2] = ftrace_now();
  if (i < blocks) {
    const uint4 a = __ldcs(in + 2 * static_cast<size_t>(i)), b = __ldcs(in + 2 * static_cast<size_t>(i) + 1);
    uint32_t x = a.x ^ a.y ^ a.z ^ a.w, y = b.x ^ b.y ^ b.z ^ b.w;
    asm volatile("mov.b32 %0, %0;" : "+r"(x));
    t[3] = ftrace_now();
    data[i] = make_uint2(x, y);
    sf[i] = static_cast<uint8_t>(x ^ y);
    t[4] = ftrace_now();
  }
  t[5] = ftrace_now();
  if (i < blocks && (threadIdx.x & 31u) == 0u) {
    const unsigned n = atomicAdd(&g_ftrace_n, 1u);
    if (n < (1u << 17)) {
      unsigned sm;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      for (int j = 0; j < 6; ++j) g_ftrace[n][j] = t[j];
      g_ftrace[n][6] = reinterpret_cast<uintptr_t>(in);
      g_ftrace[n][7] = sm;
      for (int j = 8; j < cuda::kQTraceWords; ++j) g_ftrace[n][j] = 0;
    }
  }
}

/// Medians over the calls of one graph launch (first and last call dropped) of: the period
/// (exit of the last warp of call k − that of call k − 1), the release (first pdl_wait return of
/// call k − last exit of call k − 1), and from call k's first release: the global scale ready
/// (last warp), the first block's words arrived (median and last warp), the first block's stores
/// issued (last warp), the last exit; the earliest entry before the release. ns.
std::vector<double> g_cycle_medians;  // trace_summary's SM-clock intervals of the last call
std::vector<double> trace_summary(const std::vector<unsigned long long>& v) {
  const std::size_t W = cuda::kQTraceWords, n = v.size() / W;
  std::vector<std::size_t> idx(n);
  for (std::size_t i = 0; i < n; ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return v[a * W + 1] < v[b * W + 1]; });
  struct Call {
    double t0min = 1e300, w = 1e300, g = 0, dmax = 0, s = 0, e = 0;
    std::vector<double> d;
  };
  std::vector<Call> calls;
  unsigned long long tag = ~0ull;
  const double base = n > 0 ? static_cast<double>(v[idx[0] * W + 1]) : 0.0;
  for (std::size_t r : idx) {
    const unsigned long long* t = &v[r * W];
    if (t[6] != tag) calls.emplace_back(), tag = t[6];
    Call& c = calls.back();
    const auto f = [&](int j) { return static_cast<double>(t[j]) - base; };
    c.t0min = std::min(c.t0min, f(0));
    c.w = std::min(c.w, f(1));
    c.g = std::max(c.g, f(2));
    c.dmax = std::max(c.dmax, f(3));
    c.d.push_back(f(3));
    c.s = std::max(c.s, f(4));
    c.e = std::max(c.e, f(5));
  }
  std::vector<std::vector<double>> cols(9);
  for (std::size_t k = 1; k + 1 < calls.size(); ++k) {
    Call& c = calls[k];
    const Call& p = calls[k - 1];
    std::sort(c.d.begin(), c.d.end());
    cols[0].push_back(c.e - p.e);
    cols[1].push_back(c.w - p.e);
    cols[2].push_back(c.g - c.w);
    cols[3].push_back(c.d[c.d.size() / 2] - c.w);
    cols[4].push_back(c.dmax - c.w);
    cols[5].push_back(c.s - c.w);
    cols[6].push_back(c.e - c.w);
    cols[7].push_back(c.w - c.t0min);
    cols[8].push_back(static_cast<double>(c.d.size()));
  }
  // SM-clock intervals of the nvfp4 records (zero for the floor), medians over every warp of the
  // middle calls: words 8..17.
  {
    std::vector<std::vector<double>> cyc(9);
    std::size_t k = 0;
    unsigned long long tg = ~0ull;
    for (std::size_t r : idx) {
      const unsigned long long* t = &v[r * W];
      if (t[6] != tg) ++k, tg = t[6];
      if (k < 2 || k + 1 > calls.size()) continue;
      const double c[10] = {double(t[8]),  double(t[9]),  double(t[10]), double(t[11]), double(t[12]),
                            double(t[13]), double(t[14]), double(t[15]), double(t[16]), double(t[17])};
      const double d[9] = {c[1] - c[0], c[2] - c[0], c[3] - std::max(c[1], c[2]), c[4] - c[3], c[5] - c[4],
                           c[6] - c[5], c[7] - c[6], c[8] - c[7], c[9] - c[8]};
      for (int j = 0; j < 9; ++j) cyc[static_cast<std::size_t>(j)].push_back(d[j]);
    }
    g_cycle_medians.clear();
    for (auto& col : cyc) {
      std::sort(col.begin(), col.end());
      g_cycle_medians.push_back(col.empty() ? 0.0 : col[col.size() / 2]);
    }
  }
  std::vector<double> out;
  for (auto& col : cols) {
    std::sort(col.begin(), col.end());
    out.push_back(col.empty() ? 0.0 : col[col.size() / 2]);
  }
  out.push_back(static_cast<double>(calls.size()));
  return out;
}

void run_trace(Context& ctx) {
  const AbSetup env;
  cudaStream_t stream = env.stream;
  int sms = 0, dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  std::mt19937_64 rng(20261124);
  std::vector<std::vector<std::string>> table, ctable;
  for (const auto& [M, K] : ab_shapes({{128, 512}, {1024, 512}, {256, 4096}, {1024, 2048}, {2048, 2048}})) {
    const std::size_t in_bytes = static_cast<std::size_t>(M * K * 2), data_bytes = static_cast<std::size_t>(M * K / 2);
    const std::size_t sf_bytes = static_cast<std::size_t>(scale_shape(Recipe::kNvfp4, SfLayout::k128x4, M, K).bytes());
    const int rot = std::max(ctx.rotation_count(in_bytes + data_bytes + sf_bytes), 16);
    std::vector<Buffers> bufs = make_buffer_sets(rot, M, K, in_bytes, data_bytes, sf_bytes, rng);
    Timer timer{ctx, stream, rot};
    const uint32_t blocks = static_cast<uint32_t>(M * K / 16);
    const dim3 fgrid((blocks + 255) / 256);
    const auto floor_call = [&](int i, cudaStream_t st) {
      const Buffers& b = bufs[static_cast<std::size_t>(i % rot)];
      BENCH_CUDA(cuda::launch_pdl(floor_trace_kernel, fgrid, dim3(256), 0, st, static_cast<const uint4*>(b.in),
                                  static_cast<uint2*>(b.data), static_cast<uint8_t*>(b.sf), blocks));
    };
    const auto nv_call = [&](int i, cudaStream_t st) {
      quantize_given(bufs[static_cast<std::size_t>(i % rot)], M, K, Recipe::kNvfp4, ErrorMetric::kMse, SfLayout::k128x4,
                     env.gs_dev, st);
    };
    for (int which = 0; which < 2; ++which) {
      const auto& fn = which == 0 ? std::function<void(int, cudaStream_t)>(floor_call) : std::function<void(int, cudaStream_t)>(nv_call);
      const double us = timer.graph_us(fn);
      cudaGraphExec_t exec = timer.capture(fn, rot);
      BENCH_CUDA(cudaGraphLaunch(exec, stream));
      BENCH_CUDA(cudaStreamSynchronize(stream));
      const unsigned zero = 0;
      if (which == 0) BENCH_CUDA(cudaMemcpyToSymbol(g_ftrace_n, &zero, sizeof(zero)));
      else cuda::quant_trace_reset();
      BENCH_CUDA(cudaGraphLaunch(exec, stream));
      BENCH_CUDA(cudaStreamSynchronize(stream));
      std::vector<unsigned long long> v;
      if (which == 0) {
        unsigned n = 0;
        BENCH_CUDA(cudaMemcpyFromSymbol(&n, g_ftrace_n, sizeof(n)));
        n = std::min(n, 1u << 17);
        v.resize(static_cast<std::size_t>(n) * cuda::kQTraceWords);
        if (n > 0) BENCH_CUDA(cudaMemcpyFromSymbol(v.data(), g_ftrace, v.size() * sizeof(unsigned long long)));
      } else {
        v = cuda::quant_trace_fetch();
      }
      BENCH_CUDA(cudaGraphExecDestroy(exec));
      const std::vector<double> sm = trace_summary(v);
      std::vector<std::string> row = {which == 0 ? "floor 1x256" : "nvfp4", fmt("%lld", (long long)M), fmt("%lld", (long long)K),
                                      fmt("%.2f", us)};
      for (int j = 0; j < 8; ++j) row.push_back(fmt("%.0f", sm[static_cast<std::size_t>(j)]));
      row.push_back(fmt("%.0f", sm[8]));
      row.push_back(fmt("%.0f", sm[9]));
      table.push_back(row);
      if (which == 1) {
        std::vector<std::string> crow = {fmt("%lld", (long long)M), fmt("%lld", (long long)K)};
        for (double c : g_cycle_medians) crow.push_back(fmt("%.0f", c));
        ctable.push_back(crow);
      }
      ctx.add_row({{"bench", "quantize_trace"}, {"kernel", row[0]}, {"m", M}, {"k", K}, {"graph_us", us}, {"period_ns", sm[0]},
                   {"release_ns", sm[1]}, {"gscale_ns", sm[2]}, {"data_med_ns", sm[3]}, {"data_last_ns", sm[4]},
                   {"first_stores_ns", sm[5]}, {"exit_ns", sm[6]}, {"entry_before_release_ns", sm[7]}});
    }
    free_buffer_sets(bufs);
  }
  print_table("quantize timeline (v18 trace build): medians over the calls of one graph launch, ns; release = first pdl_wait "
              "return - previous call's last exit; other columns from this call's first release (last warp unless noted)",
              {"kernel", "M", "K", "graph us", "period", "release", "gscale", "data med", "data last", "1st stores", "exit",
               "entry<rel", "warps", "calls"},
              table);
  print_table("nvfp4 block kernel, SM cycles per warp (medians over the middle calls' warps): release -> first block's "
              "words, release -> global scale ready, then block max, scale byte, encode multiplier, codes, data store, "
              "scale store, rest of the loop to exit",
              {"M", "K", "data", "gscale", "max", "sf", "enc", "codes", "st data", "st sf", "to exit"}, ctable);
}
#endif

/// v17 A/B: the block kernel's CTA size for plain nvfp4 (set_fast_quantize_block_threads_override;
/// 0 = the library rule), small and mid inputs, twice in reverse order.
void run_threads_ab17(Context& ctx) {
  const auto var = [](const char* name, int threads) {
    AbVar v{name, Recipe::kNvfp4, -1, -1, -1};
    v.threads = threads;
    return v;
  };
  const std::vector<AbVar> vars = {var("nv_auto", 0),  var("nv_256", 256), var("nv_128", 128), var("nv_64", 64),
                                   var("nv_32", 32),   var("nv_64_again", 64), var("nv_128_again", 128),
                                   var("nv_256_again", 256)};
  run_ab_impl(ctx, vars, "quantize_threads_ab17", "quantize v17 A/B (block kernel CTA size, nvfp4)",
              {"M", "K", "MiB", "auto", "256", "128", "64", "32", "64 again", "128 again", "256 again"},
              {{128, 512}, {128, 1024}, {256, 512}, {128, 2048}, {512, 512}, {128, 4096}, {1024, 1024}, {256, 4096},
               {1024, 2048}, {512, 6144}, {1024, 4096}, {1024, 8192}});
}

/// v16 A/B: the block kernel's sector order against row-major, each forced, nvfp4 and 4over6
/// (MSE), 128x4 (the launch rule takes the sector order for nvfp4 up to 8 MiB).
void run_order_ab16(Context& ctx) {
  const auto var = [](const char* name, Recipe r, int order) {
    AbVar v{name, r, -1, -1, -1, ErrorMetric::kMse, -1};
    v.block_order = order;
    return v;
  };
  const std::vector<AbVar> vars = {var("nv_sector", Recipe::kNvfp4, 1), var("nv_rowmajor", Recipe::kNvfp4, 0),
                                   var("4o6_sector", Recipe::kNvfp4FourOverSix, 1),
                                   var("4o6_rowmajor", Recipe::kNvfp4FourOverSix, 0),
                                   var("nv_rowmajor_again", Recipe::kNvfp4, 0), var("nv_sector_again", Recipe::kNvfp4, 1)};
  run_ab_impl(ctx, vars, "quantize_order_ab16", "quantize v16 A/B (block kernel: sector order vs row-major)",
              {"M", "K", "MiB", "nv sector", "nv row-major", "4o6 sector", "4o6 row-major", "nv row-major again",
               "nv sector again"},
              {{128, 512},    {128, 4096},   {256, 4096},   {1024, 2048},  {512, 6144},   {2048, 2048},
               {8192, 512},   {512, 12288},  {1024, 8192},  {16384, 512},  {2048, 6144},  {4096, 4096},
               {512, 32768},  {4096, 6144},  {16384, 2048}, {1024, 32768}, {8192, 6144},  {4096, 16384}});
}

/// A plain-nvfp4 A/B variant with set_fast_quantize_block_one_override(one) (v18, v20).
AbVar one_var(const char* name, int one) {
  AbVar v{name, Recipe::kNvfp4, -1, -1, -1};
  v.one = one;
  return v;
}

/// The issue-3 grid shapes up to 4 MiB and some of 6-16 MiB (v18 and v20 A/B).
std::vector<std::pair<int64_t, int64_t>> small_grid_shapes() {
  return {{128, 512},   {128, 1024},  {256, 512},   {128, 2048},  {256, 1024},  {512, 512},   {128, 4096},
          {256, 2048},  {512, 1024},  {1024, 512},  {128, 6144},  {128, 8192},  {256, 4096},  {512, 2048},
          {1024, 1024}, {2048, 512},  {128, 12288}, {256, 6144},  {128, 16384}, {256, 8192},  {512, 4096},
          {1024, 2048}, {2048, 1024}, {4096, 512},  {256, 12288}, {512, 6144},  {128, 32768}, {512, 8192},
          {2048, 2048}, {8192, 512},  {512, 12288}, {1024, 8192}};
}

/// v18 A/B: plain nvfp4 on small_grid_shapes(): the block kernel's one-block path (56 registers;
/// v18 also had a two-block path, removed in v20) forced and off, twice in reverse order.
void run_one_ab18(Context& ctx) {
  const std::vector<AbVar> vars = {one_var("nv_default", -1), one_var("nv_loop", 0), one_var("nv_one", 1),
                                   one_var("nv_one_again", 1), one_var("nv_loop_again", 0)};
  run_ab_impl(ctx, vars, "quantize_one_ab18", "quantize v18 A/B (plain nvfp4: block kernel loop vs one-block path)",
              {"M", "K", "MiB", "default", "loop", "one", "one again", "loop again"}, small_grid_shapes());
}

/// v20 A/B (plain nvfp4): the library's rule against the one-block path at 32 registers (8 CTAs of
/// 256 per SM) over as many waves as the call needs, at 56 registers, and the persistent loop, on
/// small_grid_shapes() plus 32 and 64 MiB (QAB_SHAPES picks some).
void run_waves_ab20(Context& ctx) {
  const std::vector<AbVar> vars = {one_var("nv_default", -1),      one_var("nv_waves", 2),  one_var("nv_one56", 1),
                                   one_var("nv_waves_again", 2),   one_var("nv_default_again", -1), one_var("nv_loop", 0)};
  std::vector<std::pair<int64_t, int64_t>> shapes = small_grid_shapes();
  shapes.insert(shapes.end(), {{4096, 4096}, {4096, 8192}});
  run_ab_impl(ctx, vars, "quantize_waves_ab20",
              "quantize v20 A/B (plain nvfp4: the launch rule vs the 32-register one-block path in waves vs the loop)",
              {"M", "K", "MiB", "default", "waves", "one56", "waves again", "default again", "loop"}, shapes);
}

/// v22 A/B (plain nvfp4): the library's rule with and without the block kernel's lean path
/// (set_fast_quantize_lean_override 0), alternated twice, on small_grid_shapes() plus 24-128 MiB
/// (QAB_SHAPES picks some).
void run_lean_ab22(Context& ctx) {
  AbVar off = one_var("nv_nolean", -1);
  off.lean = 0;
  AbVar off2 = off;
  off2.name = "nv_nolean_again";
  const std::vector<AbVar> vars = {one_var("nv_default", -1), off, one_var("nv_default_again", -1), off2};
  std::vector<std::pair<int64_t, int64_t>> shapes = small_grid_shapes();
  shapes.insert(shapes.end(), {{2048, 6144}, {4096, 4096}, {1024, 16384}, {16384, 2048}, {4096, 8192}, {8192, 8192}});
  run_ab_impl(ctx, vars, "quantize_lean_ab22", "quantize v22 A/B (plain nvfp4: the launch rule with and without the lean path)",
              {"M", "K", "MiB", "default", "no lean", "default again", "no lean again"}, shapes);
}

/// v22 A/B (plain nvfp4) at 256 MiB - 8 GiB: the library's rule against the block kernel in
/// row-major order (lean), alternated, and 4over6 (MSE) by the rule and in the unit kernel's
/// warp-sector order (QAB_SHAPES picks some).
void run_big_ab22(Context& ctx) {
  AbVar blk{"nv_block_rowmajor", Recipe::kNvfp4, 0, -1, -1};
  blk.block = 1;
  AbVar blk2 = blk;
  blk2.name = "nv_block_rowmajor_again";
  AbVar o6{"o6_default", Recipe::kNvfp4FourOverSix, -1, -1, -1};
  AbVar o6u{"o6_unit_warpsector", Recipe::kNvfp4FourOverSix, 2, -1, -1};
  o6u.block = 0;
  const std::vector<AbVar> vars = {one_var("nv_default", -1), blk, one_var("nv_default_again", -1), blk2, o6, o6u};
  run_ab_impl(ctx, vars, "quantize_big_ab22",
              "quantize v22 A/B (>= 256 MiB: the rule vs the block kernel row-major; 4over6 MSE as time / nv_default)",
              {"M", "K", "MiB", "default", "block rowmajor", "default again", "block rowmajor again", "4o6 default", "4o6 unit ws"},
              {{4096, 32768}, {8192, 16384}, {16384, 8192}, {32768, 4096}, {65536, 2048}, {131072, 1024}, {8192, 32768},
               {65536, 4096}, {32768, 16384}, {131072, 4096}, {65536, 12288}, {131072, 16384}, {131072, 32768}});
}

}  // namespace

NVFP4KV_BENCHMARK("q_v22_big_ab", "v22 A/B: plain nvfp4 at 256 MiB - 8 GiB, unit kernel (warp-sector) vs block kernel (row-major)",
                  run_big_ab22);
NVFP4KV_BENCHMARK("q_v22_ab", "v22 A/B: plain nvfp4 with and without the block kernel's lean path, 0.1-128 MiB", run_lean_ab22);
NVFP4KV_BENCHMARK("q_v20_ab", "v20 A/B: plain nvfp4 launch rule vs the 32-register one-block path in waves vs the loop, 0.1-64 MiB",
                  run_waves_ab20);
NVFP4KV_BENCHMARK("q_v18_ab", "v18 A/B: plain nvfp4 block kernel loop vs the one-block path (56 registers), grid shapes 0.1-16 MiB", run_one_ab18);
NVFP4KV_BENCHMARK("q_v17_ab", "v17 A/B: block kernel CTA size for plain nvfp4 (256/128/64/32 threads)", run_threads_ab17);
NVFP4KV_BENCHMARK("q_v16_ab", "v16 A/B: block kernel sector order vs row-major (nvfp4, 4over6; 128x4)", run_order_ab16);

#ifdef NVFP4KV_QUANT_TRACE
NVFP4KV_BENCHMARK("q_trace", "timeline of back-to-back nvfp4 and floor calls (trace build only)", run_trace);
#endif
NVFP4KV_BENCHMARK("q_ctx", "nvfp4 timed around other kernels on the same buffers (diagnosis of order effects)", run_ctx);
NVFP4KV_BENCHMARK("q_mix", "read/write mix of the large nvfp4 calls' traffic: reads only, writes only, cache hints (diagnosis)", run_mix);
NVFP4KV_BENCHMARK("q_floor", "issue-3 grid floor: a kernel moving the nvfp4 call's bytes vs nvfp4 and a copy",
                  run_floor);

NVFP4KV_BENCHMARK("q_block_ab", "v14 A/B: nvfp4 and 4over6, unit kernel vs block kernel, 0.1-256 MiB", run_block_ab);

NVFP4KV_BENCHMARK("q_v12_ab", "v12 A/B: the 4over6 default (kDq 13) vs v11's (kDq 7), MSE and MAE", run_ab12);

NVFP4KV_BENCHMARK("q_prof", "one launch per 4over6 / nvfp4 variant for a profiler (QAB_SHAPES)", run_prof);

NVFP4KV_BENCHMARK("q_v7_ab", "v7 A/B: grid balancing and unit orders of the nvfp4 kernel on chosen shapes", run_ab);

NVFP4KV_BENCHMARK("q128x4_order", "A/B of the fast quantize kernel's unit order on chosen shapes (nvfp4/mxfp4 128x4, linear control)",
                  run_order);

NVFP4KV_BENCHMARK("quantize", "bf16 -> nvfp4/4over6/mxfp4 (128x4) and dequantize bandwidth over the M x K grid", run);

}  // namespace nvfp4kv::bench
