// The manifest: what partitions exist for a task and how to check them.
//
// A manifest is JSON written by `knowcache export` next to the .pte files and
// served by the cloud at GET /v1/{task}/manifest. Schema (version 1):
//
//   {"schema_version": 1, "task": "kws", "version": 3,
//    "labels": ["backward", "bed", ...],            // the task's full label set
//    "private_labels": ["yes"],                     // optional: never leave the device
//    "partitions": [{
//       "id": "cached", "version": 1, "role": "cached",
//       "file": "cached.pte", "labels": ["yes", "no", ..., "other"],
//       "other_label": "other",                     // optional
//       "input": {"dtype": "float32", "shape": [1, 16000], "sample_rate": 16000},
//                                                   // images: "image_size": [C, H, W],
//                                                   // "value_range": [0, 1] (optional)
//       "threshold": 0.35, "bytes": 123456, "sha256": "<64 hex>"}]}
//
// A partition with role "staged" also has "staged": {"stages": [...],
// "exits": [...], "head": {...}}: see host_tools/knowcache/layer_cache/program.py.
//
// Parsing validates every field and says which one is wrong; unknown fields
// are ignored so newer writers stay readable.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

constexpr int kManifestSchemaVersion = 1;

struct InputSpec {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  int sample_rate = 0;   // audio tasks; 0 when not audio
  int image_height = 0;  // image tasks; 0 when not an image
  int image_width = 0;
  int image_channels = 0;
  // "value_range": [low, high], the values the model was trained on (image tasks:
  // pixels scaled to it, uint8 0 -> low, 255 -> high); low == high == 0 when unstated.
  double value_low = 0.0;
  double value_high = 0.0;

  bool has_value_range() const { return value_high > value_low; }

  /// InvalidArgument naming the mismatch when `view` does not fit this spec: its dtype,
  /// its shape, or (float32 with a value_range) the first element outside the range.
  Status Check(const TensorView& view) const;
};

/// One method of a staged program and what it costs per query.
struct StageInfo {
  std::string method;
  int64_t flops = 0;
  double us = 0.0;  // measured at export, on the exporting machine
};

/// An exit: a cache head on the output of stage `after_stage`. A gate kind
/// without a threshold (JSON null or absent) never hits at this exit.
struct ExitInfo {
  StageInfo cost;  // the exit method
  int after_stage = 0;
  int64_t feature_dim = 0;
  int classes = 0;
  std::map<std::string, double> thresholds;  // learned | confidence | entropy | activation
};

/// The layout of a staged program (role "staged"): stage_0..stage_n, the
/// exits on stage outputs, and the final head. Empty for other roles.
struct StagedInfo {
  std::vector<StageInfo> stages;
  std::vector<ExitInfo> exits;
  StageInfo head;
  int64_t total_flops = 0;

  bool empty() const { return stages.empty(); }
};

/// What a program in a manifest is for ("role" in the JSON).
enum class PartitionRole {
  kFull,       // the whole model: what the cloud runs (a device may run it too)
  kCached,     // knowledge caching: the student specialized to popular classes + other
  kPartition,  // CacheNet: the student for one group of classes + other
  kGeneric,    // a student over every class, the size of the cached one
  kStaged,     // layer caching: the full model cut into stages with exit heads
};
const char* PartitionRoleName(PartitionRole role);
/// InvalidArgument naming the roles when `name` is none of them.
StatusOr<PartitionRole> ParsePartitionRole(const std::string& name);

struct PartitionInfo {
  std::string id;
  int version = 1;
  PartitionRole role = PartitionRole::kPartition;
  std::string file;  // relative to the manifest's directory
  std::vector<std::string> labels;
  int other_index = -1;  // index of the "other" label, -1 if none
  InputSpec input;
  float threshold = 0.5f;  // normalized entropy at or below which we accept
  int64_t bytes = 0;
  std::string sha256;  // lowercase hex
  StagedInfo staged;   // role "staged" only

  /// One manifest entry on its own (a writer checking an entry before it
  /// joins a manifest); the same checks as inside Manifest::Parse.
  static StatusOr<PartitionInfo> Parse(const std::string& json_text);

  /// Corrupt when `bytes` do not have this entry's size (when bytes > 0) or
  /// sha256 (when set): a truncated, replaced or tampered program.
  Status CheckBytes(const std::vector<uint8_t>& data) const;
};

struct Manifest {
  int schema_version = kManifestSchemaVersion;
  std::string task;
  int version = 1;
  std::vector<std::string> labels;
  /// Task labels whose inputs must never leave the device (privacy routing:
  /// the engine answers them locally, see engine.h). Each is in `labels`.
  std::vector<std::string> private_labels;
  std::vector<PartitionInfo> partitions;
  std::string directory;  // where `file` entries resolve; empty when fetched
  /// The id of the trusted key whose signature over this manifest's bytes was
  /// verified (ManifestVerifier, signature.h); empty when it was not checked.
  std::string signed_by;

  static StatusOr<Manifest> Parse(const std::string& json_text);
  static StatusOr<Manifest> Load(const std::string& path);

  /// nullptr if no partition has that id.
  const PartitionInfo* Find(const std::string& id) const;
  /// Ids of the partitions with `role`, in manifest order.
  std::vector<std::string> IdsWithRole(PartitionRole role) const;
  /// Whether `label` is one of private_labels.
  bool IsPrivate(const std::string& label) const;
  /// Index of `label` in the task label set, -1 if absent.
  int LabelIndex(const std::string& label) const;
  /// Absolute or manifest-relative path of a partition's file.
  std::string PathOf(const PartitionInfo& info) const;
};

}  // namespace knowcache
