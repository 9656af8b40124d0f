// nvfp4kv — CPU tests of decode attention: the fp64 reference (the CPU backend of
// decode_attention) against an independent dense computation over dequantize_kv's output,
// kv_len 0 / 1, causal qo_len, window, soft cap, and argument validation.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "attention/decode_fixture.h"
#include "nvfp4kv/attention.h"
#include "cuda/attention/decode_params.h"
#include "ref/attention.h"

namespace nvfp4kv::test {
namespace {

struct Dense {
  std::vector<double> out, lse;
};

// Independent attention: K/V gathered by dequantize_kv (dense f32, global scales applied),
// straightforward softmax in double with its own causal/window/soft-cap logic.
Dense dense_attention(const HostKv& kv, const Requests& r, const std::vector<uint16_t>& q, int64_t qo_len,
                      int64_t heads, DType qt, const DecodeOptions& o) {
  const CacheSpec& s = kv.spec;
  const int64_t H = s.num_kv_heads, D = s.head_dim, G = heads / H;
  int64_t total = 0;
  for (auto l : r.seq_lens) total += l;
  std::vector<float> k(std::max<int64_t>(total, 1) * H * D), v(k.size());
  HostKv copy = kv;
  auto bt = make_view(const_cast<int32_t*>(r.block_tables.data()), DType::kI32, Device::kCpu, {r.batch, r.max_pages});
  auto sl = make_view(const_cast<int32_t*>(r.seq_lens.data()), DType::kI32, Device::kCpu, {r.batch});
  const Status st = dequantize_kv(copy.host_view(), bt, sl, make_view(k.data(), DType::kF32, Device::kCpu, {total, H, D}),
                                  make_view(v.data(), DType::kF32, Device::kCpu, {total, H, D}));
  EXPECT_TRUE(st.ok()) << st.to_string();
  const double sm = o.sm_scale > 0 ? o.sm_scale : 1.0 / std::sqrt(double(D));
  Dense res;
  res.out.assign(r.batch * qo_len * heads * D, 0.0);
  res.lse.assign(r.batch * qo_len * heads, -std::numeric_limits<double>::infinity());
  int64_t row0 = 0;
  for (int64_t b = 0; b < r.batch; ++b) {
    const int64_t L = r.seq_lens[b];
    for (int64_t t = 0; t < qo_len; ++t)
      for (int64_t hq = 0; hq < heads; ++hq) {
        const int64_t h = hq / G;
        std::vector<double> w;
        std::vector<int64_t> js;
        for (int64_t j = 0; j < L; ++j) {
          const int64_t pos = L - qo_len + t;
          if (j > pos) continue;
          if (o.window_left >= 0 && j < pos - o.window_left) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += bits_to_double(qt, q[((b * qo_len + t) * heads + hq) * D + d]) * k[((row0 + j) * H + h) * D + d];
          double x = sm * dot;
          if (o.logits_soft_cap > 0) x = o.logits_soft_cap * std::tanh(x / o.logits_soft_cap);
          w.push_back(x);
          js.push_back(j);
        }
        if (w.empty()) continue;
        const double mx = *std::max_element(w.begin(), w.end());
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        const int64_t row = (b * qo_len + t) * heads + hq;
        for (size_t i = 0; i < w.size(); ++i)
          for (int64_t d = 0; d < D; ++d) res.out[row * D + d] += w[i] / sum * v[((row0 + js[i]) * H + h) * D + d];
        res.lse[row] = mx + std::log(sum);
      }
    row0 += L;
  }
  return res;
}

struct RunResult {
  std::vector<double> out, lse;
  Status status;
};

RunResult run_cpu(HostKv& kv, const Requests& r, std::vector<uint16_t>& q, int64_t qo_len, int64_t heads, DType qt,
                  const DecodeOptions& o) {
  const int64_t D = kv.spec.head_dim;
  std::vector<uint16_t> out(r.batch * qo_len * heads * D, 0xFFFF);
  std::vector<float> lse(r.batch * qo_len * heads, 12345.f);
  auto qv = make_view(q.data(), qt, Device::kCpu, {r.batch, qo_len, heads, D});
  auto ov = make_view(out.data(), qt, Device::kCpu, {r.batch, qo_len, heads, D});
  auto lv = make_view(lse.data(), DType::kF32, Device::kCpu, {r.batch, qo_len, heads});
  auto bt = make_view(const_cast<int32_t*>(r.block_tables.data()), DType::kI32, Device::kCpu, {r.batch, r.max_pages});
  auto sl = make_view(const_cast<int32_t*>(r.seq_lens.data()), DType::kI32, Device::kCpu, {r.batch});
  RunResult res;
  res.status = decode_attention(qv, kv.host_view(), bt, sl, ov, lv, o, nullptr, 0, nullptr);
  for (auto b : out) res.out.push_back(bits_to_double(qt, b));
  for (auto l : lse) res.lse.push_back(l);
  return res;
}

TEST(DecodeRef, MatchesDenseAttentionEveryFormat) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const KvFormat formats[] = {KvFormat::kBF16, KvFormat::kF16, KvFormat::kFP8E4M3, KvFormat::kNvfp4,
                              KvFormat::kFp4Block16};
  int idx = 0;
  for (KvFormat f : formats) {
    for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
      CacheSpec s;
      s.format = f;
      s.layout = layout;
      s.page_size = (idx % 3 == 0) ? 1 : (idx % 3 == 1 ? 16 : 5);
      s.num_kv_heads = 2;
      s.head_dim = (idx % 2) ? 64 : 128;
      s.num_pages = 160 / s.page_size + 4;
      s.padded = idx % 2;
      s.combined = idx % 4 == 1;
      s.value_dtype = f == KvFormat::kF16 ? DType::kF16 : (f == KvFormat::kBF16 ? DType::kBF16 : (idx % 2 ? DType::kF16 : DType::kBF16));
      ++idx;
      SCOPED_TRACE(describe(s));
      HostKv kv = make_host_kv(s, rng);
      const int64_t qo_len = 1 + idx % 3, heads = s.num_kv_heads * (idx % 2 ? 5 : 4);
      Requests r = make_requests({37, 1, 0, 50}, s, rng);
      auto q = make_queries(r.batch * qo_len * heads * s.head_dim, s.value_dtype, rng);
      DecodeOptions o;
      o.window_left = idx % 5 == 2 ? 9 : -1;
      o.logits_soft_cap = idx % 5 == 3 ? 2.5f : 0.f;
      RunResult got = run_cpu(kv, r, q, qo_len, heads, s.value_dtype, o);
      ASSERT_TRUE(got.status.ok()) << got.status.to_string();
      Dense want = dense_attention(kv, r, q, qo_len, heads, s.value_dtype, o);
      // The reference rounds only its output (bf16: ≤ 2^-9 relative per element, RMS ≈ 2^-9/√3 ≈ 1.1e-3;
      // f16 ≈ 1.4e-4); dequantize_kv's fp32 rounding of x̂·scale adds ~1e-7.
      const double tol = s.value_dtype == DType::kBF16 ? 2.5e-3 : 4e-4;
      EXPECT_LE(rel_l2(got.out, want.out), tol);
      for (size_t i = 0; i < want.lse.size(); ++i) {
        if (std::isinf(want.lse[i])) {
          EXPECT_TRUE(std::isinf(got.lse[i]) && got.lse[i] < 0) << "row " << i;
        } else {
          EXPECT_NEAR(got.lse[i], want.lse[i], 1e-5 * std::max(1.0, std::fabs(want.lse[i]))) << "row " << i;
        }
      }
    }
  }
}

