#include "knowcache/layer_cache.h"

#include <gtest/gtest.h>

#include <vector>

#include "test_doubles.h"

namespace knowcache {
namespace {

// Two stages over 4 features (labels a..d). stage_0: activation = input / 10.
// stage_1 reads the model input too: activation + input. exit_0 (after
// stage 0): its logits are the activation. The head answers the activation
// as logits. Records what stage_1 was given.
class InputReadingStagedModel : public StagedModel {
 public:
  // The scripted staged model's layout (labels a..d, input [1, 4], one
  // confidence exit after stage 0) with a costlier second stage.
  static PartitionInfo Info() {
    PartitionInfo p = testing::ScriptedStagedModel::Info();
    p.staged.stages[1].flops = 100;
    p.staged.total_flops = 115;
    return p;
  }

  const PartitionInfo& info() const override { return info_; }
  int64_t resident_bytes() const override { return info_.bytes; }
  bool StageReadsInput(int stage) const override { return stage == 1; }

  StatusOr<Activation> RunFirstStage(const TensorView& input) override {
    KC_RETURN_IF_ERROR(info_.input.Check(input));
    const float* x = static_cast<const float*>(input.data);
    Activation a{{1, 4}, {}};
    for (int i = 0; i < 4; ++i) a.data.push_back(x[i] / 10.0f);
    return a;
  }
  StatusOr<Activation> RunStage(int stage, const Activation& in, const TensorView& input) override {
    if (stage == 0) return RunFirstStage(input);
    ++second_stage_runs;
    KC_RETURN_IF_ERROR(info_.input.Check(input));  // an empty view fails here
    const float* x = static_cast<const float*>(input.data);
    seen_input.assign(x, x + 4);
    Activation a = in;
    for (int i = 0; i < 4; ++i) a.data[i] += x[i];
    return a;
  }
  StatusOr<ExitOutput> RunExit(int, const Activation& in) override {
    return ExitOutput{in.data, 0.0f, in.data};
  }
  StatusOr<std::vector<float>> RunHead(const Activation& in) override { return in.data; }

  std::vector<float> seen_input;
  int second_stage_runs = 0;

 private:
  PartitionInfo info_ = Info();
};

TensorView View(const std::vector<float>& x) {
  TensorView v;
  v.shape = {1, static_cast<int64_t>(x.size())};
  v.data = x.data();
  v.nbytes = x.size() * sizeof(float);
  return v;
}

LayerCacheConfig Confidence() {
  LayerCacheConfig c;
  c.gate = "confidence";
  return c;
}

TEST(LayerCache, StageThatReadsTheInputGetsTheModelInputNotTheActivation) {
  auto model = std::make_shared<InputReadingStagedModel>();
  auto cache = LayerCache::Create(model, Confidence()).value();
  // exit_0 sees [0.1, 0, 0, 0.2]: far from confident, so stage_1 runs; it
  // adds the input, and the head answers [1.1, 0, 0, 2.2] -> "d".
  const std::vector<float> x = {1.0f, 0.0f, 0.0f, 2.0f};
  auto r = cache->Run(View(x));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->exit, -1);
  EXPECT_EQ(r->index, 3);
  EXPECT_EQ(model->seen_input, x);
  EXPECT_EQ(r->flops, 10 + 1 + 100 + 5);
}

TEST(LayerCache, AnExitHitStopsBeforeTheStageThatReadsTheInput) {
  auto model = std::make_shared<InputReadingStagedModel>();
  auto cache = LayerCache::Create(model, Confidence()).value();
  // exit_0 sees [0, 0, 100, 0]: confident "c", so stage_1 never runs.
  auto r = cache->Run(View({0.0f, 0.0f, 1000.0f, 0.0f}));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->exit, 0);
  EXPECT_EQ(r->index, 2);
  EXPECT_EQ(model->second_stage_runs, 0);
  EXPECT_EQ(r->flops, 10 + 1);
  EXPECT_EQ(cache->Stats().exit_hits, std::vector<int64_t>({1}));
}

TEST(LayerCache, AGateWithoutThresholdsRunsNoExitAndTheWholeModel) {
  auto model = std::make_shared<InputReadingStagedModel>();
  LayerCacheConfig c;
  c.gate = "entropy";  // the manifest has no entropy threshold
  auto cache = LayerCache::Create(model, c).value();
  auto r = cache->Run(View({0.0f, 0.0f, 1000.0f, 0.0f}));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->exit, -1);
  EXPECT_EQ(r->flops, 10 + 100 + 5);
  EXPECT_EQ(model->second_stage_runs, 1);
}

TEST(LayerCache, BadInputIsRefusedBeforeAnyStageRuns) {
  auto model = std::make_shared<InputReadingStagedModel>();
  auto cache = LayerCache::Create(model, Confidence()).value();
  const std::vector<float> three = {1.0f, 2.0f, 3.0f};
  auto r = cache->Run(View(three));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(model->second_stage_runs, 0);
  EXPECT_EQ(cache->Stats().queries, 0);
}

}  // namespace
}  // namespace knowcache
