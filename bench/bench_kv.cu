// nvfp4kv benchmark — paged KV cache: append_kv throughput per format against a bf16 append of
// the same tokens in the same run, and dequantize_kv bandwidth against a device copy.
//
// Shapes (issue 4): 8 KV heads, head_dim 128, page_size 16, NHD, bf16 inputs, slots on shuffled
// pages; 1, 64, 4096, 65536 tokens. Bytes counted: keys + values read once, slots read, cache
// data + scales written once (append); cache read + block tables + output written (dequantize).
// Each format's output is compared bitwise with the CPU reference once before timing.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/format.h"
#include "harness.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::bench {
namespace {

constexpr int64_t kHeads = 8, kHeadDim = 128, kPageSize = 16;

struct Fmt {
  const char* name;
  KvFormat format;
  bool four_over_six;
};
const Fmt kFormats[] = {{"bf16", KvFormat::kBF16, false},
                        {"fp8_e4m3", KvFormat::kFP8E4M3, false},
                        {"nvfp4", KvFormat::kNvfp4, false},
                        {"nvfp4_4over6", KvFormat::kNvfp4, true},
                        {"fp4_block16", KvFormat::kFp4Block16, false}};

/// A dense NHD cache of `pages` pages in device (or host) memory.
struct Cache {
  std::vector<uint8_t> host;  // host mirror (for the reference check)
  DeviceBuffer dev;
  int64_t data_bytes = 0, scale_bytes = 0;
  KvFormat format;
  int64_t pages;

