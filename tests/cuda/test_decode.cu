// nvfp4kv GPU tests — decode attention kernel vs the fp64 CPU reference (src/ref/attention.h).
//
// Tolerance (DESIGN.md "Numerics contract"): K/V dequantization is exact and the logits are
// fp32 sums of exact bf16/f16 products, so the error comes from (1) P rounded to the query type
// for the P·V mma: relative ≤ 2^-9 (bf16) / 2^-12 (f16) per weight, random sign, contributing an
// RMS ≈ u/√3 of ‖O‖ at most; (2) the output rounded to the query type: RMS ≈ u/√3 again;
// fp32 accumulation, exp2f and the split merge add < 1e-5. With u = 2^-8 (bf16 unit roundoff,
// bound 2^-9 per rounding) the sum is ≈ 2·2^-9/√3 ≈ 2.3e-3 < 4e-3; f16 (u = 2^-11) ≈ 2.8e-4 <
// 1e-3. These are DESIGN.md's limits: rel. L2 ≤ 4e-3 (bf16), ≤ 1e-3 (f16), no non-finite value.
// LSE: fp32 logits and log-sum, |Δ| ≤ 2e-3 · max(1, |lse|).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "attention/decode_fixture.h"
#include "cuda/attention/decode_params.h"
#include "cuda/gpu_test_util.h"
#include "nvfp4kv/attention.h"
#include "nvfp4kv/device.h"
#include "ref/attention.h"

