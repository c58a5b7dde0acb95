// The engine's decision logic against scripted models and a scripted cloud.
// End-to-end behaviour with real .pte files and HTTP is tested from Python.
#include "knowcache/engine.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "knowcache/sha256.h"

#include "test_doubles.h"
#include "test_signing.h"

namespace knowcache {
namespace {

using testing::MakeInfo;
using testing::ScriptedCloud;
using testing::ScriptedModel;
using testing::ScriptedStagedModel;

// Model whose logits are the input itself: tests choose confidence by input.
std::shared_ptr<ScriptedModel> Echo(const std::string& id, std::vector<std::string> labels,
                                    int other_index = -1, float threshold = 0.5f) {
  return std::make_shared<ScriptedModel>(
      MakeInfo(id, std::move(labels), 100, threshold, other_index),
      [](const float* x) { return std::vector<float>(x, x + 4); });
}

// Model that is never sure: equal logits whatever the input.
std::shared_ptr<ScriptedModel> Unsure(const std::string& id, std::vector<std::string> labels) {
  return std::make_shared<ScriptedModel>(
      MakeInfo(id, std::move(labels)), [](const float*) { return std::vector<float>(4, 0.f); });
}

// A cloud whose manifest (of `task`) serves p1, 64 bytes, and whose answers hint at it.
std::shared_ptr<ScriptedCloud> CloudHintingP1(const std::string& task = "kws") {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->manifest.task = task;
  cloud->Serve(MakeInfo("p1", {"e", "f", "g", "h"}), std::vector<uint8_t>(64, 7));
  cloud->answer.partition_hint = "p1";
  return cloud;
}

struct Input {
  float data[4];
  TensorView view() const { return {DType::kFloat32, {1, 4}, data, sizeof(data)}; }
};
const Input kConfidentA{{20.f, 0.f, 0.f, 0.f}};
const Input kUnsure{{0.f, 0.f, 0.f, 0.f}};
const Input kOther{{0.f, 0.f, 0.f, 20.f}};

std::unique_ptr<Engine> MakeEngine(std::shared_ptr<CloudBackend> cloud, int slots = 2,
                                   ModelFactory factory = nullptr) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.cache.num_slots = slots;
  auto e = Engine::Create(cfg, std::move(cloud), std::move(factory));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

ModelFactory EchoFactory() {
  return [](const PartitionInfo& info, std::shared_ptr<const std::vector<uint8_t>>)
             -> StatusOr<std::shared_ptr<CachedModel>> {
    return std::shared_ptr<CachedModel>(std::make_shared<ScriptedModel>(
        info, [](const float* x) { return std::vector<float>(x, x + 4); }));
  };
}

TEST(Engine, ConfigValidation) {
  EngineConfig cfg;
  EXPECT_FALSE(Engine::Create(cfg).ok());  // no task
  cfg.task = "kws";
  cfg.cloud.base_url = "ftp://x";
  EXPECT_EQ(Engine::Create(cfg).status().code(), StatusCode::kInvalidArgument);
  cfg.cloud.base_url.clear();
  EXPECT_TRUE(Engine::Create(cfg).ok());
  cfg.max_local_attempts = 0;
  EXPECT_NE(Engine::Create(cfg).status().message().find("max_local_attempts"), std::string::npos);
  cfg.max_local_attempts = 1;
  cfg.threshold_override = 1.5f;
  EXPECT_NE(Engine::Create(cfg).status().message().find("threshold_override"), std::string::npos);
  cfg.threshold_override = 1.0f;
  EXPECT_TRUE(Engine::Create(cfg).ok());
  // A manifest of another task is refused.
  Manifest vision;
  vision.task = "vision";
  Status s = (*Engine::Create(cfg))->SetManifest(vision);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("task 'vision'"), std::string::npos) << s.message();
}

TEST(Engine, AcceptsConfidentLocalAnswerWithoutCloud) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, AnswerSource::kLocal);
  EXPECT_EQ(r->label, "a");
  EXPECT_EQ(r->partition_id, "p0");
  EXPECT_EQ(cloud->infers, 0);
  EXPECT_EQ(engine->Stats().local, 1);
}

TEST(Engine, UnsureAnswerGoesToCloudAndFetchesHint) {
  auto cloud = CloudHintingP1();
  cloud->answer.label = "f";
  cloud->answer.index = 5;
  cloud->answer.confidence = 0.9f;
  auto engine = MakeEngine(cloud, 2, EchoFactory());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());

  auto r = engine->Infer(kUnsure.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kCloud);
  EXPECT_EQ(r->label, "f");
  EXPECT_EQ(r->index, 5);
  EXPECT_EQ(r->partition_hint, "p1");
  EXPECT_EQ(r->uplink_bytes, 16);
  EXPECT_EQ(engine->Stats().uplink_bytes, 16);
  EXPECT_EQ(engine->Stats().cloud, 1);
  ASSERT_TRUE(engine->WaitForFetches(5000));
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p1", "p0"}));
  EXPECT_EQ(engine->ActiveId(), "p1");
  auto s = engine->Stats();
  EXPECT_EQ(s.fetches, 1);
  EXPECT_EQ(s.fetched_bytes, 64);
  EXPECT_EQ(cloud->manifest_fetches, 1);  // the engine had no manifest entry

  // The next similar input is answered by the new partition, locally.
  auto r2 = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->source, AnswerSource::kLocal);
  EXPECT_EQ(r2->partition_id, "p1");
  EXPECT_EQ(r2->label, "e");
}

TEST(Engine, OtherAlwaysForwardsEvenWhenConfident) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->answer.label = "zebra";
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "other"}, 3, 1.0f)).ok());
  auto r = engine->Infer(kOther.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kCloud);
  EXPECT_EQ(r->label, "zebra");
}

TEST(Engine, CloudDownGivesDegradedLocalAnswer) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->infer_status = Unavailable("connection refused");
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kUnsure.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kDegraded);
  EXPECT_NE(r->degraded_reason.find("connection refused"), std::string::npos);
  EXPECT_EQ(engine->Stats().degraded, 1);
  EXPECT_EQ(engine->Stats().cloud_errors, 1);
}

// How each cloud failure ends an unsure query that has a local answer: the
// cloud refusing the input itself (HTTP 400, 413, 415 or 422, which the
// CloudClient reports as InvalidArgument) fails Infer, as bad input does;
// every other failure degrades to the local answer.
struct CloudFailure {
  const char* name;
  Status status;
  bool fails_infer;
};

class EngineCloudFailure : public ::testing::TestWithParam<CloudFailure> {};

