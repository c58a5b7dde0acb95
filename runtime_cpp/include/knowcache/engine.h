// Engine: two-stage inference on the device.
//
// The engine answers locally in one of two ways (LocalMode):
//
// - kPartitions (knowledge caching, CacheNet): Infer(input) runs the active
//   cached partition, asks the EntropyGate, and answers locally when the gate
//   accepts. Otherwise it asks the cloud and returns the cloud's answer; a
//   partition the cloud hints at is made active when it is in a slot, or
//   handed to the PartitionFetcher, which downloads, verifies and installs it
//   in the background. A cloud that is down, slow or answers garbage never
//   fails Infer: the local answer comes back flagged kDegraded.
// - kStaged (layer caching), once a staged model is installed: Infer runs it
//   stage by stage and answers at the first exit whose gate hits, or with the
//   whole model (see layer_cache.h); the cloud is not asked.
//
// Privacy routing (kPartitions): the manifest's private_labels never leave the
// device. When a local model's answer is a private class, or the private
// classes hold more than config.private_share of its probability, the query is
// answered locally (kPrivate, is_private) whatever the gate says. A query the
// gate would upload is first checked by every cached model that holds a
// private class no model has run on yet; a private class no installed model
// holds makes its share unknown, and the query stays on the device too.
// config.local_only never calls the cloud at all (kLocalOnly). docs/security.md.
//
// Split computing (kPartitions, config.split, split.h): a query the gate
// rejects and that may be uploaded is sent as the staged program's int8
// activation at config.split.cut_stage instead of the raw input: always
// (kAlways: the raw input never leaves the device; a failure to compute the
// activation degrades to the local answer), or when it is fewer bytes
// (kAuto: InferenceResult.split_reason says why raw was sent). The staged
// program is installed for this by FromManifest (or InstallSplit); a cut that
// a later stage's read of the raw input makes useless is refused there.
//
// Infer fails only on bad input, or when there is neither a cached partition
// nor a reachable cloud (or the cloud may not be asked). Engine::FromManifest is the one way front ends (the
// Python runtime, knowcache-device, the bench, JNI) build an engine from a
// models folder.
//
// Ownership: the engine owns its slot cache, its fetcher and its staged
// model's LayerCache; partitions are shared with whoever else holds them.
// Thread-safety: Infer, the Install* methods and the accessors may be called
// from several threads. The fetcher's one background thread performs
// downloads; the destructor joins it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "knowcache/cached_model.h"
#include "knowcache/cloud_client.h"
#include "knowcache/layer_cache.h"
#include "knowcache/manifest.h"
#include "knowcache/partition_fetcher.h"
#include "knowcache/signature.h"
#include "knowcache/slot_cache.h"
#include "knowcache/split.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

/// kPrivate and kLocalOnly: the gate rejected the local answer, and the query
/// was kept on the device (a private class; local-only mode) instead of uploaded.
enum class AnswerSource { kLocal, kCloud, kDegraded, kPrivate, kLocalOnly };
const char* AnswerSourceName(AnswerSource source);

/// How the engine answers locally: cached partitions behind the entropy gate
/// (the cloud answers the rest), or a staged model's exits (layer caching).
enum class LocalMode { kPartitions, kStaged };
const char* LocalModeName(LocalMode mode);

