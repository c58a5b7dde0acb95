#include "knowcache/manifest.h"

#include <gtest/gtest.h>

#include <limits>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <ostream>

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

// A manifest with every field the parser reads, a cached partition and a
// staged one (three stages, exits after stages 0 and 1). Each rejection below
// breaks one field of it.
nlohmann::json Valid() {
  const std::string sha(64, 'a');
  const nlohmann::json input = {{"dtype", "float32"}, {"shape", {1, 4}},
                                {"sample_rate", 16000}, {"image_size", {1, 2, 2}},
                                {"value_range", {0, 255}}};
  return {
      {"schema_version", 1}, {"task", "kws"}, {"version", 2}, {"labels", {"a", "b", "c"}},
      {"private_labels", {"c"}},
      {"partitions",
       {{{"id", "cached"}, {"version", 3}, {"role", "cached"}, {"file", "cached.pte"},
         {"labels", {"a", "b", "other"}}, {"other_label", "other"}, {"input", input},
         {"threshold", 0.25}, {"bytes", 1000}, {"sha256", sha}},
        {{"id", "staged"}, {"role", "staged"}, {"file", "staged.pte"},
         {"labels", {"a", "b", "c"}}, {"input", input}, {"threshold", 1.0}, {"bytes", 2000},
         {"sha256", sha},
         {"staged",
          {{"stages",
            {{{"method", "stage_0"}, {"flops", 10}, {"us", 1.5}},
             {{"method", "stage_1"}, {"flops", 20}},
             {{"method", "stage_2"}, {"flops", 30}}}},
           {"head", {{"method", "head"}, {"flops", 5}}},
           {"exits",
            {{{"method", "exit_0"}, {"flops", 1}, {"after_stage", 0}, {"feature_dim", 8},
              {"classes", 3}, {"thresholds", {{"confidence", 0.9}, {"entropy", nullptr}}}},
             {{"method", "exit_1"}, {"flops", 2}, {"after_stage", 1}, {"feature_dim", 16},
              {"thresholds", {{"learned", 0.5}}}}}}}}}}}};
}

// `doc` with the value at JSON pointer `at` replaced (or removed when absent).
std::string Edited(const std::string& at, const std::optional<nlohmann::json>& value) {
  nlohmann::json doc = Valid();
  const nlohmann::json::json_pointer ptr(at);
  if (value) {
    doc[ptr] = *value;
  } else {
    doc[ptr.parent_pointer()].erase(ptr.back());
  }
  return doc.dump();
}

// JSON paths in messages, and the staged entry's pointer.
const std::string P = "manifest.partitions[0](cached)";
const std::string SP = "manifest.partitions[1](staged).staged";
const std::string S = "/partitions/1/staged";
const std::nullopt_t kRemoved = std::nullopt;

TEST(Manifest, TheValidManifestParses) {
  auto m = Manifest::Parse(Valid().dump());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const StagedInfo& st = m->Find("staged")->staged;
  ASSERT_EQ(st.stages.size(), 3u);
  EXPECT_EQ(st.stages[0].method, "stage_0");
  EXPECT_DOUBLE_EQ(st.stages[0].us, 1.5);
  EXPECT_EQ(st.stages[2].flops, 30);
  EXPECT_EQ(st.head.method, "head");
  ASSERT_EQ(st.exits.size(), 2u);
  EXPECT_EQ(st.exits[1].after_stage, 1);
  EXPECT_EQ(st.exits[1].feature_dim, 16);
  EXPECT_EQ(st.exits[1].classes, 3);  // absent: the partition's label count
  EXPECT_EQ(st.exits[0].thresholds, (std::map<std::string, double>{{"confidence", 0.9}}));
  EXPECT_EQ(st.total_flops, 10 + 20 + 30 + 5);  // absent: the stages and the head
  const InputSpec& in = m->Find("cached")->input;
  EXPECT_EQ((std::vector<int>{in.image_channels, in.image_height, in.image_width}),
            (std::vector<int>{1, 2, 2}));
  EXPECT_TRUE(in.has_value_range());
  EXPECT_DOUBLE_EQ(in.value_low, 0.0);
  EXPECT_DOUBLE_EQ(in.value_high, 255.0);
  EXPECT_FALSE(Manifest::Parse(kGood)->Find("cached")->input.has_value_range());  // optional
  EXPECT_EQ(m->Find("staged")->input.sample_rate, 16000);
  EXPECT_EQ(m->private_labels, std::vector<std::string>{"c"});
  EXPECT_TRUE(m->IsPrivate("c"));
  EXPECT_FALSE(m->IsPrivate("a"));
  EXPECT_FALSE(m->IsPrivate("other"));
}