namespace nvfp4kv::test {
namespace {

constexpr uint16_t kCanary = 0x7FBF;  // a NaN in bf16 and f16: never a valid output

double tolerance(DType t) { return t == DType::kBF16 ? 4e-3 : 1e-3; }

struct DeviceKv {
  DeviceBuffer data, scales, ks, vs;
  KvCacheView view;
  explicit DeviceKv(const HostKv& kv) {
    data = to_device(kv.data);
    if (!kv.scales.empty()) scales = to_device(kv.scales);
    ks = to_device(std::vector<float>{kv.k_scale});
    vs = to_device(std::vector<float>{kv.v_scale});
    view = kv.view(data.data(), scales.data(), static_cast<const float*>(ks.data()),
                   static_cast<const float*>(vs.data()), Device::kCuda);
  }
};

struct GpuRun {
  std::vector<double> out, lse;
  Status status;
  bool canaries_ok = true;
  bool finite = true;
  std::vector<GpuRun> earlier;  // with calls > 1: the results of the calls before the last
};

// Runs decode on the GPU with out rows padded by 8 canary elements per head row.
// `ws_fill` ≥ 0 fills the workspace with that byte first (stale counters and partials).
// `calls` > 1 runs decode that many times on the same workspace (the first call on stale
// round counters takes fixed round-robin rounds, later ones the counters the merge reset).
GpuRun run_gpu(const DeviceKv& dkv, const Requests& r, const std::vector<uint16_t>& q, int64_t qo_len,
               int64_t heads, DType qt, const DecodeOptions& o, int ws_fill = -1, int calls = 1,
               std::vector<uint8_t>* ws_after = nullptr) {
  const int64_t D = dkv.view.head_dim;
  const int64_t ostride = D + 8;
  DeviceBuffer dq = to_device(q);
  DeviceBuffer dbt = to_device(r.block_tables);
  DeviceBuffer dsl = to_device(r.seq_lens);
  std::vector<uint16_t> out_init(r.batch * qo_len * heads * ostride, kCanary);
  DeviceBuffer dout = to_device(out_init);
  std::vector<float> lse_init(r.batch * qo_len * heads, 777.f);
  DeviceBuffer dlse = to_device(lse_init);
  auto qv = make_view(dq.data(), qt, Device::kCuda, {r.batch, qo_len, heads, D});
  auto ov = make_strided_view(dout.data(), qt, Device::kCuda, {r.batch, qo_len, heads, D},
                              {qo_len * heads * ostride, heads * ostride, ostride, 1});
  auto lv = make_view(dlse.data(), DType::kF32, Device::kCuda, {r.batch, qo_len, heads});
  auto bt = make_view(dbt.data(), DType::kI32, Device::kCuda, {r.batch, r.max_pages});
  auto sl = make_view(dsl.data(), DType::kI32, Device::kCuda, {r.batch});
  const size_t ws_bytes = decode_workspace_bytes(r.batch, qo_len, heads, dkv.view.num_kv_heads, D, r.max_pages,
                                                 dkv.view.page_size, o);
  DeviceBuffer ws;
  if (ws_bytes) EXPECT_TRUE(ws.allocate(ws_bytes).ok());
  if (ws_bytes && ws_fill >= 0) EXPECT_EQ(cudaMemset(ws.data(), ws_fill, ws_bytes), cudaSuccess);
  std::vector<GpuRun> runs;
  for (int call = 0; call < calls; ++call) {
    GpuRun res;
    res.status = decode_attention(qv, dkv.view, bt, sl, ov, lv, o, ws.data(), ws_bytes, nullptr);
    if (!res.status.ok()) return res;
    const Status sync = device_synchronize();
    EXPECT_TRUE(sync.ok()) << sync.to_string();
    auto out = to_host<uint16_t>(dout, out_init.size());
    auto lse = to_host<float>(dlse, lse_init.size());
    for (int64_t row = 0; row < r.batch * qo_len * heads; ++row) {
      for (int64_t d = 0; d < D; ++d) {
        const double v = bits_to_double(qt, out[row * ostride + d]);
        res.finite = res.finite && std::isfinite(v);
        res.out.push_back(v);
      }
      for (int64_t d = D; d < ostride; ++d) res.canaries_ok = res.canaries_ok && out[row * ostride + d] == kCanary;
      res.lse.push_back(lse[row]);
    }
    runs.push_back(std::move(res));
  }
  if (ws_after) *ws_after = to_host<uint8_t>(ws, ws_bytes);
  GpuRun last = std::move(runs.back());
  runs.pop_back();
  last.earlier = std::move(runs);
  return last;
}

struct RefRun {
  std::vector<double> out, lse;
};

RefRun run_ref(HostKv& kv, Requests& r, std::vector<uint16_t>& q, int64_t qo_len, int64_t heads, DType qt,
               const DecodeOptions& o) {
  const int64_t D = kv.spec.head_dim;
  auto qv = make_view(q.data(), qt, Device::kCpu, {r.batch, qo_len, heads, D});
  auto bt = make_view(r.block_tables.data(), DType::kI32, Device::kCpu, {r.batch, r.max_pages});
  auto sl = make_view(r.seq_lens.data(), DType::kI32, Device::kCpu, {r.batch});
  RefRun res;
  const double sm = o.sm_scale > 0 ? o.sm_scale : 1.0 / std::sqrt(double(D));
  ref::decode_attention_f64(qv, kv.host_view(), bt, sl, sm, o.logits_soft_cap, o.window_left, &res.out, &res.lse);
  return res;
}

void expect_close(const GpuRun& got, const RefRun& want, DType qt, const std::string& what) {
  ASSERT_TRUE(got.status.ok()) << what << ": " << got.status.to_string();
  EXPECT_TRUE(got.finite) << what << ": non-finite output";
  EXPECT_TRUE(got.canaries_ok) << what << ": wrote outside the output rows";
  EXPECT_LE(rel_l2(got.out, want.out), tolerance(qt)) << what;
  for (size_t i = 0; i < want.lse.size(); ++i) {
    if (std::isinf(want.lse[i])) {
      EXPECT_TRUE(std::isinf(got.lse[i]) && got.lse[i] < 0) << what << " lse row " << i << " = " << got.lse[i];
    } else {
      EXPECT_NEAR(got.lse[i], want.lse[i], 2e-3 * std::max(1.0, std::fabs(want.lse[i]))) << what << " lse row " << i;
    }
  }
}

// Every format × layout × head_dim, page sizes 1/16/64, group sizes 1..16, 1-4 kv heads, qo_len 1..8, mixed
// kv_lens with 0 and 1, padded and combined K/V views, split off / forced / auto.
TEST(CudaDecode, SmallEveryFormatLayoutHeadDim) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const KvFormat formats[] = {KvFormat::kBF16, KvFormat::kF16, KvFormat::kFP8E4M3, KvFormat::kNvfp4,
                              KvFormat::kFp4Block16};
  const int page_sizes[] = {1, 16, 64};
  const int groups[] = {1, 2, 4, 5, 8, 16};
  int idx = 0;
  for (KvFormat f : formats)
    for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND})
      for (int hd : {64, 128, 256}) {
        CacheSpec s;
        s.format = f;
        s.layout = layout;
        s.head_dim = hd;
        s.page_size = page_sizes[idx % 3];
        // 1, 2, 4, 3 kv heads: one, two and four heads per CTA on the ring path, and the fallback.
        const int kv_heads[] = {1, 2, 4, 3};
        s.num_kv_heads = kv_heads[(idx / 3) % 4];
        s.num_pages = 300 / s.page_size + 3;
        s.padded = idx % 3 == 1;
        s.combined = idx % 4 == 2;
        s.value_dtype = f == KvFormat::kBF16 ? DType::kBF16
                        : f == KvFormat::kF16 ? DType::kF16
                                              : (idx % 2 ? DType::kF16 : DType::kBF16);
        const int64_t group = groups[idx % 6];
        const int64_t qo_len = 1 + idx % 8;
        const int64_t heads = group * s.num_kv_heads;
        ++idx;
        const std::string what = describe(s) + " group " + std::to_string(group) + " qo_len " + std::to_string(qo_len);
        SCOPED_TRACE(what);
        HostKv kv = make_host_kv(s, rng);
        DeviceKv dkv(kv);
        Requests r = make_requests({0, 1, 37, 8 + static_cast<int>(qo_len), 150 + idx}, s, rng);
        auto q = make_queries(r.batch * qo_len * heads * hd, s.value_dtype, rng);
        DecodeOptions o;
        RefRun want = run_ref(kv, r, q, qo_len, heads, s.value_dtype, o);
        for (int splits : {1, 3, 0}) {
          o.num_splits = splits;
          GpuRun got = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o);
          expect_close(got, want, s.value_dtype, what + " splits " + std::to_string(splits));
        }
      }
}

TEST(CudaDecode, SmallWindowSoftCapScale) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(1234);
  for (KvFormat f : {KvFormat::kNvfp4, KvFormat::kFP8E4M3, KvFormat::kBF16}) {
    CacheSpec s;
    s.format = f;
    s.page_size = 7;
    s.num_kv_heads = 2;
    s.num_pages = 60;
    HostKv kv = make_host_kv(s, rng);
    DeviceKv dkv(kv);
    Requests r = make_requests({200, 3, 77}, s, rng);
    const int64_t heads = 8, qo_len = 3;
    auto q = make_queries(r.batch * qo_len * heads * s.head_dim, DType::kBF16, rng, 4.0f);
    for (int variant = 0; variant < 3; ++variant) {
      DecodeOptions o;
      o.window_left = variant == 0 ? 20 : (variant == 1 ? 0 : -1);
      o.logits_soft_cap = variant == 1 ? 0.f : 3.0f;
      o.sm_scale = variant == 2 ? 0.3f : 0.f;
      o.num_splits = variant;  // auto, 1, 2
      const std::string what = describe(s) + " variant " + std::to_string(variant);
      RefRun want = run_ref(kv, r, q, qo_len, heads, DType::kBF16, o);
      GpuRun got = run_gpu(dkv, r, q, qo_len, heads, DType::kBF16, o);
      expect_close(got, want, DType::kBF16, what);
    }
  }
}