  Cache(KvFormat f, int64_t num_pages) : format(f), pages(num_pages) {
    const bool fp4 = kv_format_is_fp4(f);
    const int64_t es = (f == KvFormat::kBF16 || f == KvFormat::kF16) ? 2 : 1;
    data_bytes = pages * kPageSize * kHeads * (fp4 ? kHeadDim / 2 : kHeadDim) * es;
    scale_bytes = fp4 ? pages * kPageSize * kHeads * (kHeadDim / 16) : 0;
    BENCH_CHECK(dev.allocate(static_cast<std::size_t>(2 * data_bytes + 2 * scale_bytes + 256)).ok(), "cache alloc");
    BENCH_CUDA(cudaMemset(dev.data(), 0, dev.size()));
  }
  KvCacheView view(uint8_t* base, Device d, const float* ks, const float* vs) const {
    const bool fp4 = kv_format_is_fp4(format);
    const DType dt = format == KvFormat::kBF16 ? DType::kBF16 : format == KvFormat::kFP8E4M3 ? DType::kFP8E4M3 : DType::kU8;
    const int64_t x = fp4 ? kHeadDim / 2 : kHeadDim;
    KvCacheView c;
    c.format = format;
    c.layout = KvLayout::kNHD;
    c.num_pages = pages;
    c.page_size = kPageSize;
    c.num_kv_heads = kHeads;
    c.head_dim = kHeadDim;
    c.k_data = make_view(base, dt, d, {pages, kPageSize, kHeads, x});
    c.v_data = make_view(base + data_bytes, dt, d, {pages, kPageSize, kHeads, x});
    if (fp4) {
      c.k_scales = make_view(base + 2 * data_bytes, DType::kU8, d, {pages, kPageSize, kHeads, kHeadDim / 16});
      c.v_scales = make_view(base + 2 * data_bytes + scale_bytes, DType::kU8, d, {pages, kPageSize, kHeads, kHeadDim / 16});
    }
    c.k_scale = ks;
    c.v_scale = vs;
    return c;
  }
};

std::vector<uint16_t> random_bf16(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = fmt::float_to_bf16_bits(nd(rng) * ((i % kHeadDim) % 37 == 5 ? 20.0f : 1.0f));
  return v;
}

/// Slots of `n` tokens on shuffled pages of a cache with `pages` pages.
std::vector<int64_t> shuffled_slots(int64_t n, int64_t pages, std::mt19937_64& rng) {
  std::vector<int64_t> perm(static_cast<std::size_t>(pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int64_t> s(static_cast<std::size_t>(n));
  for (int64_t t = 0; t < n; ++t) s[t] = perm[t / kPageSize] * kPageSize + t % kPageSize;
  return s;
}

void bench_append(Context& ctx) {
  std::mt19937_64 rng(2026);
  std::vector<int64_t> sizes = {1, 64, 4096, 65536};
  if (ctx.quick) sizes = {64, 4096};
  const int64_t max_n = sizes.back();
  const auto host_in = random_bf16(2 * max_n * kHeads * kHeadDim, rng);
  DeviceBuffer d_in;
  BENCH_CHECK(d_in.allocate(host_in.size() * 2).ok(), "alloc");
  BENCH_CHECK(copy_to_device(d_in.data(), host_in.data(), host_in.size() * 2).ok(), "copy");
  std::vector<std::vector<std::string>> table;
  for (int64_t n : sizes) {
    const int64_t pages = (n + kPageSize - 1) / kPageSize + 8;
    const auto slots = shuffled_slots(n, pages, rng);
    DeviceBuffer d_slots;
    BENCH_CHECK(d_slots.allocate(slots.size() * 8).ok(), "alloc");
    BENCH_CHECK(copy_to_device(d_slots.data(), slots.data(), slots.size() * 8).ok(), "copy");
    uint16_t* kin = static_cast<uint16_t*>(d_in.data());
    const TensorView keys = make_view(kin, DType::kBF16, Device::kCuda, {n, kHeads, kHeadDim});
    const TensorView values = make_view(kin + max_n * kHeads * kHeadDim, DType::kBF16, Device::kCuda, {n, kHeads, kHeadDim});
    const TensorView hkeys = make_view(const_cast<uint16_t*>(host_in.data()), DType::kBF16, Device::kCpu, {n, kHeads, kHeadDim});
    const TensorView hvalues = make_view(const_cast<uint16_t*>(host_in.data()) + max_n * kHeads * kHeadDim, DType::kBF16,
                                         Device::kCpu, {n, kHeads, kHeadDim});
    const TensorView sv = make_view(d_slots.data(), DType::kI64, Device::kCuda, {n});
    double bf16_us = 0;
    for (const Fmt& f : kFormats) {
      Cache cache(f.format, pages);
      float sc[2] = {1.0f, 1.0f};
      BENCH_CHECK(calibrate_kv_scale(hkeys, f.format, f.four_over_six, &sc[0]).ok(), "calibrate");
      BENCH_CHECK(calibrate_kv_scale(hvalues, f.format, f.four_over_six, &sc[1]).ok(), "calibrate");
      DeviceBuffer d_sc;
      BENCH_CHECK(d_sc.allocate(8).ok() && copy_to_device(d_sc.data(), sc, 8).ok(), "scales");
      const float* ds = static_cast<const float*>(d_sc.data());
      const KvCacheView c = cache.view(static_cast<uint8_t*>(cache.dev.data()), Device::kCuda, ds, ds + 1);
      AppendOptions o;
      o.four_over_six = f.four_over_six;
      if (n == 4096 || (ctx.quick && n == 64)) {
        // Reference check: the whole cache (written slots and untouched pages) bitwise.
        Status st = append_kv(c, keys, values, sv, o);
        BENCH_CHECK(st.ok(), st.to_string());
        BENCH_CUDA(cudaDeviceSynchronize());
        std::vector<uint8_t> got(cache.dev.size()), want(cache.dev.size(), 0);
        BENCH_CHECK(copy_to_host(got.data(), cache.dev.data(), got.size()).ok(), "copy");
        std::vector<int64_t> hslots = slots;
        const KvCacheView hc = cache.view(want.data(), Device::kCpu, &sc[0], &sc[1]);
        const Status hst = append_kv(hc, hkeys, hvalues, make_view(hslots.data(), DType::kI64, Device::kCpu, {n}), o);
        BENCH_CHECK(hst.ok(), hst.to_string());
        BENCH_CHECK(got == want, std::string("GPU append differs from the CPU reference for ") + f.name);
      }
      const double us = ctx.time_us([&](int) {
        const Status st = append_kv(c, keys, values, sv, o);
        BENCH_CHECK(st.ok(), st.to_string());
      }, /*flush_l2=*/true);
      if (f.format == KvFormat::kBF16) bf16_us = us;
      const double bytes = 2.0 * n * kHeads * kHeadDim * 2 + 8.0 * n +
                           static_cast<double>(n) * kv_bytes_per_token(f.format, kHeads, kHeadDim);
      const double tbps = bytes / (us * 1e-6) / 1e12;
      table.push_back({std::to_string(n), f.name, fmt("%.2f", us), fmt("%.3g", n / (us * 1e-6)), fmt("%.3f", tbps),
                       fmt("%.0f%%", 100.0 * tbps / ctx.copy_tbps), fmt("%.2f", us / bf16_us)});
      ctx.add_row({{"bench", "kv_append"}, {"tokens", n}, {"format", f.name}, {"us", us}, {"tokens_per_s", n / (us * 1e-6)},
                   {"tbps", tbps}, {"copy_fraction", tbps / ctx.copy_tbps}, {"time_vs_bf16", us / bf16_us}});
    }
  }
  print_table("append_kv: 8 KV heads, head_dim 128, page 16, NHD, bf16 in, shuffled pages (L2 flushed)",
              {"tokens", "format", "us", "tokens/s", "TB/s", "of copy", "time/bf16"}, table);
}

void bench_dequantize(Context& ctx) {
  std::mt19937_64 rng(7);
  const int64_t batch = 16, seq = ctx.quick ? 512 : 2048, total = batch * seq;  // bf16 out: 128 MiB at full size
  const int64_t pages = total / kPageSize + 16;
  const auto host_in = random_bf16(2 * total * kHeads * kHeadDim, rng);
  DeviceBuffer d_in, d_out;
  BENCH_CHECK(d_in.allocate(host_in.size() * 2).ok(), "alloc");
  BENCH_CHECK(copy_to_device(d_in.data(), host_in.data(), host_in.size() * 2).ok(), "copy");
  const int64_t out_elems = total * kHeads * kHeadDim;
  BENCH_CHECK(d_out.allocate(static_cast<std::size_t>(2 * out_elems * 2)).ok(), "alloc");
  // Sequences on shuffled pages: slots and block tables from one permutation.
  std::vector<int32_t> perm(static_cast<std::size_t>(pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const int64_t pps = seq / kPageSize;
  std::vector<int32_t> tables(batch * pps), lens(batch, static_cast<int32_t>(seq));
  std::vector<int64_t> slots(total);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < pps; ++j) tables[b * pps + j] = perm[b * pps + j];
  for (int64_t t = 0; t < total; ++t) {
    const int64_t b = t / seq, p = t % seq;
    slots[t] = int64_t(tables[b * pps + p / kPageSize]) * kPageSize + p % kPageSize;
  }
  DeviceBuffer d_slots, d_tables, d_lens;
  BENCH_CHECK(d_slots.allocate(slots.size() * 8).ok() && copy_to_device(d_slots.data(), slots.data(), slots.size() * 8).ok(), "s");
  BENCH_CHECK(d_tables.allocate(tables.size() * 4).ok() && copy_to_device(d_tables.data(), tables.data(), tables.size() * 4).ok(), "t");
  BENCH_CHECK(d_lens.allocate(lens.size() * 4).ok() && copy_to_device(d_lens.data(), lens.data(), lens.size() * 4).ok(), "l");
  uint16_t* kin = static_cast<uint16_t*>(d_in.data());
  uint16_t* out = static_cast<uint16_t*>(d_out.data());
  std::vector<std::vector<std::string>> table;
  for (const Fmt& f : kFormats) {
    if (f.four_over_six) continue;  // same storage and decode as nvfp4
    Cache cache(f.format, pages);
    float sc[2] = {0.01f, 0.012f};
    DeviceBuffer d_sc;
    BENCH_CHECK(d_sc.allocate(8).ok() && copy_to_device(d_sc.data(), sc, 8).ok(), "scales");
    const float* ds = static_cast<const float*>(d_sc.data());
    const KvCacheView c = cache.view(static_cast<uint8_t*>(cache.dev.data()), Device::kCuda, ds, ds + 1);
    Status st = append_kv(c, make_view(kin, DType::kBF16, Device::kCuda, {total, kHeads, kHeadDim}),
                          make_view(kin + out_elems, DType::kBF16, Device::kCuda, {total, kHeads, kHeadDim}),
                          make_view(d_slots.data(), DType::kI64, Device::kCuda, {total}));
    BENCH_CHECK(st.ok(), st.to_string());
    auto run = [&](int64_t nb) {
      const int64_t rows = nb * seq;
      return dequantize_kv(c, make_view(d_tables.data(), DType::kI32, Device::kCuda, {nb, pps}),
                           make_view(d_lens.data(), DType::kI32, Device::kCuda, {nb}),
                           make_view(out, DType::kBF16, Device::kCuda, {rows, kHeads, kHeadDim}),
                           make_view(out + out_elems, DType::kBF16, Device::kCuda, {rows, kHeads, kHeadDim}));
    };
    {
      // Reference check on the first sequence: cache bytes copied back, CPU dequantize, compare.
      BENCH_CHECK(run(1).ok(), "dequantize");
      BENCH_CUDA(cudaDeviceSynchronize());
      std::vector<uint8_t> hcache(cache.dev.size());
      BENCH_CHECK(copy_to_host(hcache.data(), cache.dev.data(), hcache.size()).ok(), "copy");
      const KvCacheView hc = cache.view(hcache.data(), Device::kCpu, &sc[0], &sc[1]);
      const int64_t n1 = seq * kHeads * kHeadDim;
      std::vector<uint16_t> wk(n1), wv(n1), gk(n1), gv(n1);
      std::vector<int32_t> t1(tables.begin(), tables.begin() + pps), l1 = {static_cast<int32_t>(seq)};
      const Status hst = dequantize_kv(hc, make_view(t1.data(), DType::kI32, Device::kCpu, {1, pps}),
                         make_view(l1.data(), DType::kI32, Device::kCpu, {1}),
                         make_view(wk.data(), DType::kBF16, Device::kCpu, {seq, kHeads, kHeadDim}),
                         make_view(wv.data(), DType::kBF16, Device::kCpu, {seq, kHeads, kHeadDim}));
      BENCH_CHECK(hst.ok(), hst.to_string());
      BENCH_CHECK(copy_to_host(gk.data(), out, n1 * 2).ok() && copy_to_host(gv.data(), out + out_elems, n1 * 2).ok(), "copy");
      BENCH_CHECK(gk == wk && gv == wv, std::string("GPU dequantize differs from the CPU reference for ") + f.name);
    }
    const double us = ctx.time_us([&](int) { BENCH_CHECK(run(batch).ok(), "dequantize"); }, true);
    const double out_bytes = 2.0 * out_elems * 2;
    const double bytes = static_cast<double>(total) * kv_bytes_per_token(f.format, kHeads, kHeadDim) + 4.0 * tables.size() + out_bytes;
    const double tbps = bytes / (us * 1e-6) / 1e12;
    table.push_back({f.name, fmt("%.0f", out_bytes / (1 << 20)), fmt("%.1f", us), fmt("%.3f", tbps),
                     fmt("%.0f%%", 100.0 * tbps / ctx.copy_tbps)});
    ctx.add_row({{"bench", "kv_dequantize"}, {"format", f.name}, {"tokens", total}, {"out_mib", out_bytes / (1 << 20)},
                 {"us", us}, {"tbps", tbps}, {"copy_fraction", tbps / ctx.copy_tbps}});
  }
  print_table(fmt("dequantize_kv -> bf16: batch %lld x %lld tokens, 8 KV heads, head_dim 128, page 16 (copy %.3f TB/s)",
                  static_cast<long long>(batch), static_cast<long long>(seq), ctx.copy_tbps),
              {"format", "out MiB", "us", "TB/s", "of copy"}, table);
}

}  // namespace
}  // namespace nvfp4kv::bench

NVFP4KV_BENCHMARK("kv_append", "append_kv per format vs a bf16 append (1..65536 tokens)", nvfp4kv::bench::bench_append);
NVFP4KV_BENCHMARK("kv_dequantize", "dequantize_kv to bf16 vs device copy bandwidth", nvfp4kv::bench::bench_dequantize);
