// nvfp4kv CLI — `nvfp4kv decode`: builds a paged KV cache (pages in shuffled order) from dense
// K/V dumped by a model, runs decode attention on the CPU reference or the GPU kernel, writes
// `out` and `lse`, and with --compare prints the error against fp64 attention over the original
// K/V and over the dequantized cache (how a user judges a KV format on their own data).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cli.h"
#include "cli_util.h"
#include "common/format.h"
#include "nvfp4kv/attention.h"
#include "nvfp4kv/device.h"
#include "nvfp4kv/kv_cache.h"
#include "nvfp4kv/safetensors.h"

namespace nvfp4kv::cli {
namespace {

constexpr const char* kCmd = "decode";

constexpr const char* kHelp =
    "usage: nvfp4kv decode --q Q.safetensors --k K.safetensors --v V.safetensors\n"
    "                      --kv-format F --out O.safetensors [options]\n"
    "\n"
    "Q is [batch, qo_len, num_qo_heads, head_dim] (bf16/f16/f32; f32 is rounded to bf16), K and V\n"
    "are [batch, kv_len, num_kv_heads, head_dim] (the first tensor of each file, or the one named\n"
    "q/k/v). The qo_len query tokens are the last qo_len positions of each request (causal among\n"
    "them). The cache is built with append_kv in pages handed out in shuffled order, decode\n"
    "attention runs, and O.safetensors receives `out` (Q's dtype) and `lse` (f32, natural log).\n"
    "\n"
    "options:\n"
    "  --kv-format F      bf16 | f16 | fp8_e4m3 | nvfp4 | nvfp4_4over6 | fp4_block16\n"
    "  --seq-lens S       safetensors with an i32/i64 [batch] tensor of kv lengths (<= kv_len)\n"
    "  --page-size P      tokens per page (default 16)\n"
    "  --layout L         NHD (default) or HND\n"
    "  --device D         cpu (default) or cuda\n"
    "  --k-scale X        decode scale of K (default: calibrated, amax/2688, /1536 for 4over6,\n"
    "  --v-scale Y        /448 for fp8)\n"
    "  --sm-scale S       softmax scale (default 1/sqrt(head_dim))\n"
    "  --soft-cap C       logits soft cap (default off)\n"
    "  --window W         sliding window (keys p-W..p; default off)\n"
    "  --compare          print rel. L2 error vs fp64 attention on the original K/V and on the\n"
    "                     dequantized cache; exit 1 if the latter exceeds 4e-3 (bf16) / 1e-3 (f16)\n"
    "  -h, --help         this text\n"
    "\n"
    "exit codes: 0 ok, 1 --compare tolerance exceeded, 2 usage, 3 library or file error\n";

Status load_single(const std::string& path, const char* preferred, SafetensorsFile* file, SafetensorsTensor** t) {
  NVFP4KV_CLI_RETURN_IF_ERROR(read_safetensors(path, file));
  if (file->tensors.empty()) return Status(StatusCode::kIoError, path + ": no tensor");
  *t = file->find(preferred);
  if (*t == nullptr) *t = &file->tensors.front();
  return Status();
}

// Dense [batch, len, heads, dim] tensor → float values.
std::vector<float> to_floats(const SafetensorsTensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = element_as_float(t, i);
  return v;
}

uint16_t to_bits(DType t, float x) {
  return t == DType::kBF16 ? fmt::float_to_bf16_bits(x) : fmt::float_to_f16_bits(x);
}
double from_bits(DType t, uint16_t b) {
  return t == DType::kBF16 ? fmt::bf16_bits_to_float(b) : fmt::f16_bits_to_float(b);
}

// fp64 attention over dense K/V rows: k(b, j, h, d) given by a callback.
template <class KFn, class VFn>
std::vector<double> dense_attention(const std::vector<double>& q, int64_t batch, int64_t qo_len, int64_t hq,
                                    int64_t hk, int64_t d, const std::vector<int32_t>& lens, double sm, double cap,
                                    int window, KFn kf, VFn vf) {
  std::vector<double> out(batch * qo_len * hq * d, 0.0);
  const int64_t g = hq / hk;
  std::vector<double> w;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < qo_len; ++t)
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t pos = lens[b] - qo_len + t;
        const int64_t first = window >= 0 ? std::max<int64_t>(0, pos - window) : 0;
        const int64_t row = (b * qo_len + t) * hq + h;
        w.clear();
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = first; j <= pos; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += q[row * d + e] * kf(b, j, h / g, e);
          double s = sm * dot;
          if (cap > 0) s = cap * std::tanh(s / cap);
          w.push_back(s);
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (size_t i = 0; i < w.size(); ++i)
          for (int64_t e = 0; e < d; ++e) out[row * d + e] += w[i] / sum * vf(b, first + int64_t(i), h / g, e);
      }
  return out;
}

