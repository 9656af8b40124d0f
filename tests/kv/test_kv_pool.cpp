// nvfp4kv KvCachePool on the CPU: capacity figures, budgets, page hand-out, exhaustion without
// partial allocation, release and reuse, block tables, and the layer views driving append_kv /
// dequantize_kv end to end.
#include <gtest/gtest.h>

#include <set>

#include "kv/kv_test_util.h"

namespace nvfp4kv::kvtest {
namespace {

KvCachePoolOptions cpu_options(KvFormat f, int64_t layers = 2, int64_t page_size = 4) {
  KvCachePoolOptions o;
  o.format = f;
  o.num_layers = layers;
  o.num_kv_heads = 2;
  o.head_dim = 64;
  o.page_size = page_size;
  o.device = Device::kCpu;
  return o;
}

// Llama-3-8B-like: 32 layers, 8 KV heads, head_dim 128. Per layer and token: bf16 2·8·128·2 =
// 4096 B; fp8 2048 B; nvfp4 2·8·(64 + 8) = 1152 B (data 1024 + E4M3 scales 128).
TEST(KvCapacity, BytesPerTokenLlama3_8B) {
  EXPECT_EQ(kv_bytes_per_token(KvFormat::kBF16, 8, 128), 4096);
  EXPECT_EQ(kv_bytes_per_token(KvFormat::kF16, 8, 128), 4096);
  EXPECT_EQ(kv_bytes_per_token(KvFormat::kFP8E4M3, 8, 128), 2048);
  EXPECT_EQ(kv_bytes_per_token(KvFormat::kNvfp4, 8, 128), 1152);
  EXPECT_EQ(kv_bytes_per_token(KvFormat::kFp4Block16, 8, 128), 1152);
  EXPECT_EQ(kv_bytes_per_token(KvFormat::kNvfp4, 8, 100), 0);
  KvCachePoolOptions o;
  o.num_layers = 32;
  o.num_kv_heads = 8;
  o.head_dim = 128;
  o.device = Device::kCpu;
  o.format = KvFormat::kNvfp4;
  KvCachePool pool;
  ASSERT_TRUE(KvCachePool::create(o, 2, &pool).ok());
  EXPECT_EQ(pool.bytes_per_token_per_layer(), 1152);
  EXPECT_EQ(pool.bytes_per_token(), 36864);
  // Capacity ratio nvfp4 : fp8 : bf16 = 4096/1152 : 4096/2048 : 1 = 3.5556 : 2 : 1.
  EXPECT_NEAR(4096.0 / 1152.0, 3.5556, 1e-4);
}

TEST(KvPool, PagesAndBudget) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kFP8E4M3, KvFormat::kNvfp4, KvFormat::kFp4Block16}) {
    SCOPED_TRACE(kv_format_name(f));
    const KvCachePoolOptions o = cpu_options(f);
    KvCachePool pool;
    ASSERT_TRUE(KvCachePool::create(o, 10, &pool).ok());
    EXPECT_EQ(pool.num_pages(), 10);
    EXPECT_EQ(pool.free_pages(), 10);
    EXPECT_EQ(pool.free_tokens(), 40);
    EXPECT_EQ(pool.total_bytes(), KvCachePool::bytes_for_pages(o, 10));
    // Data + scales of 10 pages · 4 tokens · 2 layers is a lower bound of the total.
    EXPECT_GE(pool.total_bytes(), 10 * 4 * pool.bytes_per_token());
    const int64_t budget = 1 << 20;
    KvCachePool b;
    ASSERT_TRUE(KvCachePool::create_with_budget(o, budget, &b).ok());
    EXPECT_LE(b.total_bytes(), budget);
    EXPECT_GT(KvCachePool::bytes_for_pages(o, b.num_pages() + 1), budget);
    KvCachePool none;
    const Status st = KvCachePool::create_with_budget(o, 100, &none);
    EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
  }
  KvCachePool p;
  EXPECT_EQ(KvCachePool::create(cpu_options(KvFormat::kNvfp4), 0, &p).code(), StatusCode::kInvalidArgument);
  KvCachePoolOptions bad = cpu_options(KvFormat::kNvfp4);
  bad.head_dim = 80;
  EXPECT_EQ(KvCachePool::create(bad, 4, &p).code(), StatusCode::kInvalidArgument);
}