TEST(DecodeRef, KvLenZeroAndRowsWithoutKeys) {
  std::mt19937 rng(7);
  CacheSpec s;
  s.format = KvFormat::kNvfp4;
  s.num_kv_heads = 1;
  s.head_dim = 64;
  HostKv kv = make_host_kv(s, rng, 0.0);
  Requests r = make_requests({0, 1}, s, rng);
  auto q = make_queries(2 * 2 * 2 * 64, DType::kBF16, rng);
  RunResult got = run_cpu(kv, r, q, /*qo_len=*/2, /*heads=*/2, DType::kBF16, DecodeOptions());
  ASSERT_TRUE(got.status.ok()) << got.status.to_string();
  // Request 0 (kv_len 0): every row 0 / −inf. Request 1 (kv_len 1, qo_len 2): token 0 sits at
  // position −1 (no key), token 1 at position 0 sees exactly key 0: out = v̂_0 · v_scale.
  for (int row = 0; row < 4; ++row) {
    EXPECT_TRUE(std::isinf(got.lse[row]) && got.lse[row] < 0);
    for (int d = 0; d < 64; ++d) EXPECT_EQ(got.out[row * 64 + d], 0.0);
  }
  for (int hq = 0; hq < 2; ++hq) {
    const int row = 4 + hq;
    EXPECT_TRUE(std::isinf(got.lse[row]));
    const int prow = 6 + hq;
    EXPECT_TRUE(std::isfinite(got.lse[prow]));
    const int page = r.block_tables[1 * r.max_pages];
    for (int d = 0; d < 64; ++d) {
      const double want = ref::kv_element(kv.host_view(), true, page, 0, 0, d) * kv.v_scale;
      EXPECT_NEAR(got.out[prow * 64 + d], want, std::fabs(want) * 4e-3 + 1e-6) << d;
    }
  }
}