// Long contexts at the benchmark's head counts: split on and off agree with the reference and
// with each other.
TEST(CudaDecode, LongContextSplitAgreement) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(99);
  for (KvFormat f : {KvFormat::kNvfp4, KvFormat::kFP8E4M3, KvFormat::kBF16, KvFormat::kFp4Block16}) {
    CacheSpec s;
    s.format = f;
    s.layout = f == KvFormat::kFP8E4M3 ? KvLayout::kHND : KvLayout::kNHD;
    s.page_size = 16;
    s.num_kv_heads = 8;
    s.num_pages = 700;
    HostKv kv = make_host_kv(s, rng);
    DeviceKv dkv(kv);
    Requests r = make_requests({3000, 4096, 1, 2500}, s, rng);
    const int64_t heads = 32, qo_len = 1;
    auto q = make_queries(r.batch * qo_len * heads * s.head_dim, DType::kBF16, rng);
    DecodeOptions o;
    RefRun want = run_ref(kv, r, q, qo_len, heads, DType::kBF16, o);
    std::vector<double> first;
    for (int splits : {1, 0, 16}) {
      o.num_splits = splits;
      GpuRun got = run_gpu(dkv, r, q, qo_len, heads, DType::kBF16, o);
      expect_close(got, want, DType::kBF16, describe(s) + " splits " + std::to_string(splits));
      if (first.empty()) first = got.out;
      else EXPECT_LE(rel_l2(got.out, first), tolerance(DType::kBF16)) << "split vs no split";
    }
  }
}

// Capture one decode in a CUDA graph, then replay it after changing seq_lens (and k_scale) in
// device memory: the replay must follow the new values.
// Sets an environment variable for one scope (the decode API reads its knobs per call).
struct ScopedEnv {
  std::string name;
  // value nullptr: the variable is unset for the scope (the library's own rule).
  explicit ScopedEnv(const char* n, const char* value) : name(n) {
    if (value != nullptr) setenv(n, value, 1);
    else unsetenv(n);
  }
  ~ScopedEnv() { unsetenv(name.c_str()); }
};

// Pages of a cache for requests of `lens` tokens (each request starts on a fresh page) plus 4
// spare pages.
int64_t pages_for(const std::vector<int>& lens, int64_t page_size) {
  int64_t pages = 4;
  for (int l : lens) pages += (l + page_size - 1) / page_size;
  return pages;
}

// One decode problem: a cache of spec `s` (host and device), requests of `lens` tokens in
// shuffled pages, queries of `group` heads per kv head and the fp64 reference for options `o`.
struct DecodeCase {
  HostKv kv;
  DeviceKv dkv;
  int64_t qo_len, heads;
  Requests r;
  std::vector<uint16_t> q;
  RefRun want;
  DecodeCase(const CacheSpec& s, const std::vector<int>& lens, int64_t qo_len_, int64_t group, const DecodeOptions& o,
             std::mt19937& rng)
      : kv(make_host_kv(s, rng)), dkv(kv), qo_len(qo_len_), heads(group * s.num_kv_heads), r(make_requests(lens, s, rng)) {
    q = make_queries(r.batch * qo_len * heads * s.head_dim, s.value_dtype, rng);
    want = run_ref(kv, r, q, qo_len, heads, s.value_dtype, o);
  }
};

// Environment knobs for one run (a nullptr value unsets the variable).
using EnvList = std::vector<std::pair<const char*, const char*>>;

// One call under two kernel configurations, each set by its knobs: A twice on a workspace of
// stale bytes (0xA5: the first call finds round counters it cannot trust, the second those its
// merge reset), B once on another (0x5A); both against the reference and against each other.
void expect_configs_agree(const DecodeCase& c, DType qt, const DecodeOptions& o, const std::string& what,
                          const std::string& name_a, const EnvList& env_a, const std::string& name_b,
                          const EnvList& env_b) {
  auto run_with = [&](const EnvList& env, int fill, int calls) {
    std::vector<std::unique_ptr<ScopedEnv>> scoped;
    for (const auto& [n, v] : env) scoped.push_back(std::make_unique<ScopedEnv>(n, v));
    return run_gpu(c.dkv, c.r, c.q, c.qo_len, c.heads, qt, o, fill, calls);
  };
  const GpuRun a = run_with(env_a, 0xA5, 2);
  const GpuRun b = run_with(env_b, 0x5A, 1);
  expect_close(a, c.want, qt, what + " " + name_a);
  for (const GpuRun& e : a.earlier) expect_close(e, c.want, qt, what + " " + name_a + ", first call");
  expect_close(b, c.want, qt, what + " " + name_b);
  if (a.status.ok() && b.status.ok())
    EXPECT_LE(rel_l2(a.out, b.out), tolerance(qt)) << what << " " << name_a << " vs " << name_b;
}

