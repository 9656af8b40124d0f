// Tests of the safetensors reader/writer: round trips for every dtype, metadata, empty and 0-d
// tensors, layout of the written file, and every malformed-file error (never a crash).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nvfp4kv/safetensors.h"

namespace nvfp4kv {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("nvfp4kv_io_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes raw bytes to a file in the temp dir and returns its path.
  std::string write_raw(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = path(name);
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  fs::path dir_;
};

// Seed printed on failure via SCOPED_TRACE by the callers.
uint64_t test_seed() {
  static const uint64_t seed = std::random_device{}();
  return seed;
}

SafetensorsTensor random_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                std::mt19937_64& rng) {
  SafetensorsTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(static_cast<std::size_t>(t.expected_bytes()));
  for (auto& b : t.bytes) b = static_cast<uint8_t>(rng());
  return t;
}

// Builds a file image from a header text and a data buffer (header length written as given).
std::vector<uint8_t> make_image(const std::string& header, const std::vector<uint8_t>& buffer,
                                uint64_t header_len_field) {
  std::vector<uint8_t> img(8);
  for (int i = 0; i < 8; ++i) img[i] = static_cast<uint8_t>(header_len_field >> (8 * i));
  img.resize(8 + header.size() + buffer.size());
  if (!header.empty()) std::memcpy(img.data() + 8, header.data(), header.size());
  if (!buffer.empty()) std::memcpy(img.data() + 8 + header.size(), buffer.data(), buffer.size());
  return img;
}
std::vector<uint8_t> make_image(const std::string& header, const std::vector<uint8_t>& buffer) {
  return make_image(header, buffer, header.size());
}

// Parses `image` and expects kIoError whose message contains `needle`.
void expect_malformed(const std::vector<uint8_t>& image, const std::string& needle) {
  SafetensorsFile f;
  const Status s = parse_safetensors(image.data(), image.size(), &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
  EXPECT_NE(s.message().find(needle), std::string::npos)
      << "message '" << s.message() << "' should mention '" << needle << "'";
}

uint64_t read_le64(const std::vector<uint8_t>& img) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | img[i];
  return n;
}

const DType kAllDtypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kFP8E4M3,
                            DType::kU8,  DType::kI32, DType::kI64};

TEST(SafetensorsDtype, NamesRoundTrip) {
  for (DType d : kAllDtypes) {
    DType back = DType::kU8;
    ASSERT_TRUE(parse_safetensors_dtype(safetensors_dtype_name(d), &back)) << dtype_name(d);
    EXPECT_EQ(back, d);
  }
  DType d;
  EXPECT_FALSE(parse_safetensors_dtype("F64", &d));
  EXPECT_FALSE(parse_safetensors_dtype("f32", &d));  // names are case-sensitive in the format
  EXPECT_FALSE(parse_safetensors_dtype("", &d));
}

TEST_F(SafetensorsTest, RoundTripEveryDtype) {
  SCOPED_TRACE("seed " + std::to_string(test_seed()));
  std::mt19937_64 rng(test_seed());
  SafetensorsFile f;
  int i = 0;
  for (DType d : kAllDtypes) {
    // Odd extents so that packed sizes are not all multiples of 8.
    const int64_t a = 1 + static_cast<int64_t>(rng() % 7), b = 1 + static_cast<int64_t>(rng() % 13);
    std::string name = "t";
    name += std::to_string(i++);
    name += dtype_name(d);
    f.tensors.push_back(random_tensor(name, d, {a, b}, rng));
    f.tensors.push_back(random_tensor(std::string("v_") + dtype_name(d), d, {3, a, b}, rng));
  }
  const std::string p = path("all.safetensors");
  ASSERT_TRUE(write_safetensors(p, f).ok());
  SafetensorsFile g;
  const Status s = read_safetensors(p, &g);
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_EQ(g.tensors.size(), f.tensors.size());
  for (const auto& t : f.tensors) {
    const SafetensorsTensor* u = g.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->dtype, t.dtype) << t.name;
    EXPECT_EQ(u->shape, t.shape) << t.name;
    EXPECT_EQ(u->bytes, t.bytes) << t.name;
  }
  EXPECT_TRUE(g.metadata.empty());
  EXPECT_EQ(g.find("missing"), nullptr);
}