struct EngineConfig {
  std::string task;            // "kws", "vision"; names the cloud routes
  SlotCacheConfig cache;
  CloudClientConfig cloud;     // base_url empty: device-only
  /// Fetch partitions the cloud hints at, in the background.
  bool fetch_hints = true;
  /// The fetcher's admission rule (see PartitionFetcherConfig).
  int admit_after_hints = 1;
  int hint_window = 8;
  /// How many cached partitions to try (most recent first) before asking the
  /// cloud. 1 is CacheNet's policy: run the active partition only.
  int max_local_attempts = 1;
  /// When in [0, 1], replaces every partition's calibrated threshold.
  float threshold_override = -1.0f;
  /// Which exit gate a staged model (InstallStaged) runs with.
  LayerCacheConfig layer_cache;
  /// Privacy routing: a query whose private classes (the manifest's
  /// private_labels) hold more than this share of a local model's probability
  /// is answered locally, as is one whose local answer is a private class.
  float private_share = 0.2f;
  /// Never call the cloud (no uploads, no downloads): what the gate rejects is
  /// answered locally with source kLocalOnly.
  bool local_only = false;
  /// Split computing: upload the activation at a cut stage instead of the raw input.
  SplitConfig split;
  /// Signed manifests (signature.h). With trusted keys, every manifest the
  /// engine takes (FromModelsDir's manifest.json + manifest.sig, SetManifest, a
  /// fetched one) must be signed by one of them, and every program installed
  /// must be pinned (id, size, sha256) by it, and a manifest older than the
  /// engine's (a rollback) is refused. A refusal leaves the installed
  /// partitions in use.
  SignatureConfig signature;

  Status Validate() const;
  std::string ToString() const;
};

struct InferenceResult {
  std::string label;
  int index = -1;            // in the task's label set; -1 for "other"/unknown
  float confidence = 0.0f;   // probability of the answer
  float entropy = 1.0f;      // normalized entropy of the local answer, 1 if none
  AnswerSource source = AnswerSource::kLocal;
  std::string partition_id;  // partition that answered or was consulted
  std::string partition_hint;
  std::string degraded_reason;  // why the cloud could not answer
  int local_attempts = 0;
  int64_t local_us = 0;
  int64_t network_us = 0;
  int64_t total_us = 0;
  int64_t uplink_bytes = 0;
  Uplink uplink = Uplink::kNone;  // what was sent to the cloud, if anything
  std::string split_reason;       // split on, yet raw or nothing sent: why
  int exit_index = -1;       // staged model: the exit that answered, -1 the whole model
  int64_t flops = 0;         // staged model: FLOPs this query spent on the device
  int64_t lookup_us = 0;     // staged model: time in exit heads and gates
  /// The answer is a private class, or private classes hold more than the
  /// share (or an unknown share): this input never left the device.
  bool is_private = false;
  float private_mass = 0.0f;  // the most private classes held in one local model's answer
  std::string kept_reason;    // kPrivate / kLocalOnly: why the query was not uploaded
};

struct EngineStats {
  int64_t queries = 0;
  int64_t local = 0;
  int64_t cloud = 0;
  int64_t degraded = 0;
  int64_t cloud_errors = 0;
  int64_t fetches = 0;
  int64_t fetch_failures = 0;
  int64_t fetched_bytes = 0;
  int64_t uplink_bytes = 0;
  int64_t feature_uploads = 0;  // cloud answers to a cut activation (split computing)
  int64_t kept_private = 0;     // answered kPrivate: would have been uploaded
  int64_t kept_local_only = 0;  // answered kLocalOnly: would have been uploaded
  std::string last_fetch_error;
  SlotCacheStats cache;
};

/// Builds a staged model from program bytes already checked against `info`;
/// StagedModel::FromBytes by default.
using StagedModelFactory = std::function<StatusOr<std::shared_ptr<StagedModel>>(
    const PartitionInfo&, std::shared_ptr<const std::vector<uint8_t>>)>;

/// What Engine::FromManifest loads from the manifest's folder before the
/// first query.
struct InstallPlan {
  enum class Kind {
    kCached,  // every partition with role kCached (at least one)
    kIds,     // `ids`, in order
    kStaged,  // the staged program: the engine answers in LocalMode::kStaged
    kNone,    // nothing: a cold device that fills its slots from the cloud's hints
  };
  Kind kind = Kind::kCached;
  std::vector<std::string> ids;  // kIds only
  bool pinned = true;            // partitions are never evicted

  static InstallPlan Cached(bool pinned = true) { return {Kind::kCached, {}, pinned}; }
  static InstallPlan Ids(std::vector<std::string> ids, bool pinned = true) {
    return {Kind::kIds, std::move(ids), pinned};
  }
  static InstallPlan Staged() { return {Kind::kStaged, {}, true}; }
  static InstallPlan None() { return {Kind::kNone, {}, true}; }