// Fixed slices and dynamic rounds (round counters the previous replay reset), each with the
// merge kernel (2 heads per CTA) and with the merge in the decode kernel (4 heads per CTA, one
// warp per head: arrival counters the previous replay reset): all must follow the new values
// on every replay.
struct GraphMode {
  const char* dynamic;        // NVFP4KV_DECODE_DYNAMIC
  const char* heads_per_cta;  // NVFP4KV_DECODE_HEADS_PER_CTA: "4" merges in the decode kernel
  friend void PrintTo(const GraphMode& m, std::ostream* os) {
    *os << "dynamic " << m.dynamic << ", heads per CTA " << m.heads_per_cta;
  }
};
class CudaDecodeGraph : public ::testing::TestWithParam<GraphMode> {};

TEST_P(CudaDecodeGraph, SmallCaptureReplayWithNewSeqLens) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  ScopedEnv mode("NVFP4KV_DECODE_DYNAMIC", GetParam().dynamic);
  ScopedEnv hpc("NVFP4KV_DECODE_HEADS_PER_CTA", GetParam().heads_per_cta);
  ScopedEnv fused("NVFP4KV_DECODE_FUSED_MERGE", GetParam().heads_per_cta[0] == '4' ? "1" : "0");  // 4 splits
  std::mt19937 rng(4242);
  CacheSpec s;
  s.format = KvFormat::kNvfp4;
  s.page_size = 16;
  s.num_kv_heads = 4;
  s.num_pages = 40;
  HostKv kv = make_host_kv(s, rng);
  DeviceKv dkv(kv);
  const int64_t heads = 16, qo_len = 2, D = s.head_dim;
  Requests r = make_requests({300, 40, 2}, s, rng, 4);
  auto q = make_queries(r.batch * qo_len * heads * D, DType::kBF16, rng);
  DeviceBuffer dq = to_device(q), dbt = to_device(r.block_tables), dsl = to_device(r.seq_lens);
  DeviceBuffer dout, dlse;
  ASSERT_TRUE(dout.allocate(r.batch * qo_len * heads * D * 2).ok());
  ASSERT_TRUE(dlse.allocate(r.batch * qo_len * heads * 4).ok());
  auto qv = make_view(dq.data(), DType::kBF16, Device::kCuda, {r.batch, qo_len, heads, D});
  auto ov = make_view(dout.data(), DType::kBF16, Device::kCuda, {r.batch, qo_len, heads, D});
  auto lv = make_view(dlse.data(), DType::kF32, Device::kCuda, {r.batch, qo_len, heads});
  auto bt = make_view(dbt.data(), DType::kI32, Device::kCuda, {r.batch, r.max_pages});
  auto sl = make_view(dsl.data(), DType::kI32, Device::kCuda, {r.batch});
  DecodeOptions o;
  o.num_splits = 4;
  const size_t ws_bytes = decode_workspace_bytes(r.batch, qo_len, heads, s.num_kv_heads, D, r.max_pages, s.page_size, o);
  DeviceBuffer ws;
  ASSERT_TRUE(ws.allocate(ws_bytes).ok());
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const Status st = decode_attention(qv, dkv.view, bt, sl, ov, lv, o, ws.data(), ws_bytes,
                                     reinterpret_cast<Stream>(stream));
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int step = 0; step < 3; ++step) {
    if (step > 0) {
      r.seq_lens = {static_cast<int32_t>(300 + 17 * step), static_cast<int32_t>(40 - 13 * step),
                    static_cast<int32_t>(2 + step)};
      kv.k_scale *= 1.5f;
      ASSERT_TRUE(copy_to_device(dsl.data(), r.seq_lens.data(), r.seq_lens.size() * 4).ok());
      ASSERT_TRUE(copy_to_device(dkv.ks.data(), &kv.k_scale, 4).ok());
    }
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    auto out = to_host<uint16_t>(dout, r.batch * qo_len * heads * D);
    auto lse = to_host<float>(dlse, r.batch * qo_len * heads);
    GpuRun got;
    for (auto b : out) {
      got.out.push_back(bits_to_double(DType::kBF16, b));
      got.finite = got.finite && std::isfinite(got.out.back());
    }
    for (auto l : lse) got.lse.push_back(l);
    RefRun want = run_ref(kv, r, q, qo_len, heads, DType::kBF16, o);
    expect_close(got, want, DType::kBF16, "graph replay step " + std::to_string(step));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

INSTANTIATE_TEST_SUITE_P(Modes, CudaDecodeGraph,
                         ::testing::Values(GraphMode{"0", "2"}, GraphMode{"1", "2"}, GraphMode{"0", "4"},
                                           GraphMode{"1", "4"}),
                         [](const auto& info) {
                           return std::string(info.param.dynamic[0] == '1' ? "Dynamic" : "Fixed") +
                                  (info.param.heads_per_cta[0] == '4' ? "FusedMerge" : "MergeKernel");
                         });


// The nvfp4 and fp8 hd128 caches with ≤ 8 query rows per kv head run the narrow tile (Sᵀ =
// K·Qᵀ, swizzled V ring) by default; NVFP4KV_DECODE_NARROW=0 forces the wide tile. Both against
// the reference and each other: group sizes 1-8 × qo_len 1-2 (rows 1..8, causal among new
// tokens), both layouts, page sizes 1/16/64, 1/2/4 kv heads (heads per CTA 1, 2, 4), both query
// types, window and soft cap, split off / forced / auto.
TEST(CudaDecode, SmallNarrowAndWideTiles) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int page_sizes[] = {1, 16, 64};
  const int kv_heads[] = {1, 2, 4};
  const int groups[] = {1, 2, 4, 8, 3};
  int idx = 0;
  for (KvFormat format : {KvFormat::kNvfp4, KvFormat::kFP8E4M3})
  for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND})
    for (int gi = 0; gi < 5; ++gi)
      for (int64_t qo_len : {1, 2}) {
        const int64_t group = groups[gi];
        if (group * qo_len > 8) continue;
        CacheSpec s;
        s.format = format;
        s.layout = layout;
        s.head_dim = 128;
        s.page_size = page_sizes[idx % 3];
        s.num_kv_heads = kv_heads[(idx / 3) % 3];
        s.num_pages = 700 / s.page_size + 3;
        s.padded = idx % 4 == 1;
        s.combined = idx % 5 == 2;
        s.value_dtype = idx % 2 ? DType::kF16 : DType::kBF16;
        DecodeOptions o;
        o.window_left = idx % 7 == 3 ? 100 : -1;
        o.logits_soft_cap = idx % 6 == 4 ? 5.f : 0.f;
        ++idx;
        const std::string what = describe(s) + " group " + std::to_string(group) + " qo_len " +
                                 std::to_string(qo_len) + " window " + std::to_string(o.window_left) + " cap " +
                                 std::to_string(o.logits_soft_cap);
        SCOPED_TRACE(what);
        HostKv kv = make_host_kv(s, rng);
        DeviceKv dkv(kv);
        const int64_t heads = group * s.num_kv_heads;
        Requests r = make_requests({0, 1, 33, 8 + static_cast<int>(qo_len), 400 + idx, 650}, s, rng);
        auto q = make_queries(r.batch * qo_len * heads * s.head_dim, s.value_dtype, rng);
        RefRun want = run_ref(kv, r, q, qo_len, heads, s.value_dtype, o);
        for (int splits : {1, 3, 0}) {
          o.num_splits = splits;
          GpuRun narrow = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o);
          expect_close(narrow, want, s.value_dtype, what + " narrow splits " + std::to_string(splits));
          GpuRun wide;
          {
            ScopedEnv env("NVFP4KV_DECODE_NARROW", "0");
            wide = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o);
          }
          expect_close(wide, want, s.value_dtype, what + " wide splits " + std::to_string(splits));
          if (narrow.status.ok() && wide.status.ok())
            EXPECT_LE(rel_l2(narrow.out, wide.out), tolerance(s.value_dtype)) << what << " narrow vs wide";
        }
      }
}