TEST_P(EngineCloudFailure, FailsInferOnlyWhenTheCloudRejectsTheInput) {
  const CloudFailure& f = GetParam();
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->infer_status = f.status;
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kUnsure.view());
  EXPECT_EQ(cloud->infers, 1);
  EXPECT_EQ(engine->Stats().cloud_errors, 1);
  if (f.fails_infer) {
    ASSERT_FALSE(r.ok()) << "answered " << AnswerSourceName(r->source);
    EXPECT_EQ(r.status().code(), f.status.code());
    EXPECT_EQ(r.status().message(), f.status.message());
    EXPECT_EQ(engine->Stats().degraded, 0);
  } else {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->source, AnswerSource::kDegraded);
    EXPECT_EQ(r->partition_id, "p0");
    EXPECT_EQ(r->degraded_reason, f.status.ToString());
    EXPECT_EQ(engine->Stats().degraded, 1);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Engine, EngineCloudFailure,
    ::testing::Values(
        CloudFailure{"Http400", InvalidArgument("cloud answered HTTP 400: shape is 1x3"), true},
        CloudFailure{"Http413", InvalidArgument("cloud answered HTTP 413: body too large"), true},
        CloudFailure{"Http401", FailedPrecondition("cloud answered HTTP 401 (check the token)"),
                     false},
        CloudFailure{"Http404", NotFound("cloud answered HTTP 404 for /v1/kws/infer"), false},
        CloudFailure{"Http503", Unavailable("cloud answered HTTP 503"), false},
        CloudFailure{"Garbage", ProtocolError("cloud answer is not a JSON object"), false},
        CloudFailure{"Timeout", DeadlineExceeded("no complete answer within 5000 ms"), false},
        CloudFailure{"TooBig", ResourceExhausted("cloud response exceeds 10 bytes"), false}),
    [](const ::testing::TestParamInfo<CloudFailure>& info) { return info.param.name; });

TEST(Engine, LocalAnswerKeepsItsPartitionMostRecentlyUsed) {
  // Two slots; p0 is installed first, so it is the least recently used, and
  // an oldest-first (FIFO) cache or one that forgets local hits would evict it.
  auto engine = MakeEngine(std::make_shared<ScriptedCloud>(), 2);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_TRUE(engine->Install(Echo("p1", {"e", "f", "g", "h"})).ok());
  ASSERT_EQ(engine->CachedIds(), (std::vector<std::string>{"p1", "p0"}));
  ASSERT_TRUE(engine->Activate("p0").ok());  // activating is not a use
  ASSERT_EQ(engine->CachedIds(), (std::vector<std::string>{"p1", "p0"}));

  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->source, AnswerSource::kLocal);
  ASSERT_EQ(r->partition_id, "p0");
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p0", "p1"}));
  EXPECT_EQ(engine->Stats().cache.hits, 1);

  // A third partition evicts the one that has not answered: p1.
  ASSERT_TRUE(engine->Install(Echo("p2", {"i", "j", "k", "l"})).ok());
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p2", "p0"}));
}

TEST(Engine, DegradedOtherHasNoTaskIndex) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->infer_status = DeadlineExceeded("slow");
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "other"}, 3)).ok());
  auto r = engine->Infer(kOther.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kDegraded);
  EXPECT_EQ(r->label, "other");
  EXPECT_EQ(r->index, -1);
}

TEST(Engine, WithoutACloudAnUnsureAnswerIsDegraded) {
  auto engine = MakeEngine(nullptr);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kUnsure.view());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, AnswerSource::kDegraded);
  EXPECT_EQ(r->partition_id, "p0");
  EXPECT_EQ(r->degraded_reason, "gate rejected the local answer and no cloud is configured");
  EXPECT_EQ(engine->Stats().degraded, 1);
  EXPECT_EQ(engine->Stats().cloud_errors, 0);
}

TEST(Engine, NoPartitionAndNoCloudIsAnError) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->infer_status = Unavailable("down");
  auto engine = MakeEngine(cloud);
  auto r = engine->Infer(kUnsure.view());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  auto device_only = MakeEngine(nullptr);
  EXPECT_EQ(device_only->Infer(kUnsure.view()).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(Engine, EmptyCacheAnswersThroughCloud) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->answer.label = "b";
  auto engine = MakeEngine(cloud);
  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kCloud);
  EXPECT_EQ(r->local_attempts, 0);
}

TEST(Engine, BadInputIsRejectedBeforeTheCloud) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  float x[3] = {};
  auto r = engine->Infer({DType::kFloat32, {1, 3}, x, sizeof(x)});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  r = engine->Infer({DType::kFloat32, {1, 4}, x, sizeof(x)});  // nbytes mismatch
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cloud->infers, 0);
}

TEST(Engine, NonFiniteInputIsRefusedLocallyAndNotSentToTheCloud) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    Input x{{20.f, 0.f, bad, 0.f}};
    auto r = engine->Infer(x.view());
    ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("NaN or infinite values (first at element 2)"),
              std::string::npos) << r.status().message();
  }
  EXPECT_EQ(cloud->infers, 0);
  EXPECT_EQ(engine->Stats().queries, 0);
}

TEST(Engine, CorruptDownloadIsNotInstalled) {
  auto cloud = CloudHintingP1();
  cloud->blobs["p1"][10] ^= 1;  // flip a bit after the hash was recorded
  auto engine = MakeEngine(cloud, 2, EchoFactory());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_TRUE(engine->Infer(kUnsure.view()).ok());
  ASSERT_TRUE(engine->WaitForFetches(5000));
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p0"}));
  auto s = engine->Stats();
  EXPECT_EQ(s.fetch_failures, 1);
  EXPECT_NE(s.last_fetch_error.find("sha256"), std::string::npos) << s.last_fetch_error;
}

TEST(Engine, AFetchedManifestOfAnotherTaskInstallsNothing) {
  auto cloud = CloudHintingP1("vision");
  auto engine = MakeEngine(cloud, 2, EchoFactory());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_TRUE(engine->Infer(kUnsure.view()).ok());
  ASSERT_TRUE(engine->WaitForFetches(5000));
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p0"}));
  EXPECT_EQ(engine->ActiveId(), "p0");
  EXPECT_EQ(cloud->partition_fetches, 0);
  auto s = engine->Stats();
  EXPECT_EQ(s.fetch_failures, 1);
  EXPECT_NE(s.last_fetch_error.find("for task 'vision', not 'kws'"), std::string::npos)
      << s.last_fetch_error;
}

TEST(Engine, DestroyedWhileAFetchIsInFlight) {
  auto cloud = CloudHintingP1();
  cloud->fetch_delay_ms = 300;
  auto engine = MakeEngine(cloud, 2, EchoFactory());
  ASSERT_TRUE(engine->Infer(kUnsure.view()).ok());
  for (int i = 0; i < 200 && cloud->partition_fetches == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(cloud->partition_fetches, 1);  // the download is under way
  const auto t0 = std::chrono::steady_clock::now();
  engine.reset();  // joins the fetcher: its install must not reach a destroyed engine
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 2000);
  EXPECT_EQ(cloud.use_count(), 1);  // nothing of the engine holds the cloud any more
}

