// PartitionFetcher: downloads the partitions the cloud hints at.
//
// The engine reports each hint (Admit). A hinted partition is admitted once
// the cloud has hinted it `admit_after_hints` times within its last
// `hint_window` hints; the engine then queues it (Enqueue; each id at most
// once at a time). One background thread fetches it: the manifest first when
// the engine's does not list the id, then the bytes, which are checked
// against the manifest's `bytes` and `sha256` before ExecuTorch sees them. A
// good download is built into a model, installed in the slot cache and
// reported to the engine (hooks.installed), which makes it the active
// partition; a bad one leaves the cache as it was and is counted. With
// trusted keys (config.signature), a fetched manifest must carry a valid
// signature by one of them, and the engine refuses one older than its own
// (hooks.adopt): either way nothing is downloaded or installed.
//
// Ownership: shares the engine's CloudBackend, borrows its SlotCache; the
// hooks call back into the engine, so both must outlive the fetcher.
// Thread-safety: every method may be called from any thread; the destructor
// stops and joins the worker (a download in flight finishes first).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "knowcache/cached_model.h"
#include "knowcache/cloud_client.h"
#include "knowcache/manifest.h"
#include "knowcache/signature.h"
#include "knowcache/slot_cache.h"
#include "knowcache/status.h"

namespace knowcache {

struct PartitionFetcherConfig {
  std::string task;  // names the cloud routes
  /// Admission: download a hinted partition once the cloud has hinted it this
  /// many times within its last `hint_window` hints. 1 downloads at the first
  /// hint (CacheNet's policy); 2 or more keeps streams with weak locality from
  /// thrashing the slots (each download evicts a partition and uses the link).
  int admit_after_hints = 1;
  int hint_window = 8;
  /// Trusted keys: a manifest fetched from the cloud is refused unless one of
  /// them signed it (signature.h).
  SignatureConfig signature;

  Status Validate() const;
  std::string ToString() const;
};

struct FetchStats {
  int64_t fetches = 0;
  int64_t failures = 0;
  int64_t bytes = 0;
  std::string last_error;
};

/// What the fetcher asks of the engine it works for.
struct FetchHooks {
  /// The engine's manifest entry for `id`, if it has one.
  std::function<std::optional<PartitionInfo>(const std::string& id)> find;
  /// A manifest fetched from the cloud because `find` did not know a hinted id
  /// (already verified when keys are trusted); an error (a rollback to an older
  /// version) refuses it and nothing is downloaded.
  std::function<Status(Manifest fresh)> adopt;
  /// `id` was downloaded, verified and installed in the slot cache.
  std::function<void(const std::string& id)> installed;
};

class PartitionFetcherImpl;

class PartitionFetcher {
 public:
  /// `factory` builds a model from verified bytes (Partition::FromBytes in
  /// production).
  static StatusOr<std::unique_ptr<PartitionFetcher>> Create(
      PartitionFetcherConfig config, std::shared_ptr<CloudBackend> cloud, SlotCache* cache,
      ModelFactory factory, FetchHooks hooks);
  ~PartitionFetcher();

  /// Records a hint; true when `id` has now been hinted often enough to fetch.
  bool Admit(const std::string& id);
  /// Queues `id` for download unless it is queued or being fetched already.
  void Enqueue(const std::string& id);
  /// Blocks until nothing is queued or running, or `timeout_ms` passes;
  /// false on timeout.
  bool WaitIdle(int timeout_ms);
  FetchStats Stats() const;

 private:
  explicit PartitionFetcher(std::unique_ptr<PartitionFetcherImpl> impl);
  std::unique_ptr<PartitionFetcherImpl> impl_;
};

}  // namespace knowcache
