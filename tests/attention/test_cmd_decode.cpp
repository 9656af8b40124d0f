// nvfp4kv — end-to-end tests of `nvfp4kv decode` (tools/cmd_decode.cpp) on the CPU: a bf16
// cache must reproduce fp64 attention on the given K/V (the cache is exact); compressed formats
// pass their own --compare check; bad command lines give exit code 2, unreadable files 3.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/format.h"
#include "nvfp4kv/safetensors.h"

namespace nvfp4kv {
namespace {

namespace fs = std::filesystem;

class CmdDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(NVFP4KV_CLI_PATH)) GTEST_SKIP() << "CLI binary not built: " << NVFP4KV_CLI_PATH;
    dir_ = fs::temp_directory_path() / ("nvfp4kv_cmd_decode_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }

  int run(const std::string& args) const {
    const std::string cmd = std::string("'") + NVFP4KV_CLI_PATH + "' " + args + " >'" + path("stdout.txt") +
                            "' 2>'" + path("stderr.txt") + "'";
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Writes a bf16 tensor of random values (K gets outlier channel 3) and returns its values.
  std::vector<double> write_bf16(const std::string& file, const std::string& name, std::vector<int64_t> shape,
                                 std::mt19937& rng, bool outliers) {
    SafetensorsFile f;
    SafetensorsTensor t{name, DType::kBF16, shape, {}};
    const int64_t n = t.numel();
    t.bytes.resize(static_cast<size_t>(n) * 2);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<double> vals(n);
    for (int64_t i = 0; i < n; ++i) {
      const float x = nd(rng) * ((outliers && i % shape.back() == 3) ? 16.f : 1.f);
      const uint16_t b = fmt::float_to_bf16_bits(x);
      t.bytes[2 * i] = static_cast<uint8_t>(b);
      t.bytes[2 * i + 1] = static_cast<uint8_t>(b >> 8);
      vals[i] = fmt::bf16_bits_to_float(b);
    }
    f.tensors.push_back(std::move(t));
    EXPECT_TRUE(write_safetensors(path(file), f).ok());
    return vals;
  }

  fs::path dir_;
};

TEST_F(CmdDecode, Bf16CacheMatchesFp64AttentionAndCompressedFormatsPassCompare) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t B = 2, T = 2, HQ = 4, HK = 2, D = 64, L = 45;
  const auto q = write_bf16("q.st", "q", {B, T, HQ, D}, rng, false);
  const auto k = write_bf16("k.st", "k", {B, L, HK, D}, rng, true);
  const auto v = write_bf16("v.st", "v", {B, L, HK, D}, rng, false);
  ASSERT_EQ(run("decode --q '" + path("q.st") + "' --k '" + path("k.st") + "' --v '" + path("v.st") +
                "' --kv-format bf16 --page-size 5 --layout HND --out '" + path("o.st") + "'"),
            0);
  SafetensorsFile out;
  ASSERT_TRUE(read_safetensors(path("o.st"), &out).ok());
  const SafetensorsTensor* o = out.find("out");
  const SafetensorsTensor* lse = out.find("lse");
  ASSERT_TRUE(o && lse);
  ASSERT_EQ(o->shape, (std::vector<int64_t>{B, T, HQ, D}));
  // fp64 attention on the given K/V, causal over the last T positions.
  double num = 0, den = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < HQ; ++h) {
        const int64_t kh = h / (HQ / HK), pos = L - T + t, row = (b * T + t) * HQ + h;
        std::vector<double> w(pos + 1);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[row * D + d] * k[((b * L + j) * HK + kh) * D + d];
          w[j] = dot / std::sqrt(double(D));
          mx = std::max(mx, w[j]);
        }
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int64_t d = 0; d < D; ++d) {
          double ref = 0;
          for (int64_t j = 0; j <= pos; ++j) ref += w[j] / sum * v[((b * L + j) * HK + kh) * D + d];
          const uint16_t bits = static_cast<uint16_t>(o->bytes[2 * (row * D + d)] | (o->bytes[2 * (row * D + d) + 1] << 8));
          const double got = fmt::bf16_bits_to_float(bits);
          num += (got - ref) * (got - ref);
          den += ref * ref;
        }
        float l = 0;
        std::memcpy(&l, lse->bytes.data() + 4 * row, 4);
        EXPECT_NEAR(l, mx + std::log(sum), 1e-4 * std::max(1.0, std::fabs(mx + std::log(sum))));
      }
  EXPECT_LE(std::sqrt(num / den), 4e-3);  // only the bf16 output rounding (see test_attention_ref)
  for (const char* f : {"nvfp4", "nvfp4_4over6", "fp8_e4m3", "fp4_block16"}) {
    EXPECT_EQ(run("decode --q '" + path("q.st") + "' --k '" + path("k.st") + "' --v '" + path("v.st") +
                  "' --kv-format " + f + " --page-size 16 --out '" + path("o2.st") + "' --compare --window 20"),
              0)
        << f;
  }
}

TEST_F(CmdDecode, UsageAndFileErrors) {
  EXPECT_EQ(run("decode --q a.st"), 2);
  EXPECT_EQ(run("decode --q a --k b --v c --kv-format nvfp5 --out o"), 2);
  EXPECT_EQ(run("decode --q a --k b --v c --kv-format nvfp4 --out o --page-size 0"), 2);
  EXPECT_EQ(run("decode --q '" + path("missing.st") + "' --k b --v c --kv-format nvfp4 --out o"), 3);
  EXPECT_EQ(run("decode --help"), 0);
}

}  // namespace
}  // namespace nvfp4kv
