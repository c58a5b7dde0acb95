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
//
// With trusted keys (config.signature), PUT_BEGIN must also carry the host's
// signed manifest ("manifest": its exact text, "signature": its manifest.sig
// line): the upload is refused unless the signature verifies against a
// trusted key, the signed manifest pins the entry (id, size, sha256), and its
// version is not older than the newest signed version installed
// ("signed_version" in the store's manifest: no rollback). Each entry records
// the key that vouched for it ("signed_by"), and LoadManifest refuses a store
// holding an entry no trusted key vouched for. The installed partitions stay
// as they were after any refusal.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "knowcache/manifest.h"
#include "knowcache/signature.h"
#include "knowcache/status.h"

namespace knowcache::device {

struct StoreConfig {
  std::string dir;
  int64_t limit_bytes = -1;  // store size limit; -1: the file system's free space
  SignatureConfig signature;  // trusted keys: uploads must come with a signed manifest
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
  /// With trusted keys its version is the newest signed version installed and
  /// `signed_by` is set; FailedPrecondition if an entry was not vouched for.
  StatusOr<Manifest> LoadManifest() const;

  /// Starts or resumes an upload: {"task", "labels", "entry": <manifest partition entry>}
  /// (+ "manifest" and "signature" with trusted keys).
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
  /// With trusted keys: {"by": key id, "version"} of the signed manifest in
  /// `req` that pins the upload, or why it is refused; null without keys.
  StatusOr<nlohmann::json> CheckSigned(const nlohmann::json& req, const std::string& id,
                                       const std::string& sha, int64_t bytes) const;
  std::string IncomingPath() const;

  StoreConfig config_;
  ManifestVerifier verifier_;
  nlohmann::json doc_;          // the installed manifest
  nlohmann::json upload_;       // the entry being uploaded, null when none
  std::string upload_sha_;
};

}  // namespace knowcache::device