// Narrow-tile splits take their ring rounds from per-request counters (dynamic rounds) where
// decode_dynamic_rounds allows; NVFP4KV_DECODE_DYNAMIC=1 forces them wherever the page table
// fits, =0 keeps fixed slices. Both against the reference and each other, on a workspace
// filled with stale bytes, twice (the first call finds round counters it cannot trust and takes
// fixed round-robin rounds; its merge resets them for the second): nvfp4 and fp8 narrow tiles with
// 1/2/4 heads per CTA, and the formats and tiles that keep fixed slices (wide tile,
// fp4_block16, bf16 at hd256), lengths 0 … 3000 mixed, splits forced from 2 to more rounds
// than a request has or automatic (then with late joiners, NVFP4KV_DECODE_LATE=1), windows,
// and page size 1 with more pages than the staging area holds.
TEST(CudaDecode, SmallDynamicAndFixedSplits) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  struct Case {
    KvFormat format;
    int64_t head_dim, page_size, kv_heads, group;
    std::vector<int> lens;
  };
  const Case cases[] = {
      {KvFormat::kNvfp4, 128, 16, 8, 4, {0, 1, 3000, 777, 2048}},
      {KvFormat::kNvfp4, 128, 16, 4, 12, {2999, 5, 1500}},
      {KvFormat::kFP8E4M3, 128, 64, 2, 4, {3000, 0, 640}},
      {KvFormat::kFp4Block16, 128, 16, 4, 2, {1200, 3000}},
      {KvFormat::kBF16, 256, 16, 2, 2, {1000, 17}},
      {KvFormat::kNvfp4, 128, 1, 2, 4, {4500, 300}},  // 4500 pages: fixed slices
  };
  int idx = 0;
  for (const Case& c : cases) {
    CacheSpec s;
    s.format = c.format;
    s.head_dim = c.head_dim;
    s.page_size = c.page_size;
    s.num_kv_heads = c.kv_heads;
    s.layout = idx % 2 ? KvLayout::kHND : KvLayout::kNHD;
    s.num_pages = pages_for(c.lens, s.page_size);
    HostKv kv = make_host_kv(s, rng);
    DeviceKv dkv(kv);
    const int64_t heads = c.group * s.num_kv_heads, qo_len = 1;
    Requests r = make_requests(c.lens, s, rng);
    auto q = make_queries(r.batch * qo_len * heads * s.head_dim, s.value_dtype, rng);
    for (int window : {-1, 700}) {
      DecodeOptions o;
      o.window_left = window;
      RefRun want = run_ref(kv, r, q, qo_len, heads, s.value_dtype, o);
      for (int splits : {2, 7, 0, 300}) {
        o.num_splits = splits;
        const std::string what = describe(s) + " group " + std::to_string(c.group) + " window " +
                                 std::to_string(window) + " splits " + std::to_string(splits);
        GpuRun dyn;
        {
          ScopedEnv env("NVFP4KV_DECODE_DYNAMIC", "1");
          ScopedEnv late("NVFP4KV_DECODE_LATE", "1");  // late joiners with automatic splits
          // Two calls: stale counters (fixed round-robin rounds), then the counters the first
          // call's merge reset (dynamic rounds).
          dyn = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o, 0xA5, 2);
        }
        expect_close(dyn, want, s.value_dtype, what + " dynamic");
        for (const GpuRun& e : dyn.earlier) expect_close(e, want, s.value_dtype, what + " dynamic, stale counters");
        GpuRun fixed;
        {
          ScopedEnv env("NVFP4KV_DECODE_DYNAMIC", "0");
          fixed = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o, 0x5A);
        }
        expect_close(fixed, want, s.value_dtype, what + " fixed");
        if (dyn.status.ok() && fixed.status.ok())
          EXPECT_LE(rel_l2(dyn.out, fixed.out), tolerance(s.value_dtype)) << what << " dynamic vs fixed";
      }
    }
    ++idx;
  }
}

