#include "knowcache/slot_cache.h"

#include <gtest/gtest.h>

#include <thread>

#include "test_doubles.h"

namespace knowcache {
namespace {

using testing::MakeInfo;
using testing::ScriptedModel;

std::shared_ptr<CachedModel> Model(const std::string& id, int64_t bytes = 100) {
  return std::make_shared<ScriptedModel>(MakeInfo(id, {"a", "b"}, bytes),
                                         [](const float*) { return std::vector<float>{0, 0}; });
}

std::unique_ptr<SlotCache> Cache(int slots, int64_t budget) {
  auto c = SlotCache::Create({slots, budget});
  EXPECT_TRUE(c.ok());
  return std::move(c).value();
}

TEST(SlotCache, RejectsBadConfig) {
  EXPECT_FALSE(SlotCache::Create({0, 100}).ok());
  EXPECT_FALSE(SlotCache::Create({1, 0}).ok());
}

TEST(SlotCache, EvictsLeastRecentlyUsed) {
  auto c = Cache(2, 1000);
  ASSERT_TRUE(c->Install(Model("a")).ok());
  ASSERT_TRUE(c->Install(Model("b")).ok());
  ASSERT_NE(c->Get("a"), nullptr);  // a is now most recent
  ASSERT_TRUE(c->Install(Model("c")).ok());
  EXPECT_EQ(c->Ids(), (std::vector<std::string>{"c", "a"}));
  EXPECT_FALSE(c->Contains("b"));
  auto s = c->Stats();
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.installs, 3);
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.resident_bytes, 200);
}

TEST(SlotCache, CountsMisses) {
  auto c = Cache(2, 1000);
  EXPECT_EQ(c->Get("nope"), nullptr);
  EXPECT_EQ(c->Stats().misses, 1);
  EXPECT_EQ(c->Peek("nope"), nullptr);
  EXPECT_EQ(c->Stats().misses, 1);  // Peek counts nothing
}

TEST(SlotCache, ByteBudgetEvictsSeveral) {
  auto c = Cache(4, 300);
  ASSERT_TRUE(c->Install(Model("a", 100)).ok());
  ASSERT_TRUE(c->Install(Model("b", 100)).ok());
  ASSERT_TRUE(c->Install(Model("c", 100)).ok());
  ASSERT_TRUE(c->Install(Model("big", 250)).ok());
  EXPECT_EQ(c->Ids(), (std::vector<std::string>{"big"}));
  EXPECT_EQ(c->Stats().evictions, 3);
  EXPECT_LE(c->Stats().resident_bytes, 300);
}

TEST(SlotCache, TooBigForBudgetIsRejectedWithoutEvicting) {
  auto c = Cache(2, 300);
  ASSERT_TRUE(c->Install(Model("a", 100)).ok());
  Status s = c->Install(Model("huge", 301));
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(c->Contains("a"));
}

TEST(SlotCache, PinnedIsNeverEvicted) {
  auto c = Cache(2, 1000);
  ASSERT_TRUE(c->Install(Model("pinned"), /*pinned=*/true).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c->Install(Model("p" + std::to_string(i))).ok());
    EXPECT_TRUE(c->Contains("pinned"));
  }
  EXPECT_EQ(c->Stats().slots_used, 2);
}

TEST(SlotCache, AllSlotsPinnedRejectsInstall) {
  auto c = Cache(1, 1000);
  ASSERT_TRUE(c->Install(Model("pinned"), true).ok());
  EXPECT_EQ(c->Install(Model("x")).code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(c->SetPinned("pinned", false).ok());
  EXPECT_TRUE(c->Install(Model("x")).ok());
  EXPECT_FALSE(c->Contains("pinned"));
}

TEST(SlotCache, PinnedBytesLimitTheBudget) {
  auto c = Cache(3, 300);
  ASSERT_TRUE(c->Install(Model("pinned", 200), true).ok());
  EXPECT_EQ(c->Install(Model("x", 150)).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(c->Install(Model("y", 100)).ok());
}

TEST(SlotCache, ReplacingSameIdKeepsOneEntry) {
  auto c = Cache(2, 1000);
  ASSERT_TRUE(c->Install(Model("a", 100)).ok());
  ASSERT_TRUE(c->Install(Model("b", 100)).ok());
  ASSERT_TRUE(c->Install(Model("a", 150)).ok());
  EXPECT_EQ(c->Ids(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c->Stats().resident_bytes, 250);
  EXPECT_EQ(c->Stats().evictions, 0);
}

TEST(SlotCache, RemoveAndErrors) {
  auto c = Cache(2, 1000);
  EXPECT_EQ(c->Remove("x").code(), StatusCode::kNotFound);
  EXPECT_EQ(c->SetPinned("x", true).code(), StatusCode::kNotFound);
  EXPECT_EQ(c->Install(nullptr).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(c->Install(Model("a")).ok());
  ASSERT_TRUE(c->Remove("a").ok());
  EXPECT_EQ(c->Stats().resident_bytes, 0);
}

TEST(SlotCache, EvictedModelStaysAliveForItsHolder) {
  auto c = Cache(1, 1000);
  ASSERT_TRUE(c->Install(Model("a")).ok());
  auto held = c->Get("a");
  ASSERT_TRUE(c->Install(Model("b")).ok());
  float x[4] = {0, 0, 0, 0};
  TensorView v{DType::kFloat32, {1, 4}, x, sizeof(x)};
  EXPECT_TRUE(held->Run(v).ok());
}

TEST(SlotCache, ConcurrentUseKeepsInvariants) {
  auto c = Cache(3, 350);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        std::string id = "m" + std::to_string((i * 7 + t) % 6);
        if (!c->Get(id)) (void)c->Install(Model(id, 100));
        if (i % 97 == 0) (void)c->Remove(id);
      }
    });
  }
  for (auto& th : threads) th.join();
  auto s = c->Stats();
  EXPECT_LE(s.slots_used, 3);
  EXPECT_LE(s.resident_bytes, 350);
  EXPECT_EQ(s.resident_bytes, 100 * s.slots_used);
  EXPECT_EQ(s.hits + s.misses, 8 * 2000);
  EXPECT_EQ(static_cast<int>(c->Ids().size()), s.slots_used);
}

}  // namespace
}  // namespace knowcache