TEST_F(SafetensorsTest, WrittenLayoutIsAlignedAndPacked) {
  SCOPED_TRACE("seed " + std::to_string(test_seed()));
  std::mt19937_64 rng(test_seed() + 1);
  SafetensorsFile f;
  f.metadata["k"] = "v";
  f.tensors.push_back(random_tensor("b_u8", DType::kU8, {5}, rng));  // odd size first by name
  f.tensors.push_back(random_tensor("a_i64", DType::kI64, {3}, rng));
  f.tensors.push_back(random_tensor("c_f16", DType::kF16, {3}, rng));
  f.tensors.push_back(random_tensor("d_f32", DType::kF32, {2, 3}, rng));
  std::vector<uint8_t> img;
  ASSERT_TRUE(serialize_safetensors(f, &img).ok());
  const uint64_t n = read_le64(img);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  // Padding is spaces after the closing brace.
  const std::string header(img.begin() + 8, img.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  const auto close = header.find_last_of('}');
  ASSERT_NE(close, std::string::npos);
  for (std::size_t i = close + 1; i < header.size(); ++i) EXPECT_EQ(header[i], ' ');
  // Packed: buffer is exactly the sum of the tensor sizes.
  EXPECT_EQ(img.size(), 8 + n + 5 + 24 + 6 + 24);
  // Reading back gives data-buffer order: element size descending, then name.
  SafetensorsFile g;
  ASSERT_TRUE(parse_safetensors(img.data(), img.size(), &g).ok());
  ASSERT_EQ(g.tensors.size(), 4u);
  EXPECT_EQ(g.tensors[0].name, "a_i64");
  EXPECT_EQ(g.tensors[1].name, "d_f32");
  EXPECT_EQ(g.tensors[2].name, "c_f16");
  EXPECT_EQ(g.tensors[3].name, "b_u8");
  // The i64 tensor starts the buffer; its bytes are where the header says.
  EXPECT_EQ(0, std::memcmp(img.data() + 8 + n, f.tensors[1].bytes.data(), 24));
  // Serialisation is deterministic.
  std::vector<uint8_t> img2;
  ASSERT_TRUE(serialize_safetensors(f, &img2).ok());
  EXPECT_EQ(img, img2);
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  SafetensorsFile f;
  f.metadata["recipe"] = "nvfp4_4over6";
  f.metadata["shape"] = "[4, 8, 64]";
  f.metadata["empty"] = "";
  f.metadata["unicode"] = "x\xc3\xa2\xe2\x80\x94y \"quoted\" \\ \n";
  std::mt19937_64 rng(test_seed() + 2);
  f.tensors.push_back(random_tensor("x", DType::kF32, {4}, rng));
  const std::string p = path("meta.safetensors");
  ASSERT_TRUE(write_safetensors(p, f).ok());
  SafetensorsFile g;
  ASSERT_TRUE(read_safetensors(p, &g).ok());
  EXPECT_EQ(g.metadata, f.metadata);
  EXPECT_EQ(g.metadata_or("recipe"), "nvfp4_4over6");
  EXPECT_EQ(g.metadata_or("nope", "fallback"), "fallback");
}

TEST_F(SafetensorsTest, EmptyAndScalarTensors) {
  std::mt19937_64 rng(test_seed() + 3);
  SafetensorsFile f;
  f.tensors.push_back(random_tensor("scalar", DType::kF32, {}, rng));
  f.tensors.push_back(random_tensor("empty", DType::kBF16, {0}, rng));
  f.tensors.push_back(random_tensor("empty2", DType::kU8, {3, 0, 2}, rng));
  f.tensors.push_back(random_tensor("one", DType::kI32, {1}, rng));
  ASSERT_EQ(f.tensors[0].bytes.size(), 4u);
  ASSERT_TRUE(f.tensors[1].bytes.empty());
  const std::string p = path("empty.safetensors");
  ASSERT_TRUE(write_safetensors(p, f).ok());
  SafetensorsFile g;
  const Status s = read_safetensors(p, &g);
  ASSERT_TRUE(s.ok()) << s.to_string();
  for (const auto& t : f.tensors) {
    const auto* u = g.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->shape, t.shape);
    EXPECT_EQ(u->bytes, t.bytes);
    EXPECT_EQ(u->dtype, t.dtype);
  }
  EXPECT_EQ(g.find("scalar")->numel(), 1);
  EXPECT_EQ(g.find("empty2")->numel(), 0);
  // An empty file (no tensors, no metadata) round-trips too.
  ASSERT_TRUE(write_safetensors(path("none.safetensors"), SafetensorsFile()).ok());
  ASSERT_TRUE(read_safetensors(path("none.safetensors"), &g).ok());
  EXPECT_TRUE(g.tensors.empty());
}

