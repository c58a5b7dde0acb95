// Engine: two-stage inference on the device.
//
// With a staged model installed (layer caching), Infer runs it stage by
// stage and answers at the first exit whose gate hits (see layer_cache.h).
//
// Otherwise Infer(input) runs the active cached partition, asks the EntropyGate, and
// answers locally when the gate accepts. Otherwise it asks the cloud and
// returns the cloud's answer; when the cloud hints a partition that is not in
// a slot, the engine fetches it in the background, checks its size and
// sha256 against the manifest, and installs it (evicting LRU). A cloud that
// is down, slow or answers garbage never fails Infer: the local answer comes
// back flagged kDegraded. Infer fails only on bad input, or when there is
// neither a cached partition nor a reachable cloud.
//
// Thread-safety: Infer, Install and the accessors may be called from several
// threads. One background thread performs downloads.
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
#include "knowcache/slot_cache.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

enum class AnswerSource { kLocal, kCloud, kDegraded };
const char* AnswerSourceName(AnswerSource source);

struct EngineConfig {
  std::string task;            // "kws", "vision"; names the cloud routes
  SlotCacheConfig cache;
  CloudClientConfig cloud;     // base_url empty: device-only
  /// Fetch partitions the cloud hints at, in the background.
  bool fetch_hints = true;
  /// Admission: download a hinted partition once the cloud has hinted it this
  /// many times within its last `hint_window` hints. 1 downloads at the first
  /// hint (CacheNet's policy); 2 or more keeps streams with weak locality from
  /// thrashing the slots (each download evicts a partition and uses the link).
  int admit_after_hints = 1;
  int hint_window = 8;
  /// How many cached partitions to try (most recent first) before asking the
  /// cloud. 1 is CacheNet's policy: run the active partition only.
  int max_local_attempts = 1;
  /// When in [0, 1], replaces every partition's calibrated threshold.
  float threshold_override = -1.0f;
  /// Which exit gate a staged model (InstallStaged) runs with.
  LayerCacheConfig layer_cache;

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
  int exit_index = -1;       // staged model: the exit that answered, -1 the whole model
  int64_t flops = 0;         // staged model: FLOPs this query spent on the device
  int64_t lookup_us = 0;     // staged model: time in exit heads and gates
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
  std::string last_fetch_error;
  SlotCacheStats cache;
};

/// Builds a model from downloaded bytes; Partition::FromBytes by default.
using ModelFactory = std::function<StatusOr<std::shared_ptr<CachedModel>>(
    const PartitionInfo&, std::shared_ptr<const std::vector<uint8_t>>)>;

class EngineImpl;

class Engine {
 public:
  /// `cloud` overrides the HTTP client built from config.cloud (tests);
  /// `factory` overrides Partition::FromBytes (tests).
  static StatusOr<std::unique_ptr<Engine>> Create(
      EngineConfig config, std::shared_ptr<CloudBackend> cloud = nullptr,
      ModelFactory factory = nullptr);
  ~Engine();  // stops and joins the download thread

  /// Metadata used to verify downloads and map labels to task indices.
  Status SetManifest(Manifest manifest);
  /// Loads `id` from the manifest's directory into a slot.
  Status InstallFromManifest(const std::string& id, bool pinned = false);
  Status Install(std::shared_ptr<CachedModel> model, bool pinned = false);
  /// Layer caching: from now on Infer runs this staged model locally, exit by
  /// exit, with config().layer_cache's gate (the whole model answers when no
  /// exit hits, so the cloud is not needed). Replaces any previous one,
  /// e.g. a retrained version fetched through the manifest.
  Status InstallStaged(std::shared_ptr<StagedModel> model);
  Status InstallStagedFromManifest(const std::string& id);
  /// Statistics of the staged model's caches; NotFound when none is installed.
  StatusOr<LayerCacheStats> LayerCacheStatistics() const;
  /// Makes `id` (which must be cached) the partition Infer runs first.
  Status Activate(const std::string& id);

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