TEST(Manifest, PrivateLabelsAreOptional) {
  auto m = Manifest::Parse(kGood);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->private_labels.empty());
  auto empty = Manifest::Parse(Edited("/private_labels", nlohmann::json::array()));
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->private_labels.empty());
}

TEST(Manifest, AcceptsTheEndsOfEveryRange) {
  for (const auto& [at, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"/partitions/0/threshold", 0.0},
           {"/partitions/0/threshold", 1.0},
           {"/partitions/0/bytes", 1},
           {"/partitions/0/labels", {"a", "other"}},
           {S + "/stages/1/flops", 0},
           {S + "/stages/0/us", 0.0},
           {S + "/exits/0/thresholds/confidence", 0.0},
           {S + "/exits/0/thresholds/confidence", 1.0},
           {S + "/exits/0/feature_dim", 1},
           {S + "/exits", nlohmann::json::array()},
           {S + "/total_flops", 7}}) {
    auto m = Manifest::Parse(Edited(at, value));
    EXPECT_TRUE(m.ok()) << at << " = " << value.dump() << ": " << m.status().ToString();
  }
  EXPECT_EQ(Manifest::Parse(Edited(S + "/total_flops", 7))->Find("staged")->staged.total_flops, 7);
}

// One rejection: the field a test breaks and the start of the message that
// must name it (its JSON path).
struct Rejection {
  const char* name;
  std::string at;                       // JSON pointer into Valid()
  std::optional<nlohmann::json> value;  // std::nullopt: the field is removed
  std::string message;
};

void PrintTo(const Rejection& r, std::ostream* os) { *os << r.name; }

class ManifestRejects : public ::testing::TestWithParam<Rejection> {};