TEST(KvPool, ExtendExhaustReleaseReuse) {
  KvCachePool pool;
  ASSERT_TRUE(KvCachePool::create(cpu_options(KvFormat::kNvfp4), 5, &pool).ok());
  ASSERT_TRUE(pool.add_sequence(7).ok());
  EXPECT_EQ(pool.add_sequence(7).code(), StatusCode::kInvalidArgument);
  std::vector<int64_t> slots;
  ASSERT_TRUE(pool.extend(7, 6, &slots).ok());  // 2 pages
  ASSERT_EQ(slots.size(), 6u);
  const auto pages7 = pool.seq_pages(7);
  ASSERT_EQ(pages7.size(), 2u);
  for (int64_t p = 0; p < 6; ++p) EXPECT_EQ(slots[p], pages7[p / 4] * 4 + p % 4);
  slots.clear();
  ASSERT_TRUE(pool.extend(7, 2, &slots).ok());  // fills page 2's slack, no new page
  EXPECT_EQ(pool.seq_pages(7).size(), 2u);
  EXPECT_EQ(slots, (std::vector<int64_t>{pages7[1] * 4 + 2, pages7[1] * 4 + 3}));
  ASSERT_TRUE(pool.add_sequence(8).ok());
  ASSERT_TRUE(pool.extend(8, 9).ok());  // 3 pages: pool now full
  EXPECT_EQ(pool.free_pages(), 0);
  // Exhaustion: an error, and nothing changes.
  slots.clear();
  Status st = pool.extend(7, 1, &slots);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
  EXPECT_NE(st.message().find("nothing was allocated"), std::string::npos) << st.message();
  EXPECT_TRUE(slots.empty());
  EXPECT_EQ(pool.seq_len(7), 8);
  ASSERT_TRUE(pool.extend(8, 3).ok());  // slack of its last page still usable
  EXPECT_EQ(pool.extend(8, 1).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.seq_len(8), 12);
  // Release and reuse: the freed pages go to the next sequence.
  const auto pages8 = pool.seq_pages(8);
  ASSERT_TRUE(pool.release(8).ok());
  EXPECT_EQ(pool.seq_len(8), -1);
  EXPECT_EQ(pool.release(8).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.free_pages(), 3);
  ASSERT_TRUE(pool.add_sequence(9).ok());
  ASSERT_TRUE(pool.extend(9, 12).ok());
  EXPECT_EQ(pool.seq_pages(9), pages8);
  EXPECT_EQ(pool.extend(9, 100).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.extend(42, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.extend(9, -1).code(), StatusCode::kInvalidArgument);
  // Every page is held by exactly one sequence.
  std::set<int32_t> all;
  for (int64_t id : {7, 9})
    for (int32_t p : pool.seq_pages(id)) EXPECT_TRUE(all.insert(p).second) << "page " << p << " handed out twice";
  EXPECT_EQ(all.size(), 5u);
  // Block tables.
  std::vector<int32_t> bt, lens;
  int64_t width = 0;
  ASSERT_TRUE(pool.fill_block_tables({9, 7}, &bt, &lens, &width).ok());
  EXPECT_EQ(width, 3);
  EXPECT_EQ(lens, (std::vector<int32_t>{12, 8}));
  EXPECT_EQ(std::vector<int32_t>(bt.begin(), bt.begin() + 3), pool.seq_pages(9));
  EXPECT_EQ(bt[3], pool.seq_pages(7)[0]);
  EXPECT_EQ(bt[5], 0);
  EXPECT_EQ(pool.fill_block_tables({1234}, &bt, &lens, &width).code(), StatusCode::kInvalidArgument);
}

/// The pool's views drive append_kv / dequantize_kv: a bf16 pool returns the appended values
/// exactly, appending to layer 0 leaves layer 1 untouched, and an nvfp4 pool matches the oracle.
TEST(KvPool, LayerViewsEndToEnd) {
  for (KvFormat f : {KvFormat::kBF16, KvFormat::kNvfp4}) {
    SCOPED_TRACE(kv_format_name(f));
    const KvCachePoolOptions o = cpu_options(f, 2, 3);
    KvCachePool pool;
    ASSERT_TRUE(KvCachePool::create(o, 8, &pool).ok());
    EXPECT_EQ(pool.set_decode_scales(0, 0.0f, 1.0f).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(pool.set_decode_scales(2, 1.0f, 1.0f).code(), StatusCode::kInvalidArgument);
    ASSERT_TRUE(pool.set_decode_scales(0, 0.003f, 0.002f).ok());
    std::vector<int64_t> slots;
    ASSERT_TRUE(pool.add_sequence(1).ok());
    ASSERT_TRUE(pool.add_sequence(2).ok());
    ASSERT_TRUE(pool.extend(1, 5, &slots).ok());
    ASSERT_TRUE(pool.extend(2, 4, &slots).ok());
    const int64_t n = static_cast<int64_t>(slots.size());
    std::mt19937_64 rng(5);
    Inputs in = make_inputs(n, 2, 64, Variant::kSeparate, false, rng);
    const KvCacheView l0 = pool.layer_view(0), l1 = pool.layer_view(1);
    EXPECT_EQ(*l0.k_scale, 0.003f);
    EXPECT_EQ(*l1.v_scale, 1.0f);
    ASSERT_TRUE(append_kv(l0, input_view(in.buf.data(), in, false, n, 2, 64, false, Device::kCpu),
                          input_view(in.buf.data(), in, true, n, 2, 64, false, Device::kCpu),
                          make_view(slots.data(), DType::kI64, Device::kCpu, {n})).ok());
    std::vector<int32_t> bt, lens;
    int64_t width = 0;
    ASSERT_TRUE(pool.fill_block_tables({1, 2}, &bt, &lens, &width).ok());
    std::vector<uint16_t> ok(n * 128), ov(n * 128), ok1(n * 128);
    auto deq = [&](const KvCacheView& c, std::vector<uint16_t>& k, std::vector<uint16_t>& v) {
      return dequantize_kv(c, make_view(bt.data(), DType::kI32, Device::kCpu, {2, width}),
                           make_view(lens.data(), DType::kI32, Device::kCpu, {2}),
                           make_view(k.data(), DType::kBF16, Device::kCpu, {n, 2, 64}),
                           make_view(v.data(), DType::kBF16, Device::kCpu, {n, 2, 64}));
    };
    ASSERT_TRUE(deq(l0, ok, ov).ok());
    std::vector<uint16_t> ov1(n * 128);
    ASSERT_TRUE(deq(l1, ok1, ov1).ok());
    for (auto x : ok1) ASSERT_EQ(x, 0) << "layer 1 must stay zero";
    for (int64_t i = 0; i < n * 128; ++i) {
      if (f == KvFormat::kBF16) {
        ASSERT_EQ(ok[i], in.buf[in.k_off + i]) << i;
        ASSERT_EQ(ov[i], in.buf[in.v_off + i]) << i;
      } else {
        // Oracle: quantize the chunk, decode the element, round to bf16.
        uint8_t data[32], sf = 0;
        const int64_t chunk = i / 16 * 16;
        oracle_chunk(f, in.buf.data() + in.k_off + chunk, false, 0.003f, 0, data, &sf);
        const uint32_t code = (data[(i % 16) / 2] >> (4 * (i & 1))) & 0xF;
        const float x = (fmt::e2m1_to_float(code) * fmt::e4m3_to_float(sf)) * 0.003f;
        ASSERT_EQ(ok[i], fmt::float_to_bf16_bits(x)) << i;
      }
    }
  }
}

}  // namespace
}  // namespace nvfp4kv::kvtest
