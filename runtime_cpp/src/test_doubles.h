// Test doubles for the core's unit tests: a model that returns scripted
// logits and a cloud that returns scripted answers. Not part of the library.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "knowcache/cached_model.h"
#include "knowcache/cloud_client.h"
#include "knowcache/sha256.h"

namespace knowcache::testing {

inline PartitionInfo MakeInfo(const std::string& id, std::vector<std::string> labels,
                              int64_t bytes = 100, float threshold = 0.5f,
                              int other_index = -1) {
  PartitionInfo p;
  p.id = id;
  p.role = "partition";
  p.labels = std::move(labels);
  p.other_index = other_index;
  p.input.dtype = DType::kFloat32;
  p.input.shape = {1, 4};
  p.bytes = bytes;
  p.threshold = threshold;
  return p;
}

class ScriptedModel : public CachedModel {
 public:
  using Fn = std::function<std::vector<float>(const float*)>;
  ScriptedModel(PartitionInfo info, Fn fn) : info_(std::move(info)), fn_(std::move(fn)) {}
  const PartitionInfo& info() const override { return info_; }
  int64_t resident_bytes() const override { return info_.bytes; }
  StatusOr<std::vector<float>> Run(const TensorView& input) override {
    KC_RETURN_IF_ERROR(info_.input.Check(input));
    ++runs;
    return fn_(static_cast<const float*>(input.data));
  }
  std::atomic<int> runs{0};

 private:
  PartitionInfo info_;
  Fn fn_;
};

class ScriptedCloud : public CloudBackend {
 public:
  StatusOr<CloudAnswer> Infer(const std::string&, const TensorView& input) override {
    ++infers;
    if (!infer_status.ok()) return infer_status;
    CloudAnswer a = answer;
    a.uplink_bytes = static_cast<int64_t>(input.nbytes);
    return a;
  }
  StatusOr<Manifest> FetchManifest(const std::string&) override {
    ++manifest_fetches;
    return manifest;
  }
  StatusOr<std::vector<uint8_t>> FetchPartition(const std::string&, const std::string& id) override {
    ++partition_fetches;
    if (fetch_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(fetch_delay_ms));
    auto it = blobs.find(id);
    if (it == blobs.end()) return NotFound("no blob " + id);
    return it->second;
  }
  // Adds a partition to the served manifest with a correct sha256.
  void Serve(PartitionInfo info, std::vector<uint8_t> blob) {
    info.bytes = static_cast<int64_t>(blob.size());
    info.sha256 = Sha256Hex(blob.data(), blob.size());
    manifest.partitions.push_back(info);
    blobs[info.id] = std::move(blob);
  }

  Status infer_status;
  CloudAnswer answer;
  Manifest manifest;
  std::map<std::string, std::vector<uint8_t>> blobs;
  int fetch_delay_ms = 0;
  std::atomic<int> infers{0}, manifest_fetches{0}, partition_fetches{0};
};

}  // namespace knowcache::testing