// The narrow tile with one warp per kv head (4 heads per CTA, forced; the rule picks it from 8K
// tokens) takes its own epilogue: each warp normalizes and stores its rows from registers, no
// shared-memory merge, and with splits the last warp of each head combines them (the merge in
// the decode kernel, forced here for every split count). Against the reference and, alternating,
// against 2 heads per CTA (the shared-memory merge) or 4 heads with the merge kernel: nvfp4
// and fp8, both layouts, group sizes 4 and 8 × qo_len 1-2, lengths 0 … 2100 mixed, split off
// (outputs and LSE written directly), forced (fixed slices and dynamic rounds; on a stale
// workspace, then on the counters the first call reset) and automatic. Sized for the sanitizer
// runs of gpu_check (*Small*: ~10× slower there).
TEST(CudaDecode, SmallNarrowOneWarpPerHead) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  int idx = 0;
  for (KvFormat format : {KvFormat::kNvfp4, KvFormat::kFP8E4M3})
    for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND})
      for (int64_t group : {4, 8})
        for (int64_t qo_len : {1, 2}) {
          if (group * qo_len > 8) continue;
          CacheSpec s;
          s.format = format;
          s.layout = layout;
          s.head_dim = 128;
          s.page_size = idx % 3 == 2 ? 64 : 16;
          s.num_kv_heads = 8;
          s.value_dtype = idx % 2 ? DType::kF16 : DType::kBF16;
          const std::vector<int> lens = {0, 1, 1500, 600 + idx, 2100};
          s.num_pages = pages_for(lens, s.page_size);
          DecodeOptions o;
          o.window_left = idx % 5 == 3 ? 300 : -1;
          ++idx;
          const DecodeCase c(s, lens, qo_len, group, o, rng);
          const std::pair<int, const char*> modes[] = {{1, "0"}, {3, "0"}, {3, "1"}, {0, "1"}};
          for (const auto& [splits, dyn] : modes) {
            o.num_splits = splits;
            const std::string what = describe(s) + " group " + std::to_string(group) + " qo_len " +
                                     std::to_string(qo_len) + " splits " + std::to_string(splits) + " dynamic " + dyn;
            ScopedEnv d("NVFP4KV_DECODE_DYNAMIC", dyn);
            if (idx % 2)
              expect_configs_agree(c, s.value_dtype, o, what, "4 heads per CTA, merge in the kernel",
                                   {{"NVFP4KV_DECODE_HEADS_PER_CTA", "4"}, {"NVFP4KV_DECODE_FUSED_MERGE", "1"}},
                                   "2 heads per CTA", {{"NVFP4KV_DECODE_HEADS_PER_CTA", "2"}});
            else
              expect_configs_agree(c, s.value_dtype, o, what, "4 heads per CTA, merge in the kernel",
                                   {{"NVFP4KV_DECODE_HEADS_PER_CTA", "4"}, {"NVFP4KV_DECODE_FUSED_MERGE", "1"}},
                                   "4 heads per CTA, merge kernel",
                                   {{"NVFP4KV_DECODE_HEADS_PER_CTA", "4"}, {"NVFP4KV_DECODE_FUSED_MERGE", "0"}});
          }
        }
}

// The paired nvfp4 tile (8 kv heads per CTA, two per warp in the two halves of the mma's n = 8;
// the rule takes it from 128 CTAs per split, NVFP4KV_DECODE_PAIR=1 forces it where it can run):
// against the reference and against 4 heads per CTA (one head per warp): group sizes 1, 2, 3, 4
// × qo_len 1-4 with ≤ 4 rows per head (padding columns in both halves), NHD and HND (alternating,
// so that both layouts meet groups 2 and 4), 8 and 16 kv heads, page sizes 1 / 16 / 64, both query
// types, window and soft cap, lengths 0 … 2100 mixed, split off (outputs and LSE written
// directly), forced (fixed slices and dynamic rounds on a stale workspace, then on the counters
// the first call's merge reset) and automatic. Sized for the sanitizer runs of gpu_check.
TEST(CudaDecode, SmallPairedTile) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int page_sizes[] = {16, 1, 64};
  const std::pair<int64_t, int64_t> shapes[] = {{4, 1}, {4, 1}, {2, 2}, {2, 1}, {1, 4}, {3, 1}, {1, 2}, {2, 2}};
  int idx = 0;
  for (const auto& [group, qo_len] : shapes) {
    const KvLayout layout = idx % 2 ? KvLayout::kHND : KvLayout::kNHD;
    CacheSpec s;
    s.format = KvFormat::kNvfp4;
    s.layout = layout;
    s.head_dim = 128;
    s.page_size = page_sizes[idx % 3];
    s.num_kv_heads = idx % 4 == 3 ? 16 : 8;
    s.value_dtype = idx % 2 ? DType::kF16 : DType::kBF16;
    s.padded = idx % 5 == 1;
    const std::vector<int> lens = {0, 1, 1500, 600 + 7 * idx, 2100};
    s.num_pages = pages_for(lens, s.page_size);
    DecodeOptions o;
    o.window_left = idx % 4 == 2 ? 300 : -1;
    o.logits_soft_cap = idx % 5 == 3 ? 5.f : 0.f;
    ++idx;
    const DecodeCase c(s, lens, qo_len, group, o, rng);
    const std::pair<int, const char*> modes[] = {{1, "0"}, {3, "0"}, {5, "1"}, {0, nullptr}};
    for (const auto& [splits, dyn] : modes) {
      o.num_splits = splits;
      const std::string what = describe(s) + " group " + std::to_string(group) + " qo_len " +
                               std::to_string(qo_len) + " window " + std::to_string(o.window_left) + " cap " +
                               std::to_string(o.logits_soft_cap) + " splits " + std::to_string(splits) +
                               " dynamic " + (dyn ? dyn : "rule");
      ScopedEnv d("NVFP4KV_DECODE_DYNAMIC", dyn);
      // The paired tile with the merge in the kernel (the rule; forced above its split limit)
      // and with the merge kernel, alternating.
      expect_configs_agree(c, s.value_dtype, o, what, "paired",
                           {{"NVFP4KV_DECODE_PAIR", "1"}, {"NVFP4KV_DECODE_FUSED_MERGE", idx % 2 ? "0" : "1"}},
                           "4 heads per CTA", {{"NVFP4KV_DECODE_PAIR", "0"}, {"NVFP4KV_DECODE_HEADS_PER_CTA", "4"}});
    }
  }
}

