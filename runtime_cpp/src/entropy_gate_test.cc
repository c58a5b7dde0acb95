#include "knowcache/entropy_gate.h"

#include <gtest/gtest.h>

#include <cmath>

namespace knowcache {
namespace {

TEST(EntropyGate, UniformLogitsHaveEntropyOne) {
  auto d = EntropyGate::Evaluate({0.f, 0.f, 0.f, 0.f}, 0.5f, -1);
  ASSERT_TRUE(d.ok());
  EXPECT_NEAR(d->entropy, 1.0f, 1e-6);
  EXPECT_FALSE(d->accept);
  EXPECT_NEAR(d->max_prob, 0.25f, 1e-6);
  EXPECT_NEAR(d->margin, 0.0f, 1e-6);
}

TEST(EntropyGate, ConfidentAnswerIsAccepted) {
  auto d = EntropyGate::Evaluate({10.f, 0.f, 0.f}, 0.2f, -1);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->index, 0);
  EXPECT_LT(d->entropy, 0.01f);
  EXPECT_TRUE(d->accept);
  EXPECT_GT(d->margin, 0.99f);
}

TEST(EntropyGate, MatchesClosedForm) {
  std::vector<float> logits = {1.f, 2.f, 3.f};
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  double h = 0;
  for (float l : logits) {
    double p = std::exp(l) / z;
    h -= p * std::log(p);
  }
  auto d = EntropyGate::Evaluate(logits, 1.0f, -1);
  ASSERT_TRUE(d.ok());
  EXPECT_NEAR(d->entropy, h / std::log(3.0), 1e-6);
  EXPECT_NEAR(d->max_prob, std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(d->margin, (std::exp(3.0) - std::exp(2.0)) / z, 1e-6);
}

TEST(EntropyGate, ThresholdIsInclusiveBoundary) {
  auto probe = EntropyGate::Evaluate({2.f, 0.f}, 1.0f, -1);
  ASSERT_TRUE(probe.ok());
  EXPECT_TRUE(EntropyGate::Evaluate({2.f, 0.f}, probe->entropy, -1)->accept);
  EXPECT_FALSE(EntropyGate::Evaluate({2.f, 0.f}, probe->entropy - 1e-4f, -1)->accept);
}

TEST(EntropyGate, OtherAlwaysForwards) {
  auto d = EntropyGate::Evaluate({0.f, 20.f}, 1.0f, /*other_index=*/1);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->is_other);
  EXPECT_FALSE(d->accept);
}

TEST(EntropyGate, HugeLogitsAreStable) {
  auto d = EntropyGate::Evaluate({1e30f, -1e30f, 0.f}, 0.1f, -1);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->accept);
  EXPECT_FALSE(std::isnan(d->entropy));
}

TEST(EntropyGate, RejectsBadInput) {
  EXPECT_EQ(EntropyGate::Evaluate({}, 0.5f, -1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EntropyGate::Evaluate({NAN, 1.f}, 0.5f, -1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EntropyGate::Evaluate({INFINITY, 1.f}, 0.5f, -1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EntropyGate::Evaluate({1.f, 1.f}, 1.5f, -1).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace knowcache