TEST_P(ManifestRejects, NamingTheField) {
  const Rejection& r = GetParam();
  auto m = Manifest::Parse(Edited(r.at, r.value));
  ASSERT_FALSE(m.ok()) << r.at << " = " << (r.value ? r.value->dump() : "(removed)");
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find(r.message), std::string::npos)
      << "expected '" << r.message << "' in: " << m.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Manifest, ManifestRejects,
    ::testing::Values(
        Rejection{"SchemaVersionMissing", "/schema_version", kRemoved,
                  "manifest.schema_version is missing"},
        Rejection{"SchemaVersionNotInteger", "/schema_version", "1",
                  "manifest.schema_version must be an integer"},
        Rejection{"SchemaVersionUnsupported", "/schema_version", 9,
                  "manifest schema_version 9 is not supported"},
        Rejection{"TaskMissing", "/task", kRemoved, "manifest.task is missing"},
        Rejection{"TaskNotString", "/task", 5, "manifest.task must be a string"},
        Rejection{"VersionNotInteger", "/version", "2", "manifest.version must be an integer"},
        Rejection{"LabelsNotList", "/labels", "abc", "manifest.labels must be a list of strings"},
        Rejection{"LabelsEmptyString", "/labels", nlohmann::json{"a", ""},
                  "manifest.labels must hold non-empty strings"},
        Rejection{"LabelsRepeat", "/labels", nlohmann::json{"a", "b", "a"},
                  "manifest.labels repeats 'a'"},
        Rejection{"PrivateLabelsNotList", "/private_labels", "c",
                  "manifest.private_labels must be a list of strings"},
        Rejection{"PrivateLabelsNotStrings", "/private_labels", nlohmann::json{1},
                  "manifest.private_labels must hold non-empty strings"},
        Rejection{"PrivateLabelsRepeat", "/private_labels", nlohmann::json{"c", "c"},
                  "manifest.private_labels repeats 'c'"},
        Rejection{"PrivateLabelNotATaskLabel", "/private_labels", nlohmann::json{"zzz"},
                  "manifest.private_labels names 'zzz', which is not in manifest.labels"},
        Rejection{"PrivateLabelsWithoutTaskLabels", "/labels", kRemoved,
                  "manifest.private_labels names 'c', which is not in manifest.labels"},
        Rejection{"PartitionsMissing", "/partitions", kRemoved,
                  "manifest.partitions must be a list"},
        Rejection{"PartitionsNotList", "/partitions", nlohmann::json::object(),
                  "manifest.partitions must be a list"},
        Rejection{"ValueRangeNotPair", "/partitions/0/input/value_range", nlohmann::json{0},
                  P + ".input.value_range must be [low, high]"},
        Rejection{"ValueRangeReversed", "/partitions/0/input/value_range",
                  nlohmann::json{1, 0}, P + ".input.value_range must be"},
        Rejection{"ValueRangeNotNumbers", "/partitions/0/input/value_range",
                  nlohmann::json{"0", "1"}, P + ".input.value_range must be"},
        Rejection{"PartitionIdRepeated", "/partitions/1/id", "cached",
                  "manifest repeats partition id 'cached'"},
        Rejection{"PartitionNotObject", "/partitions/0", 5,
                  "manifest.partitions[0] must be an object"},
        Rejection{"IdMissing", "/partitions/0/id", kRemoved, "manifest.partitions[0].id is missing"},
        Rejection{"IdEmpty", "/partitions/0/id", "", "manifest.partitions[0].id must be non-empty"},
        Rejection{"IdWithSlash", "/partitions/0/id", "../x",
                  "manifest.partitions[0].id must be non-empty without '/'"},
        Rejection{"PartitionVersionNotInteger", "/partitions/0/version", "3",
                  P + ".version must be an integer"},
        Rejection{"RoleMissing", "/partitions/0/role", kRemoved, P + ".role is missing"},
        Rejection{"RoleUnknown", "/partitions/0/role", "boss", P + ".role is 'boss'"},
        Rejection{"FileMissing", "/partitions/0/file", kRemoved, P + ".file is missing"},
        Rejection{"PartitionLabelsMissing", "/partitions/0/labels", kRemoved,
                  P + ".labels is missing"},
        Rejection{"PartitionLabelsNotStrings", "/partitions/0/labels", nlohmann::json{1, 2},
                  P + ".labels must hold non-empty strings"},
        Rejection{"PartitionLabelsOne", "/partitions/0/labels", nlohmann::json{"other"},
                  P + ".labels needs at least 2 labels"},
        Rejection{"PartitionLabelsNone", "/partitions/0/labels", nlohmann::json::array(),
                  P + ".labels needs at least 2 labels"},
        Rejection{"OtherLabelNotALabel", "/partitions/0/other_label", "zzz",
                  P + ".other_label 'zzz' is not in its labels"},
        Rejection{"InputMissing", "/partitions/0/input", kRemoved, P + ".input is missing"},
        Rejection{"InputNotObject", "/partitions/0/input", "x", P + ".input must be an object"},
        Rejection{"InputDtypeMissing", "/partitions/0/input/dtype", kRemoved,
                  P + ".input.dtype is missing"},
        Rejection{"InputDtypeNotString", "/partitions/0/input/dtype", 3,
                  P + ".input.dtype must be a string"},
        Rejection{"InputDtypeUnknown", "/partitions/0/input/dtype", "float16",
                  P + ".input.dtype: unknown dtype 'float16'"},
        Rejection{"InputShapeMissing", "/partitions/0/input/shape", kRemoved,
                  P + ".input.shape must be a non-empty list of positive integers"},
        Rejection{"InputShapeEmpty", "/partitions/0/input/shape", nlohmann::json::array(),
                  P + ".input.shape must be a non-empty list of positive integers"},
        Rejection{"InputShapeZero", "/partitions/0/input/shape", nlohmann::json{1, 0},
                  P + ".input.shape must be a non-empty list of positive integers"},
        Rejection{"InputShapeNotInteger", "/partitions/0/input/shape", nlohmann::json{1, "4"},
                  P + ".input.shape must be a non-empty list of positive integers"},
        Rejection{"InputSampleRateNotInteger", "/partitions/0/input/sample_rate", "16k",
                  P + ".input.sample_rate must be an integer"},
        Rejection{"InputImageSizeTwoDims", "/partitions/0/input/image_size", nlohmann::json{2, 2},
                  P + ".input.image_size must be [channels, height, width]"},
        Rejection{"InputImageSizeZero", "/partitions/0/input/image_size",
                  nlohmann::json{1, 0, 2}, P + ".input.image_size must be [channels, height, width]"},
        Rejection{"ThresholdMissing", "/partitions/0/threshold", kRemoved,
                  P + ".threshold must be a number in [0, 1]"},
        Rejection{"ThresholdNotNumber", "/partitions/0/threshold", "0.5",
                  P + ".threshold must be a number in [0, 1]"},
        Rejection{"ThresholdAboveOne", "/partitions/0/threshold", 1.5,
                  P + ".threshold must be in [0, 1]"},
        Rejection{"ThresholdBelowZero", "/partitions/0/threshold", -0.1,
                  P + ".threshold must be in [0, 1]"},
        Rejection{"BytesMissing", "/partitions/0/bytes", kRemoved, P + ".bytes is missing"},
        Rejection{"BytesNotInteger", "/partitions/0/bytes", "big", P + ".bytes must be an integer"},
        Rejection{"BytesZero", "/partitions/0/bytes", 0, P + ".bytes must be positive"},
        Rejection{"BytesNegative", "/partitions/0/bytes", -5, P + ".bytes must be positive"},
        Rejection{"Sha256Missing", "/partitions/0/sha256", kRemoved, P + ".sha256 is missing"},
        Rejection{"Sha256NotHex", "/partitions/0/sha256", std::string(64, 'z'),
                  P + ".sha256 must be 64 hex digits"},
        Rejection{"Sha256Short", "/partitions/0/sha256", std::string(63, 'a'),
                  P + ".sha256 must be 64 hex digits"},
        Rejection{"StagedMissing", S, kRemoved,
                  "manifest.partitions[1](staged).staged is missing (role staged)"},
        Rejection{"StagedNotObject", S, nlohmann::json::array(), SP + " must be an object"},
        Rejection{"StagesMissing", S + "/stages", kRemoved,
                  SP + ".stages must be a non-empty list"},
        Rejection{"StagesEmpty", S + "/stages", nlohmann::json::array(),
                  SP + ".stages must be a non-empty list"},
        Rejection{"StageNotObject", S + "/stages/0", 5, SP + ".stages[0] must be an object"},
        Rejection{"StageMethodMissing", S + "/stages/1/method", kRemoved,
                  SP + ".stages[1].method is missing"},
        Rejection{"StageMethodEmpty", S + "/stages/1/method", "",
                  SP + ".stages[1].method must not be empty"},
        Rejection{"StageFlopsMissing", S + "/stages/1/flops", kRemoved,
                  SP + ".stages[1].flops is missing"},
        Rejection{"StageFlopsNotInteger", S + "/stages/1/flops", 1.5,
                  SP + ".stages[1].flops must be an integer"},
        Rejection{"StageFlopsNegative", S + "/stages/1/flops", -1,
                  SP + ".stages[1].flops must be >= 0"},
        Rejection{"StageMicrosNegative", S + "/stages/0/us", -1.0,
                  SP + ".stages[0].us must be a number >= 0"},
        Rejection{"StageMicrosNotNumber", S + "/stages/0/us", "fast",
                  SP + ".stages[0].us must be a number >= 0"},
        Rejection{"HeadMissing", S + "/head", kRemoved, SP + ".head is missing"},
        Rejection{"HeadFlopsNegative", S + "/head/flops", -1, SP + ".head.flops must be >= 0"},
        Rejection{"ExitsMissing", S + "/exits", kRemoved, SP + ".exits must be a list"},
        Rejection{"ExitFlopsNegative", S + "/exits/0/flops", -1,
                  SP + ".exits[0].flops must be >= 0"},
        Rejection{"ExitAfterStageMissing", S + "/exits/1/after_stage", kRemoved,
                  SP + ".exits[1].after_stage is missing"},
        Rejection{"ExitAfterStageNegative", S + "/exits/0/after_stage", -1,
                  SP + ".exits[0].after_stage must name a stage before the last"},
        Rejection{"ExitAfterTheLastStage", S + "/exits/1/after_stage", 2,
                  SP + ".exits[1].after_stage must name a stage before the last"},
        Rejection{"ExitAfterStageRepeated", S + "/exits/1/after_stage", 0,
                  SP + ".exits[1].after_stage must increase from exit to exit"},
        Rejection{"ExitFeatureDimMissing", S + "/exits/0/feature_dim", kRemoved,
                  SP + ".exits[0].feature_dim is missing"},
        Rejection{"ExitFeatureDimZero", S + "/exits/0/feature_dim", 0,
                  SP + ".exits[0].feature_dim must be positive"},
        Rejection{"ExitClassesNotTheLabels", S + "/exits/0/classes", 4,
                  SP + ".exits[0].classes must equal the number of labels"},
        Rejection{"ExitClassesNotInteger", S + "/exits/0/classes", "3",
                  SP + ".exits[0].classes must be an integer"},
        Rejection{"ExitThresholdsMissing", S + "/exits/0/thresholds", kRemoved,
                  SP + ".exits[0].thresholds must be an object"},
        Rejection{"ExitThresholdAboveOne", S + "/exits/0/thresholds/confidence", 1.5,
                  SP + ".exits[0].thresholds.confidence must be null or in [0, 1]"},
        Rejection{"ExitThresholdBelowZero", S + "/exits/0/thresholds/confidence", -0.5,
                  SP + ".exits[0].thresholds.confidence must be null or in [0, 1]"},
        Rejection{"ExitThresholdNotNumber", S + "/exits/0/thresholds/confidence", "high",
                  SP + ".exits[0].thresholds.confidence must be null or in [0, 1]"}),
    [](const ::testing::TestParamInfo<Rejection>& info) { return info.param.name; });

