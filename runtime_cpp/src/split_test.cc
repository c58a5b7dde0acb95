// Split computing's pieces (split.h): the int8 activation codec, the cut
// point check against stages that read the model input, and RunToCut.
#include "knowcache/split.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_doubles.h"

namespace knowcache {
namespace {

using testing::ScriptedStagedModel;

TEST(ActivationCodec, QuantizesPerTensorSymmetricallyWithinHalfAStep) {
  const Activation a{{1, 2, 3}, {0.5f, -1.27f, 0.01f, 1.0f, -0.2f, 0.0f}};
  const QuantizedActivation q = QuantizeActivation(a);
  EXPECT_EQ(q.shape, a.shape);
  EXPECT_FLOAT_EQ(q.scale, 1.27f / 127.0f);
  EXPECT_EQ(q.data[1], -127);                     // the peak maps to the end of the range
  EXPECT_EQ(q.data[0], 50);
  EXPECT_EQ(q.data[5], 0);
  auto back = DequantizeActivation(q);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  for (size_t i = 0; i < a.data.size(); ++i) {
    EXPECT_NEAR(back->data[i], a.data[i], q.scale / 2 + 1e-7) << i;
  }
  EXPECT_EQ(q.view().nbytes, 6u);
  EXPECT_EQ(q.view().dtype, DType::kInt8);
}

TEST(ActivationCodec, AnAllZeroActivationGetsAUsableScale) {
  const QuantizedActivation q = QuantizeActivation({{1, 3}, {0.f, 0.f, 0.f}});
  EXPECT_EQ(q.scale, 1.0f);
  EXPECT_EQ(q.data, (std::vector<int8_t>{0, 0, 0}));
}

TEST(ActivationCodec, DequantizeRefusesABadScaleOrAShapeTheDataDoesNotFill) {
  QuantizedActivation q{{1, 2}, 0.0f, {1, 2}};
  EXPECT_NE(DequantizeActivation(q).status().message().find("scale must be > 0 and finite"),
            std::string::npos);
  q.scale = std::numeric_limits<float>::infinity();
  EXPECT_EQ(DequantizeActivation(q).status().code(), StatusCode::kInvalidArgument);
  q.scale = 0.5f;
  q.shape = {1, 3};
  EXPECT_NE(DequantizeActivation(q).status().message().find("needs 3 bytes, got 2"),
            std::string::npos);
}

TEST(CutPoint, MustLieInTheStagesAndAfterEveryStageThatReadsTheInput) {
  ScriptedStagedModel model;   // stages 0 and 1
  EXPECT_TRUE(CheckCutPoint(model, 1).ok());
  EXPECT_TRUE(CheckCutPoint(model, 2).ok());    // the cloud runs only the head
  for (int cut : {0, 3}) {
    Status s = CheckCutPoint(model, cut);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(s.message().find("a cut stage must be in 1..2"), std::string::npos) << s.message();
  }
  model.reads_input = {1};
  Status s = CheckCutPoint(model, 1);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("stage 1 reads the raw model input, so the cloud would need the "
                             "raw input; cut at stage 2 or later"), std::string::npos)
      << s.message();
  EXPECT_TRUE(CheckCutPoint(model, 2).ok());
}

TEST(RunToCut, RunsTheStagesBeforeTheCutAndQuantizes) {
  ScriptedStagedModel model;
  model.stage_width = 6;
  const float x[4] = {2.f, -4.f, 1.f, 0.f};
  const TensorView input{DType::kFloat32, {1, 4}, x, sizeof(x)};
  auto one = RunToCut(model, 1, input);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->shape, (std::vector<int64_t>{1, 4}));   // stage 0's output
  EXPECT_EQ(model.stage_runs, 1);                        // stage 0 only
  auto two = RunToCut(model, 2, input);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->shape, (std::vector<int64_t>{1, 6}));   // stage 1's output
  EXPECT_EQ(two->data, (std::vector<int8_t>{64, -127, 32, 0, 64, -127}));
  EXPECT_EQ(model.stage_runs, 3);
  model.reads_input = {1};
  EXPECT_EQ(RunToCut(model, 1, input).status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace knowcache