// The ring filled by tensor copies (TMA; the nvfp4 narrow tile of 4 heads per CTA, and the
// paired tile where the shape allows it, with dynamic rounds on NHD views whose strides nest, pages of a multiple of 16 tokens, no window): against
// the reference and bit for bit against the cp.async ring (NVFP4KV_DECODE_TMA=0), which runs the
// same arithmetic on the same bytes (on the first call of a stale workspace, whose fixed rounds
// give every CTA the same tokens). The tokens after each request's last one in its last page
// get e4m3 NaN scale bytes (0xFF): the TMA ring reads whole 16-token blocks, and a stale slot may
// hold anything, so those tokens must be masked out of the logits and reach P·V as zeros. Page
// sizes 16 / 32 / 64, group sizes 1-8 × qo_len 1-2, 4 / 8 / 12 kv heads, lengths that end
// inside a block, K and V in one buffer, both query types, soft cap, split forced (dynamic rounds
// on a stale workspace, then on reset counters) and automatic. (A window, padded rows and HND
// take the cp.async ring: there both knob values run the same kernel.)
TEST(CudaDecode, SmallTmaRing) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t page_sizes[] = {16, 32, 64};
  const std::pair<int64_t, int64_t> shapes[] = {{4, 1}, {8, 1}, {1, 1}, {2, 2}, {4, 2}, {5, 1}};
  int idx = 0;
  for (const auto& [group, qo_len] : shapes) {
    CacheSpec s;
    s.format = KvFormat::kNvfp4;
    s.layout = KvLayout::kNHD;
    s.head_dim = 128;
    s.page_size = page_sizes[idx % 3];
    s.num_kv_heads = idx % 3 == 1 ? 4 : (idx % 3 == 2 ? 12 : 8);
    s.value_dtype = idx % 2 ? DType::kF16 : DType::kBF16;
    s.combined = idx % 4 == 3;
    const std::vector<int> lens = {0, 1, 17, 1500 + idx, 600 + 7 * idx, 2100, 33};
    s.num_pages = pages_for(lens, s.page_size);
    HostKv kv = make_host_kv(s, rng);
    Requests r = make_requests(lens, s, rng);
    // NaN scale bytes after each request's last token in its last page.
    for (int64_t b = 0; b < r.batch; ++b) {
      const int64_t len = lens[b];
      if (len % s.page_size == 0) continue;
      const int64_t page = r.block_tables[b * r.max_pages + len / s.page_size];
      for (int64_t t = len % s.page_size; t < s.page_size; ++t)
        for (int64_t h = 0; h < s.num_kv_heads; ++h)
          for (int64_t j = 0; j < kv.sx; ++j)
            for (int64_t off : {kv.k_scale_off, kv.v_scale_off})
              kv.scales[off + page * kv.scale_strides[0] + t * kv.scale_strides[1] + h * kv.scale_strides[2] + j] = 0xFF;
    }
    const DeviceKv dkv(kv);
    const int64_t heads = group * s.num_kv_heads;
    std::vector<uint16_t> q = make_queries(r.batch * qo_len * heads * s.head_dim, s.value_dtype, rng);
    DecodeOptions o;
    o.logits_soft_cap = idx % 5 == 4 ? 5.f : 0.f;
    const RefRun want = run_ref(kv, r, q, qo_len, heads, s.value_dtype, o);
    // The paired tile (8 heads per CTA, one box per head pair) where it can run.
    const bool can_pair = s.num_kv_heads % 8 == 0 && group * qo_len <= 4;
    for (int mode = 0; mode < (can_pair ? 6 : 3); ++mode) {
      const int splits = mode % 3 == 0 ? 3 : (mode % 3 == 1 ? 7 : 0);
      const bool pair = mode >= 3;
      o.num_splits = splits;
      const std::string what = describe(s) + " group " + std::to_string(group) + " qo_len " + std::to_string(qo_len) +
                               " cap " + std::to_string(o.logits_soft_cap) + " splits " + std::to_string(splits) +
                               (pair ? " paired" : " 4 heads per CTA");
      ScopedEnv d("NVFP4KV_DECODE_DYNAMIC", "1");
      ScopedEnv h("NVFP4KV_DECODE_HEADS_PER_CTA", pair ? "8" : "4");
      ScopedEnv pe("NVFP4KV_DECODE_PAIR", pair ? "1" : "0");
      GpuRun a, b;
      {
        ScopedEnv t("NVFP4KV_DECODE_TMA", "1");
        a = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o, 0xA5, 2);
      }
      {
        ScopedEnv t("NVFP4KV_DECODE_TMA", "0");
        b = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o, 0x5A, 1);
      }
      expect_close(a, want, s.value_dtype, what + " TMA ring");
      for (const GpuRun& e : a.earlier) expect_close(e, want, s.value_dtype, what + " TMA ring, first call");
      expect_close(b, want, s.value_dtype, what + " cp.async ring");
      // The first call of each finds stale counters and takes fixed round-robin rounds: the
      // same rounds per CTA, so the same bits; dynamic rounds deal them by arrival.
      ASSERT_EQ(a.earlier.size(), 1u) << what;
      ASSERT_EQ(a.earlier[0].out.size(), b.out.size()) << what;
      size_t differ = 0;
      for (size_t i = 0; i < b.out.size(); ++i) differ += a.earlier[0].out[i] != b.out[i];
      EXPECT_EQ(differ, 0u) << what << ": outputs of the TMA and cp.async rings differ (fixed rounds)";
      EXPECT_LE(rel_l2(a.out, b.out), tolerance(s.value_dtype)) << what << " TMA ring vs cp.async ring";
    }
    ++idx;
  }
}

