// Partition over a real ExecuTorch program: the shipped vision "cached"
// partition (models/vision/cached.pte, float32 [1, 1, 28, 28] -> 5 logits).
// Its manifest entry supplies the expected values, written by the exporter,
// not by the code under test.
#include "knowcache/partition.h"

#include <gtest/gtest.h>

#include <cmath>

#include "knowcache/sha256.h"

namespace knowcache {
namespace {

const std::string kModels = KNOWCACHE_SOURCE_DIR "/models/vision";

class PartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = Manifest::Load(kModels + "/manifest.json");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    manifest = *m;
    ASSERT_NE(manifest.Find("cached"), nullptr);
    info = *manifest.Find("cached");
    auto b = ReadFileBytes(manifest.PathOf(info));
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    bytes = std::make_shared<const std::vector<uint8_t>>(*b);
  }

  StatusOr<std::shared_ptr<Partition>> Load(const PartitionInfo& with,
                                            const PartitionLoadOptions& options = {}) {
    return Partition::FromBytes(bytes, with, options);
  }

  Manifest manifest;
  PartitionInfo info;
  std::shared_ptr<const std::vector<uint8_t>> bytes;
};

// An image whose pixels are a function of `seed`.
std::vector<float> Image(int seed) {
  std::vector<float> x(28 * 28);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7 + seed * 13) % 17) / 16.f;
  return x;
}

TensorView View(const std::vector<float>& x, std::vector<int64_t> shape = {1, 1, 28, 28}) {
  return {DType::kFloat32, std::move(shape), x.data(), x.size() * sizeof(float)};
}

TEST_F(PartitionTest, LoadsTheProgramItsManifestEntryDescribes) {
  ASSERT_EQ(info.input.shape, (std::vector<int64_t>{1, 1, 28, 28}));
  ASSERT_EQ(info.labels.size(), 5u);
  auto p = Load(info);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ((*p)->input_dtype(), DType::kFloat32);
  EXPECT_EQ((*p)->input_shape(), info.input.shape);
  EXPECT_EQ((*p)->num_outputs(), 5);
  EXPECT_GE((*p)->resident_bytes(), static_cast<int64_t>(bytes->size()));
  EXPECT_EQ((*p)->info().id, "cached");
}

TEST_F(PartitionTest, RunReturnsOneFiniteLogitPerLabelAndDependsOnTheInput) {
  auto p = Load(info);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const auto a = Image(1), b = Image(2);
  auto la = (*p)->Run(View(a));
  ASSERT_TRUE(la.ok()) << la.status().ToString();
  ASSERT_EQ(la->size(), info.labels.size());
  for (float v : *la) EXPECT_TRUE(std::isfinite(v));
  auto lb = (*p)->Run(View(b));
  ASSERT_TRUE(lb.ok());
  EXPECT_NE(*la, *lb);
  // Outputs are copies: a later run leaves an earlier answer as it was.
  auto la2 = (*p)->Run(View(a));
  ASSERT_TRUE(la2.ok());
  EXPECT_EQ(*la, *la2);
}