TEST(SafetensorsParse, HandWrittenHeaderWithGapAndExtraFields) {
  // A header as another writer might produce it (field order, whitespace, a gap between
  // tensors, an unknown field, empty tensor at offset 0) is accepted.
  const std::string header =
      "{ \"b\" : {\"shape\": [2], \"dtype\": \"F16\", \"data_offsets\": [8, 12], \"extra\": 1},\n"
      "  \"a\": {\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
      "  \"e\": {\"dtype\":\"F32\",\"shape\":[0, 5],\"data_offsets\":[0,0]},"
      "  \"__metadata__\": {\"format\": \"pt\"}}";
  const std::vector<uint8_t> buffer = {1, 2, 3, 0, 0, 0, 0, 0, 0x00, 0x3C, 0x00, 0xC0, 9, 9};
  const auto img = make_image(header, buffer);
  SafetensorsFile f;
  const Status s = parse_safetensors(img.data(), img.size(), &f);
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.find("a")->bytes, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(f.find("b")->bytes, (std::vector<uint8_t>{0x00, 0x3C, 0x00, 0xC0}));
  EXPECT_EQ(f.find("b")->dtype, DType::kF16);
  EXPECT_EQ(f.find("e")->shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(f.metadata.at("format"), "pt");
}

TEST(SafetensorsParse, ShortFile) {
  for (std::size_t n : {0, 1, 7}) {
    std::vector<uint8_t> img(n, 0);
    expect_malformed(img, "shorter than the 8-byte header length");
  }
}

TEST(SafetensorsParse, HeaderLengthTooLargeOrZero) {
  const std::string h = "{}";
  expect_malformed(make_image(h, {}, 3), "exceeds the file size");
  expect_malformed(make_image(h, {}, 1000), "exceeds the file size");
  expect_malformed(make_image(h, {}, ~uint64_t{0}), "exceeds the limit");
  expect_malformed(make_image(h, {}, kSafetensorsMaxHeaderBytes + 1), "exceeds the limit");
  expect_malformed(make_image("", {}, 0), "header length is 0");
}

TEST(SafetensorsParse, BadJson) {
  expect_malformed(make_image("{\"a\": {\"dtype\": ", {}), "not valid JSON");
  expect_malformed(make_image("{\"a\" 1}", {}), "not valid JSON");
  expect_malformed(make_image("{}   x", {}), "not valid JSON");
  expect_malformed(make_image(std::string("{\"\xff\xfe\": 1}"), {}), "not valid JSON");
  expect_malformed(make_image(std::string("{}\0\0\0\0\0\0", 8), {}), "not valid JSON");
}

TEST(SafetensorsParse, HeaderNotAnObject) {
  expect_malformed(make_image("[1, 2]", {}), "expected an object");
  expect_malformed(make_image("42      ", {}), "expected an object");
  expect_malformed(make_image("\"str\"", {}), "expected an object");
  expect_malformed(make_image("{\"t\": [1]}", {}), "tensor 't': entry is a JSON array");
}

TEST(SafetensorsParse, MissingOrIllTypedFields) {
  const std::vector<uint8_t> buf(16, 0);
  expect_malformed(make_image("{\"t\": {\"shape\": [4], \"data_offsets\": [0, 16]}}", buf),
                   "tensor 't': missing field 'dtype'");
  expect_malformed(make_image("{\"t\": {\"dtype\": \"F32\", \"data_offsets\": [0, 16]}}", buf),
                   "tensor 't': missing field 'shape'");
  expect_malformed(make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4]}}", buf),
                   "tensor 't': missing field 'data_offsets'");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": 5, \"shape\": [4], \"data_offsets\": [0, 16]}}", buf),
      "'dtype' is a JSON number");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}", buf),
      "'shape' is a JSON number");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}", buf),
      "'shape' entry -4 is not a non-negative integer");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4.0], \"data_offsets\": [0, 16]}}", buf),
      "'shape' entry 4.0 is not a non-negative integer");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [\"4\"], \"data_offsets\": [0, 16]}}", buf),
      "is not a non-negative integer");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0]}}", buf),
      "'data_offsets' is [0]");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16, 20]}}", buf),
      "expected [begin, end]");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [-1, 15]}}", buf),
      "expected [begin, end]");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": \"0,16\"}}", buf),
      "expected [begin, end]");
}

TEST(SafetensorsParse, UnknownDtype) {
  const std::vector<uint8_t> buf(32, 0);
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F64\", \"shape\": [4], \"data_offsets\": [0, 32]}}", buf),
      "tensor 't': unknown dtype 'F64'");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"f32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", buf),
      "unknown dtype 'f32'");
}

