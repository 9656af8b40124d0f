// nvfp4kv KV cache on the CPU: append-then-dequantize against the SPEC oracle of
// tests/kv/kv_test_util.h, bitwise, for every format × layout × page size × head_dim × stride
// variant, with canaries (every byte outside the written slots unchanged) and skipped slots.
#include <gtest/gtest.h>

#include "kv/kv_test_util.h"

namespace nvfp4kv::kvtest {
namespace {

/// Runs the whole matrix of layouts × page sizes × head dims × variants for one format config.
void run_matrix(const Config& cfg, uint64_t seed) {
  int case_index = 0;
  for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
    for (int64_t page_size : {1, 3, 16, 64}) {
      for (int64_t head_dim : {64, 128, 256}) {
        for (Variant variant : {Variant::kSeparate, Variant::kCombined, Variant::kPadded}) {
          ++case_index;
          const uint64_t case_seed = seed * 1000003u + case_index;
          std::mt19937_64 rng(case_seed);
          const int64_t heads = 1 + case_index % 3;
          const int64_t max_tokens = page_size == 64 ? 70 : page_size * 3 + 4;
          const int64_t num_pages = 3 * fmt::ceil_div(max_tokens, page_size) + 2;  // some unused
          const bool in_f16 = case_index % 2 == 1;
          const DType out_dtype = case_index % 3 == 0 ? DType::kF32 : case_index % 3 == 1 ? DType::kBF16 : DType::kF16;
          SCOPED_TRACE(std::string("format ") + kv_format_name(cfg.format) + " mode " + std::to_string(cfg.mode) +
                       " layout " + kv_layout_name(layout) + " page_size " + std::to_string(page_size) +
                       " head_dim " + std::to_string(head_dim) + " heads " + std::to_string(heads) + " " +
                       variant_name(variant) + (in_f16 ? " f16 in" : " bf16 in") + " out " + dtype_name(out_dtype) +
                       " seed " + std::to_string(case_seed));
          const CacheSpec spec = make_cache_spec(cfg.format, layout, num_pages, page_size, heads, head_dim, variant);
          auto bufs = random_buffers(spec, rng);
          const Batch batch = make_batch(num_pages, page_size, max_tokens, rng);
          const int64_t n = static_cast<int64_t>(batch.slots.size());
          Inputs in = make_inputs(n, heads, head_dim, variant, in_f16, rng);
          const TensorView keys = input_view(in.buf.data(), in, false, n, heads, head_dim, in_f16, Device::kCpu);
          const TensorView values = input_view(in.buf.data(), in, true, n, heads, head_dim, in_f16, Device::kCpu);
          float k_scale = 1.0f, v_scale = 1.0f;
          ASSERT_TRUE(calibrate_kv_scale(keys, cfg.format, cfg.mode != 0, &k_scale).ok());
          ASSERT_TRUE(calibrate_kv_scale(values, cfg.format, cfg.mode != 0, &v_scale).ok());
          auto expected = bufs;
          oracle_append(spec, expected, in, n, batch.slots, in_f16, k_scale, v_scale, cfg.mode);
          std::vector<uint8_t*> bases;
          for (auto& b : bufs) bases.push_back(b.data());
          const KvCacheView cache = bind_cache(spec, bases, Device::kCpu, &k_scale, &v_scale);
          std::vector<int64_t> slots = batch.slots;
          const TensorView slot_view = make_view(slots.data(), DType::kI64, Device::kCpu, {n});
          const Status st = append_kv(cache, keys, values, slot_view, options_of(cfg.mode));
          ASSERT_TRUE(st.ok()) << st.to_string();
          const std::string diff = first_diff(bufs, expected);
          ASSERT_TRUE(diff.empty()) << diff;

          // Dequantize the batch back and compare with the oracle's decode of the cache bytes.
          std::vector<int32_t> table = block_table(batch);
          std::vector<int32_t> lens = batch.lens;
          const int64_t bsz = static_cast<int64_t>(lens.size());
          int64_t total = 0;
          for (auto l : lens) total += l;
          const int64_t es = static_cast<int64_t>(dtype_size(out_dtype));
          std::vector<uint8_t> ok_bytes(total * heads * head_dim * es, 0xCD), ov_bytes(ok_bytes.size(), 0xCD);
          const Status ds = dequantize_kv(
              cache, make_view(table.data(), DType::kI32, Device::kCpu, {bsz, batch.max_pages}),
              make_view(lens.data(), DType::kI32, Device::kCpu, {bsz}),
              make_view(ok_bytes.data(), out_dtype, Device::kCpu, {total, heads, head_dim}),
              make_view(ov_bytes.data(), out_dtype, Device::kCpu, {total, heads, head_dim}));
          ASSERT_TRUE(ds.ok()) << ds.to_string();
          const auto ek = oracle_dequant(spec, bufs, batch, false, k_scale, out_dtype);
          const auto ev = oracle_dequant(spec, bufs, batch, true, v_scale, out_dtype);
          ASSERT_EQ(ok_bytes, ek);
          ASSERT_EQ(ov_bytes, ev);
        }
      }
    }
  }
}

TEST(KvAppend, Bf16MatchesOracle) { run_matrix({KvFormat::kBF16, 0}, 11); }
TEST(KvAppend, F16MatchesOracle) { run_matrix({KvFormat::kF16, 0}, 12); }
TEST(KvAppend, Fp8MatchesOracle) { run_matrix({KvFormat::kFP8E4M3, 0}, 13); }
TEST(KvAppend, Nvfp4MatchesOracle) { run_matrix({KvFormat::kNvfp4, 0}, 14); }
TEST(KvAppend, Nvfp4FourOverSixMseMatchesOracle) { run_matrix({KvFormat::kNvfp4, 1}, 15); }
TEST(KvAppend, Nvfp4FourOverSixMaeMatchesOracle) { run_matrix({KvFormat::kNvfp4, 2}, 16); }
TEST(KvAppend, Fp4Block16MatchesOracle) { run_matrix({KvFormat::kFp4Block16, 0}, 17); }

}  // namespace
}  // namespace nvfp4kv::kvtest
