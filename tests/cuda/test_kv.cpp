// nvfp4kv KV cache on the GPU: append_kv / dequantize_kv kernels against the CPU reference
// (the public API on host views), bitwise over whole buffers (so every canary byte outside the
// written slots is checked too), for every format × layout × page size × head_dim × stride
// variant; out-of-range slots skipped without writes; device-side invalid page indices; a
// CUDA-graph capture of append replayed with a changed slot_mapping and scale.
#include <cuda_runtime.h>

#include <gtest/gtest.h>

#include "cuda/gpu_test_util.h"
#include "kv/kv_test_util.h"

namespace nvfp4kv::kvtest {
namespace {

/// Device copies of host buffers; `bases` are their device pointers.
struct DeviceSet {
  std::vector<DeviceBuffer> bufs;
  std::vector<uint8_t*> bases;
  explicit DeviceSet(const std::vector<std::vector<uint8_t>>& host) {
    for (const auto& h : host) {
      bufs.push_back(test::to_device(h));
      bases.push_back(static_cast<uint8_t*>(bufs.back().data()));
    }
  }
  std::vector<std::vector<uint8_t>> download(const std::vector<std::vector<uint8_t>>& like) const {
    std::vector<std::vector<uint8_t>> out;
    for (std::size_t i = 0; i < like.size(); ++i) out.push_back(test::to_host<uint8_t>(bufs[i], like[i].size()));
    return out;
  }
};

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// One GPU-vs-CPU case: append (with some slots out of range on the GPU copy), then dequantize.
/// `forced_scale` > 0 replaces the calibrated decode scales and `with_inf` plants ±Inf inputs
/// (calibration rejects infinite inputs, so the two go together).
void run_case(const Config& cfg, KvLayout layout, int64_t page_size, int64_t head_dim, Variant variant,
              uint64_t seed, int case_index, float forced_scale = 0.0f, bool with_inf = false) {
  std::mt19937_64 rng(seed);
  const int64_t heads = 1 + case_index % 3;
  const int64_t max_tokens = page_size == 64 ? 70 : page_size * 3 + 4;
  const int64_t num_pages = 3 * fmt::ceil_div(max_tokens, page_size) + 2;
  const bool in_f16 = case_index % 2 == 1;
  const DType out_dtype = case_index % 3 == 0 ? DType::kF32 : case_index % 3 == 1 ? DType::kBF16 : DType::kF16;
  SCOPED_TRACE(std::string("format ") + kv_format_name(cfg.format) + " mode " + std::to_string(cfg.mode) + " layout " +
               kv_layout_name(layout) + " page_size " + std::to_string(page_size) + " head_dim " +
               std::to_string(head_dim) + " heads " + std::to_string(heads) + " " + variant_name(variant) +
               " out " + dtype_name(out_dtype) + " seed " + std::to_string(seed));
  const CacheSpec spec = make_cache_spec(cfg.format, layout, num_pages, page_size, heads, head_dim, variant);
  auto host = random_buffers(spec, rng);
  const Batch batch = make_batch(num_pages, page_size, max_tokens, rng);
  const int64_t n = static_cast<int64_t>(batch.slots.size());
  Inputs in = make_inputs(n, heads, head_dim, variant, in_f16, rng);
  float scales[2] = {1.0f, 1.0f};
  if (with_inf) {
    const uint16_t pos_inf = in_f16 ? 0x7C00 : 0x7F80;
    for (std::size_t i = 0; i < in.buf.size(); i += 97) in.buf[i] = static_cast<uint16_t>(pos_inf | ((i / 97) % 2 ? 0x8000 : 0));
  }
  if (forced_scale > 0.0f) {
    scales[0] = scales[1] = forced_scale;
  } else {
    ASSERT_TRUE(calibrate_kv_scale(input_view(in.buf.data(), in, false, n, heads, head_dim, in_f16, Device::kCpu),
                                   cfg.format, cfg.mode != 0, &scales[0]).ok());
    ASSERT_TRUE(calibrate_kv_scale(input_view(in.buf.data(), in, true, n, heads, head_dim, in_f16, Device::kCpu),
                                   cfg.format, cfg.mode != 0, &scales[1]).ok());
  }

  // GPU slots: a few skipped tokens get slots past the cache instead of −1 (must be skipped too).
  std::vector<int64_t> gpu_slots = batch.slots;
  const int64_t capacity = num_pages * page_size;
  for (std::size_t t = 0; t < gpu_slots.size(); ++t) {
    if (gpu_slots[t] < 0 && t % 2 == 0) gpu_slots[t] = t % 4 == 0 ? capacity : (int64_t(1) << 40);
  }
  DeviceSet dev(host);
  DeviceBuffer d_in = test::to_device(in.buf), d_slots = test::to_device(gpu_slots);
  DeviceBuffer d_scales = test::to_device(std::vector<float>{scales[0], scales[1]});
  const float* ds = static_cast<const float*>(d_scales.data());
  const KvCacheView gcache = bind_cache(spec, dev.bases, Device::kCuda, ds, ds + 1);
  uint16_t* gin = static_cast<uint16_t*>(d_in.data());
  Status st = append_kv(gcache, input_view(gin, in, false, n, heads, head_dim, in_f16, Device::kCuda),
                        input_view(gin, in, true, n, heads, head_dim, in_f16, Device::kCuda),
                        make_view(d_slots.data(), DType::kI64, Device::kCuda, {n}), options_of(cfg.mode));
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_TRUE(device_synchronize().ok());

  std::vector<uint8_t*> hb;
  for (auto& b : host) hb.push_back(b.data());
  const KvCacheView hcache = bind_cache(spec, hb, Device::kCpu, &scales[0], &scales[1]);
  std::vector<int64_t> slots = batch.slots;
  st = append_kv(hcache, input_view(in.buf.data(), in, false, n, heads, head_dim, in_f16, Device::kCpu),
                 input_view(in.buf.data(), in, true, n, heads, head_dim, in_f16, Device::kCpu),
                 make_view(slots.data(), DType::kI64, Device::kCpu, {n}), options_of(cfg.mode));
  ASSERT_TRUE(st.ok()) << st.to_string();
  const auto got = dev.download(host);
  const std::string diff = first_diff(got, host);
  ASSERT_TRUE(diff.empty()) << "GPU append differs from the CPU reference: " << diff;

  // Dequantize into outputs with a padded token stride; the padding is a canary.
  std::vector<int32_t> table = block_table(batch), lens = batch.lens;
  const int64_t bsz = static_cast<int64_t>(lens.size());
  int64_t total = 0;
  for (auto l : lens) total += l;
  const int64_t es = static_cast<int64_t>(dtype_size(out_dtype));
  const int64_t row = heads * head_dim + 8;
  std::vector<uint8_t> out_init(static_cast<std::size_t>((total * row + 8) * es));
  for (auto& x : out_init) x = static_cast<uint8_t>(rng());
  auto hk = out_init, hv = out_init;
  DeviceBuffer d_ok = test::to_device(out_init), d_ov = test::to_device(out_init);
  DeviceBuffer d_table = test::to_device(table), d_lens = test::to_device(lens);
  auto out_view = [&](void* p, Device d) {
    return make_strided_view(p, out_dtype, d, {total, heads, head_dim}, {row, head_dim, 1});
  };
  st = dequantize_kv(gcache, make_view(d_table.data(), DType::kI32, Device::kCuda, {bsz, batch.max_pages}),
                     make_view(d_lens.data(), DType::kI32, Device::kCuda, {bsz}), out_view(d_ok.data(), Device::kCuda),
                     out_view(d_ov.data(), Device::kCuda));
  ASSERT_TRUE(st.ok()) << st.to_string();
  st = dequantize_kv(hcache, make_view(table.data(), DType::kI32, Device::kCpu, {bsz, batch.max_pages}),
                     make_view(lens.data(), DType::kI32, Device::kCpu, {bsz}), out_view(hk.data(), Device::kCpu),
                     out_view(hv.data(), Device::kCpu));
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_TRUE(device_synchronize().ok());
  ASSERT_EQ(test::to_host<uint8_t>(d_ok, hk.size()), hk) << "GPU dequantize (K) differs from the CPU reference";
  ASSERT_EQ(test::to_host<uint8_t>(d_ov, hv.size()), hv) << "GPU dequantize (V) differs from the CPU reference";
}

void run_matrix(const Config& cfg, bool small, uint64_t seed) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  int idx = 0;
  for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
    for (int64_t ps : small ? std::vector<int64_t>{3} : std::vector<int64_t>{1, 3, 16, 64}) {
      for (int64_t hd : small ? std::vector<int64_t>{64} : std::vector<int64_t>{64, 128, 256}) {
        for (Variant v : {Variant::kSeparate, Variant::kCombined, Variant::kPadded}) {
          ++idx;
          run_case(cfg, layout, ps, hd, v, seed * 7919u + idx, idx);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(KvGpu, Bf16MatchesReference) { run_matrix({KvFormat::kBF16, 0}, false, 21); }
TEST(KvGpu, F16MatchesReference) { run_matrix({KvFormat::kF16, 0}, false, 22); }
TEST(KvGpu, Fp8MatchesReference) { run_matrix({KvFormat::kFP8E4M3, 0}, false, 23); }
TEST(KvGpu, Nvfp4MatchesReference) { run_matrix({KvFormat::kNvfp4, 0}, false, 24); }
TEST(KvGpu, Nvfp4FourOverSixMseMatchesReference) { run_matrix({KvFormat::kNvfp4, 1}, false, 25); }
TEST(KvGpu, Nvfp4FourOverSixMaeMatchesReference) { run_matrix({KvFormat::kNvfp4, 2}, false, 26); }
TEST(KvGpu, Fp4Block16MatchesReference) { run_matrix({KvFormat::kFp4Block16, 0}, false, 27); }
TEST(KvGpuSmall, Bf16) { run_matrix({KvFormat::kBF16, 0}, true, 31); }
TEST(KvGpuSmall, Fp8) { run_matrix({KvFormat::kFP8E4M3, 0}, true, 32); }
TEST(KvGpuSmall, Nvfp4) { run_matrix({KvFormat::kNvfp4, 0}, true, 33); }
TEST(KvGpuSmall, Nvfp4FourOverSix) { run_matrix({KvFormat::kNvfp4, 1}, true, 34); }
TEST(KvGpuSmall, Fp4Block16) { run_matrix({KvFormat::kFp4Block16, 0}, true, 35); }

// ±Inf inputs with ordinary and extreme decode scales: with S_dec ≥ ~7.6e35 the encode multiplier
// is 0 and ±Inf · 0 = NaN, which must code exactly as the reference does (the fast append path
// sends blocks holding an infinity through the reference rules).
TEST(KvGpuSmall, InfinitiesWithOrdinaryAndExtremeScales) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  int idx = 0;
  for (const Config cfg : {Config{KvFormat::kNvfp4, 0}, Config{KvFormat::kNvfp4, 1}, Config{KvFormat::kFp4Block16, 0},
                           Config{KvFormat::kFP8E4M3, 0}}) {
    for (float scale : {0.05f, 1e36f}) {
      for (int64_t hd : {64, 128}) {
        ++idx;
        run_case(cfg, KvLayout::kNHD, 16, hd, Variant::kSeparate, 4242u + idx, idx, scale, true);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

/// Device-side invalid inputs of dequantize_kv: rows of out-of-range pages, rows past Σ seq_lens
/// and negative lengths become zeros; nothing outside the outputs is written.
TEST(KvGpuSmall, DequantizeInvalidDeviceInputsGiveZeros) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(41);
  const CacheSpec spec = make_cache_spec(KvFormat::kNvfp4, KvLayout::kNHD, 4, 2, 1, 64, Variant::kSeparate);
  auto host = random_buffers(spec, rng);
  DeviceSet dev(host);
  DeviceBuffer d_scales = test::to_device(std::vector<float>{0.01f, 0.02f});
  const float* ds = static_cast<const float*>(d_scales.data());
  const KvCacheView g = bind_cache(spec, dev.bases, Device::kCuda, ds, ds + 1);
  // seq 0: 3 tokens, pages {1, 99 (bad)}; seq 1: length −5 (→ 0); seq 2: 2 tokens, pages {−1, x}.
  std::vector<int32_t> table = {1, 99, 0, 0, -1, 2}, lens = {3, -5, 2};
  const int64_t total = 7;  // 5 real rows + 2 rows past Σ seq_lens
  std::vector<float> out(static_cast<std::size_t>(total * 64 + 16), 7.0f);
  DeviceBuffer d_t = test::to_device(table), d_l = test::to_device(lens);
  DeviceBuffer d_k = test::to_device(out), d_v = test::to_device(out);
  const Status st = dequantize_kv(g, make_view(d_t.data(), DType::kI32, Device::kCuda, {3, 2}),
                                  make_view(d_l.data(), DType::kI32, Device::kCuda, {3}),
                                  make_view(d_k.data(), DType::kF32, Device::kCuda, {total, 1, 64}),
                                  make_view(d_v.data(), DType::kF32, Device::kCuda, {total, 1, 64}));
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_TRUE(device_synchronize().ok());
  const auto k = test::to_host<float>(d_k, out.size());
  // Rows 0, 1 (page 1) come from the cache; row 2 (page 99), rows 3, 4 (page −1) and 5, 6 are 0.
  std::vector<uint8_t*> hb;
  for (auto& b : host) hb.push_back(b.data());
  float hs[2] = {0.01f, 0.02f};
  const KvCacheView h = bind_cache(spec, hb, Device::kCpu, &hs[0], &hs[1]);
  std::vector<int32_t> t1 = {1}, l1 = {2};
  std::vector<float> ref(128), refv(128);
  ASSERT_TRUE(dequantize_kv(h, make_view(t1.data(), DType::kI32, Device::kCpu, {1, 1}),
                            make_view(l1.data(), DType::kI32, Device::kCpu, {1}),
                            make_view(ref.data(), DType::kF32, Device::kCpu, {2, 1, 64}),
                            make_view(refv.data(), DType::kF32, Device::kCpu, {2, 1, 64})).ok());
  for (int i = 0; i < 128; ++i) ASSERT_EQ(fmt::float_bits(k[i]), fmt::float_bits(ref[i])) << "element " << i;
  for (int64_t i = 128; i < total * 64; ++i) ASSERT_EQ(fmt::float_bits(k[i]), 0u) << "element " << i;
  for (std::size_t i = total * 64; i < out.size(); ++i) ASSERT_EQ(k[i], 7.0f) << "canary " << i;
}

/// A CUDA graph captured once and replayed: the slots and the decode scales are device memory
/// read at run time, so changing them between replays changes what the replay writes.
TEST(KvGpuSmall, AppendGraphReplaySeesNewSlotsAndScale) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(51);
  const int64_t pages = 6, ps = 4, heads = 2, hd = 64, n = 5;
  const CacheSpec spec = make_cache_spec(KvFormat::kNvfp4, KvLayout::kHND, pages, ps, heads, hd, Variant::kCombined);
  auto host = random_buffers(spec, rng);
  DeviceSet dev(host);
  Inputs in = make_inputs(n, heads, hd, Variant::kSeparate, false, rng);
  DeviceBuffer d_in = test::to_device(in.buf);
  std::vector<int64_t> slots = {0, 5, 9, -1, 22};
  std::vector<float> sc = {0.004f, 0.003f};
  DeviceBuffer d_slots = test::to_device(slots), d_sc = test::to_device(sc);
  const float* ds = static_cast<const float*>(d_sc.data());
  const KvCacheView g = bind_cache(spec, dev.bases, Device::kCuda, ds, ds + 1);
  uint16_t* gin = static_cast<uint16_t*>(d_in.data());
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status st = append_kv(g, input_view(gin, in, false, n, heads, hd, false, Device::kCuda),
                              input_view(gin, in, true, n, heads, hd, false, Device::kCuda),
                              make_view(d_slots.data(), DType::kI64, Device::kCuda, {n}), AppendOptions(), stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  // Nothing ran during capture.
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_TRUE(first_diff(dev.download(host), host).empty()) << "capture must not execute the append";

  std::vector<uint8_t*> hb;
  for (auto& b : host) hb.push_back(b.data());
  for (int replay = 0; replay < 3; ++replay) {
    if (replay > 0) {
      slots = {int64_t(3 + replay), -1, int64_t(12 + replay), int64_t(20 - replay), int64_t(1 + 8 * replay)};
      sc = {0.004f * (replay + 1), 0.0031f / replay};
      ASSERT_TRUE(copy_to_device(d_slots.data(), slots.data(), slots.size() * 8).ok());
      ASSERT_TRUE(copy_to_device(d_sc.data(), sc.data(), sc.size() * 4).ok());
    }
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const KvCacheView h = bind_cache(spec, hb, Device::kCpu, &sc[0], &sc[1]);
    ASSERT_TRUE(append_kv(h, input_view(in.buf.data(), in, false, n, heads, hd, false, Device::kCpu),
                          input_view(in.buf.data(), in, true, n, heads, hd, false, Device::kCpu),
                          make_view(slots.data(), DType::kI64, Device::kCpu, {n})).ok());
    const std::string diff = first_diff(dev.download(host), host);
    ASSERT_TRUE(diff.empty()) << "replay " << replay << ": " << diff;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

/// calibrate_kv_scale on a device tensor equals the host computation.
TEST(KvGpuSmall, CalibrateOnDeviceMatchesHost) {
  NVFP4KV_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(61);
  Inputs in = make_inputs(37, 3, 128, Variant::kPadded, true, rng);
  DeviceBuffer d = test::to_device(in.buf);
  for (KvFormat f : {KvFormat::kFP8E4M3, KvFormat::kNvfp4}) {
    for (bool fos : {false, true}) {
      if (fos && f != KvFormat::kNvfp4) continue;
      float hs = 0, gs = 0;
      ASSERT_TRUE(calibrate_kv_scale(input_view(in.buf.data(), in, true, 37, 3, 128, true, Device::kCpu), f, fos, &hs).ok());
      ASSERT_TRUE(calibrate_kv_scale(input_view(static_cast<uint16_t*>(d.data()), in, true, 37, 3, 128, true,
                                                Device::kCuda), f, fos, &gs).ok());
      EXPECT_EQ(fmt::float_bits(hs), fmt::float_bits(gs));
      EXPECT_GT(hs, 0.0f);
    }
  }
}

}  // namespace
}  // namespace nvfp4kv::kvtest