TEST(Engine, HintForCachedPartitionActivatesItWithoutFetching) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->answer.partition_hint = "p0";
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_TRUE(engine->Install(Echo("p1", {"e", "f", "g", "h"})).ok());
  EXPECT_EQ(engine->ActiveId(), "p1");
  ASSERT_TRUE(engine->Infer(kUnsure.view()).ok());
  EXPECT_EQ(engine->ActiveId(), "p0");
  EXPECT_TRUE(engine->WaitForFetches(1000));
  EXPECT_EQ(cloud->partition_fetches, 0);
}

TEST(Engine, RepeatedHintsFetchOnce) {
  auto cloud = CloudHintingP1();
  cloud->fetch_delay_ms = 100;
  auto engine = MakeEngine(cloud, 2, EchoFactory());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(engine->Infer(kUnsure.view()).ok());
  ASSERT_TRUE(engine->WaitForFetches(5000));
  EXPECT_EQ(cloud->partition_fetches, 1);
}

TEST(Engine, AdmissionWaitsForRepeatedHints) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->manifest.task = "kws";
  cloud->Serve(MakeInfo("p1", {"e", "f", "g", "h"}), std::vector<uint8_t>(64, 7));
  cloud->Serve(MakeInfo("p2", {"i", "j", "k", "l"}), std::vector<uint8_t>(64, 8));
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.admit_after_hints = 2;
  cfg.hint_window = 3;
  auto engine = std::move(Engine::Create(cfg, cloud, EchoFactory()).value());
  auto hint = [&](const std::string& id) {
    cloud->answer.partition_hint = id;
    ASSERT_TRUE(engine->Infer(kUnsure.view()).ok());
    ASSERT_TRUE(engine->WaitForFetches(5000));
  };
  hint("p1");  // once: not yet
  EXPECT_EQ(cloud->partition_fetches, 0);
  hint("p2");
  hint("p2");  // twice within the window: downloaded
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p2"}));
  hint("p1");  // p1's first hint has left the window of 3
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p2"}));
  EXPECT_EQ(cloud->partition_fetches, 1);
  cfg.admit_after_hints = 4;
  EXPECT_EQ(Engine::Create(cfg, cloud).status().code(), StatusCode::kInvalidArgument);
}

TEST(Engine, MaxLocalAttemptsTriesOtherSlots) {
  auto cloud = std::make_shared<ScriptedCloud>();
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.max_local_attempts = 2;
  auto engine = std::move(Engine::Create(cfg, cloud).value());
  // p0 is confident on input 0; p1 (active) is unsure.
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_TRUE(engine->Install(Unsure("p1", {"e", "f", "g", "h"})).ok());
  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kLocal);
  EXPECT_EQ(r->partition_id, "p0");
  EXPECT_EQ(r->local_attempts, 2);
  EXPECT_EQ(cloud->infers, 0);
  // The second slot answered, so it is now the most recently used.
  EXPECT_EQ(engine->CachedIds(), (std::vector<std::string>{"p0", "p1"}));
}

TEST(Engine, OneLocalAttemptByDefault) {
  // The active partition is unsure; the other slot would be sure but is not tried.
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->answer.label = "z";
  auto engine = MakeEngine(cloud);
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_TRUE(engine->Install(Unsure("p1", {"e", "f", "g", "h"})).ok());
  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kCloud);
  EXPECT_EQ(r->local_attempts, 1);
  EXPECT_EQ(cloud->infers, 1);
}

TEST(Engine, ThresholdOverrideApplies) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.threshold_override = 1.0f;  // accept everything that is not "other"
  auto engine = std::move(Engine::Create(cfg).value());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"}, -1, 0.0f)).ok());
  auto r = engine->Infer(kUnsure.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kLocal);
}

TEST(Engine, ConcurrentInfersAreConsistent) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->answer.label = "cloud";
  auto engine = MakeEngine(cloud);
  const std::vector<std::string> labels = {"a", "b", "c", "d"};
  ASSERT_TRUE(engine->Install(Echo("p0", labels)).ok());
  // Every query knows its answer (the confident feature's label, or the
  // cloud's), so an answer handed to another thread's query would show.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const int k = (i + t) % 4;
        const bool sure = i % 3 != 0;
        Input x{{0.f, 0.f, 0.f, 0.f}};
        if (sure) x.data[k] = 20.f;
        auto r = engine->Infer(x.view());
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r->label, sure ? labels[k] : "cloud");
      }
    });
  }
  for (auto& th : threads) th.join();
  auto s = engine->Stats();
  EXPECT_EQ(s.queries, 2000);
  EXPECT_EQ(s.local + s.cloud + s.degraded, 2000);
  EXPECT_EQ(s.local, 4 * 333);  // i % 3 != 0 for 333 of 0..499
}