TEST(SafetensorsParse, ShapeDoesNotMatchOffsets) {
  const std::vector<uint8_t> buf(32, 0);
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 12]}}", buf),
      "F32 shape [4] needs 16 bytes but data_offsets [0, 12] span 12");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"BF16\", \"shape\": [], \"data_offsets\": [0, 4]}}", buf),
      "needs 2 bytes");
  // Extents whose product overflows int64 are reported, not wrapped around.
  expect_malformed(make_image("{\"t\": {\"dtype\": \"U8\", \"shape\": [4611686018427387904, 4],"
                              " \"data_offsets\": [0, 0]}}",
                              buf),
                   "more than 2^63");
}

TEST(SafetensorsParse, OffsetsReversedOrOutOfRange) {
  const std::vector<uint8_t> buf(16, 0);
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [8, 4]}}", buf),
      "reversed");
  expect_malformed(
      make_image("{\"t\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [14, 18]}}", buf),
      "exceed the data buffer of 16 bytes");
  expect_malformed(make_image("{\"t\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": "
                              "[0, 18446744073709551615]}}",
                              buf),
                   "expected [begin, end]");
}

TEST_F(SafetensorsTest, TruncatedData) {
  std::mt19937_64 rng(test_seed() + 4);
  SafetensorsFile f;
  f.tensors.push_back(random_tensor("x", DType::kF32, {8, 8}, rng));
  std::vector<uint8_t> img;
  ASSERT_TRUE(serialize_safetensors(f, &img).ok());
  img.resize(img.size() - 3);
  const std::string p = write_raw("trunc.safetensors", img);
  SafetensorsFile g;
  const Status s = read_safetensors(p, &g);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().rfind(p, 0), 0u) << "message should start with the path: " << s.message();
  EXPECT_TRUE(g.tensors.empty()) << "a failed read leaves an empty file";
}

TEST(SafetensorsParse, OverlappingTensors) {
  const std::vector<uint8_t> buf(16, 0);
  expect_malformed(make_image("{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
                              " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [6, 10]}}",
                              buf),
                   "overlap");
  // Touching tensors and empty tensors inside another's span are fine.
  const auto ok = make_image("{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
                             " \"b\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [4, 4]},"
                             " \"c\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [8, 16]}}",
                             buf);
  SafetensorsFile f;
  EXPECT_TRUE(parse_safetensors(ok.data(), ok.size(), &f).ok());
}

TEST(SafetensorsParse, DuplicateNames) {
  const std::vector<uint8_t> buf(8, 0);
  expect_malformed(make_image("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
                              " \"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}",
                              buf),
                   "duplicate tensor name 'a'");
  // The same key at a deeper level is not a duplicate tensor.
  const auto ok = make_image("{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
                             " \"__metadata__\": {\"a\": \"x\"}}",
                             buf);
  SafetensorsFile f;
  EXPECT_TRUE(parse_safetensors(ok.data(), ok.size(), &f).ok());
}

TEST(SafetensorsParse, MetadataNotStrings) {
  expect_malformed(make_image("{\"__metadata__\": {\"n\": 3}}", {}),
                   "__metadata__ value of 'n' is a JSON number, expected a string");
  expect_malformed(make_image("{\"__metadata__\": {\"n\": null}}", {}), "value of 'n'");
  expect_malformed(make_image("{\"__metadata__\": [\"a\"]}", {}), "__metadata__ is a JSON array");
}

TEST_F(SafetensorsTest, MissingFileAndUnwritablePath) {
  SafetensorsFile f;
  const std::string p = path("does_not_exist.safetensors");
  Status s = read_safetensors(p, &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find(p), std::string::npos);
  EXPECT_NE(s.message().find("cannot open"), std::string::npos);
  s = write_safetensors(path("no_such_dir/x.safetensors"), f);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
  EXPECT_NE(s.message().find("cannot open for writing"), std::string::npos);
}

