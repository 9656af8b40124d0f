// nvfp4kv benchmark — decode attention over a paged cache: bf16 / fp8_e4m3 / nvfp4, 32 query
// heads / 8 kv heads, head_dim 128, page 16 with shuffled pages, batch {1, 16, 64, 128} ×
// kv_len {1K, 8K, 32K} plus batch 1 × 128K. Reports device µs per call (CUDA-graph replays of 10
// calls with a read-based L2 flush before each, the flush-only graph subtracted: see graph_us), TB/s over
// the bytes that must move (KV data + FP4 scales + page-table entries + Q + O), % of the copy
// bandwidth measured at start, nvfp4 speedups over fp8 and bf16, and the same calls timed with
// events around each host API call (includes the host's launch work). A second benchmark,
// `decode_floor`, times a kernel that only reads each target shape's bytes the same way: the
// floor any decode kernel of that size has, and decode µs / floor µs. A third,
// `decode_paged_floor`, reads an nvfp4 call's bytes through the shuffled page table in pieces of
// one head group (whole NHD rows, halves, quarters), in several orders: what the page shuffle and
// the head-group split cost a read (bench/NOTES.md, decode "v17 experiments").
//
// The cache holds random values (a hash per byte, never zeros); before timing each format is
// checked once against the fp64 CPU reference on a small cache filled the same way.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "harness.h"
#include "nvfp4kv/attention.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/kv_cache.h"
#include "ref/attention.h"
#include "common/format.h"
#ifdef NVFP4KV_DECODE_TRACE
#include "cuda/attention/decode_params.h"
#endif