TEST(Engine, StagedModeAnswersAtTheFirstExitThatHitsWithoutTheCloud) {
  auto cloud = std::make_shared<ScriptedCloud>();
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.layer_cache.gate = "confidence";
  auto engine = std::move(Engine::Create(cfg, cloud).value());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  EXPECT_EQ(engine->Mode(), LocalMode::kPartitions);
  EXPECT_EQ(engine->LayerCacheStatistics().status().code(), StatusCode::kNotFound);
  auto staged = std::make_shared<ScriptedStagedModel>();
  ASSERT_TRUE(engine->InstallStaged(staged).ok());
  EXPECT_EQ(engine->Mode(), LocalMode::kStaged);

  auto hit = engine->Infer(kConfidentA.view());  // exit 0 is sure of "a"
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  EXPECT_EQ(hit->source, AnswerSource::kLocal);
  EXPECT_EQ(hit->partition_id, "staged");
  EXPECT_EQ(hit->label, "a");
  EXPECT_EQ(hit->exit_index, 0);
  EXPECT_EQ(hit->flops, 10 + 1);  // stage 0 and the exit head only
  EXPECT_EQ(staged->head_runs, 0);

  auto whole = engine->Infer(kUnsure.view());  // no exit hits: the head answers "b"
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_EQ(whole->source, AnswerSource::kLocal);
  EXPECT_EQ(whole->label, "b");
  EXPECT_EQ(whole->exit_index, -1);
  EXPECT_EQ(whole->flops, 10 + 1 + 20 + 5);
  EXPECT_EQ(staged->head_runs, 1);

  EXPECT_EQ(cloud->infers, 0);  // the cached partition and the cloud are not consulted
  EXPECT_EQ(engine->Stats().local, 2);
  auto lc = engine->LayerCacheStatistics();
  ASSERT_TRUE(lc.ok());
  EXPECT_EQ(lc->queries, 2);
  EXPECT_EQ(lc->exit_hits, (std::vector<int64_t>{1}));
  EXPECT_EQ(lc->full_runs, 1);
  EXPECT_EQ(engine->Infer(TensorView{DType::kFloat32, {1, 3}, kUnsure.data, 12}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(Engine, StagedModeWithAGateThatHasNoThresholdRunsTheWholeModel) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.layer_cache.gate = "entropy";  // the scripted exit only has a confidence threshold
  auto engine = std::move(Engine::Create(cfg).value());
  auto staged = std::make_shared<ScriptedStagedModel>();
  ASSERT_TRUE(engine->InstallStaged(staged).ok());
  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_index, -1);
  EXPECT_EQ(r->label, "b");
  EXPECT_EQ(staged->exit_runs, 0);
}

// A models folder on disk: each partition's file holds `bytes` arbitrary
// bytes, and the factories build scripted models from them.
class FromManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/from_manifest_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(std::system(("mkdir -p " + dir_).c_str()), 0);
    manifest_.task = "kws";
    manifest_.labels = {"a", "b", "c", "d", "e", "f", "g", "h"};
    manifest_.directory = dir_;
  }
  void Add(PartitionInfo info, PartitionRole role) {
    std::vector<uint8_t> blob(64, static_cast<uint8_t>(manifest_.partitions.size() + 1));
    info.role = role;
    info.file = info.id + ".pte";
    info.bytes = static_cast<int64_t>(blob.size());
    info.sha256 = Sha256Hex(blob.data(), blob.size());
    std::ofstream(dir_ + "/" + info.file, std::ios::binary)
        .write(reinterpret_cast<const char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
    manifest_.partitions.push_back(std::move(info));
  }
  StatusOr<std::unique_ptr<Engine>> Build(const InstallPlan& plan, SplitConfig split = {}) {
    EngineConfig cfg;  // the task comes from the manifest
    cfg.layer_cache.gate = "confidence";
    cfg.split = split;
    return Engine::FromManifest(
        cfg, manifest_, plan, nullptr, EchoFactory(),
        [](const PartitionInfo& info, std::shared_ptr<const std::vector<uint8_t>>)
            -> StatusOr<std::shared_ptr<StagedModel>> {
          return std::shared_ptr<StagedModel>(std::make_shared<ScriptedStagedModel>(info));
        });
  }
  std::string dir_;
  Manifest manifest_;
};

TEST_F(FromManifestTest, InstallsTheCachedPartitionsByDefault) {
  Add(MakeInfo("full", {"a", "b", "c", "d"}), PartitionRole::kFull);
  Add(MakeInfo("cached", {"a", "b", "c", "d"}), PartitionRole::kCached);
  Add(MakeInfo("p0", {"e", "f", "g", "h"}), PartitionRole::kPartition);
  auto engine = Build(InstallPlan::Cached());
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_EQ((*engine)->config().task, "kws");
  EXPECT_EQ((*engine)->CachedIds(), (std::vector<std::string>{"cached"}));
  EXPECT_EQ((*engine)->ActiveId(), "cached");
  EXPECT_EQ((*engine)->Mode(), LocalMode::kPartitions);
  auto input = (*engine)->LocalInput();
  ASSERT_TRUE(input.ok());
  EXPECT_EQ(input->shape, (std::vector<int64_t>{1, 4}));
  auto r = (*engine)->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->label, "a");
  EXPECT_EQ(r->index, 0);  // mapped through the manifest's task labels
}

TEST_F(FromManifestTest, InstallsNamedPartitionsFirstActiveOrNothing) {
  Add(MakeInfo("p0", {"a", "b", "c", "d"}), PartitionRole::kPartition);
  Add(MakeInfo("p1", {"e", "f", "g", "h"}), PartitionRole::kPartition);
  auto engine = Build(InstallPlan::Ids({"p0", "p1"}, /*pinned=*/false));
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_EQ((*engine)->ActiveId(), "p0");
  EXPECT_EQ((*engine)->CachedIds().size(), 2u);
  auto cold = Build(InstallPlan::None());
  ASSERT_TRUE(cold.ok());
  EXPECT_TRUE((*cold)->CachedIds().empty());
  EXPECT_EQ((*cold)->LocalInput().status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Build(InstallPlan::Ids({"nope"})).status().code(), StatusCode::kNotFound);
}

TEST_F(FromManifestTest, StagedPlanAnswersThroughTheStagedProgram) {
  Add(MakeInfo("cached", {"a", "b", "c", "d"}), PartitionRole::kCached);
  auto missing = Build(InstallPlan::Staged());
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("knowcache export --staged"), std::string::npos);
  PartitionInfo staged = ScriptedStagedModel::Info();
  Add(staged, PartitionRole::kStaged);
  auto engine = Build(InstallPlan::Staged());
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_EQ((*engine)->Mode(), LocalMode::kStaged);
  EXPECT_TRUE((*engine)->CachedIds().empty());
  auto r = (*engine)->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_index, 0);
}

TEST_F(FromManifestTest, SplitInstallsTheStagedProgramBesideTheCachedPartitions) {
  Add(MakeInfo("cached", {"a", "b", "c", "d"}), PartitionRole::kCached);
  const SplitConfig split{SplitMode::kAlways, 1};
  auto missing = Build(InstallPlan::Cached(), split);
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("knowcache export --staged"), std::string::npos);
  Add(ScriptedStagedModel::Info(), PartitionRole::kStaged);
  auto engine = Build(InstallPlan::Cached(), split);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_EQ((*engine)->Mode(), LocalMode::kPartitions);
  EXPECT_EQ((*engine)->CachedIds(), (std::vector<std::string>{"cached"}));
  auto beyond = Build(InstallPlan::Cached(), {SplitMode::kAlways, 3});   // 2 stages
  EXPECT_NE(beyond.status().message().find("split computing: staged program 'staged' has "
                                           "stages 0..1: a cut stage must be in 1..2, got 3"),
            std::string::npos) << beyond.status().message();
  auto staged_mode = Build(InstallPlan::Staged(), split);
  EXPECT_EQ(staged_mode.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(staged_mode.status().message().find("the staged mode never asks the cloud"),
            std::string::npos);
}

