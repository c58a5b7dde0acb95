// PartitionStore: the device's partitions on disk, kept consistent across
// crashes and power loss.
//
// Layout: DIR/manifest.json (a manifest, schema v1, of the installed
// partitions), DIR/<id>-<sha12>.pte (each installed program), and
// DIR/.incoming/<sha256>.part (the upload in progress). An upload is only
// visible once Commit has checked its size and sha256, renamed it to its
// final name and atomically replaced manifest.json (write, fsync, rename).
// Opening the store removes what a crash can leave behind (a temporary
// manifest, programs the manifest does not name); partial uploads are kept so
// that an upload can resume at their length.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "knowcache/manifest.h"
#include "knowcache/status.h"

namespace knowcache::device {

struct StoreConfig {
  std::string dir;
  int64_t limit_bytes = -1;  // store size limit; -1: the file system's free space
};

/// Test seam for crash tests: when set, called with the name of each step of
/// Commit and Remove once it is on disk ("upload verified", "program renamed",
/// "manifest.json.tmp written", "manifest.json replaced"), so that a test can end the process
/// there as a crash would. Null by default; set it before using a store.
using StoreStepHook = void (*)(const char* step);
void SetStoreStepHookForTesting(StoreStepHook hook);

class PartitionStore {
 public:
  static StatusOr<std::unique_ptr<PartitionStore>> Open(StoreConfig config);

  /// {"task", "partitions": [{"id", "role", "version", "bytes", "sha256"}]}
  nlohmann::json List() const;
  int64_t UsedBytes() const;
  int64_t FreeBytes() const;
  /// The installed partitions as a Manifest (directory set), or NotFound if none.
  StatusOr<Manifest> LoadManifest() const;

  /// Starts or resumes an upload: {"task", "labels", "entry": <manifest partition entry>}.
  /// Returns the offset to continue from (bytes already received).
  StatusOr<int64_t> Begin(const nlohmann::json& request);
  /// Writes upload bytes at `offset` (at most the bytes received so far: a
  /// retried chunk overwrites); returns the bytes received after it.
  StatusOr<int64_t> Write(int64_t offset, const uint8_t* data, size_t n);
  /// Verifies and installs the upload.
  Status Commit();
  Status Remove(const std::string& id);

 private:
  explicit PartitionStore(StoreConfig config);
  Status WriteManifest(const nlohmann::json& doc);
  std::string IncomingPath() const;

  StoreConfig config_;
  nlohmann::json doc_;          // the installed manifest
  nlohmann::json upload_;       // the entry being uploaded, null when none
  std::string upload_sha_;
};

}  // namespace knowcache::device