TEST(DecodeRef, CausalQueriesEqualShorterSingleTokenDecodes) {
  // Query token t of a qo_len = 4 request equals a qo_len = 1 decode of the same request cut to
  // kv_len − (qo_len − 1 − t) tokens.
  std::mt19937 rng(11);
  CacheSpec s;
  s.format = KvFormat::kFP8E4M3;
  s.layout = KvLayout::kHND;
  s.page_size = 3;
  s.num_pages = 40;
  HostKv kv = make_host_kv(s, rng);
  const int64_t heads = 8, D = s.head_dim, qo = 4;
  Requests r = make_requests({29}, s, rng);
  auto q = make_queries(qo * heads * D, DType::kBF16, rng);
  RunResult all = run_cpu(kv, r, q, qo, heads, DType::kBF16, DecodeOptions());
  ASSERT_TRUE(all.status.ok());
  for (int t = 0; t < qo; ++t) {
    Requests one = r;
    one.seq_lens[0] = 29 - (qo - 1 - t);
    std::vector<uint16_t> q1(q.begin() + t * heads * D, q.begin() + (t + 1) * heads * D);
    RunResult single = run_cpu(kv, one, q1, 1, heads, DType::kBF16, DecodeOptions());
    ASSERT_TRUE(single.status.ok());
    for (int64_t i = 0; i < heads * D; ++i) EXPECT_EQ(single.out[i], all.out[t * heads * D + i]) << t << " " << i;
  }
}

TEST(DecodeRef, WindowAndSoftCapLimits) {
  std::mt19937 rng(5);
  CacheSpec s;
  s.format = KvFormat::kBF16;
  s.num_pages = 12;
  HostKv kv = make_host_kv(s, rng);
  const int64_t heads = 4;
  Requests r = make_requests({100, 64}, s, rng);
  auto q = make_queries(2 * 2 * heads * s.head_dim, DType::kBF16, rng, 3.0f);
  DecodeOptions plain;
  RunResult base = run_cpu(kv, r, q, 2, heads, DType::kBF16, plain);
  DecodeOptions wide;
  wide.window_left = 100;  // ≥ every position: no key is cut
  wide.logits_soft_cap = 1e6f;  // tanh(x/cap)·cap = x to ~1e-12
  RunResult same = run_cpu(kv, r, q, 2, heads, DType::kBF16, wide);
  EXPECT_LE(rel_l2(same.out, base.out), 1e-6);
  DecodeOptions narrow;
  narrow.window_left = 3;
  narrow.logits_soft_cap = 1.0f;
  RunResult diff = run_cpu(kv, r, q, 2, heads, DType::kBF16, narrow);
  EXPECT_GT(rel_l2(diff.out, base.out), 1e-2);
}