TEST_F(FromManifestTest, RefusesAMissingCachedRoleAndACorruptFile) {
  Add(MakeInfo("p0", {"a", "b", "c", "d"}), PartitionRole::kPartition);
  EXPECT_EQ(Build(InstallPlan::Cached()).status().code(), StatusCode::kFailedPrecondition);
  manifest_.partitions[0].role = PartitionRole::kCached;
  std::ofstream(dir_ + "/p0.pte", std::ios::binary | std::ios::app) << "tail";
  auto corrupt = Build(InstallPlan::Cached());
  ASSERT_EQ(corrupt.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(corrupt.status().message().find(dir_ + "/p0.pte"), std::string::npos)
      << corrupt.status().message();
  manifest_.task = "vision";
  EngineConfig cfg;
  cfg.task = "kws";
  EXPECT_EQ(Engine::FromManifest(cfg, manifest_, InstallPlan::None()).status().code(),
            StatusCode::kInvalidArgument);
}

// Signed manifests (signature.h): an engine trusting one key has p0 installed
// from a signed manifest (version 2); the cloud hints at p1 and serves
// `document` as its manifest. Every refusal keeps p0 installed and answering.
class SignedEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cloud_ = CloudHintingP1();
    EngineConfig cfg;
    cfg.task = "kws";
    cfg.signature.trusted_keys = {signer_.PublicKey()};
    auto e = Engine::Create(cfg, cloud_, EchoFactory());
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
    ASSERT_TRUE(engine_->SetManifest(Signed(Json(2, false))).ok());
    auto p0 = Engine0Entry();
    ASSERT_TRUE(engine_->Install(std::make_shared<ScriptedModel>(
        p0, [](const float* x) { return std::vector<float>(x, x + 4); })).ok());
  }

  // The manifest's JSON: p0 (64 bytes of 1) and, with `p1`, the cloud's p1.
  std::string Json(int version, bool p1) const {
    auto entry = [](const PartitionInfo& info) {
      return nlohmann::json{{"id", info.id}, {"role", "partition"}, {"file", info.id + ".pte"},
                            {"labels", info.labels},
                            {"input", {{"dtype", "float32"}, {"shape", {1, 4}}}},
                            {"threshold", 0.5}, {"bytes", info.bytes}, {"sha256", info.sha256}};
    };
    nlohmann::json doc = {{"schema_version", 1}, {"task", "kws"}, {"version", version},
                          {"labels", {"a", "b", "c", "d", "e", "f", "g", "h"}},
                          {"partitions", {entry(Engine0Entry())}}};
    if (p1) doc["partitions"].push_back(entry(cloud_->manifest.partitions[0]));
    return doc.dump(2) + "\n";
  }
  static PartitionInfo Engine0Entry() {
    PartitionInfo p = MakeInfo("p0", {"a", "b", "c", "d"}, 64);
    std::vector<uint8_t> blob(64, 1);
    p.sha256 = Sha256Hex(blob.data(), blob.size());
    return p;
  }
  Manifest Signed(const std::string& json) const {
    SignatureConfig c;
    c.trusted_keys = {signer_.PublicKey()};
    auto m = ManifestVerifier::Create(c)->ParseSigned(json, signer_.Sign(json));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? std::move(m).value() : Manifest();
  }
  // Asks (unsure, so the cloud answers with its hint), waits for the download.
  void AskAndWait() {
    ASSERT_TRUE(engine_->Infer(kUnsure.view()).ok());
    ASSERT_TRUE(engine_->WaitForFetches(5000));
  }
  void ExpectRefusedKeepingP0(const std::string& says) {
    EXPECT_EQ(engine_->CachedIds(), (std::vector<std::string>{"p0"}));
    EXPECT_EQ(engine_->ActiveId(), "p0");
    EXPECT_EQ(cloud_->partition_fetches, 0);
    auto s = engine_->Stats();
    EXPECT_EQ(s.fetch_failures, 1);
    EXPECT_NE(s.last_fetch_error.find(says), std::string::npos) << s.last_fetch_error;
    auto r = engine_->Infer(kConfidentA.view());  // the installed partition still answers
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->source, AnswerSource::kLocal);
    EXPECT_EQ(r->partition_id, "p0");
  }

  testing::TestSigner signer_;
  std::shared_ptr<ScriptedCloud> cloud_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(SignedEngineTest, ANewerManifestSignedByATrustedKeyInstallsTheHintedProgram) {
  const std::string json = Json(3, true);
  cloud_->document = ManifestDocument{json, signer_.Sign(json)};
  AskAndWait();
  EXPECT_EQ(engine_->Stats().fetch_failures, 0) << engine_->Stats().last_fetch_error;
  EXPECT_EQ(engine_->ActiveId(), "p1");
  EXPECT_EQ(engine_->CachedIds().size(), 2u);
}

TEST_F(SignedEngineTest, AnUnsignedManifestIsRefused) {
  cloud_->document = ManifestDocument{Json(3, true), ""};
  AskAndWait();
  ExpectRefusedKeepingP0("not signed");
}

TEST_F(SignedEngineTest, ATamperedManifestIsRefused) {
  const std::string json = Json(3, true);
  std::string tampered = json;
  tampered[tampered.find("\"version\": 3") + 11] = '4';
  cloud_->document = ManifestDocument{tampered, signer_.Sign(json)};
  AskAndWait();
  ExpectRefusedKeepingP0("does not verify");
}

TEST_F(SignedEngineTest, AManifestSignedByAnUntrustedKeyIsRefused) {
  testing::TestSigner other;
  const std::string json = Json(3, true);
  cloud_->document = ManifestDocument{json, other.Sign(json)};
  AskAndWait();
  ExpectRefusedKeepingP0(other.KeyId() + ", which is not trusted");
}

TEST_F(SignedEngineTest, AnOlderSignedManifestIsARollbackAndRefused) {
  const std::string json = Json(1, true);  // validly signed, but older than version 2
  cloud_->document = ManifestDocument{json, signer_.Sign(json)};
  AskAndWait();
  ExpectRefusedKeepingP0("older than the installed version 2 (a rollback)");
}

TEST_F(SignedEngineTest, ACloudThatServesNoManifestBytesIsRefused) {
  AskAndWait();  // ScriptedCloud without a document: only a parsed, unverifiable manifest
  ExpectRefusedKeepingP0("does not serve manifest bytes");
}

TEST_F(SignedEngineTest, AProgramTheSignedManifestDoesNotPinIsNotInstalled) {
  Status unknown = engine_->Install(Echo("p9", {"a", "b", "c", "d"}));
  EXPECT_EQ(unknown.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(unknown.message().find("'p9'"), std::string::npos) << unknown.message();
  EXPECT_NE(unknown.message().find("not pinned by the signed manifest"), std::string::npos);
  PartitionInfo other = Engine0Entry();
  other.sha256 = std::string(64, 'e');  // the right id, other bytes
  EXPECT_EQ(engine_->Install(std::make_shared<ScriptedModel>(
                other, [](const float*) { return std::vector<float>(4, 0.f); }))
                .code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->InstallStaged(std::make_shared<ScriptedStagedModel>()).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->CachedIds(), (std::vector<std::string>{"p0"}));
}

TEST_F(SignedEngineTest, SetManifestRefusesUnverifiedAndOlderManifestsKeepingTheCurrentOne) {
  auto unverified = Manifest::Parse(Json(3, true));
  ASSERT_TRUE(unverified.ok());
  Status s = engine_->SetManifest(*unverified);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("not verified by a trusted key"), std::string::npos) << s.message();
  s = engine_->SetManifest(Signed(Json(1, true)));
  EXPECT_NE(s.message().find("older than the installed version 2"), std::string::npos)
      << s.message();
  // The current manifest (version 2, without p1) is still the engine's.
  EXPECT_EQ(engine_->InstallFromManifest("p1").code(), StatusCode::kNotFound);
  EXPECT_TRUE(engine_->SetManifest(Signed(Json(2, true))).ok());  // the same version is fine
}