TEST(Manifest, RejectsWhatIsNotAJsonObject) {
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"not json", "manifest is not valid JSON"}, {"[]", "manifest must be a JSON object"}}) {
    auto m = Manifest::Parse(text);
    ASSERT_FALSE(m.ok()) << text;
    EXPECT_EQ(m.status().message(), message);
  }
  EXPECT_EQ(PartitionInfo::Parse("{").status().message(), "partition entry is not valid JSON");
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

TEST(InputSpec, CheckRefusesValuesOutsideTheValueRange) {
  InputSpec spec;
  spec.shape = {1, 4};
  spec.value_high = 1.0;
  float x[4] = {0.0f, 0.5f, 1.0f, 0.25f};
  EXPECT_TRUE(spec.Check({DType::kFloat32, {1, 4}, x, sizeof(x)}).ok());
  x[2] = 255.0f;  // pixels not scaled
  Status s = spec.Check({DType::kFloat32, {1, 4}, x, sizeof(x)});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("input element 2 is 255, outside the model's value_range [0, 1]"),
            std::string::npos) << s.message();
  x[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(spec.Check({DType::kFloat32, {1, 4}, x, sizeof(x)}).ok());
  spec.value_high = 0.0;  // unstated: any value
  x[2] = 255.0f;
  EXPECT_TRUE(spec.Check({DType::kFloat32, {1, 4}, x, sizeof(x)}).ok());
}

TEST(Tensor, ParseShape) {
  EXPECT_EQ(*ParseShape("1,16000"), (std::vector<int64_t>{1, 16000}));
  EXPECT_FALSE(ParseShape("").ok());
  EXPECT_FALSE(ParseShape("1,,2").ok());
  EXPECT_FALSE(ParseShape("1,-2").ok());
  EXPECT_FALSE(ParseShape("a").ok());
  EXPECT_FALSE(ParseShape("99999999999,99999999999").ok());
  // A product past int64 is refused, not computed (UBSan: session_fuzzer's finding).
  EXPECT_NE(ParseShape("1099511627776,9223372036854775807").status().message().find(
                "is too large"), std::string::npos);
}

TEST(Tensor, AShapeWhoseElementsOverflowIsRefused) {
  EXPECT_EQ(NumElements({4294967296, 4294967296, 4294967296}),
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  const float x[4] = {};
  Status s = TensorView{DType::kFloat32, {4294967296, 4294967296}, x, sizeof(x)}.Validate();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("has too many elements"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace knowcache