TEST(DecodeRef, BadArgumentsNameTheArgument) {
  std::mt19937 rng(3);
  CacheSpec s;
  s.format = KvFormat::kNvfp4;
  s.num_pages = 4;
  HostKv kv = make_host_kv(s, rng);
  Requests r = make_requests({10}, s, rng);
  const int64_t heads = 4, D = s.head_dim;
  auto q = make_queries(heads * D, DType::kBF16, rng);
  std::vector<uint16_t> out(heads * D);
  auto qv = make_view(q.data(), DType::kBF16, Device::kCpu, {1, 1, heads, D});
  auto ov = make_view(out.data(), DType::kBF16, Device::kCpu, {1, 1, heads, D});
  auto bt = make_view(r.block_tables.data(), DType::kI32, Device::kCpu, {1, r.max_pages});
  auto sl = make_view(r.seq_lens.data(), DType::kI32, Device::kCpu, {1});
  KvCacheView c = kv.host_view();
  auto expect_bad = [&](const TensorView& q_, const KvCacheView& c_, const TensorView& bt_, const TensorView& sl_,
                        const TensorView& o_, const TensorView& l_, const DecodeOptions& opt, const char* word) {
    Status st = decode_attention(q_, c_, bt_, sl_, o_, l_, opt, nullptr, 0, nullptr);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << word;
    EXPECT_NE(st.message().find(word), std::string::npos) << st.message();
    Status why;
    EXPECT_FALSE(can_run_decode(q_, c_, bt_, sl_, o_, l_, opt, &why));
  };
  DecodeOptions o;
  EXPECT_TRUE(decode_attention(qv, c, bt, sl, ov, TensorView(), o, nullptr, 0, nullptr).ok());
  auto q9 = make_view(q.data(), DType::kBF16, Device::kCpu, {1, 9, heads / 9 + 1, D});
  expect_bad(q9, c, bt, sl, ov, TensorView(), o, "qo_len");
  auto q3 = make_view(q.data(), DType::kBF16, Device::kCpu, {1, 1, 3, D});
  auto o3 = make_view(out.data(), DType::kBF16, Device::kCpu, {1, 1, 3, D});
  KvCacheView c3 = c;  // 2 kv heads: 3 query heads is not a multiple
  expect_bad(q3, c3, bt, sl, o3, TensorView(), o, "num_kv_heads");
  auto qf = make_view(q.data(), DType::kF32, Device::kCpu, {1, 1, heads / 2, D});
  expect_bad(qf, c, bt, sl, ov, TensorView(), o, "q must be bf16 or f16");
  KvCacheView noscale = c;
  noscale.k_scale = nullptr;
  expect_bad(qv, noscale, bt, sl, ov, TensorView(), o, "k_scale");
  KvCacheView nosf = c;
  nosf.k_scales = TensorView();
  expect_bad(qv, nosf, bt, sl, ov, TensorView(), o, "k_scales");
  auto bt64 = make_view(r.block_tables.data(), DType::kI64, Device::kCpu, {1, r.max_pages / 2});
  expect_bad(qv, c, bt64, sl, ov, TensorView(), o, "block_tables");
  auto sl2 = make_view(r.seq_lens.data(), DType::kI32, Device::kCpu, {2});
  expect_bad(qv, c, bt, sl2, ov, TensorView(), o, "seq_lens");
  auto of = make_view(out.data(), DType::kF16, Device::kCpu, {1, 1, heads, D});
  expect_bad(qv, c, bt, sl, of, TensorView(), o, "out");
  std::vector<float> lse(8);
  auto lbad = make_view(lse.data(), DType::kF32, Device::kCpu, {1, 2, heads});
  expect_bad(qv, c, bt, sl, ov, lbad, o, "lse");
  DecodeOptions ow;
  ow.window_left = -2;
  expect_bad(qv, c, bt, sl, ov, TensorView(), ow, "window_left");
  DecodeOptions oc;
  oc.logits_soft_cap = -1;
  expect_bad(qv, c, bt, sl, ov, TensorView(), oc, "logits_soft_cap");
  DecodeOptions os;
  os.num_splits = 5000;
  expect_bad(qv, c, bt, sl, ov, TensorView(), os, "num_splits");
  KvCacheView hd = c;
  hd.head_dim = 96;
  expect_bad(qv, hd, bt, sl, ov, TensorView(), o, "head_dim");
  CacheSpec s16 = s;
  s16.format = KvFormat::kF16;
  HostKv kv16 = make_host_kv(s16, rng);
  expect_bad(qv, kv16.host_view(), bt, sl, ov, TensorView(), o, "q must have the cache's dtype");
}

