#include "knowcache/manifest.h"

#include <gtest/gtest.h>

namespace knowcache {
namespace {

const char* kGood = R"({
  "schema_version": 1, "task": "kws", "version": 2,
  "labels": ["yes", "no", "up"],
  "partitions": [{
    "id": "cached", "version": 3, "role": "cached", "file": "cached.pte",
    "labels": ["yes", "no", "other"], "other_label": "other",
    "input": {"dtype": "float32", "shape": [1, 16000], "sample_rate": 16000},
    "threshold": 0.25, "bytes": 1000,
    "sha256": "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"}]})";

TEST(Manifest, ParsesEveryField) {
  auto m = Manifest::Parse(kGood);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->task, "kws");
  EXPECT_EQ(m->version, 2);
  EXPECT_EQ(m->LabelIndex("up"), 2);
  EXPECT_EQ(m->LabelIndex("nope"), -1);
  const PartitionInfo* p = m->Find("cached");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->version, 3);
  EXPECT_EQ(p->role, PartitionRole::kCached);
  EXPECT_EQ(m->IdsWithRole(PartitionRole::kCached), std::vector<std::string>{"cached"});
  EXPECT_TRUE(m->IdsWithRole(PartitionRole::kFull).empty());
  EXPECT_EQ(p->other_index, 2);
  EXPECT_EQ(p->input.shape, (std::vector<int64_t>{1, 16000}));
  EXPECT_EQ(p->input.sample_rate, 16000);
  EXPECT_FLOAT_EQ(p->threshold, 0.25f);
  EXPECT_EQ(p->sha256.substr(0, 6), "abcdef");  // normalized to lowercase
  EXPECT_EQ(m->Find("nope"), nullptr);
}

void ExpectError(const std::string& text, const std::string& needle) {
  auto m = Manifest::Parse(text);
  ASSERT_FALSE(m.ok()) << "parsed: " << text;
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status().message();
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return s.replace(pos, from.size(), to);
}

TEST(Manifest, ErrorsNameTheField) {
  ExpectError("not json", "not valid JSON");
  ExpectError("[]", "JSON object");
  ExpectError(Replace(kGood, "\"schema_version\": 1", "\"schema_version\": 9"),
              "schema_version 9 is not supported");
  ExpectError(Replace(kGood, "\"threshold\": 0.25", "\"threshold\": 1.5"), "threshold");
  ExpectError(Replace(kGood, "ABCDEF", "XYZ"), "sha256");
  ExpectError(Replace(kGood, "\"role\": \"cached\"", "\"role\": \"boss\""), "role");
  ExpectError(Replace(kGood, "\"float32\"", "\"float16\""), "unknown dtype");
  ExpectError(Replace(kGood, "[1, 16000]", "[1, -3]"), "shape");
  ExpectError(Replace(kGood, "\"other_label\": \"other\"", "\"other_label\": \"zzz\""),
              "other_label");
  ExpectError(Replace(kGood, "\"bytes\": 1000", "\"bytes\": \"big\""), "bytes");
  ExpectError(Replace(kGood, "\"id\": \"cached\"", "\"id\": \"../x\""), "id");
  ExpectError(Replace(kGood, "[\"yes\", \"no\", \"other\"]", "[\"yes\", \"yes\"]"), "repeats");
}

TEST(Manifest, RolesRoundTripTheirNames) {
  for (const char* name : {"full", "cached", "partition", "generic", "staged"}) {
    auto role = ParsePartitionRole(name);
    ASSERT_TRUE(role.ok()) << name;
    EXPECT_STREQ(PartitionRoleName(*role), name);
  }
  EXPECT_EQ(ParsePartitionRole("boss").status().code(), StatusCode::kInvalidArgument);
}

TEST(PartitionInfo, ParsesOneEntryWithTheManifestsChecks) {
  auto p = PartitionInfo::Parse(R"({"id": "g", "role": "generic", "file": "g.pte",
      "labels": ["a", "b"], "input": {"dtype": "float32", "shape": [1, 4]},
      "threshold": 0.5, "bytes": 10, "sha256": ")" + std::string(64, 'a') + R"("})");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->role, PartitionRole::kGeneric);
  auto bad = PartitionInfo::Parse(R"({"id": "g", "role": "generic"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("file"), std::string::npos) << bad.status().message();
}

TEST(Manifest, LoadReportsMissingFile) {
  auto m = Manifest::Load("/nonexistent/manifest.json");
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
}

TEST(Manifest, PathOfResolvesAgainstDirectory) {
  auto m = Manifest::Parse(kGood);
  ASSERT_TRUE(m.ok());
  m->directory = "/models/kws";
  EXPECT_EQ(m->PathOf(*m->Find("cached")), "/models/kws/cached.pte");
}

TEST(InputSpec, CheckNamesTheMismatch) {
  InputSpec spec;
  spec.shape = {1, 4};
  float x[4] = {};
  EXPECT_TRUE(spec.Check({DType::kFloat32, {1, 4}, x, sizeof(x)}).ok());
  Status s = spec.Check({DType::kFloat32, {4, 1}, x, sizeof(x)});
  EXPECT_NE(s.message().find("expects 1x4"), std::string::npos) << s.message();
  s = spec.Check({DType::kInt32, {1, 4}, x, sizeof(x)});
  EXPECT_NE(s.message().find("dtype"), std::string::npos);
  s = spec.Check({DType::kFloat32, {1, 4}, x, 8});
  EXPECT_NE(s.message().find("needs 16 bytes"), std::string::npos);
}

TEST(Tensor, ParseShape) {
  EXPECT_EQ(*ParseShape("1,16000"), (std::vector<int64_t>{1, 16000}));
  EXPECT_FALSE(ParseShape("").ok());
  EXPECT_FALSE(ParseShape("1,,2").ok());
  EXPECT_FALSE(ParseShape("1,-2").ok());
  EXPECT_FALSE(ParseShape("a").ok());
  EXPECT_FALSE(ParseShape("99999999999,99999999999").ok());
}

}  // namespace
}  // namespace knowcache