// Every counter a call used is left at {count 0, tag kDecodeTicketTag} (so that the next call
// needs no memset) and nothing else of the counter region is written: after calls on a
// workspace of 0xA5 bytes with the 4-heads-per-CTA narrow tile and dynamic rounds, entry k
// (16 bytes) holds round counter k (request, head group), reset by the merge kernel or by the
// last warp of the merge in the decode kernel, and arrival counter k (request, kv head), used
// only by the merge in the decode kernel.
TEST(CudaDecode, SmallCountersResetAfterEveryCall) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(99);
  CacheSpec s;
  s.format = KvFormat::kNvfp4;
  s.num_kv_heads = 8;
  s.num_pages = 400;
  HostKv kv = make_host_kv(s, rng);
  DeviceKv dkv(kv);
  Requests r = make_requests({3000, 2000, 100}, s, rng);
  const int64_t heads = 32, qo_len = 1;
  auto q = make_queries(r.batch * heads * s.head_dim, s.value_dtype, rng);
  DecodeOptions o;
  o.num_splits = 7;
  RefRun want = run_ref(kv, r, q, qo_len, heads, s.value_dtype, o);
  ScopedEnv d("NVFP4KV_DECODE_DYNAMIC", "1");
  ScopedEnv h("NVFP4KV_DECODE_HEADS_PER_CTA", "4");
  for (const char* fused : {"0", "1"}) {
    ScopedEnv f("NVFP4KV_DECODE_FUSED_MERGE", fused);
    for (int calls : {1, 2}) {
      const std::string what = std::string("fused merge ") + fused + ", calls " + std::to_string(calls);
      std::vector<uint8_t> ws;
      GpuRun got = run_gpu(dkv, r, q, qo_len, heads, s.value_dtype, o, 0xA5, calls, &ws);
      expect_close(got, want, s.value_dtype, what);
      for (const GpuRun& e : got.earlier) expect_close(e, want, s.value_dtype, what + ", first call");
      const size_t region = cuda::decode_workspace_out_offset(r.batch, qo_len, heads);
      ASSERT_GE(ws.size(), region);
      const int64_t rounds_used = r.batch * (s.num_kv_heads / 4);
      const int64_t arrivals_used = fused[0] == '1' ? r.batch * s.num_kv_heads : 0;
      constexpr uint64_t kReset = uint64_t{cuda::kDecodeTicketTag} << 32, kStale = 0xA5A5A5A5A5A5A5A5ull;
      for (size_t i = 0; i < region; i += 8) {
        uint64_t v;
        std::memcpy(&v, ws.data() + i, 8);
        const int64_t k = static_cast<int64_t>(i / 16);
        const bool used = (i / 8) % 2 == 0 ? k < rounds_used : k < arrivals_used;
        EXPECT_EQ(v, used ? kReset : kStale) << what << ", word " << i / 8;
      }
    }
  }
}

TEST(CudaDecode, SmallWorkspaceTooSmallIsAnError) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  CacheSpec s;
  s.num_pages = 8;
  HostKv kv = make_host_kv(s, rng);
  DeviceKv dkv(kv);
  Requests r = make_requests({100}, s, rng);
  const int64_t heads = 4, D = s.head_dim;
  auto q = make_queries(heads * D, DType::kBF16, rng);
  DeviceBuffer dq = to_device(q), dbt = to_device(r.block_tables), dsl = to_device(r.seq_lens), dout;
  ASSERT_TRUE(dout.allocate(heads * D * 2).ok());
  DecodeOptions o;
  o.num_splits = 4;
  const Status st = decode_attention(make_view(dq.data(), DType::kBF16, Device::kCuda, {1, 1, heads, D}), dkv.view,
                                     make_view(dbt.data(), DType::kI32, Device::kCuda, {1, r.max_pages}),
                                     make_view(dsl.data(), DType::kI32, Device::kCuda, {1}),
                                     make_view(dout.data(), DType::kBF16, Device::kCuda, {1, 1, heads, D}), TensorView(),
                                     o, nullptr, 0, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
  EXPECT_NE(st.message().find("workspace"), std::string::npos);
}

}  // namespace
}  // namespace nvfp4kv::test