// Unsigned versions prove nothing, and a device store numbers its manifests
// apart from the cloud's: without keys a lower version is not a rollback.
TEST(Engine, WithoutKeysManifestVersionsAreNotCompared) {
  auto engine = MakeEngine(nullptr);
  Manifest m;
  m.task = "kws";
  m.version = 5;
  ASSERT_TRUE(engine->SetManifest(m).ok());
  m.version = 4;
  EXPECT_TRUE(engine->SetManifest(m).ok());
}

TEST_F(FromManifestTest, WithTrustedKeysAnUnverifiedManifestIsRefused) {
  Add(MakeInfo("cached", {"a", "b", "c", "d"}), PartitionRole::kCached);
  testing::TestSigner signer;
  EngineConfig cfg;
  cfg.signature.trusted_keys = {signer.PublicKey()};
  auto engine = Engine::FromManifest(cfg, manifest_, InstallPlan::Cached(), nullptr, EchoFactory());
  EXPECT_EQ(engine.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(engine.status().message().find("not verified by a trusted key"), std::string::npos)
      << engine.status().message();
  auto from_dir = Engine::FromModelsDir(cfg, dir_);  // no manifest.json there at all
  EXPECT_FALSE(from_dir.ok());
}

// ---- Privacy routing -------------------------------------------------------

// The kws test task: labels a..h, `privates` marked private.
Manifest PrivateManifest(std::vector<std::string> privates) {
  Manifest m;
  m.task = "kws";
  m.labels = {"a", "b", "c", "d", "e", "f", "g", "h"};
  m.private_labels = std::move(privates);
  return m;
}

std::unique_ptr<Engine> PrivateEngine(std::shared_ptr<CloudBackend> cloud,
                                      std::vector<std::string> privates, float share = 0.2f,
                                      bool local_only = false, ModelFactory factory = nullptr) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.private_share = share;
  cfg.local_only = local_only;
  auto e = Engine::Create(cfg, std::move(cloud), std::move(factory));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE((*e)->SetManifest(PrivateManifest(std::move(privates))).ok());
  return std::move(e).value();
}

// Logits (0, 2, 0, 0): "b" at 0.71, normalized entropy 0.66: the gate (0.5) rejects it.
const Input kUnsureB{{0.f, 2.f, 0.f, 0.f}};
const Input kConfidentB{{0.f, 20.f, 0.f, 0.f}};

TEST(EnginePrivacy, APrivateAnswerTheGateRejectsIsAnsweredLocally) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = PrivateEngine(cloud, {"b"});
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kUnsureB.view());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, AnswerSource::kPrivate);
  EXPECT_STREQ(AnswerSourceName(r->source), "private");
  EXPECT_TRUE(r->is_private);
  EXPECT_EQ(r->label, "b");
  EXPECT_EQ(r->index, 1);
  EXPECT_NEAR(r->confidence, std::exp(2.f) / (std::exp(2.f) + 3.f), 1e-5);
  EXPECT_NEAR(r->private_mass, r->confidence, 1e-6);
  EXPECT_NE(r->kept_reason.find("'b' is a private class"), std::string::npos) << r->kept_reason;
  EXPECT_EQ(r->uplink_bytes, 0);
  EXPECT_EQ(cloud->infers, 0);
  auto s = engine->Stats();
  EXPECT_EQ(s.kept_private, 1);
  EXPECT_EQ(s.local + s.cloud + s.degraded, 0);

  // Without private labels the same query is uploaded.
  auto plain_cloud = std::make_shared<ScriptedCloud>();
  auto plain = PrivateEngine(plain_cloud, {});
  ASSERT_TRUE(plain->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_EQ(plain->Infer(kUnsureB.view())->source, AnswerSource::kCloud);
  EXPECT_EQ(plain_cloud->infers, 1);
  EXPECT_EQ(plain->Stats().kept_private, 0);
}

TEST(EnginePrivacy, AConfidentPrivateAnswerIsLocalAndFlagged) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = PrivateEngine(cloud, {"b"});
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kConfidentB.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kLocal);
  EXPECT_TRUE(r->is_private);
  EXPECT_EQ(cloud->infers, 0);
  EXPECT_EQ(engine->Stats().local, 1);
  EXPECT_EQ(engine->Stats().kept_private, 0);  // the gate kept it anyway
  auto a = engine->Infer(kConfidentA.view());
  EXPECT_EQ(a->source, AnswerSource::kLocal);
  EXPECT_FALSE(a->is_private);
}

TEST(EnginePrivacy, PrivateMassOverTheShareStaysEvenWhenTheAnswerIsPublic) {
  // Logits (1, 0.5, 0, 0): "a" answers at 0.43, the private "b" holds 0.26.
  const Input mixed{{1.f, 0.5f, 0.f, 0.f}};
  const float pb = std::exp(0.5f) / (std::exp(1.f) + std::exp(0.5f) + 2.f);
  for (float share : {0.2f, 0.25f}) {  // below the mass
    auto cloud = std::make_shared<ScriptedCloud>();
    auto engine = PrivateEngine(cloud, {"b"}, share);
    ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
    auto r = engine->Infer(mixed.view());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->source, AnswerSource::kPrivate) << share;
    EXPECT_EQ(r->label, "a");  // the local answer, flagged
    EXPECT_NEAR(r->private_mass, pb, 1e-5);
    EXPECT_NE(r->kept_reason.find("private classes hold 0.26"), std::string::npos)
        << r->kept_reason;
    EXPECT_EQ(cloud->infers, 0);
  }
  for (float share : {0.27f, 1.0f}) {  // at or above the mass: uploaded
    auto cloud = std::make_shared<ScriptedCloud>();
    auto engine = PrivateEngine(cloud, {"b"}, share);
    ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
    auto r = engine->Infer(mixed.view());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->source, AnswerSource::kCloud) << share;
    EXPECT_FALSE(r->is_private);
    EXPECT_NEAR(r->private_mass, pb, 1e-5);
    EXPECT_EQ(cloud->infers, 1);
  }
}