TEST(SafetensorsWrite, RejectsInconsistentTensors) {
  std::vector<uint8_t> img;
  SafetensorsFile f;
  f.tensors.push_back({"x", DType::kF32, {2, 2}, std::vector<uint8_t>(15)});
  Status s = serialize_safetensors(f, &img);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("needs 16 bytes"), std::string::npos) << s.message();

  f.tensors = {{"x", DType::kU8, {1}, {1}}, {"x", DType::kU8, {1}, {2}}};
  s = serialize_safetensors(f, &img);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("duplicate"), std::string::npos);

  f.tensors = {{"__metadata__", DType::kU8, {1}, {1}}};
  EXPECT_EQ(serialize_safetensors(f, &img).code(), StatusCode::kInvalidArgument);

  f.tensors = {{"neg", DType::kU8, {-1}, {}}};
  EXPECT_EQ(serialize_safetensors(f, &img).code(), StatusCode::kInvalidArgument);

  f.tensors = {{std::string("bad\xff"), DType::kU8, {1}, {1}}};
  s = serialize_safetensors(f, &img);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();

  f.tensors.clear();
  f.metadata["k"] = std::string("\xc3");
  EXPECT_EQ(serialize_safetensors(f, &img).code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsView, CpuViewAliasesBytes) {
  SafetensorsTensor t{"x", DType::kF32, {2, 3}, std::vector<uint8_t>(24)};
  const float vals[6] = {1, 2, 3, 4, 5, 6};
  std::memcpy(t.bytes.data(), vals, 24);
  TensorView v;
  ASSERT_TRUE(safetensors_cpu_view(t, &v).ok());
  EXPECT_EQ(v.data, t.bytes.data());
  EXPECT_EQ(v.ndim, 2);
  EXPECT_EQ(v.shape[0], 2);
  EXPECT_EQ(v.shape[1], 3);
  EXPECT_EQ(v.strides[0], 3);
  EXPECT_EQ(v.strides[1], 1);
  EXPECT_EQ(v.dtype, DType::kF32);
  EXPECT_EQ(v.device, Device::kCpu);
  EXPECT_EQ(static_cast<const float*>(v.data)[4], 5.0f);

  SafetensorsTensor big{"big", DType::kU8, {1, 1, 1, 1, 1, 1, 1}, std::vector<uint8_t>(1)};
  EXPECT_EQ(safetensors_cpu_view(big, &v).code(), StatusCode::kInvalidArgument);
  SafetensorsTensor bad{"bad", DType::kF16, {3}, std::vector<uint8_t>(5)};
  EXPECT_EQ(safetensors_cpu_view(bad, &v).code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsView, TensorFromStridedView) {
  // Transposed view of a 3x4 int32 matrix gathers into a dense 4x3 tensor.
  int32_t m[12];
  for (int i = 0; i < 12; ++i) m[i] = 100 + i;
  const TensorView v = make_strided_view(m, DType::kI32, Device::kCpu, {4, 3}, {1, 4});
  SafetensorsTensor t;
  ASSERT_TRUE(safetensors_tensor_from_view("tr", v, &t).ok());
  EXPECT_EQ(t.shape, (std::vector<int64_t>{4, 3}));
  ASSERT_EQ(t.bytes.size(), 48u);
  int32_t out[12];
  std::memcpy(out, t.bytes.data(), 48);
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(out[r * 3 + c], m[c * 4 + r]);
  }
  const TensorView dev = make_view(m, DType::kI32, Device::kCuda, {3});
  EXPECT_EQ(safetensors_tensor_from_view("d", dev, &t).code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsParse, RandomCorruptionNeverCrashes) {
  // Flip random bytes / truncate a valid image many times: every outcome must be ok or
  // kIoError (with a message), and a successful parse must be self-consistent.
  SCOPED_TRACE("seed " + std::to_string(test_seed()));
  std::mt19937_64 rng(test_seed() + 5);
  SafetensorsFile f;
  f.metadata["recipe"] = "nvfp4";
  f.tensors.push_back(random_tensor("data", DType::kU8, {4, 8}, rng));
  f.tensors.push_back(random_tensor("scales", DType::kU8, {4, 1}, rng));
  f.tensors.push_back(random_tensor("global_scale", DType::kF32, {1}, rng));
  std::vector<uint8_t> img;
  ASSERT_TRUE(serialize_safetensors(f, &img).ok());
  int ok_count = 0, err_count = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> c = img;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      const std::size_t pos = rng() % c.size();
      c[pos] = static_cast<uint8_t>(rng() % 4 == 0 ? "{}[]\",:0123456789-"[rng() % 18] : rng());
    }
    if (rng() % 4 == 0) c.resize(rng() % (c.size() + 1));
    SafetensorsFile g;
    const Status s = parse_safetensors(c.data(), c.size(), &g);
    if (s.ok()) {
      ++ok_count;
      for (const auto& t : g.tensors) EXPECT_EQ(static_cast<int64_t>(t.bytes.size()), t.expected_bytes());
    } else {
      ++err_count;
      EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
      EXPECT_FALSE(s.message().empty());
    }
  }
  EXPECT_GT(err_count, 0);
  EXPECT_GT(ok_count, 0);  // flips inside the data buffer keep the file valid
}

}  // namespace
}  // namespace nvfp4kv