double rel_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  double n = 0, dd = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    n += (a[i] - ref[i]) * (a[i] - ref[i]);
    dd += ref[i] * ref[i];
  }
  return dd > 0 ? std::sqrt(n / dd) : std::sqrt(n);
}

int run_decode(const std::vector<std::string>& args) {
  ParsedArgs a;
  std::string err;
  if (!parse_args(args,
                  {"--q", "--k", "--v", "--seq-lens", "--kv-format", "--page-size", "--layout", "--device", "--k-scale",
                   "--v-scale", "--out", "--sm-scale", "--soft-cap", "--window"},
                  {"--compare"}, &a, &err))
    return usage_error(kCmd, err);
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (!a.has("--q") || !a.has("--k") || !a.has("--v") || !a.has("--kv-format") || !a.has("--out"))
    return usage_error(kCmd, "--q, --k, --v, --kv-format and --out are required");
  std::string fname = a.get("--kv-format", "");
  const bool four_over_six = fname == "nvfp4_4over6";
  KvFormat format;
  if (!parse_kv_format(four_over_six ? "nvfp4" : fname, &format)) return usage_error(kCmd, "unknown --kv-format " + fname);
  KvLayout layout;
  if (!parse_kv_layout(a.get("--layout", "NHD"), &layout)) return usage_error(kCmd, "--layout must be NHD or HND");
  int64_t page_size = 16, window = -1;
  if (!parse_int64(a.get("--page-size", "16"), &page_size) || page_size < 1)
    return usage_error(kCmd, "--page-size must be an integer >= 1");
  if (a.has("--window") && (!parse_int64(a.get("--window", ""), &window) || window < 0))
    return usage_error(kCmd, "--window must be an integer >= 0");
  const std::string device = a.get("--device", "cpu");
  if (device != "cpu" && device != "cuda") return usage_error(kCmd, "--device must be cpu or cuda");
  float sm_scale = 0, cap = 0, k_scale = 0, v_scale = 0;
  if ((a.has("--sm-scale") && (!parse_float(a.get("--sm-scale", ""), &sm_scale) || !(sm_scale > 0))) ||
      (a.has("--soft-cap") && (!parse_float(a.get("--soft-cap", ""), &cap) || !(cap >= 0))) ||
      (a.has("--k-scale") && (!parse_float(a.get("--k-scale", ""), &k_scale) || !(k_scale > 0) || !std::isfinite(k_scale))) ||
      (a.has("--v-scale") && (!parse_float(a.get("--v-scale", ""), &v_scale) || !(v_scale > 0) || !std::isfinite(v_scale))))
    return usage_error(kCmd, "--sm-scale, --k-scale, --v-scale must be finite numbers > 0, --soft-cap >= 0");

  SafetensorsFile fq, fk, fv, fs;
  SafetensorsTensor *tq = nullptr, *tk = nullptr, *tv = nullptr;
  Status st = load_single(a.get("--q", ""), "q", &fq, &tq);
  if (st.ok()) st = load_single(a.get("--k", ""), "k", &fk, &tk);
  if (st.ok()) st = load_single(a.get("--v", ""), "v", &fv, &tv);
  if (!st.ok()) return status_error(kCmd, st);
  if (tq->shape.size() != 4 || tk->shape.size() != 4 || tv->shape != tk->shape)
    return fail(kCmd, kExitError, "Q must be 4-D [batch, qo_len, heads, dim]; K and V 4-D [batch, kv_len, kv_heads, dim] of one shape");
  const int64_t batch = tq->shape[0], qo_len = tq->shape[1], hq = tq->shape[2], d = tq->shape[3];
  const int64_t kv_len = tk->shape[1], hk = tk->shape[2];
  if (tk->shape[0] != batch || tk->shape[3] != d)
    return fail(kCmd, kExitError, "K/V batch and head_dim must match Q's " + shape_string(tq->shape));
  std::vector<int32_t> lens(batch, static_cast<int32_t>(kv_len));
  if (a.has("--seq-lens")) {
    SafetensorsTensor* ts = nullptr;
    if (!(st = load_single(a.get("--seq-lens", ""), "seq_lens", &fs, &ts)).ok()) return status_error(kCmd, st);
    if (ts->numel() != batch || (ts->dtype != DType::kI32 && ts->dtype != DType::kI64))
      return fail(kCmd, kExitError, "--seq-lens must hold an i32/i64 [batch] tensor");
    for (int64_t b = 0; b < batch; ++b) {
      int64_t v = ts->dtype == DType::kI32 ? reinterpret_cast<const int32_t*>(ts->bytes.data())[b]
                                           : reinterpret_cast<const int64_t*>(ts->bytes.data())[b];
      if (v < 0 || v > kv_len) return fail(kCmd, kExitError, "--seq-lens values must be in [0, kv_len]");
      lens[b] = static_cast<int32_t>(v);
    }
  }
  const DType qt = tq->dtype == DType::kF16 ? DType::kF16 : DType::kBF16;
  if (format == KvFormat::kBF16 && qt != DType::kBF16) return fail(kCmd, kExitError, "a bf16 cache needs bf16 (or f32) queries");
  if (format == KvFormat::kF16 && qt != DType::kF16) return fail(kCmd, kExitError, "an f16 cache needs f16 queries");

  // Queries and K/V in the query type (what a model would append).
  const auto qf = to_floats(*tq), kf = to_floats(*tk), vf = to_floats(*tv);
  std::vector<uint16_t> qbits(qf.size());
  std::vector<double> qd(qf.size());
  for (size_t i = 0; i < qf.size(); ++i) qd[i] = from_bits(qt, qbits[i] = to_bits(qt, qf[i]));

  // Cache: pages handed out in shuffled order.
  int64_t pages_total = 0;
  for (auto l : lens) pages_total += (l + page_size - 1) / page_size;
  const int64_t num_pages = std::max<int64_t>(pages_total, 1);
  int64_t max_pages = 1;
  for (auto l : lens) max_pages = std::max<int64_t>(max_pages, (l + page_size - 1) / page_size);
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(12345));
  std::vector<int32_t> tables(batch * max_pages, 0);
  std::vector<int64_t> slots;
  std::vector<uint16_t> kbits, vbits;
  int64_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t p = 0; p < (lens[b] + page_size - 1) / page_size; ++p) tables[b * max_pages + p] = perm[next++];
    for (int64_t j = 0; j < lens[b]; ++j) {
      slots.push_back(int64_t(tables[b * max_pages + j / page_size]) * page_size + j % page_size);
      for (int64_t e = 0; e < hk * d; ++e) {
        kbits.push_back(to_bits(qt, kf[(b * kv_len + j) * hk * d + e]));
        vbits.push_back(to_bits(qt, vf[(b * kv_len + j) * hk * d + e]));
      }
    }
  }
  const int64_t ntok = static_cast<int64_t>(slots.size());
  const bool fp4 = kv_format_is_fp4(format);
  const int64_t x = fp4 ? d / 2 : d;
  const size_t es = format == KvFormat::kBF16 || format == KvFormat::kF16 ? 2 : 1;
  const DType ddt = format == KvFormat::kBF16 ? DType::kBF16
                    : format == KvFormat::kF16 ? DType::kF16
                    : format == KvFormat::kFP8E4M3 ? DType::kFP8E4M3 : DType::kU8;
  std::vector<uint8_t> kdata(num_pages * page_size * hk * x * es), vdata(kdata.size());
  std::vector<uint8_t> ksf(fp4 ? num_pages * page_size * hk * d / 16 : 0), vsf(ksf.size());
  auto view4 = [&](void* p, DType dt, Device dv, int64_t last) {
    return layout == KvLayout::kNHD ? make_view(p, dt, dv, {num_pages, page_size, hk, last})
                                    : make_view(p, dt, dv, {num_pages, hk, page_size, last});
  };
  KvCacheView cache;
  cache.format = format;
  cache.layout = layout;
  cache.num_pages = num_pages;
  cache.page_size = page_size;
  cache.num_kv_heads = hk;
  cache.head_dim = d;
  cache.k_data = view4(kdata.data(), ddt, Device::kCpu, x);
  cache.v_data = view4(vdata.data(), ddt, Device::kCpu, x);
  if (fp4) {
    cache.k_scales = view4(ksf.data(), DType::kU8, Device::kCpu, d / 16);
    cache.v_scales = view4(vsf.data(), DType::kU8, Device::kCpu, d / 16);
  }
  TensorView kview = make_view(kbits.data(), qt, Device::kCpu, {ntok, hk, d});
  TensorView vview = make_view(vbits.data(), qt, Device::kCpu, {ntok, hk, d});
  if (ntok > 0 && !a.has("--k-scale") && !(st = calibrate_kv_scale(kview, format, four_over_six, &k_scale)).ok())
    return status_error(kCmd, st);
  if (ntok > 0 && !a.has("--v-scale") && !(st = calibrate_kv_scale(vview, format, four_over_six, &v_scale)).ok())
    return status_error(kCmd, st);
  if (k_scale <= 0) k_scale = 1;
  if (v_scale <= 0) v_scale = 1;
  cache.k_scale = &k_scale;
  cache.v_scale = &v_scale;
  AppendOptions ao;
  ao.four_over_six = four_over_six;
  if (ntok > 0 && !(st = append_kv(cache, kview, vview, make_view(slots.data(), DType::kI64, Device::kCpu, {ntok}), ao)).ok())
    return status_error(kCmd, st);

  DecodeOptions o;
  o.sm_scale = sm_scale;
  o.logits_soft_cap = cap;
  o.window_left = static_cast<int>(window);
  std::vector<uint16_t> out(batch * qo_len * hq * d, 0);
  std::vector<float> lse(batch * qo_len * hq, 0.f);
  auto qv = make_view(qbits.data(), qt, Device::kCpu, {batch, qo_len, hq, d});
  auto bt = make_view(tables.data(), DType::kI32, Device::kCpu, {batch, max_pages});
  auto sl = make_view(lens.data(), DType::kI32, Device::kCpu, {batch});
  if (device == "cpu") {
    st = decode_attention(qv, cache, bt, sl, make_view(out.data(), qt, Device::kCpu, {batch, qo_len, hq, d}),
                          make_view(lse.data(), DType::kF32, Device::kCpu, {batch, qo_len, hq}), o, nullptr, 0, nullptr);
  } else {
    if (cuda_device_count() == 0) return fail(kCmd, kExitError, "--device cuda: no CUDA device visible");
    DeviceBuffer dq, dkd, dvd, dks, dvs, dsc, dbt, dsl, dout, dlse, dws;
    auto up = [&](DeviceBuffer& buf, const void* src, size_t n) {
      Status s = buf.allocate(std::max<size_t>(n, 16));
      if (s.ok() && n) s = copy_to_device(buf.data(), src, n);
      return s;
    };
    const float scales[2] = {k_scale, v_scale};
    const size_t ws = decode_workspace_bytes(batch, qo_len, hq, hk, d, max_pages, page_size, o);
    if ((st = up(dq, qbits.data(), qbits.size() * 2)).ok() && (st = up(dkd, kdata.data(), kdata.size())).ok() &&
        (st = up(dvd, vdata.data(), vdata.size())).ok() && (st = up(dks, ksf.data(), ksf.size())).ok() &&
        (st = up(dvs, vsf.data(), vsf.size())).ok() && (st = up(dsc, scales, 8)).ok() &&
        (st = up(dbt, tables.data(), tables.size() * 4)).ok() && (st = up(dsl, lens.data(), lens.size() * 4)).ok() &&
        (st = dout.allocate(out.size() * 2)).ok() && (st = dlse.allocate(lse.size() * 4)).ok() &&
        (ws == 0 || (st = dws.allocate(ws)).ok())) {
      KvCacheView dc = cache;
      dc.k_data = view4(dkd.data(), ddt, Device::kCuda, x);
      dc.v_data = view4(dvd.data(), ddt, Device::kCuda, x);
      if (fp4) {
        dc.k_scales = view4(dks.data(), DType::kU8, Device::kCuda, d / 16);
        dc.v_scales = view4(dvs.data(), DType::kU8, Device::kCuda, d / 16);
      }
      dc.k_scale = static_cast<const float*>(dsc.data());
      dc.v_scale = static_cast<const float*>(dsc.data()) + 1;
      st = decode_attention(make_view(dq.data(), qt, Device::kCuda, {batch, qo_len, hq, d}), dc,
                            make_view(dbt.data(), DType::kI32, Device::kCuda, {batch, max_pages}),
                            make_view(dsl.data(), DType::kI32, Device::kCuda, {batch}),
                            make_view(dout.data(), qt, Device::kCuda, {batch, qo_len, hq, d}),
                            make_view(dlse.data(), DType::kF32, Device::kCuda, {batch, qo_len, hq}), o, dws.data(), ws,
                            nullptr);
      if (st.ok()) st = device_synchronize();
      if (st.ok()) st = copy_to_host(out.data(), dout.data(), out.size() * 2);
      if (st.ok()) st = copy_to_host(lse.data(), dlse.data(), lse.size() * 4);
    }
  }
  if (!st.ok()) return status_error(kCmd, st);

  SafetensorsFile res;
  res.metadata["kv_format"] = fname;
  res.metadata["device"] = device;
  res.tensors.resize(2);
  if (!(st = safetensors_tensor_from_view("out", make_view(out.data(), qt, Device::kCpu, {batch, qo_len, hq, d}), &res.tensors[0])).ok() ||
      !(st = safetensors_tensor_from_view("lse", make_view(lse.data(), DType::kF32, Device::kCpu, {batch, qo_len, hq}), &res.tensors[1])).ok() ||
      !(st = write_safetensors(a.get("--out", ""), res)).ok())
    return status_error(kCmd, st);
  std::printf("decode: batch %lld, qo_len %lld, heads %lld/%lld, head_dim %lld, %s cache (%s, page %lld, %lld pages "
              "shuffled) on %s; k_scale %.6g v_scale %.6g -> %s\n",
              (long long)batch, (long long)qo_len, (long long)hq, (long long)hk, (long long)d, fname.c_str(),
              kv_layout_name(layout), (long long)page_size, (long long)num_pages, device.c_str(), k_scale, v_scale,
              a.get("--out", "").c_str());
  if (!a.flag("--compare")) return kExitOk;

  std::vector<double> got(out.size());
  for (size_t i = 0; i < out.size(); ++i) got[i] = from_bits(qt, out[i]);
  const double sm = sm_scale > 0 ? sm_scale : 1.0 / std::sqrt(double(d));
  // (1) fp64 attention on the original K/V (as given, before any rounding).
  auto orig = dense_attention(
      qd, batch, qo_len, hq, hk, d, lens, sm, cap, static_cast<int>(window),
      [&](int64_t b, int64_t j, int64_t h, int64_t e) { return double(kf[((b * kv_len + j) * hk + h) * d + e]); },
      [&](int64_t b, int64_t j, int64_t h, int64_t e) { return double(vf[((b * kv_len + j) * hk + h) * d + e]); });
  // (2) fp64 attention on the dequantized cache (dequantize_kv, f32).
  std::vector<float> kdq(std::max<int64_t>(ntok, 1) * hk * d), vdq(kdq.size());
  if (ntok > 0 && !(st = dequantize_kv(cache, bt, sl, make_view(kdq.data(), DType::kF32, Device::kCpu, {ntok, hk, d}),
                                       make_view(vdq.data(), DType::kF32, Device::kCpu, {ntok, hk, d})))
                       .ok())
    return status_error(kCmd, st);
  std::vector<int64_t> row0(batch, 0);
  for (int64_t b = 1; b < batch; ++b) row0[b] = row0[b - 1] + lens[b - 1];
  auto deq = dense_attention(
      qd, batch, qo_len, hq, hk, d, lens, sm, cap, static_cast<int>(window),
      [&](int64_t b, int64_t j, int64_t h, int64_t e) { return double(kdq[((row0[b] + j) * hk + h) * d + e]); },
      [&](int64_t b, int64_t j, int64_t h, int64_t e) { return double(vdq[((row0[b] + j) * hk + h) * d + e]); });
  const double e_orig = rel_l2(got, orig), e_deq = rel_l2(got, deq), e_quant = rel_l2(deq, orig);
  const double tol = qt == DType::kBF16 ? 4e-3 : 1e-3;
  std::printf("rel. L2 error of out vs fp64 attention on the original K/V:    %.3e  (format + kernel)\n", e_orig);
  std::printf("rel. L2 error of out vs fp64 attention on the dequantized K/V: %.3e  (kernel only; limit %.0e)\n", e_deq, tol);
  std::printf("rel. L2 error of fp64 attention, dequantized vs original K/V:  %.3e  (format only)\n", e_quant);
  return e_deq <= tol ? kExitOk : kExitMismatch;
}

}  // namespace

NVFP4KV_CLI_COMMAND("decode", "decode attention over a paged cache built from dumped K/V (cpu or cuda)", run_decode);

}  // namespace nvfp4kv::cli