TEST(EnginePrivacy, APrivateClassNoInstalledModelHoldsKeepsTheQuery) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = PrivateEngine(cloud, {"g"});
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(kUnsure.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kPrivate);
  EXPECT_EQ(r->partition_id, "p0");
  EXPECT_NE(r->kept_reason.find("'g' are held by no installed model"), std::string::npos)
      << r->kept_reason;
  EXPECT_EQ(cloud->infers, 0);
  // Confident public answers are unaffected.
  EXPECT_EQ(engine->Infer(kConfidentA.view())->source, AnswerSource::kLocal);

  // A cold device cannot tell at all: refused, not uploaded.
  auto cold_cloud = std::make_shared<ScriptedCloud>();
  auto cold = PrivateEngine(cold_cloud, {"g"});
  auto refused = cold->Infer(kUnsure.view());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("not uploaded"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(cold_cloud->infers, 0);
  EXPECT_EQ(cold->Stats().kept_private, 1);
}

TEST(EnginePrivacy, ACachedModelHoldingTheUncheckedPrivateClassIsAskedBeforeAnUpload) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = PrivateEngine(cloud, {"g"});
  auto p1 = Echo("p1", {"e", "f", "g", "h"});
  auto p0 = Echo("p0", {"a", "b", "c", "d"}, -1, /*threshold=*/0.0f);  // never sure
  ASSERT_TRUE(engine->Install(p1).ok());
  ASSERT_TRUE(engine->Install(p0).ok());  // active
  // p0 answers "c" unsure; p1, holding the private "g", says "g": kept, p1's answer.
  auto r = engine->Infer(Input{{0.f, 0.f, 2.f, 0.f}}.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kPrivate);
  EXPECT_EQ(r->label, "g");
  EXPECT_EQ(r->partition_id, "p1");
  EXPECT_EQ(r->local_attempts, 2);
  EXPECT_EQ(cloud->infers, 0);
  // p1 says "e", "g" at 0.10: not private, uploaded after both ran.
  auto up = engine->Infer(Input{{2.f, 0.f, 0.f, 0.f}}.view());
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->source, AnswerSource::kCloud);
  EXPECT_EQ(up->local_attempts, 2);
  EXPECT_EQ(cloud->infers, 1);
  EXPECT_EQ(p1->runs, 2);
  EXPECT_EQ(p0->runs, 2);
}

TEST(EnginePrivacy, AFetchedManifestCannotMakeAPrivateClassPublic) {
  auto cloud = CloudHintingP1();  // its manifest has no private labels
  auto engine = PrivateEngine(cloud, {"b"}, 0.3f, false, EchoFactory());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  ASSERT_EQ(engine->Infer(kUnsure.view())->source, AnswerSource::kCloud);  // "b" at 0.25
  ASSERT_TRUE(engine->WaitForFetches(5000));
  ASSERT_EQ(cloud->manifest_fetches, 1);
  ASSERT_EQ(engine->ActiveId(), "p1");
  // p1 (e..h) is unsure of "f"; p0 still holds "b" and is asked: private.
  auto r = engine->Infer(kUnsureB.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kPrivate);
  EXPECT_EQ(r->partition_id, "p0");
  EXPECT_EQ(r->label, "b");
  EXPECT_EQ(cloud->infers, 1);
}

TEST(EnginePrivacy, LocalOnlyNeverCallsTheCloud) {
  auto cloud = CloudHintingP1();
  auto engine = PrivateEngine(cloud, {"b"}, 0.2f, /*local_only=*/true, EchoFactory());
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto r = engine->Infer(Input{{0.f, 0.f, 2.f, 0.f}}.view());  // "c", unsure
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kLocalOnly);
  EXPECT_STREQ(AnswerSourceName(r->source), "local_only");
  EXPECT_EQ(r->label, "c");
  EXPECT_FALSE(r->is_private);
  EXPECT_NE(r->kept_reason.find("local-only"), std::string::npos);
  EXPECT_EQ(engine->Infer(kConfidentA.view())->source, AnswerSource::kLocal);
  EXPECT_EQ(engine->Infer(kUnsureB.view())->source, AnswerSource::kPrivate);  // private first
  ASSERT_TRUE(engine->WaitForFetches(1000));
  EXPECT_EQ(cloud->infers + cloud->manifest_fetches + cloud->partition_fetches, 0);
  auto s = engine->Stats();
  EXPECT_EQ(s.kept_local_only, 1);
  EXPECT_EQ(s.kept_private, 1);
  EXPECT_EQ(s.local, 1);
  EXPECT_EQ(s.queries, 3);

  auto empty = PrivateEngine(cloud, {}, 0.2f, true);
  EXPECT_EQ(empty->Infer(kUnsure.view()).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(cloud->infers, 0);
}

TEST(EnginePrivacy, ConfigRejectsAShareOutsideZeroToOne) {
  EngineConfig cfg;
  cfg.task = "kws";
  for (float bad : {-0.1f, 1.5f, std::nanf("")}) {
    cfg.private_share = bad;
    auto e = Engine::Create(cfg);
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(e.status().message().find("private_share"), std::string::npos);
  }
  for (float ok : {0.0f, 1.0f}) {
    cfg.private_share = ok;
    EXPECT_TRUE(Engine::Create(cfg).ok()) << ok;
  }
  cfg.local_only = true;
  EXPECT_NE(cfg.ToString().find("local_only=true"), std::string::npos) << cfg.ToString();
}

TEST(EnginePrivacy, StagedAnswersOfAPrivateClassAreFlagged) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.layer_cache.gate = "confidence";
  auto engine = std::move(Engine::Create(cfg).value());
  ASSERT_TRUE(engine->SetManifest(PrivateManifest({"b"})).ok());
  ASSERT_TRUE(engine->InstallStaged(std::make_shared<ScriptedStagedModel>()).ok());
  auto b = engine->Infer(kUnsure.view());  // the head answers "b"
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->source, AnswerSource::kLocal);
  EXPECT_TRUE(b->is_private);
  EXPECT_FALSE(engine->Infer(kConfidentA.view())->is_private);
}


// ---------------------------------------------------------------- split computing

std::unique_ptr<Engine> MakeSplitEngine(std::shared_ptr<CloudBackend> cloud, SplitMode mode,
                                        int cut) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.split = {mode, cut};
  auto e = Engine::Create(cfg, std::move(cloud));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE((*e)->Install(Unsure("p0", {"a", "b", "c", "d"})).ok());
  return std::move(e).value();
}

const Input kMixed{{1.f, -2.f, 3.f, 0.5f}};

