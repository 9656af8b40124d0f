// nvfp4kv CLI — the decode section of `nvfp4kv demo` (declared in demo.h): one realistic decode
// step (batch 16, kv_len 8192, 32 query / 8 kv heads, head_dim 128, K with outlier channels)
// over a paged cache in bf16, fp8_e4m3, nvfp4 and nvfp4_4over6, built with append_kv on the
// GPU: bytes per token, µs, TB/s, % of the copy bandwidth, and the error against fp64
// attention on the original bf16 K/V. Without a GPU the same runs on the CPU reference at a
// small size, and says so.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cli.h"
#include "common/format.h"
#include "demo.h"
#include "nvfp4kv/attention.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/kv_cache.h"

namespace nvfp4kv::cli {
namespace {

struct Sizes {
  int64_t batch, kv_len, hq, hk, d, page;
};

// splitmix64-based normals: fast enough for 10^8 values, the same on every platform.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float normal() {  // Irwin–Hall with 4 uniforms, scaled to unit variance
    const uint64_t r = next();
    const float sum = float(r & 0xFFFF) + float((r >> 16) & 0xFFFF) + float((r >> 32) & 0xFFFF) + float(r >> 48);
    return (sum / 65536.f - 2.f) * 1.7320508f;
  }
};

struct Variant {
  const char* name;
  KvFormat format;
  bool four_over_six;
};

// fp64 attention for request b (qo_len 1) on the original bf16 K/V.
void reference_rows(const Sizes& s, int64_t b, const std::vector<uint16_t>& q, const std::vector<uint16_t>& k,
                    const std::vector<uint16_t>& v, std::vector<double>* out) {
  const int64_t g = s.hq / s.hk;
  const double sm = 1.0 / std::sqrt(double(s.d));
  std::vector<double> w(s.kv_len);
  for (int64_t h = 0; h < s.hq; ++h) {
    const int64_t kh = h / g;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < s.kv_len; ++j) {
      double dot = 0;
      const uint16_t* kr = &k[((b * s.kv_len + j) * s.hk + kh) * s.d];
      const uint16_t* qr = &q[(b * s.hq + h) * s.d];
      for (int64_t e = 0; e < s.d; ++e) dot += double(fmt::bf16_bits_to_float(qr[e])) * fmt::bf16_bits_to_float(kr[e]);
      w[j] = sm * dot;
      mx = std::max(mx, w[j]);
    }
    double sum = 0;
    for (auto& x : w) sum += (x = std::exp(x - mx));
    for (int64_t e = 0; e < s.d; ++e) {
      double acc = 0;
      for (int64_t j = 0; j < s.kv_len; ++j) acc += w[j] * fmt::bf16_bits_to_float(v[((b * s.kv_len + j) * s.hk + kh) * s.d + e]);
      out->push_back(acc / sum);
    }
  }
}

}  // namespace