TEST(DecodeRef, WorkspaceSizing) {
  DecodeOptions o;
  o.num_splits = 1;
  EXPECT_EQ(decode_workspace_bytes(16, 1, 32, 8, 128, 512, 16, o), 0u);
  o.num_splits = 4;
  const size_t ws = decode_workspace_bytes(16, 1, 32, 8, 128, 512, 16, o);
  EXPECT_GE(ws, size_t(16) * 32 * 4 * (128 + 1) * sizeof(float));
  // Counters (16 bytes per output row: a round and an arrival counter, at offset 0), partial
  // O, partial LSE: disjoint, 256-byte aligned, inside; the counters' place does not depend on
  // the split count.
  const size_t out = cuda::decode_workspace_out_offset(16, 1, 32);
  const size_t lse = cuda::decode_workspace_lse_offset(16, 1, 32, 128, 4);
  EXPECT_EQ(out % 256, 0u);
  EXPECT_EQ(lse % 256, 0u);
  EXPECT_GE(out, size_t(16) * 32 * 2 * sizeof(unsigned long long));
  EXPECT_GE(lse, out + size_t(16) * 32 * 4 * 128 * sizeof(float));
  EXPECT_EQ(cuda::decode_workspace_for(16, 1, 32, 128, 4), lse + size_t(16) * 32 * 4 * sizeof(float));
  EXPECT_EQ(cuda::decode_workspace_out_offset(16, 1, 32), cuda::decode_workspace_lse_offset(16, 1, 32, 128, 4) -
                                                              size_t(16) * 32 * 4 * 128 * sizeof(float));
}

// The workspace is sized with decode_splits_bound before the kernel (and so its occupancy) is
// known: the bound must cover the automatic choice for every possible occupancy, and a forced
// count exactly; no split may span more than kDecodeMaxSplitPages pages.
TEST(DecodeRef, SplitBoundCoversEveryOccupancy) {
  for (int64_t batch : {1, 3, 16, 64, 128})
    for (int64_t heads : {1, 8, 32})
      for (int64_t qo : {1, 4})
        for (int64_t page : {1, 16, 64})
          for (int64_t pages : {int64_t{1}, int64_t{7}, int64_t{512}, 70000 / page + 1}) {
            const int64_t hq = heads * 4;
            const int bound = cuda::decode_splits_bound(batch, qo, hq, heads, pages, page, 0, 132);
            for (int64_t resident = 1; resident <= 132 * 16; resident = resident * 3 + 1)
              for (int hpc : {1, 2, 4, 8}) {
                if (hpc > cuda::decode_max_heads_per_cta(heads)) continue;
                const int s = cuda::choose_decode_splits(batch, qo, hq, heads, pages, page, 0, resident, hpc);
                ASSERT_LE(s, bound) << batch << " " << heads << " " << qo << " " << page << " " << pages << " "
                                    << resident << " hpc " << hpc;
                const int64_t per_split = ((pages * page + s - 1) / s + 15) / 16 * 16;
                if (s < 1024) {
                  EXPECT_LE(per_split / page + 2, cuda::kDecodeMaxSplitPages);
                }
                EXPECT_LE(cuda::decode_split_pages(pages, page, s), pages + 1);
              }
            EXPECT_EQ(cuda::decode_splits_bound(batch, qo, hq, heads, pages, page, 5, 132),
                      cuda::choose_decode_splits(batch, qo, hq, heads, pages, page, 5, 7));
          }
}