TEST(EngineSplit, AlwaysUploadsTheCutActivationAndNeverTheRawInput) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->answer.label = "c";
  cloud->answer.index = 2;
  auto engine = MakeSplitEngine(cloud, SplitMode::kAlways, 2);
  PartitionInfo info = ScriptedStagedModel::Info();
  info.version = 7;
  auto staged = std::make_shared<ScriptedStagedModel>(info);
  ASSERT_TRUE(engine->InstallSplit(staged).ok());
  auto r = engine->Infer(kMixed.view());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, AnswerSource::kCloud);
  EXPECT_EQ(r->label, "c");
  EXPECT_EQ(r->uplink, Uplink::kFeatures);
  EXPECT_EQ(r->uplink_bytes, 4);            // four int8 values, not 16 float bytes
  EXPECT_EQ(cloud->infers, 0);              // the raw route was never called
  ASSERT_EQ(cloud->uploads.size(), 1u);
  const SplitUpload& up = cloud->uploads[0];
  EXPECT_EQ(up.from_stage, 2);
  EXPECT_EQ(up.staged_id, "staged");
  EXPECT_EQ(up.staged_version, 7);
  EXPECT_EQ(staged->stage_runs, 2);         // stages 0 and 1 ran on the device
  auto back = DequantizeActivation(up.activation);
  ASSERT_TRUE(back.ok());
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(back->data[i], kMixed.data[i], up.activation.scale / 2 + 1e-6) << i;
  }
  EXPECT_EQ(engine->Stats().feature_uploads, 1);
  EXPECT_EQ(engine->Stats().uplink_bytes, 4);
}

TEST(EngineSplit, AutoUploadsWhicheverIsFewerBytes) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = MakeSplitEngine(cloud, SplitMode::kAuto, 2);
  auto staged = std::make_shared<ScriptedStagedModel>();
  ASSERT_TRUE(engine->InstallSplit(staged).ok());
  auto small = engine->Infer(kMixed.view());    // 4 int8 bytes < 16 raw bytes
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->uplink, Uplink::kFeatures);
  EXPECT_TRUE(small->split_reason.empty()) << small->split_reason;

  auto wide = std::make_shared<ScriptedStagedModel>();
  wide->stage_width = 16;                       // 16 int8 bytes: no fewer than raw
  ASSERT_TRUE(engine->InstallSplit(wide).ok());
  auto first = engine->Infer(kMixed.view());
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->uplink, Uplink::kRaw);
  EXPECT_EQ(first->uplink_bytes, 16);
  EXPECT_NE(first->split_reason.find("the raw input (16 bytes) is no larger than the "
                                     "activation at stage 2 (16 bytes)"), std::string::npos)
      << first->split_reason;
  EXPECT_EQ(wide->stage_runs, 2);
  auto second = engine->Infer(kMixed.view());   // the size is known: no stages run again
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->uplink, Uplink::kRaw);
  EXPECT_EQ(wide->stage_runs, 2);
  EXPECT_EQ(cloud->infers, 2);
  EXPECT_EQ(cloud->uploads.size(), 1u);
}

TEST(EngineSplit, ACutBeforeAStageThatReadsTheInputIsRefused) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = MakeSplitEngine(cloud, SplitMode::kAlways, 1);
  auto staged = std::make_shared<ScriptedStagedModel>();
  staged->reads_input = {1};
  Status s = engine->InstallSplit(staged);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("cannot be cut at stage 1: stage 1 reads the raw model input"),
            std::string::npos) << s.message();
  // After the stage that reads the input, the cut keeps the input on the device.
  auto after = MakeSplitEngine(cloud, SplitMode::kAlways, 2);
  EXPECT_TRUE(after->InstallSplit(staged).ok());
  auto r = after->Infer(kMixed.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->uplink, Uplink::kFeatures);
  EXPECT_EQ(cloud->infers, 0);
}

TEST(EngineSplit, AlwaysDegradesRatherThanUploadRawWhenItCannotSplit) {
  auto cloud = std::make_shared<ScriptedCloud>();
  auto engine = MakeSplitEngine(cloud, SplitMode::kAlways, 1);  // no staged program installed
  auto r = engine->Infer(kMixed.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kDegraded);
  EXPECT_EQ(r->uplink, Uplink::kNone);
  EXPECT_NE(r->degraded_reason.find("never uploads the raw input"), std::string::npos)
      << r->degraded_reason;
  EXPECT_EQ(cloud->infers, 0);
  // kAuto falls back to the raw input, and says why.
  auto fallback = MakeSplitEngine(cloud, SplitMode::kAuto, 1);
  auto raw = fallback->Infer(kMixed.view());
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->uplink, Uplink::kRaw);
  EXPECT_NE(raw->split_reason.find("no staged program is installed"), std::string::npos);
  EXPECT_EQ(cloud->infers, 1);
}

TEST(EngineSplit, ARefusedActivationDegradesWithoutRetryingTheRawInput) {
  auto cloud = std::make_shared<ScriptedCloud>();
  cloud->infer_status = FailedPrecondition("cloud answered HTTP 409: staged version 2 differs");
  auto engine = MakeSplitEngine(cloud, SplitMode::kAuto, 1);
  ASSERT_TRUE(engine->InstallSplit(std::make_shared<ScriptedStagedModel>()).ok());
  auto r = engine->Infer(kMixed.view());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, AnswerSource::kDegraded);
  EXPECT_NE(r->degraded_reason.find("HTTP 409"), std::string::npos);
  EXPECT_EQ(cloud->uploads.size(), 1u);
  EXPECT_EQ(cloud->infers, 0);
}

TEST(EngineSplit, AnAcceptedLocalAnswerRunsNoStage) {
  auto cloud = std::make_shared<ScriptedCloud>();
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.split = {SplitMode::kAlways, 1};
  auto engine = std::move(Engine::Create(cfg, cloud)).value();
  ASSERT_TRUE(engine->Install(Echo("p0", {"a", "b", "c", "d"})).ok());
  auto staged = std::make_shared<ScriptedStagedModel>();
  ASSERT_TRUE(engine->InstallSplit(staged).ok());
  auto r = engine->Infer(kConfidentA.view());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, AnswerSource::kLocal);
  EXPECT_EQ(r->uplink, Uplink::kNone);
  EXPECT_EQ(staged->stage_runs, 0);
}

TEST(EngineSplit, ConfigNeedsACutAndSplitOffRefusesAProgram) {
  EngineConfig cfg;
  cfg.task = "kws";
  cfg.split = {SplitMode::kAuto, 0};
  auto bad = Engine::Create(cfg);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("needs a cut stage >= 1"), std::string::npos);
  cfg.split = {};
  auto off = std::move(Engine::Create(cfg)).value();
  Status s = off->InstallSplit(std::make_shared<ScriptedStagedModel>());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("split computing is off"), std::string::npos);
  EXPECT_EQ(ParseSplitMode("always").value(), SplitMode::kAlways);
  EXPECT_EQ(ParseSplitMode("sometimes").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace knowcache