namespace nvfp4kv::bench {
namespace {

constexpr int kQoHeads = 32, kKvHeads = 8, kHeadDim = 128, kPageSize = 16;

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// kind 0: bf16 ~N(0,1)-like bits; 1: E4M3 bytes of magnitude < 8 (no NaN); 2: random FP4 pairs;
// 3: E4M3 block scales in [2^-3, 2^3).
__global__ void fill_kernel(uint8_t* p, size_t n, int kind, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t h = hash32(seed * 0x9E3779B97F4A7C15ULL + i);
    if (kind == 0) {
      if (i % 2 == 0) continue;
      // high byte of a bf16: sign + exponent 0x3E..0x3F (|x| in [2^-3, 2)), low byte random
      p[i] = static_cast<uint8_t>((h & 0x80) | 0x3E | ((h >> 8) & 1));
      p[i - 1] = static_cast<uint8_t>(h >> 16);
    } else if (kind == 1) {
      p[i] = static_cast<uint8_t>((h & 0x80) | ((h >> 8) % 0x50));
    } else if (kind == 2) {
      p[i] = static_cast<uint8_t>(h);
    } else {
      p[i] = static_cast<uint8_t>(0x20 + (h % 0x30));
    }
  }
}

void fill(void* p, size_t n, int kind, uint64_t seed) {
  fill_kernel<<<1024, 256>>>(static_cast<uint8_t*>(p), n, kind, seed);
  BENCH_CUDA(cudaGetLastError());
}

struct Cache {
  KvFormat format;
  int64_t num_pages;
  DeviceBuffer data, scales, gscale;
  KvCacheView view;
};

int64_t data_row_bytes(KvFormat f) {
  return f == KvFormat::kBF16 ? 2 * kHeadDim : (f == KvFormat::kFP8E4M3 ? kHeadDim : kHeadDim / 2);
}

Cache make_cache(KvFormat f, int64_t num_pages, uint64_t seed) {
  Cache c;
  c.format = f;
  c.num_pages = num_pages;
  const int64_t row = data_row_bytes(f);
  const int64_t page_bytes = kPageSize * kKvHeads * row;
  BENCH_CHECK(c.data.allocate(2 * num_pages * page_bytes).ok(), "cache allocation");
  fill(c.data.data(), 2 * num_pages * page_bytes, f == KvFormat::kBF16 ? 0 : (f == KvFormat::kFP8E4M3 ? 1 : 2), seed);
  const DType dt = f == KvFormat::kBF16 ? DType::kBF16 : (f == KvFormat::kFP8E4M3 ? DType::kFP8E4M3 : DType::kU8);
  const int64_t x = f == KvFormat::kNvfp4 ? kHeadDim / 2 : kHeadDim;
  c.view.format = f;
  c.view.layout = KvLayout::kNHD;
  c.view.num_pages = num_pages;
  c.view.page_size = kPageSize;
  c.view.num_kv_heads = kKvHeads;
  c.view.head_dim = kHeadDim;
  auto* base = static_cast<uint8_t*>(c.data.data());
  c.view.k_data = make_view(base, dt, Device::kCuda, {num_pages, kPageSize, kKvHeads, x});
  c.view.v_data = make_view(base + num_pages * page_bytes, dt, Device::kCuda, {num_pages, kPageSize, kKvHeads, x});
  if (f == KvFormat::kNvfp4) {
    const int64_t sp = kPageSize * kKvHeads * (kHeadDim / 16);
    BENCH_CHECK(c.scales.allocate(2 * num_pages * sp).ok(), "scale allocation");
    fill(c.scales.data(), 2 * num_pages * sp, 3, seed + 1);
    auto* sb = static_cast<uint8_t*>(c.scales.data());
    c.view.k_scales = make_view(sb, DType::kU8, Device::kCuda, {num_pages, kPageSize, kKvHeads, kHeadDim / 16});
    c.view.v_scales = make_view(sb + num_pages * sp, DType::kU8, Device::kCuda, {num_pages, kPageSize, kKvHeads, kHeadDim / 16});
  }
  const float scales[2] = {0.02f, 0.05f};
  BENCH_CHECK(c.gscale.allocate(8).ok(), "scale");
  BENCH_CUDA(cudaMemcpy(c.gscale.data(), scales, 8, cudaMemcpyHostToDevice));
  c.view.k_scale = static_cast<const float*>(c.gscale.data());
  c.view.v_scale = static_cast<const float*>(c.gscale.data()) + 1;
  BENCH_CUDA(cudaDeviceSynchronize());
  return c;
}

// The same (random) bytes viewed as HND pages: [num_pages, kv_heads, page_size, X].
KvCacheView as_hnd(const KvCacheView& v) {
  KvCacheView h = v;
  h.layout = KvLayout::kHND;
  auto re = [](TensorView t) {
    if (t.data == nullptr) return t;
    return make_view(t.data, t.dtype, t.device, {t.shape[0], t.shape[2], t.shape[1], t.shape[3]});
  };
  h.k_data = re(v.k_data);
  h.v_data = re(v.v_data);
  h.k_scales = re(v.k_scales);
  h.v_scales = re(v.v_scales);
  return h;
}

struct Problem {
  int64_t batch, kv_len, max_pages;
  DeviceBuffer q, out, tables, lens, ws;
  std::vector<int32_t> h_tables, h_lens;
  std::vector<uint16_t> h_q;
};

void make_problem(Problem& p, int64_t batch, int64_t kv_len, int64_t num_pages, std::mt19937& rng, int64_t run_pages = -1) {
  p.batch = batch;
  p.kv_len = kv_len;
  p.max_pages = (kv_len + kPageSize - 1) / kPageSize;
  // Pages in shuffled order over the whole pool (sized for the largest shape); with
  // DECODE_PAGE_POOL=local (experiment) shuffled over just the pages the problem needs, i.e. the
  // same random order within a compact footprint (fewer distinct 2 MB regions: TLB reach).
  const char* pool = std::getenv("DECODE_PAGE_POOL");
  const bool local = pool != nullptr && std::string(pool) == "local";
  std::vector<int32_t> perm(local ? std::min<int64_t>(num_pages, batch * p.max_pages) : num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  // Runs of consecutive pages (diagnosis: DECODE_PAGE_RUN=R, or the paged floor's argument):
  // the pool is cut into runs of R pages and the runs are shuffled; 0 = no shuffle at all.
  if (run_pages < 0) {
    const char* r = std::getenv("DECODE_PAGE_RUN");
    run_pages = r != nullptr ? std::atoll(r) : 1;
  }
  if (run_pages == 1) {
    std::shuffle(perm.begin(), perm.end(), rng);
  } else if (run_pages > 1) {
    std::vector<int64_t> runs(static_cast<std::size_t>(perm.size() / run_pages));
    std::iota(runs.begin(), runs.end(), 0);
    std::shuffle(runs.begin(), runs.end(), rng);
    for (std::size_t i = 0; i < runs.size() * run_pages; ++i)
      perm[i] = static_cast<int32_t>(runs[i / run_pages] * run_pages + static_cast<int64_t>(i % run_pages));
  }
  p.h_tables.assign(batch * p.max_pages, 0);
  for (int64_t i = 0; i < batch * p.max_pages; ++i) p.h_tables[i] = perm[static_cast<std::size_t>(i) % perm.size()];
  p.h_lens.assign(batch, static_cast<int32_t>(kv_len));
  std::normal_distribution<float> nd(0.f, 1.f);
  p.h_q.resize(batch * kQoHeads * kHeadDim);
  for (auto& v : p.h_q) v = fmt::float_to_bf16_bits(nd(rng));
  BENCH_CHECK(p.q.allocate(p.h_q.size() * 2).ok() && p.out.allocate(p.h_q.size() * 2).ok(), "q/out");
  BENCH_CHECK(p.tables.allocate(p.h_tables.size() * 4).ok() && p.lens.allocate(batch * 4).ok(), "tables");
  BENCH_CUDA(cudaMemcpy(p.q.data(), p.h_q.data(), p.h_q.size() * 2, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(p.tables.data(), p.h_tables.data(), p.h_tables.size() * 4, cudaMemcpyHostToDevice));
  BENCH_CUDA(cudaMemcpy(p.lens.data(), p.h_lens.data(), batch * 4, cudaMemcpyHostToDevice));
  const size_t ws = decode_workspace_bytes(batch, 1, kQoHeads, kKvHeads, kHeadDim, p.max_pages, kPageSize, DecodeOptions());
  if (ws) BENCH_CHECK(p.ws.allocate(ws).ok(), "workspace");
}

Status run_view(const KvCacheView& view, Problem& p, const DecodeOptions& o, cudaStream_t st = nullptr) {
  const size_t ws = decode_workspace_bytes(p.batch, 1, kQoHeads, kKvHeads, kHeadDim, p.max_pages, kPageSize, o);
  return decode_attention(make_view(p.q.data(), DType::kBF16, Device::kCuda, {p.batch, 1, kQoHeads, kHeadDim}), view,
                          make_view(p.tables.data(), DType::kI32, Device::kCuda, {p.batch, p.max_pages}),
                          make_view(p.lens.data(), DType::kI32, Device::kCuda, {p.batch}),
                          make_view(p.out.data(), DType::kBF16, Device::kCuda, {p.batch, 1, kQoHeads, kHeadDim}),
                          TensorView(), o, p.ws.data(), ws, st);
}

Status run(const Cache& c, Problem& p, const DecodeOptions& o, cudaStream_t st = nullptr) {
  const size_t ws = decode_workspace_bytes(p.batch, 1, kQoHeads, kKvHeads, kHeadDim, p.max_pages, kPageSize, o);
  return decode_attention(make_view(p.q.data(), DType::kBF16, Device::kCuda, {p.batch, 1, kQoHeads, kHeadDim}), c.view,
                          make_view(p.tables.data(), DType::kI32, Device::kCuda, {p.batch, p.max_pages}),
                          make_view(p.lens.data(), DType::kI32, Device::kCuda, {p.batch}),
                          make_view(p.out.data(), DType::kBF16, Device::kCuda, {p.batch, 1, kQoHeads, kHeadDim}),
                          TensorView(), o, p.ws.data(), ws, st);
}

// Device time per decode call from CUDA-graph replays (how an engine runs its decode step):
// kCalls calls, each after an L2 flush (Context::flush_l2_clean: a read of 2 × L2, so the call
// does not pay for writing back the flush's own dirty lines), captured in one graph;
// the same graph without the decode calls is timed as well and subtracted. Unlike
// Context::time_us (events around each host call, kept as the "call us" column) this leaves
// out the host's per-call API work, which on small shapes is most of the call.
double graph_us(Context& ctx, const std::function<Status(cudaStream_t)>& call) {
  constexpr int kCalls = 10, kReplays = 9;
  static cudaStream_t st = [] {
    cudaStream_t s = nullptr;
    BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  ctx.flush_l2();  // allocates the scratch on first use
  BENCH_CUDA(cudaDeviceSynchronize());
  BENCH_CHECK(call(st).ok(), "decode call before capture");
  BENCH_CUDA(cudaStreamSynchronize(st));
  auto capture = [&](bool with_calls) {
    cudaGraph_t g;
    BENCH_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    // DECODE_NO_FLUSH=1 (diagnosis only): no L2 flush between the calls.
    static const bool no_flush = std::getenv("DECODE_NO_FLUSH") != nullptr;
    for (int i = 0; i < kCalls; ++i) {
      if (!no_flush) ctx.flush_l2_clean(st);
      if (with_calls) BENCH_CHECK(call(st).ok(), "decode call under capture");
    }
    BENCH_CUDA(cudaStreamEndCapture(st, &g));
    cudaGraphExec_t e;
    BENCH_CUDA(cudaGraphInstantiate(&e, g, 0));
    BENCH_CUDA(cudaGraphDestroy(g));
    return e;
  };
  cudaGraphExec_t with = capture(true), flush_only = capture(false);
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  std::vector<float> tw, tf;
  for (int r = 0; r < kReplays + 1; ++r)
    for (int k = 0; k < 2; ++k) {
      BENCH_CUDA(cudaEventRecord(a, st));
      BENCH_CUDA(cudaGraphLaunch(k ? flush_only : with, st));
      BENCH_CUDA(cudaEventRecord(b, st));
      BENCH_CUDA(cudaEventSynchronize(b));
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
      if (r > 0) (k ? tf : tw).push_back(ms);  // replay 0 warms up
    }
  BENCH_CUDA(cudaEventDestroy(a));
  BENCH_CUDA(cudaEventDestroy(b));
  BENCH_CUDA(cudaGraphExecDestroy(with));
  BENCH_CUDA(cudaGraphExecDestroy(flush_only));
  std::sort(tw.begin(), tw.end());
  std::sort(tf.begin(), tf.end());
  return (tw[kReplays / 2] - tf[kReplays / 2]) * 1000.0 / kCalls;
}

// Small cache, filled like the big ones, against the fp64 reference (split auto and off).
void check_format(KvFormat f) {
  std::mt19937 rng(17);
  Cache c = make_cache(f, 600, 99);
  Problem p;
  make_problem(p, 3, 3000, 600, rng);
  p.h_lens = {3000, 1777, 5};
  BENCH_CUDA(cudaMemcpy(p.lens.data(), p.h_lens.data(), 12, cudaMemcpyHostToDevice));
  // Host copy of the cache for the reference.
  const size_t dbytes = c.data.size(), sbytes = c.scales.size();
  std::vector<uint8_t> hd(dbytes), hs(sbytes);
  BENCH_CUDA(cudaMemcpy(hd.data(), c.data.data(), dbytes, cudaMemcpyDeviceToHost));
  if (sbytes) BENCH_CUDA(cudaMemcpy(hs.data(), c.scales.data(), sbytes, cudaMemcpyDeviceToHost));
  float gs[2];
  BENCH_CUDA(cudaMemcpy(gs, c.gscale.data(), 8, cudaMemcpyDeviceToHost));
  KvCacheView hv = c.view;
  auto rebase = [](TensorView v, void* old_base, void* new_base) {
    v.data = static_cast<uint8_t*>(new_base) + (static_cast<uint8_t*>(v.data) - static_cast<uint8_t*>(old_base));
    v.device = Device::kCpu;
    return v;
  };
  hv.k_data = rebase(hv.k_data, c.data.data(), hd.data());
  hv.v_data = rebase(hv.v_data, c.data.data(), hd.data());
  if (sbytes) {
    hv.k_scales = rebase(hv.k_scales, c.scales.data(), hs.data());
    hv.v_scales = rebase(hv.v_scales, c.scales.data(), hs.data());
  }
  hv.k_scale = &gs[0];
  hv.v_scale = &gs[1];
  std::vector<double> want, lse;
  ref::decode_attention_f64(make_view(p.h_q.data(), DType::kBF16, Device::kCpu, {p.batch, 1, kQoHeads, kHeadDim}), hv,
                            make_view(p.h_tables.data(), DType::kI32, Device::kCpu, {p.batch, p.max_pages}),
                            make_view(p.h_lens.data(), DType::kI32, Device::kCpu, {p.batch}),
                            1.0 / std::sqrt(double(kHeadDim)), 0.0, -1, &want, &lse);
  for (int splits : {0, 1}) {
    DecodeOptions o;
    o.num_splits = splits;
    const Status st = run(c, p, o);
    BENCH_CHECK(st.ok(), st.to_string());
    BENCH_CUDA(cudaDeviceSynchronize());
    std::vector<uint16_t> got(p.h_q.size());
    BENCH_CUDA(cudaMemcpy(got.data(), p.out.data(), got.size() * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double g = fmt::bf16_bits_to_float(got[i]);
      BENCH_CHECK(std::isfinite(g), "non-finite decode output");
      num += (g - want[i]) * (g - want[i]);
      den += want[i] * want[i];
    }
    const double rel = std::sqrt(num / den);
    std::printf("check %-9s splits %s: rel L2 vs fp64 %.2e\n", kv_format_name(f), splits ? "off " : "auto", rel);
    BENCH_CHECK(rel <= 4e-3, fmt("decode %s rel L2 %.3e > 4e-3", kv_format_name(f), rel));
  }
}

// Bytes of K and V data (and FP4 scales) a call reads from the cache.
double kv_bytes(KvFormat f, int64_t batch, int64_t kv_len) {
  const double per_token_head = f == KvFormat::kBF16 ? 4.0 * kHeadDim
                                : f == KvFormat::kFP8E4M3 ? 2.0 * kHeadDim
                                                          : 2.0 * (kHeadDim / 2 + kHeadDim / 16);
  return double(batch) * kv_len * kKvHeads * per_token_head;
}

double bytes_moved(KvFormat f, int64_t batch, int64_t kv_len) {
  const double kv = kv_bytes(f, batch, kv_len);
  const double qo = 2.0 * batch * kQoHeads * kHeadDim * 2;
  const double tables = double(batch) * ((kv_len + kPageSize - 1) / kPageSize) * 4 + batch * 4;
  return kv + qo + tables;
}

void bench_decode(Context& ctx) {
  // DECODE_FORMATS (e.g. "nvfp4,fp8") and DECODE_SHAPES (e.g. "16x8192,1x32768") restrict the run,
  // for profiling one kernel; DECODE_NO_CHECK=1 skips the correctness check (profiler launches).
  // Diagnosis only (never in a recorded run): DECODE_PAGE_POOL=local shuffles the pages within
  // the problem's own footprint (make_problem), DECODE_NO_FLUSH=1 drops the L2 flush (graph_us).
  std::vector<KvFormat> formats = {KvFormat::kBF16, KvFormat::kFP8E4M3, KvFormat::kNvfp4};
  if (const char* e = std::getenv("DECODE_FORMATS")) {
    const std::string s(e);
    std::vector<KvFormat> keep;
    for (KvFormat f : formats)
      if (s.find(f == KvFormat::kBF16 ? "bf16" : (f == KvFormat::kFP8E4M3 ? "fp8" : "nvfp4")) != std::string::npos)
        keep.push_back(f);
    formats = keep;
  }
  if (!std::getenv("DECODE_NO_CHECK"))
    for (KvFormat f : formats) check_format(f);

  struct Shape {
    int64_t batch, kv_len;
  };
  std::vector<Shape> shapes;
  if (const char* e = std::getenv("DECODE_SHAPES")) {
    for (const char* c = e; *c;) {
      long long b = 0, l = 0;
      if (std::sscanf(c, "%lldx%lld", &b, &l) == 2) shapes.push_back({b, l});
      while (*c && *c != ',') ++c;
      if (*c == ',') ++c;
    }
  } else if (ctx.quick) {
    shapes = {{16, 8192}, {1, 32768}};
  } else {
    for (int64_t b : {1, 16, 64, 128})
      for (int64_t l : {1024, 8192, 32768}) shapes.push_back({b, l});
    shapes.push_back({1, 131072});
  }
  std::map<std::pair<int64_t, int64_t>, std::map<KvFormat, double>> us, call_us, hnd_us;
  // Column names of the tables (the JSON rows keep kv_format_name).
  auto short_name = [](KvFormat f) {
    return f == KvFormat::kBF16 ? "bf16" : f == KvFormat::kFP8E4M3 ? "fp8" : f == KvFormat::kNvfp4 ? "nvfp4" : kv_format_name(f);
  };
  std::mt19937 rng(5);
  for (KvFormat f : formats) {
    // One cache per format, big enough for the largest shape (pages shuffled per problem).
    int64_t max_tokens = 0;
    for (auto s : shapes) max_tokens = std::max(max_tokens, s.batch * s.kv_len);
    Cache c = make_cache(f, max_tokens / kPageSize + 8, 1234 + static_cast<int>(f));
    for (auto s : shapes) {
      Problem p;
      make_problem(p, s.batch, s.kv_len, c.num_pages, rng);
      DecodeOptions o;
      // DECODE_SPLITS=n forces the split count (experiments; 0 or unset = automatic).
      if (const char* e = std::getenv("DECODE_SPLITS")) o.num_splits = std::atoi(e);
      const Status st = run(c, p, o);
      BENCH_CHECK(st.ok(), st.to_string());
      us[{s.batch, s.kv_len}][f] = graph_us(ctx, [&](cudaStream_t st) { return run(c, p, o, st); });
      call_us[{s.batch, s.kv_len}][f] = ctx.time_us([&](int) { (void)run(c, p, o); }, /*flush_l2=*/true);
#ifdef NVFP4KV_DECODE_TRACE
      {
        cuda::decode_trace_reset();
        // The graph timing's read-based flush (clean lines): the memset-based flush_l2() left
        // 2 × L2 of dirty lines whose write-back slowed the traced call's first rounds
        // (rounds 1-8 at 3.1-3.8 µs against 2.6 later; without a flush 2.7-2.8: decode v13).
        if (!std::getenv("DECODE_NO_FLUSH")) ctx.flush_l2_clean(nullptr);
        BENCH_CUDA(cudaDeviceSynchronize());
        (void)run(c, p, o);
        cuda::decode_trace_report(fmt("%s %lldx%lld", kv_format_name(f), (long long)s.batch, (long long)s.kv_len).c_str());
      }
#endif
      // HND pages (the same bytes viewed [pages, heads, tokens, X]) at a few shapes.
      const bool probe = !std::getenv("DECODE_NO_HND") &&
                         ((s.batch == 16 && s.kv_len == 8192) || (s.batch == 128 && s.kv_len == 32768) ||
                          (s.batch == 1 && s.kv_len == 32768) || (s.batch == 64 && s.kv_len == 8192));
      if (probe) {
        const KvCacheView hnd = as_hnd(c.view);
        BENCH_CHECK(run_view(hnd, p, o).ok(), "HND run");
        hnd_us[{s.batch, s.kv_len}][f] = graph_us(ctx, [&](cudaStream_t st) { return run_view(hnd, p, o, st); });
      }
    }
  }
  {
    std::vector<std::vector<std::string>> rows;
    for (auto& [shape, m] : hnd_us) {
      std::vector<std::string> row = {fmt("%lld", (long long)shape.first), fmt("%lldK", (long long)(shape.second / 1024))};
      for (KvFormat f : formats) {
        const double tbps = bytes_moved(f, shape.first, shape.second) / (m[f] * 1e-6) / 1e12;
        row.push_back(fmt("%.1f", m[f]));
        row.push_back(fmt("%.0f%%", 100.0 * tbps / ctx.copy_tbps));
        ctx.add_row({{"bench", "decode_hnd"}, {"format", kv_format_name(f)}, {"batch", shape.first},
                     {"kv_len", shape.second}, {"us", m[f]}, {"tbps", tbps}});
      }
      rows.push_back(row);
    }
    std::vector<std::string> hheader = {"batch", "kv"};
    for (KvFormat f : formats) {
      hheader.push_back(fmt("HND %s", short_name(f)));
      hheader.push_back("%copy");
    }
    print_table("HND pages (same shapes, same bytes)", hheader, rows);
  }
  std::vector<std::vector<std::string>> rows;
  for (auto s : shapes) {
    auto& m = us[{s.batch, s.kv_len}];
    std::vector<std::string> row = {fmt("%lld", (long long)s.batch), fmt("%lldK", (long long)(s.kv_len / 1024))};
    for (KvFormat f : formats) {
      const double tbps = bytes_moved(f, s.batch, s.kv_len) / (m[f] * 1e-6) / 1e12;
      row.push_back(fmt("%.1f", m[f]));
      row.push_back(fmt("%.2f", tbps));
      row.push_back(fmt("%.0f%%", 100.0 * tbps / ctx.copy_tbps));
      ctx.add_row({{"bench", "decode"}, {"format", kv_format_name(f)}, {"batch", s.batch}, {"kv_len", s.kv_len},
                   {"us", m[f]}, {"tbps", tbps}, {"pct_copy", tbps / ctx.copy_tbps},
                   {"timing", "cuda graph replays of 10 calls, each after a read-based L2 flush; flush-only graph subtracted"},
                   {"call_us", call_us[{s.batch, s.kv_len}][f]}});
    }
    // Speedups only where both formats ran (DECODE_FORMATS may name a subset).
    auto ratio = [&](KvFormat over) {
      return m.count(over) && m.count(KvFormat::kNvfp4) ? fmt("%.2fx", m[over] / m[KvFormat::kNvfp4]) : std::string("-");
    };
    row.push_back(ratio(KvFormat::kFP8E4M3));
    row.push_back(ratio(KvFormat::kBF16));
    rows.push_back(row);
  }
  std::vector<std::string> header = {"batch", "kv"};
  for (KvFormat f : formats) {
    header.push_back(fmt("%s us", short_name(f)));
    header.push_back("TB/s");
    header.push_back("%copy");
  }
  header.push_back("nvfp4/fp8");
  header.push_back("nvfp4/bf16");
  print_table(fmt("decode attention, 32/8 heads, hd128, page 16 (shuffled), L2 flushed, device us per call from CUDA-graph "
                  "replays; copy %.2f TB/s",
                  ctx.copy_tbps),
              header, rows);
  std::vector<std::vector<std::string>> crow;
  for (auto s : shapes) {
    auto& m = call_us[{s.batch, s.kv_len}];
    std::vector<std::string> row = {fmt("%lld", (long long)s.batch), fmt("%lldK", (long long)(s.kv_len / 1024))};
    for (KvFormat f : formats) row.push_back(fmt("%.1f", m[f]));
    crow.push_back(row);
  }
  std::vector<std::string> cheader = {"batch", "kv"};
  for (KvFormat f : formats) cheader.push_back(fmt("%s call us", short_name(f)));
  print_table("the same calls timed with CUDA events around each host API call (includes the host's launch work)",
              cheader, crow);
}

// The floor of any decode kernel at a shape: a kernel that does nothing but read the same
// number of bytes (contiguous, 16-byte streaming loads, a grid of several CTAs per SM), timed the
// same way as the decode calls (graph_us: after a read-based L2 flush, flush-only graph
// subtracted). It includes what every kernel of that size pays — the launch, the first loads'
// latency, the ramp and the tail — so decode µs / floor µs is how far the kernel is from the
// best that reading its bytes allows, and floor µs says which targets any kernel can meet.
template <int kUnroll>
__global__ void __launch_bounds__(256) read_floor_kernel(const uint4* __restrict__ src, std::size_t n16, uint32_t* sink) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  for (; i + (kUnroll - 1) * stride < n16; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldcs(src + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = __ldcs(src + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;  // keeps the loads; (almost) never taken
}

void bench_decode_floor(Context& ctx) {
  struct Case {
    int64_t batch, kv_len;
    KvFormat f;
  };
  // The shapes of issue 5's targets (batch ≥ 16 × kv ≥ 8K, and 1 × 32K), every format whose
  // bytes stay ≤ 4.4 GB (the buffer is allocated once, at the largest).
  std::vector<Case> cases;
  for (KvFormat f : {KvFormat::kNvfp4, KvFormat::kFP8E4M3, KvFormat::kBF16})
    for (auto bk : std::vector<std::pair<int64_t, int64_t>>{
             {1, 32768}, {16, 8192}, {16, 32768}, {64, 8192}, {64, 32768}, {128, 8192}, {128, 32768}})
      if (bytes_moved(f, bk.first, bk.second) <= 4.4e9) cases.push_back({bk.first, bk.second, f});
  // The decode figures of the same process (the "decode" benchmark runs first under
  // --filter decode), for the decode / floor ratio.
  auto decode_us = [&](const Case& c) {
    for (const auto& r : ctx.rows)
      if (r.value("bench", "") == "decode" && r.value("format", "") == kv_format_name(c.f) &&
          r.value("batch", int64_t{0}) == c.batch && r.value("kv_len", int64_t{0}) == c.kv_len)
        return r.value("us", 0.0);
    return 0.0;
  };
  double max_bytes = 0;
  for (const Case& c : cases) max_bytes = std::max(max_bytes, bytes_moved(c.f, c.batch, c.kv_len));
  const std::size_t alloc = (static_cast<std::size_t>(max_bytes) + 4095) / 4096 * 4096;
  void* buf = nullptr;
  uint32_t* sink = nullptr;
  BENCH_CUDA(cudaMalloc(&buf, alloc));
  BENCH_CUDA(cudaMalloc(&sink, 4));
  BENCH_CUDA(cudaMemset(buf, 0x5A, alloc));  // not zeros; the xor of the run is never the sentinel
  int sms = 0, dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  std::vector<std::vector<std::string>> rows;
  for (const Case& c : cases) {
    const double bytes = bytes_moved(c.f, c.batch, c.kv_len);
    const std::size_t n16 = static_cast<std::size_t>(bytes) / 16;
    // The best of four launch shapes (CTAs per SM × loads in flight per thread).
    double best = 1e30;
    std::string best_cfg;
    for (int per_sm : {4, 8})
      for (int unroll : {4, 8}) {
        const double us = graph_us(ctx, [&](cudaStream_t st) {
          if (unroll == 4)
            read_floor_kernel<4><<<sms * per_sm, 256, 0, st>>>(static_cast<const uint4*>(buf), n16, sink);
          else
            read_floor_kernel<8><<<sms * per_sm, 256, 0, st>>>(static_cast<const uint4*>(buf), n16, sink);
          return cudaGetLastError() == cudaSuccess ? Status() : Status(StatusCode::kCudaError, "read_floor_kernel");
        });
        if (us < best) best = us, best_cfg = fmt("%d CTAs/SM x %d loads", per_sm, unroll);
      }
    const double tbps = bytes / (best * 1e-6) / 1e12;
    const double dec = decode_us(c);
    rows.push_back({fmt("%lld", (long long)c.batch), fmt("%lldK", (long long)(c.kv_len / 1024)), kv_format_name(c.f),
                    fmt("%.1f", bytes / 1e6), fmt("%.1f", best), fmt("%.2f", tbps), fmt("%.1f%%", 100.0 * tbps / ctx.copy_tbps),
                    dec > 0 ? fmt("%.1f", dec) : std::string("-"), dec > 0 ? fmt("%.2fx", dec / best) : std::string("-"),
                    best_cfg});
    nlohmann::json row = {{"bench", "decode_read_floor"}, {"format", kv_format_name(c.f)}, {"batch", c.batch},
                          {"kv_len", c.kv_len}, {"bytes", bytes}, {"us", best}, {"tbps", tbps},
                          {"pct_copy", tbps / ctx.copy_tbps}, {"config", best_cfg},
                          {"timing", "cuda graph replays of 10 calls, each after a read-based L2 flush; flush-only graph subtracted"}};
    if (dec > 0) row["decode_over_floor"] = dec / best;
    ctx.add_row(row);
  }
  BENCH_CUDA(cudaFree(buf));
  BENCH_CUDA(cudaFree(sink));
  print_table(fmt("read floor: a kernel that only reads a decode call's bytes (contiguous), timed like the decode calls; "
                  "copy %.2f TB/s",
                  ctx.copy_tbps),
              {"batch", "kv", "format", "MB", "floor us", "TB/s", "%copy", "decode us", "decode/floor", "best launch"}, rows);
}

// The paged read floor (session 13): a kernel that only reads an nvfp4 decode call's cache bytes
// the way a decode kernel must — page by page through a shuffled page table — in pieces of one
// head group: kGroups = 1 reads whole NHD token rows (512 bytes of K, 64 of scales per token),
// 2 reads the 256-byte halves the decode kernel's CTAs of 4 heads read, 4 a pair of heads' 128.
// Work items (group, request, page) are walked with the group slowest (`group_slow`: the halves
// of a row read far apart in time) or fastest (a row's pieces read at about the same time; with
// `lag`, group g reads g · lag pages behind group 0). A warp reads one item at a time, 8 (4
// with 4 groups) 16-byte streaming loads per lane in flight. The question it answers: how much of the
// decode ring's 2.75 TB/s (v16, loads only) is the access pattern, not the kernel.
template <int kGroups>
__global__ void __launch_bounds__(256) paged_floor_kernel(const uint8_t* __restrict__ kd, const uint8_t* __restrict__ vd,
                                                          const uint8_t* __restrict__ ks, const uint8_t* __restrict__ vs,
                                                          const int32_t* __restrict__ table, uint32_t batch,
                                                          uint32_t pages, bool group_slow, uint32_t lag, uint32_t* sink) {
  constexpr uint32_t kRow = kKvHeads * kHeadDim / 2, kSRow = kKvHeads * kHeadDim / 16;  // bytes per token
  constexpr uint32_t kDataPieces = kPageSize * kRow / kGroups / 16;                      // per page, K or V
  constexpr uint32_t kScalePieces = kPageSize * kSRow / kGroups / 16;
  constexpr uint32_t kPerRow = kRow / kGroups / 16, kSPerRow = kSRow / kGroups / 16;
  constexpr int kLoads = kDataPieces / 32 < 8 ? kDataPieces / 32 : 8;  // 16-byte loads in flight per lane
  static_assert(kSRow / kGroups >= 16 && kDataPieces % (32 * kLoads) == 0, "pieces");
  const uint32_t lane = threadIdx.x & 31u;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = gridDim.x * blockDim.x / 32;
  const uint32_t items = kGroups * batch * pages;
  uint32_t acc = 0;
  // One (group, request, page) item per warp at a time: its K and V pieces, kLoads per lane in
  // flight, then its scale pieces.
  for (uint32_t item = warp; item < items; item += warps) {
    uint32_t g, rp;
    if (group_slow) {
      g = item / (batch * pages);
      rp = item - g * batch * pages;
    } else {
      g = item % kGroups;
      rp = item / kGroups;
      // Group g reads g · lag items behind group 0 (wrapping): a row's pieces `lag` pages apart.
      if (lag != 0) rp = (rp + batch * pages - (g * lag) % (batch * pages)) % (batch * pages);
    }
    const uint64_t page = static_cast<uint32_t>(__ldg(table + rp));
    const uint64_t base = page * kPageSize * kRow + g * (kRow / kGroups);
#pragma unroll
    for (uint32_t r0 = 0; r0 < 2 * kDataPieces; r0 += 32 * kLoads) {
      uint4 v[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const uint32_t r = r0 + u * 32 + lane, rr = r % kDataPieces;
        v[u] = __ldcs(reinterpret_cast<const uint4*>((r < kDataPieces ? kd : vd) + base + (rr / kPerRow) * kRow +
                                                     (rr % kPerRow) * 16));
      }
#pragma unroll
      for (int u = 0; u < kLoads; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
#pragma unroll
    for (uint32_t r = lane; r < 2 * kScalePieces; r += 32) {
      const uint32_t rr = r % kScalePieces;
      const uint4 v = __ldcs(reinterpret_cast<const uint4*>((r < kScalePieces ? ks : vs) + page * kPageSize * kSRow +
                                                            (rr / kSPerRow) * kSRow + g * (kSRow / kGroups) +
                                                            (rr % kSPerRow) * 16));
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;
}

void bench_decode_paged_floor(Context& ctx) {
  std::vector<std::pair<int64_t, int64_t>> shapes = {{16, 8192}, {64, 8192}, {1, 32768}};
  int64_t max_tokens = 0;
  for (auto s : shapes) max_tokens = std::max(max_tokens, s.first * s.second);
  Cache c = make_cache(KvFormat::kNvfp4, max_tokens / kPageSize + 8, 77);
  std::mt19937 rng(5);
  uint32_t* sink = nullptr;
  BENCH_CUDA(cudaMalloc(&sink, 4));
  int sms = 0, dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  std::vector<std::vector<std::string>> rows;
  for (auto [batch, kv_len] : shapes)
  for (int64_t run : {int64_t{1}, int64_t{4}, int64_t{64}, int64_t{0}}) {
    Problem p;
    make_problem(p, batch, kv_len, c.num_pages, rng, run);
    const double bytes = kv_bytes(KvFormat::kNvfp4, batch, kv_len);
    const auto* kd = static_cast<const uint8_t*>(c.view.k_data.data);
    const auto* vd = static_cast<const uint8_t*>(c.view.v_data.data);
    const auto* ks = static_cast<const uint8_t*>(c.view.k_scales.data);
    const auto* vs = static_cast<const uint8_t*>(c.view.v_scales.data);
    const auto* tb = static_cast<const int32_t*>(p.tables.data());
    // (groups, order): order 1 = group slowest, 0 = fastest, 2 + i = fastest with group g reading
    // kLags[i] · g pages behind (shuffled pages only).
    constexpr uint32_t kLags[] = {256, 1024, 4096};
    for (int groups : {1, 2, 4})
      for (int slow : {1, 0, 2, 3, 4}) {
        if ((groups == 1 && slow != 1) || (run != 1 && groups == 4) || (slow >= 2 && (groups != 2 || run != 1))) continue;
        const uint32_t lag = slow >= 2 ? kLags[slow - 2] : 0;
        double best = 1e30;
        std::string cfg;
        for (int per_sm : {4, 8}) {
          const double us = graph_us(ctx, [&](cudaStream_t st) {
            const dim3 g(static_cast<unsigned>(sms * per_sm));
            const uint32_t b = static_cast<uint32_t>(batch), pg = static_cast<uint32_t>(p.max_pages);
            if (groups == 1) paged_floor_kernel<1><<<g, 256, 0, st>>>(kd, vd, ks, vs, tb, b, pg, slow == 1, lag, sink);
            else if (groups == 2) paged_floor_kernel<2><<<g, 256, 0, st>>>(kd, vd, ks, vs, tb, b, pg, slow == 1, lag, sink);
            else paged_floor_kernel<4><<<g, 256, 0, st>>>(kd, vd, ks, vs, tb, b, pg, slow == 1, lag, sink);
            return cudaGetLastError() == cudaSuccess ? Status() : Status(StatusCode::kCudaError, "paged_floor_kernel");
          });
          if (us < best) best = us, cfg = fmt("%d CTAs/SM", per_sm);
        }
        const double tbps = bytes / (best * 1e-6) / 1e12;
        const std::string order = groups == 1 ? std::string("-")
                                  : slow == 1 ? std::string("group slowest")
                                  : slow == 0 ? std::string("group fastest")
                                              : fmt("fastest, lag %u", lag);
        const std::string runs = run == 0 ? std::string("in order") : fmt("runs of %lld", (long long)run);
        rows.push_back({fmt("%lld", (long long)batch), fmt("%lldK", (long long)(kv_len / 1024)), runs, fmt("%d", groups), order,
                        fmt("%.1f", bytes / 1e6), fmt("%.1f", best), fmt("%.2f", tbps),
                        fmt("%.1f%%", 100.0 * tbps / ctx.copy_tbps), cfg});
        ctx.add_row({{"bench", "decode_paged_floor"}, {"batch", batch}, {"kv_len", kv_len}, {"groups", groups},
                     {"order", order}, {"lag_pages", lag}, {"page_run", run}, {"bytes", bytes}, {"us", best}, {"tbps", tbps}, {"pct_copy", tbps / ctx.copy_tbps}});
      }
  }
  BENCH_CUDA(cudaFree(sink));
  print_table(fmt("paged read floor (nvfp4 NHD cache bytes through the shuffled page table, pieces of 1/groups of "
                  "each token row); copy %.2f TB/s",
                  ctx.copy_tbps),
              {"batch", "kv", "pages", "groups", "order", "MB", "us", "TB/s", "%copy", "best launch"}, rows);
}

}  // namespace

NVFP4KV_BENCHMARK("decode", "decode attention over a paged bf16/fp8/nvfp4 cache (32/8 heads, hd128)", bench_decode);
NVFP4KV_BENCHMARK("decode_paged_floor", "paged read floor: nvfp4 cache bytes by page and head group", bench_decode_paged_floor);
NVFP4KV_BENCHMARK("decode_floor", "read floor of the decode shapes: a kernel that only reads their bytes", bench_decode_floor);

}  // namespace nvfp4kv::bench
