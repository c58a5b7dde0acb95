// Test doubles for the core's unit tests: a model and a staged model that
// return scripted logits, and a cloud that returns scripted answers. Not part
// of the library.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "knowcache/cached_model.h"
#include "knowcache/cloud_client.h"
#include "knowcache/sha256.h"
#include "knowcache/staged_model.h"

namespace knowcache::testing {

inline PartitionInfo MakeInfo(const std::string& id, std::vector<std::string> labels,
                              int64_t bytes = 100, float threshold = 0.5f,
                              int other_index = -1) {
  PartitionInfo p;
  p.id = id;
  p.role = PartitionRole::kPartition;
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

// A staged model over 4-feature inputs with labels a..d: two stages that pass
// the input on (stage 1 repeats it to `stage_width` values), one exit after
// stage 0 whose logits are the input itself (so a test picks whether it hits),
// and a head that always answers "b". The stages in `reads_input` read the
// model input (split computing cannot cut before them).
class ScriptedStagedModel : public StagedModel {
 public:
  static PartitionInfo Info(const std::string& id = "staged") {
    PartitionInfo p = MakeInfo(id, {"a", "b", "c", "d"});
    p.role = PartitionRole::kStaged;
    p.staged.stages = {{"stage_0", 10, 0.0}, {"stage_1", 20, 0.0}};
    ExitInfo e;
    e.cost = {"exit_0", 1, 0.0};
    e.after_stage = 0;
    e.feature_dim = 4;
    e.classes = 4;
    e.thresholds = {{"confidence", 0.9}};
    p.staged.exits = {e};
    p.staged.head = {"head", 5, 0.0};
    p.staged.total_flops = 35;
    return p;
  }
  explicit ScriptedStagedModel(PartitionInfo info = Info()) : info_(std::move(info)) {}

  const PartitionInfo& info() const override { return info_; }
  int64_t resident_bytes() const override { return info_.bytes; }
  StatusOr<Activation> RunFirstStage(const TensorView& input) override {
    KC_RETURN_IF_ERROR(info_.input.Check(input));
    ++stage_runs;
    const float* x = static_cast<const float*>(input.data);
    return Activation{input.shape, std::vector<float>(x, x + 4)};
  }
  StatusOr<Activation> RunStage(int stage, const Activation& in, const TensorView& input) override {
    if (stage == 0) return RunFirstStage(input);
    ++stage_runs;
    Activation out{{1, stage_width}, std::vector<float>(static_cast<size_t>(stage_width))};
    for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = in.data[i % in.data.size()];
    return out;
  }
  bool StageReadsInput(int stage) const override { return reads_input.count(stage) > 0; }
  StatusOr<ExitOutput> RunExit(int, const Activation& in) override {
    ++exit_runs;
    return ExitOutput{in.data, 0.0f, in.data};
  }
  StatusOr<std::vector<float>> RunHead(const Activation&) override {
    ++head_runs;
    return std::vector<float>{0.f, 20.f, 0.f, 0.f};
  }
  std::atomic<int> exit_runs{0}, head_runs{0}, stage_runs{0};
  int64_t stage_width = 4;
  std::set<int> reads_input;

 private:
  PartitionInfo info_;
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
  // Records every upload; answers like Infer.
  StatusOr<CloudAnswer> InferFromStage(const std::string&, const SplitUpload& upload) override {
    std::lock_guard<std::mutex> lock(mu);
    uploads.push_back(upload);
    if (!infer_status.ok()) return infer_status;
    CloudAnswer a = answer;
    a.uplink_bytes = static_cast<int64_t>(upload.activation.data.size());
    return a;
  }
  StatusOr<Manifest> FetchManifest(const std::string&) override {
    ++manifest_fetches;
    return manifest;
  }
  // Serves `document` when set (signed-manifest tests), else what a backend
  // without manifest bytes says.
  StatusOr<ManifestDocument> FetchManifestDocument(const std::string& task) override {
    if (!document) return CloudBackend::FetchManifestDocument(task);
    ++manifest_fetches;
    return *document;
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
  std::optional<ManifestDocument> document;
  std::map<std::string, std::vector<uint8_t>> blobs;
  int fetch_delay_ms = 0;
  std::mutex mu;
  std::vector<SplitUpload> uploads;  // InferFromStage's, in order
  std::atomic<int> infers{0}, manifest_fetches{0}, partition_fetches{0};
};

}  // namespace knowcache::testing