  /// The ids this plan loads from `manifest`; FailedPrecondition saying what
  /// to export or pass when the manifest lacks them.
  StatusOr<std::vector<std::string>> Resolve(const Manifest& manifest) const;
  std::string ToString() const;
};

class EngineImpl;

class Engine {
 public:
  /// An engine with nothing installed. `cloud` overrides the HTTP client
  /// built from config.cloud (tests); `factory` and `staged_factory` override
  /// Partition::FromBytes and StagedModel::FromBytes (tests).
  static StatusOr<std::unique_ptr<Engine>> Create(
      EngineConfig config, std::shared_ptr<CloudBackend> cloud = nullptr,
      ModelFactory factory = nullptr, StagedModelFactory staged_factory = nullptr);
  /// An engine for `manifest`'s task (config.task may be empty; it must match
  /// when set) with the manifest set and `plan` installed from its folder.
  /// The first partition installed is the active one. With config.split on,
  /// the manifest's staged program is installed for split computing as well
  /// (FailedPrecondition without one, or with plan kStaged).
  static StatusOr<std::unique_ptr<Engine>> FromManifest(
      EngineConfig config, Manifest manifest, const InstallPlan& plan = InstallPlan::Cached(),
      std::shared_ptr<CloudBackend> cloud = nullptr, ModelFactory factory = nullptr,
      StagedModelFactory staged_factory = nullptr);
  /// FromManifest with `directory`/manifest.json; with trusted keys
  /// (config.signature) it must verify against `directory`/manifest.sig.
  static StatusOr<std::unique_ptr<Engine>> FromModelsDir(
      EngineConfig config, const std::string& directory,
      const InstallPlan& plan = InstallPlan::Cached());
  ~Engine();  // stops and joins the download thread

  /// Metadata used to verify downloads and map labels to task indices. Its
  /// private_labels join the engine's private set, which never shrinks (nor
  /// does a manifest fetched from the cloud shrink it). With trusted keys,
  /// FailedPrecondition (the current manifest kept) for a manifest not
  /// verified by them or older than the current one.
  Status SetManifest(Manifest manifest);
  /// Loads `id` from the manifest's directory into a slot: the file's size
  /// and sha256 are checked against the manifest first.
  Status InstallFromManifest(const std::string& id, bool pinned = false);
  Status Install(std::shared_ptr<CachedModel> model, bool pinned = false);
  /// Layer caching: from now on Infer runs this staged model locally, exit by
  /// exit, with config().layer_cache's gate (the whole model answers when no
  /// exit hits, so the cloud is not needed). Replaces any previous one,
  /// e.g. a retrained version fetched through the manifest.
  Status InstallStaged(std::shared_ptr<StagedModel> model);
  Status InstallStagedFromManifest(const std::string& id);
  /// Split computing: the staged program whose first stages compute the
  /// activation uploaded on a gate miss. FailedPrecondition when split is off,
  /// or when config().split.cut_stage is not a cut that keeps the raw input on
  /// the device (CheckCutPoint). The local mode stays kPartitions.
  Status InstallSplit(std::shared_ptr<StagedModel> model);
  /// Statistics of the staged model's caches; NotFound when none is installed.
  StatusOr<LayerCacheStats> LayerCacheStatistics() const;
  /// Makes `id` (which must be cached) the partition Infer runs first.
  Status Activate(const std::string& id);
  /// kStaged once a staged model is installed.
  LocalMode Mode() const;
  /// The input the local model expects (the staged model's, else the active
  /// partition's); NotFound when nothing is installed.
  StatusOr<InputSpec> LocalInput() const;

  StatusOr<InferenceResult> Infer(const TensorView& input);

  /// Blocks until no download is queued or running, or `timeout_ms` passes.
  /// Returns false on timeout.
  bool WaitForFetches(int timeout_ms);

  std::vector<std::string> CachedIds() const;
  std::string ActiveId() const;
  EngineStats Stats() const;
  const EngineConfig& config() const;

 private:
  explicit Engine(std::unique_ptr<EngineImpl> impl);
  std::unique_ptr<EngineImpl> impl_;
};

}  // namespace knowcache