int demo_decode(const DemoOptions& options, std::FILE* out, nlohmann::json* json) {
  const bool gpu = cuda_device_count() > 0;
  const Sizes s = gpu ? Sizes{16, 8192, 32, 8, 128, 16} : Sizes{2, 512, 8, 2, 128, 16};
  const Device dev = gpu ? Device::kCuda : Device::kCpu;
  std::fprintf(out, "== decode attention: batch %lld x kv_len %lld, %lld/%lld heads, head_dim %lld, page %lld (shuffled)\n",
               (long long)s.batch, (long long)s.kv_len, (long long)s.hq, (long long)s.hk, (long long)s.d, (long long)s.page);
  if (gpu) {
    std::fprintf(out, "   on %s\n", cuda_device_description().c_str());
  } else {
    std::fprintf(out, "   no GPU visible: CPU fp64 reference at a small size (no timings)\n");
  }
  const int64_t ntok = s.batch * s.kv_len, n = ntok * s.hk * s.d;
  Rng rng{options.seed * 7919 + 1};
  std::vector<uint16_t> k(n), v(n), q(s.batch * s.hq * s.d);
  std::vector<float> outlier(s.d, 1.f);
  for (int i = 0; i < 4; ++i) outlier[(rng.next() % s.d)] = 20.f;  // K outlier channels (as in real K caches)
  for (int64_t i = 0; i < n; ++i) {
    k[i] = fmt::float_to_bf16_bits(rng.normal() * outlier[i % s.d] + 0.5f);
    v[i] = fmt::float_to_bf16_bits(rng.normal());
  }
  for (auto& x : q) x = fmt::float_to_bf16_bits(rng.normal());
  // Pages in shuffled order.
  const int64_t pages_per_seq = (s.kv_len + s.page - 1) / s.page, num_pages = s.batch * pages_per_seq;
  std::vector<int32_t> perm(num_pages), tables(num_pages), lens(s.batch, static_cast<int32_t>(s.kv_len));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(static_cast<unsigned>(options.seed)));
  std::vector<int64_t> slots(ntok);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t p = 0; p < pages_per_seq; ++p) tables[b * pages_per_seq + p] = perm[b * pages_per_seq + p];
  for (int64_t t = 0; t < ntok; ++t) {
    const int64_t b = t / s.kv_len, j = t % s.kv_len;
    slots[t] = int64_t(tables[b * pages_per_seq + j / s.page]) * s.page + j % s.page;
  }
  // fp64 reference on the original K/V for the first two requests.
  const int64_t check_b = std::min<int64_t>(2, s.batch);
  std::vector<double> want;
  for (int64_t b = 0; b < check_b; ++b) reference_rows(s, b, q, k, v, &want);

  double copy_tbps = 0;
  Status st;
  DeviceBuffer dk, dv, dq, dbt, dsl, dslot, dout;
  if (gpu) {
    st = measure_copy_tbps(size_t(1) << 30, &copy_tbps);
    auto up = [&](DeviceBuffer& buf, const void* src, size_t bytes) {
      Status r = buf.allocate(bytes);
      return r.ok() ? copy_to_device(buf.data(), src, bytes) : r;
    };
    if (st.ok()) st = up(dk, k.data(), n * 2);
    if (st.ok()) st = up(dv, v.data(), n * 2);
    if (st.ok()) st = up(dq, q.data(), q.size() * 2);
    if (st.ok()) st = up(dbt, tables.data(), tables.size() * 4);
    if (st.ok()) st = up(dsl, lens.data(), lens.size() * 4);
    if (st.ok()) st = up(dslot, slots.data(), slots.size() * 8);
    if (st.ok()) st = dout.allocate(q.size() * 2);
    if (!st.ok()) {
      std::fprintf(stderr, "nvfp4kv demo: %s\n", st.to_string().c_str());
      return kExitError;
    }
    std::fprintf(out, "   device-to-device copy: %.2f TB/s (read + write)\n", copy_tbps);
  }
  void* kbase = gpu ? dk.data() : k.data();
  void* vbase = gpu ? dv.data() : v.data();
  TensorView keys = make_view(kbase, DType::kBF16, dev, {ntok, s.hk, s.d});
  TensorView values = make_view(vbase, DType::kBF16, dev, {ntok, s.hk, s.d});

  const Variant variants[] = {{"bf16", KvFormat::kBF16, false},
                              {"fp8_e4m3", KvFormat::kFP8E4M3, false},
                              {"nvfp4", KvFormat::kNvfp4, false},
                              {"nvfp4_4over6", KvFormat::kNvfp4, true}};
  std::fprintf(out, "\n%-13s %10s %9s %7s %7s %12s\n", "kv format", "B/token", "us", "TB/s", "%copy", "rel.err");
  nlohmann::json rows = nlohmann::json::array();
  double us_fp8 = 0, us_bf16 = 0;
  int rc = kExitOk;
  for (const Variant& var : variants) {
    const bool fp4 = kv_format_is_fp4(var.format);
    const int64_t x = fp4 ? s.d / 2 : s.d;
    const size_t es = var.format == KvFormat::kBF16 ? 2 : 1;
    const DType ddt = var.format == KvFormat::kBF16 ? DType::kBF16 : (var.format == KvFormat::kFP8E4M3 ? DType::kFP8E4M3 : DType::kU8);
    const size_t data_bytes = size_t(num_pages * s.page * s.hk * x) * es, sf_bytes = fp4 ? size_t(num_pages * s.page * s.hk * s.d / 16) : 0;
    float scales[2] = {1.f, 1.f};
    st = calibrate_kv_scale(keys, var.format, var.four_over_six, &scales[0]);
    if (st.ok()) st = calibrate_kv_scale(values, var.format, var.four_over_six, &scales[1]);
    std::vector<uint8_t> hkd, hvd, hks, hvs;
    DeviceBuffer kd, vd, ks, vs, sc, ws;
    void *kdp, *vdp, *ksp = nullptr, *vsp = nullptr;
    const float *kscale, *vscale;
    if (gpu) {
      if (st.ok()) st = kd.allocate(data_bytes);
      if (st.ok()) st = vd.allocate(data_bytes);
      if (st.ok() && fp4) st = ks.allocate(sf_bytes);
      if (st.ok() && fp4) st = vs.allocate(sf_bytes);
      if (st.ok()) st = sc.allocate(8);
      if (st.ok()) st = copy_to_device(sc.data(), scales, 8);
      kdp = kd.data(), vdp = vd.data(), ksp = ks.data(), vsp = vs.data();
      kscale = static_cast<const float*>(sc.data());
      vscale = kscale + 1;
    } else {
      hkd.resize(data_bytes), hvd.resize(data_bytes), hks.resize(sf_bytes), hvs.resize(sf_bytes);
      kdp = hkd.data(), vdp = hvd.data(), ksp = hks.data(), vsp = hvs.data();
      kscale = &scales[0];
      vscale = &scales[1];
    }
    KvCacheView c;
    c.format = var.format;
    c.layout = KvLayout::kNHD;
    c.num_pages = num_pages;
    c.page_size = s.page;
    c.num_kv_heads = s.hk;
    c.head_dim = s.d;
    c.k_data = make_view(kdp, ddt, dev, {num_pages, s.page, s.hk, x});
    c.v_data = make_view(vdp, ddt, dev, {num_pages, s.page, s.hk, x});
    if (fp4) {
      c.k_scales = make_view(ksp, DType::kU8, dev, {num_pages, s.page, s.hk, s.d / 16});
      c.v_scales = make_view(vsp, DType::kU8, dev, {num_pages, s.page, s.hk, s.d / 16});
    }
    c.k_scale = kscale;
    c.v_scale = vscale;
    AppendOptions ao;
    ao.four_over_six = var.four_over_six;
    TensorView slot_view = make_view(gpu ? dslot.data() : slots.data(), DType::kI64, dev, {ntok});
    if (st.ok()) st = append_kv(c, keys, values, slot_view, ao);
    TensorView qv = make_view(gpu ? dq.data() : q.data(), DType::kBF16, dev, {s.batch, 1, s.hq, s.d});
    std::vector<uint16_t> hout(q.size());
    TensorView ov = make_view(gpu ? dout.data() : hout.data(), DType::kBF16, dev, {s.batch, 1, s.hq, s.d});
    TensorView bt = make_view(gpu ? dbt.data() : tables.data(), DType::kI32, dev, {s.batch, pages_per_seq});
    TensorView sl = make_view(gpu ? dsl.data() : lens.data(), DType::kI32, dev, {s.batch});
    DecodeOptions o;
    const size_t ws_bytes = gpu ? decode_workspace_bytes(s.batch, 1, s.hq, s.hk, s.d, pages_per_seq, s.page, o) : 0;
    if (st.ok() && ws_bytes) st = ws.allocate(ws_bytes);
    if (st.ok()) st = decode_attention(qv, c, bt, sl, ov, TensorView(), o, ws.data(), ws_bytes, nullptr);
    if (st.ok() && gpu) st = device_synchronize();
    if (st.ok() && gpu) st = copy_to_host(hout.data(), dout.data(), hout.size() * 2);
    float us = 0;
    if (st.ok() && gpu) st = time_decode_attention(qv, c, bt, sl, ov, TensorView(), o, ws.data(), ws_bytes, nullptr, 30, &us);
    if (!st.ok()) {
      std::fprintf(stderr, "nvfp4kv demo: %s: %s\n", var.name, st.to_string().c_str());
      return kExitError;
    }
    double num = 0, den = 0;
    bool finite = true;
    for (size_t i = 0; i < want.size(); ++i) {
      const double g = fmt::bf16_bits_to_float(hout[i]);
      finite = finite && std::isfinite(g);
      num += (g - want[i]) * (g - want[i]);
      den += want[i] * want[i];
    }
    if (!finite) rc = kExitMismatch;
    const double rel = std::sqrt(num / den);
    const int64_t bpt = kv_bytes_per_token(var.format, s.hk, s.d);
    const double bytes = double(bpt) * ntok + 2.0 * q.size() * 2 + tables.size() * 4.0;
    const double tbps = gpu ? bytes / (us * 1e-6) / 1e12 : 0;
    if (var.format == KvFormat::kFP8E4M3) us_fp8 = us;
    if (var.format == KvFormat::kBF16) us_bf16 = us;
    if (gpu) {
      std::fprintf(out, "%-13s %10lld %9.1f %7.2f %6.0f%% %12.2e\n", var.name, (long long)bpt, us, tbps,
                   100 * tbps / copy_tbps, rel);
    } else {
      std::fprintf(out, "%-13s %10lld %9s %7s %7s %12.2e\n", var.name, (long long)bpt, "-", "-", "-", rel);
    }
    rows.push_back({{"format", var.name}, {"bytes_per_token_per_layer", bpt}, {"us", us}, {"tbps", tbps},
                    {"pct_copy", gpu ? tbps / copy_tbps : 0.0}, {"rel_err_vs_fp64", rel}});
    if (gpu && var.format == KvFormat::kNvfp4 && !var.four_over_six && us_fp8 > 0)
      std::fprintf(out, "%-13s speedup vs fp8 %.2fx, vs bf16 %.2fx\n", "", us_fp8 / us, us_bf16 / us);
  }
  std::fprintf(out, "(rel.err: relative L2 error of the output vs fp64 attention on the original bf16 K/V,\n"
                    " first %lld requests; B/token: K+V bytes per token per layer incl. FP4 scales;\n"
                    " us: device time per call from CUDA-graph replays, L2 flushed before each call)\n\n",
               (long long)check_b);
  (*json)["decode"] = {{"device", gpu ? cuda_device_description() : std::string("cpu reference")},
                       {"batch", s.batch}, {"kv_len", s.kv_len}, {"num_qo_heads", s.hq}, {"num_kv_heads", s.hk},
                       {"head_dim", s.d}, {"copy_tbps", copy_tbps}, {"rows", rows}};
  return rc;
}

}  // namespace nvfp4kv::cli
