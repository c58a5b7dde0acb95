#include "knowcache/exit_gate.h"

#include <gtest/gtest.h>

#include <random>

#include "knowcache/manifest.h"

namespace knowcache {
namespace {

ExitOutput Head(std::vector<float> logits, float selector = 0.0f) {
  ExitOutput o;
  o.logits = std::move(logits);
  o.selector = selector;
  o.feature = {1.0f, 0.0f};
  return o;
}

ExitOutput Feature(std::vector<float> f) {
  ExitOutput o;
  o.logits = {0.0f, 0.0f};
  o.feature = std::move(f);
  return o;
}

TEST(ExitGate, LearnedHitsWhenSelectorProbabilityPassesThreshold) {
  auto gate = MakeExitGate(ExitGateKind::kLearned).value();
  auto sure = gate->Evaluate(0, Head({0.0f, 3.0f}, 4.0f), 0.9f).value();  // sigmoid(4) = 0.982
  EXPECT_TRUE(sure.hit);
  EXPECT_EQ(sure.index, 1);
  auto unsure = gate->Evaluate(0, Head({0.0f, 3.0f}, 1.0f), 0.9f).value();  // 0.731
  EXPECT_FALSE(unsure.hit);
}

TEST(ExitGate, ConfidenceAndEntropyFollowTheirThresholds) {
  auto conf = MakeExitGate(ExitGateKind::kConfidence).value();
  auto ent = MakeExitGate(ExitGateKind::kEntropy).value();
  ExitOutput peaked = Head({10.0f, 0.0f, 0.0f});
  ExitOutput flat = Head({0.1f, 0.0f, 0.0f});
  EXPECT_TRUE(conf->Evaluate(0, peaked, 0.9f).value().hit);
  EXPECT_FALSE(conf->Evaluate(0, flat, 0.9f).value().hit);
  EXPECT_TRUE(ent->Evaluate(0, peaked, 0.1f).value().hit);
  EXPECT_FALSE(ent->Evaluate(0, flat, 0.1f).value().hit);
  EXPECT_FALSE(ent->Evaluate(0, Head({}), 0.1f).ok());
}

TEST(ActivationCache, HitsNearAStoredEntryWithItsFinalLabel) {
  ActivationCache cache({});
  EXPECT_FALSE(cache.Evaluate(0, Feature({1, 2, 3, 4}), 0.05f).value().hit);  // empty
  cache.Observe(0, Feature({1, 2, 3, 4}), 7);
  auto near = cache.Evaluate(0, Feature({1.05f, 2, 3, 4}), 0.05f).value();
  EXPECT_TRUE(near.hit);
  EXPECT_EQ(near.index, 7);
  auto far = cache.Evaluate(0, Feature({4, 3, 2, 1}), 0.05f).value();
  EXPECT_FALSE(far.hit);
  EXPECT_GT(far.score, 0.05f);
  // Entries are per exit.
  EXPECT_FALSE(cache.Evaluate(1, Feature({1, 2, 3, 4}), 0.05f).value().hit);
}

TEST(ActivationCache, StaysWithinItsMemoryBoundAndEvictsLeastRecentlyUsed) {
  ActivationCacheConfig config;
  config.max_entries_per_exit = 1000;
  config.max_bytes = 20 * ActivationCache::EntryBytes(64);
  ActivationCache cache(config);
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> keep(64);
  for (auto& v : keep) v = normal(rng);
  cache.Observe(0, Feature(keep), 3);
  for (int i = 0; i < 500; ++i) {
    std::vector<float> f(64);
    for (auto& v : f) v = normal(rng);
    cache.Observe(i % 3, Feature(f), i % 10);
    if (i % 5 == 0) EXPECT_TRUE(cache.Evaluate(0, Feature(keep), 0.01f).value().hit) << i;
    ASSERT_LE(cache.Stats().memory_bytes, config.max_bytes);
  }
  auto stats = cache.Stats();
  EXPECT_EQ(stats.entries, 20);
  EXPECT_GT(stats.evictions, 400);
  // `keep` was used every few inserts, so LRU kept it.
  EXPECT_TRUE(cache.Evaluate(0, Feature(keep), 0.01f).value().hit);
}

TEST(ActivationCache, BoundsEntriesPerExit) {
  ActivationCacheConfig config;
  config.max_entries_per_exit = 4;
  ActivationCache cache(config);
  for (int i = 0; i < 10; ++i) cache.Observe(0, Feature({float(i), 1.0f}), i);
  EXPECT_EQ(cache.Stats().entries, 4);
  ActivationCacheConfig none;
  none.max_entries_per_exit = 0;
  EXPECT_FALSE(none.Validate().ok());
}

TEST(ExitGate, ParsesKindsAndRejectsUnknownOnes) {
  EXPECT_EQ(ParseExitGateKind("activation").value(), ExitGateKind::kActivation);
  auto bad = ParseExitGateKind("oracle");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("learned"), std::string::npos);
}

constexpr const char* kStaged = R"({"schema_version": 1, "task": "vision", "labels": ["a", "b"],
  "partitions": [{"id": "staged", "role": "staged", "file": "staged.pte", "labels": ["a", "b"],
    "input": {"dtype": "float32", "shape": [1, 4]}, "threshold": 1.0, "bytes": 10,
    "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
    "staged": {"stages": [{"method": "stage_0", "flops": 100}, {"method": "stage_1", "flops": 50}],
               "head": {"method": "head", "flops": 2},
               "exits": [{"method": "exit_0", "after_stage": 0, "flops": 3, "feature_dim": 8,
                          "thresholds": {"learned": 0.9, "activation": null}}]}}]})";

TEST(StagedManifest, ParsesStagesExitsAndThresholds) {
  auto m = Manifest::Parse(kStaged).value();
  const auto& st = m.partitions[0].staged;
  ASSERT_EQ(st.stages.size(), 2u);
  EXPECT_EQ(st.total_flops, 152);
  ASSERT_EQ(st.exits.size(), 1u);
  EXPECT_FLOAT_EQ(st.exits[0].thresholds.at("learned"), 0.9f);
  EXPECT_EQ(st.exits[0].thresholds.count("activation"), 0u);  // null: never hits
}

TEST(StagedManifest, RejectsAnExitAfterTheLastStage) {
  std::string text = kStaged;
  text.replace(text.find("\"after_stage\": 0"), 16, "\"after_stage\": 1");
  auto m = Manifest::Parse(text);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("after_stage"), std::string::npos);
}

}  // namespace
}  // namespace knowcache