TEST_F(PartitionTest, RunRejectsInputsOutsideTheSpecNamingThePartition) {
  auto p = Load(info);
  ASSERT_TRUE(p.ok());
  const auto x = Image(1);
  auto shape = (*p)->Run(View(x, {1, 28, 28, 1}));
  EXPECT_EQ(shape.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(shape.status().message().find("partition 'cached'"), std::string::npos);
  EXPECT_NE(shape.status().message().find("expects 1x1x28x28"), std::string::npos)
      << shape.status().message();
  const std::vector<int32_t> ints(28 * 28, 0);
  auto dtype = (*p)->Run({DType::kInt32, {1, 1, 28, 28}, ints.data(), ints.size() * 4});
  EXPECT_EQ(dtype.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dtype.status().message().find("dtype is int32"), std::string::npos)
      << dtype.status().message();
  auto short_buffer = (*p)->Run({DType::kFloat32, {1, 1, 28, 28}, x.data(), 100});
  EXPECT_EQ(short_buffer.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(PartitionTest, AManifestInputSpecThatDisagreesWithTheProgramIsRefused) {
  PartitionInfo wrong = info;
  wrong.input.shape = {1, 784};
  auto p = Load(wrong);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("manifest input float32[1x784] does not match the "
                                      "program's float32[1x1x28x28]"),
            std::string::npos)
      << p.status().message();
  wrong = info;
  wrong.input.dtype = DType::kUInt8;
  EXPECT_EQ(Load(wrong).status().code(), StatusCode::kInvalidArgument);
  // No spec in the entry: the program's own is used.
  PartitionInfo none = info;
  none.input = InputSpec{};
  auto q = Load(none);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ((*q)->info().input.shape, (std::vector<int64_t>{1, 1, 28, 28}));
}

TEST_F(PartitionTest, LabelsMustMatchTheProgramsOutputs) {
  PartitionInfo wrong = info;
  wrong.labels.push_back("extra");
  auto p = Load(wrong);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("has 6 labels but the program outputs 5 logits"),
            std::string::npos)
      << p.status().message();
}

TEST_F(PartitionTest, VerifiesSizeAndSha256BeforeExecuTorchSeesTheBytes) {
  PartitionInfo wrong = info;
  wrong.sha256 = std::string(64, '0');
  auto p = Load(wrong);
  EXPECT_EQ(p.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(p.status().message().find("sha256"), std::string::npos);
  wrong = info;
  wrong.bytes += 1;
  EXPECT_EQ(Load(wrong).status().code(), StatusCode::kCorrupt);
  // Unverified, the same entry loads, and an entry without a size gets the bytes'.
  PartitionLoadOptions trust;
  trust.verify = false;
  EXPECT_TRUE(Load(wrong, trust).ok());
  wrong.bytes = 0;
  auto q = Load(wrong, trust);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)->info().bytes, static_cast<int64_t>(bytes->size()));
}

TEST_F(PartitionTest, DamagedOrForeignBytesAreCorrupt) {
  PartitionInfo unchecked = info;
  unchecked.sha256.clear();
  unchecked.bytes = 0;
  auto empty = Partition::FromBytes(std::make_shared<const std::vector<uint8_t>>(), unchecked);
  EXPECT_EQ(empty.status().code(), StatusCode::kCorrupt);
  auto text = Partition::FromBytes(
      std::make_shared<const std::vector<uint8_t>>(std::vector<uint8_t>(4096, 'x')), unchecked);
  EXPECT_EQ(text.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(text.status().message().find("not a valid ExecuTorch program"), std::string::npos)
      << text.status().message();
  auto truncated = Partition::FromBytes(
      std::make_shared<const std::vector<uint8_t>>(bytes->begin(), bytes->begin() + 2048),
      unchecked);
  EXPECT_EQ(truncated.status().code(), StatusCode::kCorrupt);
  PartitionLoadOptions other_method;
  other_method.method = "backward";
  auto method = Load(info, other_method);
  EXPECT_EQ(method.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(method.status().message().find("has no method 'backward'"), std::string::npos)
      << method.status().message();
}

TEST_F(PartitionTest, FromFileNamesThePathAndDefaultsTheIdToTheStem) {
  auto p = Partition::FromFile(manifest.PathOf(info));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ((*p)->info().id, "cached");
  EXPECT_EQ((*p)->info().input.shape, (std::vector<int64_t>{1, 1, 28, 28}));
  auto missing = Partition::FromFile(kModels + "/nope.pte");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  PartitionInfo wrong = info;
  wrong.sha256 = std::string(64, '0');
  auto bad = Partition::FromFile(manifest.PathOf(info), wrong);
  EXPECT_EQ(bad.status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(bad.status().message().rfind(manifest.PathOf(info) + ": ", 0), 0u)
      << bad.status().message();
}

}  // namespace
}  // namespace knowcache