// The kernel-shape rules (decode_params.h): the narrow tile is the nvfp4 / fp8 hd128 kernel for ≤ 8
// query rows per kv head; heads per CTA follow the measured A/B (bench/NOTES.md v8, v9).
TEST(DecodeRef, NarrowTileAndHeadsPerCtaRules) {
  constexpr int kBF16 = static_cast<int>(KvFormat::kBF16), kFP8 = static_cast<int>(KvFormat::kFP8E4M3),
                kNv = static_cast<int>(KvFormat::kNvfp4);
  EXPECT_TRUE(cuda::decode_use_narrow_tile(kNv, 128, 4, 1));
  EXPECT_TRUE(cuda::decode_use_narrow_tile(kNv, 128, 4, 2));   // 8 rows
  EXPECT_TRUE(cuda::decode_use_narrow_tile(kNv, 128, 1, 8));
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kNv, 128, 4, 3));  // 12 rows
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kNv, 128, 16, 1));
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kNv, 64, 4, 1));
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kNv, 256, 4, 1));
  EXPECT_TRUE(cuda::decode_use_narrow_tile(kFP8, 128, 4, 1));
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kFP8, 64, 4, 1));
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kBF16, 128, 4, 1));
  EXPECT_FALSE(cuda::decode_use_narrow_tile(kNv, 128, 4, 1, /*enabled=*/false));
  // 32/8 heads, one row tile.
  EXPECT_EQ(cuda::decode_heads_per_cta(kBF16, 128, 8, 64, 1, 32768), 1);  // registers, no ring
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 64, 1, 8192), 4);     // 128 CTAs per split
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 16, 1, 8192), 2);
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 16, 1, 1024), 1);
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 16, 1, 32768), 2);
  // The paired nvfp4 tile (8 heads per CTA): ≤ 4 query rows per kv head, 8 | kv heads, from
  // 128 CTAs per split (decode v18); NVFP4KV_DECODE_PAIR's modes 0 / 1.
  EXPECT_EQ(cuda::decode_max_heads_per_cta(8), 8);
  EXPECT_EQ(cuda::decode_max_heads_per_cta(12), 4);
  EXPECT_TRUE(cuda::decode_use_pair_tile(kNv, 128, 4, 1, 8, 128, true));
  EXPECT_FALSE(cuda::decode_use_pair_tile(kNv, 128, 4, 1, 8, 64, true));
  EXPECT_TRUE(cuda::decode_use_pair_tile(kNv, 128, 4, 1, 8, 1, true, /*mode=*/1));
  EXPECT_FALSE(cuda::decode_use_pair_tile(kNv, 128, 4, 1, 8, 128, true, /*mode=*/0));
  EXPECT_TRUE(cuda::decode_use_pair_tile(kNv, 128, 2, 2, 16, 64, true));   // 4 rows, 128 CTAs
  EXPECT_FALSE(cuda::decode_use_pair_tile(kNv, 128, 4, 2, 8, 128, true));  // 8 rows
  EXPECT_FALSE(cuda::decode_use_pair_tile(kNv, 128, 4, 1, 4, 512, true));  // 4 kv heads
  EXPECT_FALSE(cuda::decode_use_pair_tile(kFP8, 128, 4, 1, 8, 128, true));
  EXPECT_FALSE(cuda::decode_use_pair_tile(kNv, 128, 4, 1, 8, 128, false));  // wide tile
  // The merge in the decode kernel: the one-warp-per-unit narrow epilogue (4 heads per CTA or
  // the paired tile), 2-3 splits by the rule, up to 32 forced; NVFP4KV_DECODE_FUSED_MERGE=0
  // never.
  EXPECT_TRUE(cuda::decode_fused_merge(true, 4, 4, 2));
  EXPECT_TRUE(cuda::decode_fused_merge(true, 4, 4, cuda::kDecodeFusedMergeMaxSplits));
  EXPECT_FALSE(cuda::decode_fused_merge(true, 4, 4, cuda::kDecodeFusedMergeMaxSplits + 1));
  EXPECT_TRUE(cuda::decode_fused_merge(true, 8, 8, 3));  // paired tile, 4 rows per head
  EXPECT_TRUE(cuda::decode_fused_merge(true, 4, 1, 3));
  EXPECT_FALSE(cuda::decode_fused_merge(true, 4, 9, 3, /*mode=*/1));  // > 8 rows: no narrow tile
  EXPECT_TRUE(cuda::decode_fused_merge(true, 4, 4, cuda::kDecodeFusedMergeLimit, /*mode=*/1));
  EXPECT_FALSE(cuda::decode_fused_merge(true, 4, 4, cuda::kDecodeFusedMergeLimit + 1, /*mode=*/1));
  EXPECT_FALSE(cuda::decode_fused_merge(true, 4, 4, 1, /*mode=*/1));  // no split
  EXPECT_FALSE(cuda::decode_fused_merge(true, 4, 4, 3, /*mode=*/0));
  EXPECT_FALSE(cuda::decode_fused_merge(true, 2, 4, 3, /*mode=*/1));  // shared-memory epilogue
  EXPECT_FALSE(cuda::decode_fused_merge(false, 4, 4, 3, /*mode=*/1));  // wide tile
  // The narrow tile: 4 heads whenever they divide the kv heads (one warp per head, v12).
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 16, 1, 32768, /*narrow=*/true), 4);
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 8, 1, 32768, /*narrow=*/true), 4);
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 16, 1, 8192, /*narrow=*/true), 4);
  EXPECT_EQ(cuda::decode_heads_per_cta(kNv, 128, 8, 1, 1, 1024, /*narrow=*/true), 4);
  EXPECT_EQ(cuda::decode_heads_per_cta(kFP8, 128, 8, 16, 1, 32768, /*narrow=*/true), 4);
  EXPECT_EQ(cuda::decode_heads_per_cta(kFP8, 128, 6, 1, 1, 32768, /*narrow=*/true), 2);  // 4 does not divide 6
  EXPECT_EQ(cuda::decode_heads_per_cta(kFP8, 128, 3, 16, 1, 1024, /*narrow=*/true), 1);
  EXPECT_EQ(cuda::decode_heads_per_cta(kFP8, 128, 6, 64, 1, 8192), 2);    // 6 heads: 2 divides, 4 not
  EXPECT_EQ(cuda::decode_heads_per_cta(kFP8, 128, 3, 64, 1, 8192), 1);
  // Dynamic rounds: ≥ 128 tokens per split on average.
  EXPECT_TRUE(cuda::decode_dynamic_rounds(12, 32, 512, 16));    // 16 × 8K, 4 heads per CTA
  EXPECT_TRUE(cuda::decode_dynamic_rounds(3, 256, 2048, 16));   // 128 × 32K: two waves
  EXPECT_TRUE(cuda::decode_dynamic_rounds(189, 2, 2048, 16));   // 1 × 32K: 173 tokens per split
  EXPECT_TRUE(cuda::decode_dynamic_rounds(3, 128, 64, 16));     // 64 × 1K: 341
  EXPECT_FALSE(cuda::decode_dynamic_rounds(189, 2, 1024, 16));  // 1 × 16K: 86
  EXPECT_FALSE(cuda::decode_dynamic_rounds(12, 32, 64, 16));    // 16 × 1K: 85
  EXPECT_TRUE(cuda::decode_dynamic_rounds(8, 32, 64, 16));      // exactly 128
  EXPECT_FALSE(cuda::decode_dynamic_rounds(9, 32, 64, 16));     // 113
  EXPECT_FALSE(cuda::decode_dynamic_rounds(1, 64, 512, 16));    // no split
  EXPECT_FALSE(cuda::decode_dynamic_rounds(6, 64, 512, 16, /*mode=*/0));
  EXPECT_TRUE(cuda::decode_dynamic_rounds(2, 1, 10, 16, /*mode=*/1));
  EXPECT_FALSE(cuda::decode_dynamic_rounds(2, 64, cuda::kDecodeMaxDynamicPages, 1, /*mode=*/1));  // table too big
  // Late joiners from 32768 head-tokens per first-wave CTA.
  EXPECT_TRUE(cuda::decode_late_joiners(3, 32768, 4));    // 64 × 32K
  EXPECT_FALSE(cuda::decode_late_joiners(12, 32768, 4));  // 16 × 32K
  EXPECT_FALSE(cuda::decode_late_joiners(3, 8192, 4));    // 64 × 8K
  EXPECT_FALSE(cuda::decode_late_joiners(0, 8192, 4));
}

}  // namespace
}  // namespace nvfp4kv::test
