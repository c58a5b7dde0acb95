#include "knowcache/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <cstdio>
#include <optional>
#include <set>
#include <utility>

#include "knowcache/entropy_gate.h"
#include "knowcache/log.h"
#include "knowcache/partition.h"
#include "knowcache/sha256.h"

namespace knowcache {
namespace {

using Clock = std::chrono::steady_clock;

// NaN or infinity would be answered locally as some label, yet refused by the cloud:
// refused here, so every front end gives the same answer (docs/inputs.md).
Status CheckFinite(const TensorView& input) {
  if (input.dtype != DType::kFloat32) return Status::Ok();
  const float* x = static_cast<const float*>(input.data);
  const size_t n = input.nbytes / sizeof(float);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      return InvalidArgument("input holds NaN or infinite values (first at element " +
                             std::to_string(i) + "); the models take finite numbers");
    }
  }
  return Status::Ok();
}

int64_t MicrosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

// Bytes are checked against the manifest before either factory runs.
StatusOr<std::shared_ptr<CachedModel>> LoadPartition(
    const PartitionInfo& info, std::shared_ptr<const std::vector<uint8_t>> bytes) {
  PartitionLoadOptions options;
  options.verify = false;
  KC_ASSIGN_OR_RETURN(std::shared_ptr<Partition> p,
                      Partition::FromBytes(std::move(bytes), info, options));
  return std::shared_ptr<CachedModel>(std::move(p));
}

StatusOr<std::shared_ptr<StagedModel>> LoadStaged(
    const PartitionInfo& info, std::shared_ptr<const std::vector<uint8_t>> bytes) {
  return StagedModel::FromBytes(std::move(bytes), info, /*verify=*/false);
}

// A program file read whole and checked against its manifest entry.
StatusOr<std::shared_ptr<const std::vector<uint8_t>>> ReadChecked(const std::string& path,
                                                                  const PartitionInfo& info) {
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  if (Status s = info.CheckBytes(bytes); !s.ok()) return Status(s.code(), path + ": " + s.message());
  return std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
}

template <typename T>
StatusOr<T> PrefixPath(const std::string& path, StatusOr<T> v) {
  if (v.ok()) return v;
  return Status(v.status().code(), path + ": " + v.status().message());
}

using LabelSet = std::set<std::string>;

std::string Fixed2(float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

// What the local models run on one query say about its private classes.
struct PrivacyFinding {
  bool is_private = false;
  float mass = 0.0f;   // the largest private mass in one model's answer
  std::string reason;
  LabelSet covered;    // private classes some model that ran holds
  std::optional<std::pair<PartitionInfo, GateDecision>> answer;  // the model that found it

  void Add(const LabelSet& privates, const PartitionInfo& info, const GateDecision& d,
           float share) {
    float m = 0.0f;
    for (size_t i = 0; i < info.labels.size() && i < d.probs.size(); ++i) {
      if (privates.count(info.labels[i])) {
        m += d.probs[i];
        covered.insert(info.labels[i]);
      }
    }
    mass = std::max(mass, m);
    if (is_private) return;
    const bool top_private = d.index >= 0 && d.index < static_cast<int>(info.labels.size()) &&
                             privates.count(info.labels[d.index]) > 0;
    if (top_private) {
      reason = "the local answer '" + info.labels[d.index] + "' is a private class";
    } else if (m > share) {
      reason = "private classes hold " + Fixed2(m) + " of '" + info.id +
               "''s probability, over the private share " + Fixed2(share);
    } else {
      return;
    }
    is_private = true;
    answer.emplace(info, d);
  }

  std::vector<std::string> Uncovered(const LabelSet& privates) const {
    std::vector<std::string> out;
    for (const auto& p : privates) {
      if (!covered.count(p)) out.push_back(p);
    }
    return out;
  }
};

bool HoldsAny(const PartitionInfo& info, const std::vector<std::string>& labels) {
  for (const auto& l : labels) {
    if (std::find(info.labels.begin(), info.labels.end(), l) != info.labels.end()) return true;
  }
  return false;
}

}  // namespace

const char* AnswerSourceName(AnswerSource source) {
  switch (source) {
    case AnswerSource::kLocal: return "local";
    case AnswerSource::kCloud: return "cloud";
    case AnswerSource::kDegraded: return "degraded";
    case AnswerSource::kPrivate: return "private";
    case AnswerSource::kLocalOnly: return "local_only";
  }
  return "unknown";
}

const char* LocalModeName(LocalMode mode) {
  switch (mode) {
    case LocalMode::kPartitions: return "partitions";
    case LocalMode::kStaged: return "staged";
  }
  return "unknown";
}

Status EngineConfig::Validate() const {
  if (task.empty() || task.find_first_of("/ ") != std::string::npos) {
    return InvalidArgument("EngineConfig.task must be a non-empty name like 'kws'");
  }
  KC_RETURN_IF_ERROR(cache.Validate());
  if (!cloud.base_url.empty()) KC_RETURN_IF_ERROR(cloud.Validate());
  if (max_local_attempts < 1) return InvalidArgument("max_local_attempts must be >= 1");
  KC_RETURN_IF_ERROR(layer_cache.Validate());
  if (threshold_override > 1.0f) return InvalidArgument("threshold_override must be <= 1");
  if (!(private_share >= 0.0f && private_share <= 1.0f)) {
    return InvalidArgument("private_share must be in [0, 1], got " + std::to_string(private_share));
  }
  KC_RETURN_IF_ERROR(split.Validate());
  return PartitionFetcherConfig{task, admit_after_hints, hint_window, signature}.Validate();
}

std::string EngineConfig::ToString() const {
  return "EngineConfig(task=" + task + ", " + cache.ToString() + ", " +
         (cloud.base_url.empty() ? std::string("cloud=none") : cloud.ToString()) +
         ", fetch_hints=" + (fetch_hints ? "true" : "false") + ", " +
         PartitionFetcherConfig{task, admit_after_hints, hint_window, signature}.ToString() +
         ", max_local_attempts=" + std::to_string(max_local_attempts) +
         ", private_share=" + Fixed2(private_share) +
         ", local_only=" + (local_only ? "true" : "false") + ", " + split.ToString() + ")";
}

StatusOr<std::vector<std::string>> InstallPlan::Resolve(const Manifest& manifest) const {
  switch (kind) {
    case Kind::kNone:
      return std::vector<std::string>{};
    case Kind::kIds:
      for (const auto& id : ids) {
        if (manifest.Find(id) == nullptr) {
          return NotFound("the manifest has no partition '" + id + "'");
        }
      }
      return ids;
    case Kind::kCached: {
      auto found = manifest.IdsWithRole(PartitionRole::kCached);
      if (found.empty()) {
        return FailedPrecondition("the manifest has no 'cached' partition; name the partitions "
                                  "to install (--install ID)");
      }
      return found;
    }
    case Kind::kStaged: {
      auto found = manifest.IdsWithRole(PartitionRole::kStaged);
      if (found.empty()) {
        return FailedPrecondition("the manifest has no staged program; write one with "
                                  "`knowcache export --staged`");
      }
      return std::vector<std::string>{found.front()};
    }
  }
  return Internal("unknown install plan");
}

std::string InstallPlan::ToString() const {
  switch (kind) {
    case Kind::kCached: return "InstallPlan(cached)";
    case Kind::kStaged: return "InstallPlan(staged)";
    case Kind::kNone: return "InstallPlan(none)";
    case Kind::kIds: {
      std::string s = "InstallPlan(ids=";
      for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + ids[i];
      return s + ")";
    }
  }
  return "InstallPlan(?)";
}

class EngineImpl {
 public:
  EngineConfig config;
  std::unique_ptr<SlotCache> cache;
  std::shared_ptr<CloudBackend> cloud;
  ModelFactory factory;
  StagedModelFactory staged_factory;
  ManifestVerifier verifier;  // config.signature's keys; disabled without any

  mutable std::mutex mu;  // manifest, active_id, layer_cache
  Manifest manifest;
  bool has_manifest = false;
  std::string active_id;
  std::shared_ptr<LayerCache> layer_cache;  // staged model, when installed (LocalMode::kStaged)
  std::shared_ptr<StagedModel> split_model;  // split computing's staged program
  // The manifests' private labels; only grows. Swapped whole, read per query.
  std::shared_ptr<const LabelSet> private_labels = std::make_shared<const LabelSet>();

  std::atomic<int64_t> queries{0}, local{0}, cloud_answers{0}, degraded{0}, cloud_errors{0},
      uplink_bytes{0}, feature_uploads{0}, kept_private{0}, kept_local_only{0};
  // Bytes of the int8 activation at the cut, once a query computed it (-1 before):
  // kAuto then sends raw without running the stages when raw is no larger.
  std::atomic<int64_t> cut_bytes{-1};

  // Declared last: destroyed (its worker joined) before what its hooks use.
  std::unique_ptr<PartitionFetcher> fetcher;  // only with a cloud

  // The one place the active partition changes.
  void SetActive(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu);
    active_id = id;
  }

  std::shared_ptr<LayerCache> Staged() const {
    std::lock_guard<std::mutex> lock(mu);
    return layer_cache;
  }

  std::shared_ptr<StagedModel> SplitModel() const {
    std::lock_guard<std::mutex> lock(mu);
    return split_model;
  }

  // Split computing: the activation at the cut to upload in place of the raw
  // input, or nullopt (kAuto: raw is no larger) with r->split_reason saying so.
  StatusOr<std::optional<SplitUpload>> SplitFor(const TensorView& input, InferenceResult* r) {
    std::shared_ptr<StagedModel> model = SplitModel();
    if (!model) return FailedPrecondition("no staged program is installed for split computing");
    const int cut = config.split.cut_stage;
    const int64_t raw = RawUploadBytes(input, config.cloud);   // what a raw upload sends
    auto raw_is_smaller = [&](int64_t features) {
      if (config.split.mode != SplitMode::kAuto || features < raw) return false;
      r->split_reason = "the raw input (" + std::to_string(raw) + " bytes) is no larger than "
                        "the activation at stage " + std::to_string(cut) + " (" +
                        std::to_string(features) + " bytes)";
      return true;
    };
    if (raw_is_smaller(cut_bytes.load())) return std::optional<SplitUpload>();
    const auto t_split = Clock::now();
    KC_ASSIGN_OR_RETURN(QuantizedActivation q, RunToCut(*model, cut, input));
    r->local_us += MicrosSince(t_split);
    cut_bytes = static_cast<int64_t>(q.data.size());
    if (raw_is_smaller(cut_bytes.load())) return std::optional<SplitUpload>();
    return std::optional<SplitUpload>(
        SplitUpload{model->info().id, model->info().version, cut, std::move(q)});
  }

  // A partition's manifest entry and the path of its file.
  StatusOr<std::pair<PartitionInfo, std::string>> Lookup(const std::string& id) const {
    std::lock_guard<std::mutex> lock(mu);
    if (!has_manifest) return FailedPrecondition("set a manifest before installing by id");
    const PartitionInfo* p = manifest.Find(id);
    if (p == nullptr) return NotFound("manifest has no partition '" + id + "'");
    return std::make_pair(*p, manifest.PathOf(*p));
  }

  StatusOr<std::shared_ptr<StagedModel>> LoadStagedFromManifest(const std::string& id) const {
    KC_ASSIGN_OR_RETURN(auto found, Lookup(id));
    const auto& [info, path] = found;
    KC_ASSIGN_OR_RETURN(auto bytes, ReadChecked(path, info));
    return PrefixPath(path, staged_factory(info, std::move(bytes)));
  }

  std::optional<PartitionInfo> Find(const std::string& id) const {
    std::lock_guard<std::mutex> lock(mu);
    const PartitionInfo* p = has_manifest ? manifest.Find(id) : nullptr;
    return p ? std::optional<PartitionInfo>(*p) : std::nullopt;
  }

  // Whether `next` may replace the engine's manifest; mu held.
  Status CheckReplacementLocked(const Manifest& next) const {
    if (verifier.enabled() && !verifier.Trusts(next.signed_by)) {
      return FailedPrecondition(
          "manifest version " + std::to_string(next.version) + " of task '" + next.task +
          "' is not verified by a trusted key (trusted: " + verifier.KeyIds() +
          "); load it with its signature (manifest.sig)");
    }
    // Versions are only compared when signed: an unsigned one proves nothing,
    // and a device store numbers its own manifests apart from the cloud's.
    if (verifier.enabled() && has_manifest && next.version < manifest.version) {
      return FailedPrecondition("manifest version " + std::to_string(next.version) +
                                " is older than the installed version " +
                                std::to_string(manifest.version) +
                                " (a rollback); the installed partitions stay in use");
    }
    return Status::Ok();
  }

  Status Adopt(Manifest fresh) {
    std::lock_guard<std::mutex> lock(mu);
    KC_RETURN_IF_ERROR(CheckReplacementLocked(fresh));
    fresh.directory = manifest.directory;
    AddPrivateLocked(fresh.private_labels);
    manifest = std::move(fresh);
    has_manifest = true;
    return Status::Ok();
  }

  // With trusted keys, a program is installed only when the signed manifest
  // pins it: same id, size and sha256 as the entry the program was checked against.
  Status CheckPinned(const PartitionInfo& info) const {
    if (!verifier.enabled()) return Status::Ok();
    std::lock_guard<std::mutex> lock(mu);
    const PartitionInfo* pinned = has_manifest ? manifest.Find(info.id) : nullptr;
    if (pinned == nullptr || pinned->sha256 != info.sha256 || pinned->bytes != info.bytes ||
        info.sha256.empty()) {
      return FailedPrecondition("program '" + info.id + "' (sha256 " +
                                (info.sha256.empty() ? std::string("none") : info.sha256) +
                                ") is not pinned by the signed manifest; it is not installed");
    }
    return Status::Ok();
  }

  // A manifest (local or fetched) can add private labels, never remove one: a
  // cloud serving a manifest without them cannot make a private class public.
  void AddPrivateLocked(const std::vector<std::string>& labels) {
    if (std::all_of(labels.begin(), labels.end(),
                    [&](const std::string& l) { return private_labels->count(l) > 0; })) {
      return;
    }
    auto grown = std::make_shared<LabelSet>(*private_labels);
    grown->insert(labels.begin(), labels.end());
    private_labels = std::move(grown);
  }

  std::shared_ptr<const LabelSet> PrivateLabels() const {
    std::lock_guard<std::mutex> lock(mu);
    return private_labels;
  }

  float ThresholdFor(const PartitionInfo& info) const {
    return config.threshold_override >= 0.0f ? config.threshold_override : info.threshold;
  }

  int TaskIndex(const std::string& label, int local_index) const {
    std::lock_guard<std::mutex> lock(mu);
    if (!has_manifest || manifest.labels.empty()) return local_index;
    return manifest.LabelIndex(label);
  }

  // The partitions to try, active first, then most recent first.
  std::vector<std::shared_ptr<CachedModel>> Candidates() const {
    std::vector<std::shared_ptr<CachedModel>> out;
    std::string active;
    {
      std::lock_guard<std::mutex> lock(mu);
      active = active_id;
    }
    if (auto m = cache->Peek(active)) out.push_back(m);
    for (const auto& id : cache->Ids()) {
      if (static_cast<int>(out.size()) >= config.max_local_attempts) break;
      if (id != active) {
        if (auto m = cache->Peek(id)) out.push_back(m);
      }
    }
    return out;
  }

  // LocalMode::kStaged: the staged model answers, exit by exit.
  StatusOr<InferenceResult> AnswerStaged(LayerCache& staged, const TensorView& input,
                                         Clock::time_point t0) {
    InferenceResult r;
    KC_ASSIGN_OR_RETURN(LayerCacheResult lc, staged.Run(input));
    const PartitionInfo& info = staged.model().info();
    r.source = AnswerSource::kLocal;
    r.partition_id = info.id;
    r.label = lc.index >= 0 && lc.index < static_cast<int>(info.labels.size())
                  ? info.labels[lc.index] : std::to_string(lc.index);
    r.index = TaskIndex(r.label, lc.index);
    r.confidence = lc.confidence;
    r.exit_index = lc.exit;
    r.flops = lc.flops;
    r.lookup_us = lc.lookup_us;
    r.local_attempts = 1;
    r.local_us = lc.total_us;
    r.is_private = PrivateLabels()->count(r.label) > 0;
    ++local;
    r.total_us = MicrosSince(t0);
    return r;
  }

  // The local answer `d` of `info` into r.
  void SetLocalAnswer(const PartitionInfo& info, const GateDecision& d, InferenceResult* r) const {
    r->partition_id = info.id;
    r->entropy = d.entropy;
    r->confidence = d.max_prob;
    r->label = d.index < static_cast<int>(info.labels.size()) ? info.labels[d.index]
                                                             : std::to_string(d.index);
    r->index = d.is_other ? -1 : TaskIndex(r->label, d.index);
  }

  StatusOr<GateDecision> RunGated(CachedModel& model, const TensorView& input,
                                  InferenceResult* r) const {
    const auto t_local = Clock::now();
    KC_ASSIGN_OR_RETURN(std::vector<float> logits, model.Run(input));
    const PartitionInfo& info = model.info();
    KC_ASSIGN_OR_RETURN(GateDecision d,
                        EntropyGate::Evaluate(logits, ThresholdFor(info), info.other_index));
    r->local_us += MicrosSince(t_local);
    ++r->local_attempts;
    return d;
  }

  // Before an upload: the cached models not run yet that hold a private class
  // no model has run on, most recent first, until the query is found private
  // or every private class has been looked at.
  Status CheckUncovered(const LabelSet& privates, const TensorView& input,
                        std::vector<std::string>* ran, PrivacyFinding* privacy,
                        InferenceResult* r) const {
    for (const auto& id : cache->Ids()) {
      if (privacy->is_private) break;
      const auto uncovered = privacy->Uncovered(privates);
      if (uncovered.empty()) break;
      if (std::find(ran->begin(), ran->end(), id) != ran->end()) continue;
      std::shared_ptr<CachedModel> model = cache->Peek(id);
      if (!model || !HoldsAny(model->info(), uncovered)) continue;
      KC_ASSIGN_OR_RETURN(GateDecision d, RunGated(*model, input, r));
      ran->push_back(id);
      privacy->Add(privates, model->info(), d, config.private_share);
    }
    if (!privacy->is_private) {
      const auto uncovered = privacy->Uncovered(privates);
      if (!uncovered.empty()) {
        std::string names;
        for (const auto& l : uncovered) names += (names.empty() ? "'" : ", '") + l + "'";
        privacy->is_private = true;
        privacy->reason = "private classes " + names +
                          " are held by no installed model, so their share is unknown";
      }
    }
    return Status::Ok();
  }

  // LocalMode::kPartitions: cached partitions behind the gate, then the cloud,
  // unless the query is private or the engine is local-only.
  StatusOr<InferenceResult> AnswerTwoStage(const TensorView& input, Clock::time_point t0) {
    InferenceResult r;
    bool have_local = false;
    const std::shared_ptr<const LabelSet> privates = PrivateLabels();
    PrivacyFinding privacy;
    std::vector<std::string> ran;
    for (const auto& model : Candidates()) {
      KC_ASSIGN_OR_RETURN(GateDecision d, RunGated(*model, input, &r));
      const PartitionInfo& info = model->info();
      ran.push_back(info.id);
      if (!privates->empty()) privacy.Add(*privates, info, d, config.private_share);
      if (!have_local || d.accept) {
        have_local = true;
        SetLocalAnswer(info, d, &r);
      }
      if (d.accept) {
        cache->Get(info.id);  // a hit: keeps the answering partition most recent
        r.source = AnswerSource::kLocal;
        r.is_private = privacy.is_private;
        r.private_mass = privacy.mass;
        ++local;
        r.total_us = MicrosSince(t0);
        return r;
      }
    }

    // The gate rejected every local answer: the query would be uploaded.
    const bool would_upload = cloud && !config.local_only;
    if (would_upload && !privates->empty()) {
      KC_RETURN_IF_ERROR(CheckUncovered(*privates, input, &ran, &privacy, &r));
    }
    r.private_mass = privacy.mass;
    if (privacy.is_private) {
      ++kept_private;
      if (!have_local) {
        return FailedPrecondition(privacy.reason +
                                  "; the input was not uploaded and no partition is cached "
                                  "(install one that holds the private classes)");
      }
      if (privacy.answer) SetLocalAnswer(privacy.answer->first, privacy.answer->second, &r);
      r.source = AnswerSource::kPrivate;
      r.is_private = true;
      r.kept_reason = privacy.reason;
      r.total_us = MicrosSince(t0);
      return r;
    }
    if (config.local_only) {
      if (!have_local) {
        return FailedPrecondition("the engine is local-only and no partition is cached");
      }
      ++kept_local_only;
      r.source = AnswerSource::kLocalOnly;
      r.kept_reason = "local-only mode: the gate rejected the local answer and the cloud is "
                      "not asked";
      r.total_us = MicrosSince(t0);
      return r;
    }
    auto degrade = [&](std::string reason) -> StatusOr<InferenceResult> {
      if (!have_local) {
        return Unavailable("no partition is cached and " + reason);
      }
      r.source = AnswerSource::kDegraded;
      r.degraded_reason = std::move(reason);
      ++degraded;
      r.total_us = MicrosSince(t0);
      return r;
    };
    if (!cloud) {
      if (!have_local) {
        return FailedPrecondition("no partition is cached and no cloud is configured");
      }
      return degrade("gate rejected the local answer and no cloud is configured");
    }
    std::optional<SplitUpload> features;
    if (config.split.mode != SplitMode::kOff) {
      auto split = SplitFor(input, &r);
      if (split.ok()) {
        features = std::move(split).value();
      } else if (config.split.mode == SplitMode::kAlways) {
        // Never the raw input instead: the query stays on the device.
        r.split_reason = split.status().ToString();
        return degrade("split computing failed, and split mode 'always' never uploads the "
                       "raw input: " + split.status().ToString());
      } else {
        r.split_reason = split.status().ToString() + "; the raw input was uploaded";
      }
    }
    const auto t_net = Clock::now();
    auto answer = features ? cloud->InferFromStage(config.task, *features)
                           : cloud->Infer(config.task, input);
    r.network_us = MicrosSince(t_net);
    if (!answer.ok()) {
      ++cloud_errors;
      // A bad raw input is the caller's; a refused activation is not.
      if (!features && answer.status().code() == StatusCode::kInvalidArgument) {
        return answer.status();
      }
      if (!have_local) {
        return Unavailable("no partition is cached and the cloud failed: " +
                           answer.status().message());
      }
      return degrade(answer.status().ToString());
    }
    r.uplink = features ? Uplink::kFeatures : Uplink::kRaw;
    if (features) ++feature_uploads;
    r.source = AnswerSource::kCloud;
    r.label = answer->label;
    r.index = answer->index;
    r.confidence = answer->confidence;
    r.partition_hint = answer->partition_hint;
    r.uplink_bytes = answer->uplink_bytes;
    uplink_bytes += answer->uplink_bytes;
    ++cloud_answers;
    if (!r.partition_hint.empty()) {
      const bool admitted = fetcher->Admit(r.partition_hint);
      if (cache->Get(r.partition_hint)) {
        SetActive(r.partition_hint);
      } else if (config.fetch_hints && admitted) {
        fetcher->Enqueue(r.partition_hint);
      }
    }
    r.total_us = MicrosSince(t0);
    return r;
  }
};

Engine::Engine(std::unique_ptr<EngineImpl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { impl_->fetcher.reset(); }

StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineConfig config,
                                                 std::shared_ptr<CloudBackend> cloud,
                                                 ModelFactory factory,
                                                 StagedModelFactory staged_factory) {
  KC_RETURN_IF_ERROR(config.Validate());
  auto impl = std::make_unique<EngineImpl>();
  KC_ASSIGN_OR_RETURN(impl->cache, SlotCache::Create(config.cache));
  KC_ASSIGN_OR_RETURN(impl->verifier, ManifestVerifier::Create(config.signature));
  if (!cloud && !config.cloud.base_url.empty()) {
    KC_ASSIGN_OR_RETURN(std::unique_ptr<CloudClient> client, CloudClient::Create(config.cloud));
    cloud = std::move(client);
  }
  impl->cloud = std::move(cloud);
  impl->factory = factory ? std::move(factory) : ModelFactory(LoadPartition);
  impl->staged_factory =
      staged_factory ? std::move(staged_factory) : StagedModelFactory(LoadStaged);
  impl->config = std::move(config);
  EngineImpl* raw = impl.get();
  if (raw->cloud) {
    FetchHooks hooks;
    hooks.find = [raw](const std::string& id) { return raw->Find(id); };
    hooks.adopt = [raw](Manifest fresh) { return raw->Adopt(std::move(fresh)); };
    hooks.installed = [raw](const std::string& id) { raw->SetActive(id); };
    KC_ASSIGN_OR_RETURN(
        raw->fetcher,
        PartitionFetcher::Create({raw->config.task, raw->config.admit_after_hints,
                                  raw->config.hint_window, raw->config.signature},
                                 raw->cloud, raw->cache.get(), raw->factory, std::move(hooks)));
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

StatusOr<std::unique_ptr<Engine>> Engine::FromManifest(EngineConfig config, Manifest manifest,
                                                       const InstallPlan& plan,
                                                       std::shared_ptr<CloudBackend> cloud,
                                                       ModelFactory factory,
                                                       StagedModelFactory staged_factory) {
  if (config.task.empty()) config.task = manifest.task;
  KC_ASSIGN_OR_RETURN(std::vector<std::string> ids, plan.Resolve(manifest));
  const bool split = config.split.mode != SplitMode::kOff;
  std::vector<std::string> split_ids;
  if (split && plan.kind != InstallPlan::Kind::kStaged) {
    KC_ASSIGN_OR_RETURN(split_ids, InstallPlan::Staged().Resolve(manifest));
  }
  KC_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                      Create(std::move(config), std::move(cloud), std::move(factory),
                             std::move(staged_factory)));
  KC_RETURN_IF_ERROR(engine->SetManifest(std::move(manifest)));
  if (plan.kind == InstallPlan::Kind::kStaged) {
    if (split) {
      return FailedPrecondition("split computing uploads what the gate of a cached partition "
                                "rejects; the staged mode never asks the cloud, so install "
                                "cached partitions or turn split off");
    }
    KC_RETURN_IF_ERROR(engine->InstallStagedFromManifest(ids.front()));
    return engine;
  }
  if (split) {
    KC_ASSIGN_OR_RETURN(std::shared_ptr<StagedModel> model,
                        engine->impl_->LoadStagedFromManifest(split_ids.front()));
    if (Status s = engine->InstallSplit(std::move(model)); !s.ok()) {
      return Status(s.code(), "split computing: " + s.message());
    }
  }
  for (const auto& id : ids) {
    if (Status s = engine->InstallFromManifest(id, plan.pinned); !s.ok()) {
      return Status(s.code(), "installing '" + id + "': " + s.message());
    }
  }
  if (!ids.empty()) KC_RETURN_IF_ERROR(engine->Activate(ids.front()));
  return engine;
}

StatusOr<std::unique_ptr<Engine>> Engine::FromModelsDir(EngineConfig config,
                                                        const std::string& directory,
                                                        const InstallPlan& plan) {
  KC_ASSIGN_OR_RETURN(ManifestVerifier verifier, ManifestVerifier::Create(config.signature));
  KC_ASSIGN_OR_RETURN(Manifest manifest, verifier.LoadSigned(directory));
  return FromManifest(std::move(config), std::move(manifest), plan);
}

Status Engine::SetManifest(Manifest manifest) {
  if (manifest.task != impl_->config.task) {
    return InvalidArgument("manifest is for task '" + manifest.task + "' but the engine runs '" +
                           impl_->config.task + "'");
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  KC_RETURN_IF_ERROR(impl_->CheckReplacementLocked(manifest));
  impl_->AddPrivateLocked(manifest.private_labels);
  impl_->manifest = std::move(manifest);
  impl_->has_manifest = true;
  return Status::Ok();
}

Status Engine::InstallFromManifest(const std::string& id, bool pinned) {
  KC_ASSIGN_OR_RETURN(auto found, impl_->Lookup(id));
  const auto& [info, path] = found;
  KC_ASSIGN_OR_RETURN(auto bytes, ReadChecked(path, info));
  KC_ASSIGN_OR_RETURN(std::shared_ptr<CachedModel> model,
                      PrefixPath(path, impl_->factory(info, std::move(bytes))));
  return Install(std::move(model), pinned);
}

Status Engine::Install(std::shared_ptr<CachedModel> model, bool pinned) {
  if (!model) return InvalidArgument("cannot install a null model");
  KC_RETURN_IF_ERROR(impl_->CheckPinned(model->info()));
  std::string id = model->info().id;
  KC_RETURN_IF_ERROR(impl_->cache->Install(std::move(model), pinned));
  impl_->SetActive(id);
  return Status::Ok();
}

Status Engine::InstallStaged(std::shared_ptr<StagedModel> model) {
  if (!model) return InvalidArgument("cannot install a null staged model");
  KC_RETURN_IF_ERROR(impl_->CheckPinned(model->info()));
  KC_ASSIGN_OR_RETURN(std::unique_ptr<LayerCache> cache,
                      LayerCache::Create(std::move(model), impl_->config.layer_cache));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->layer_cache = std::move(cache);
  return Status::Ok();
}

Status Engine::InstallStagedFromManifest(const std::string& id) {
  KC_ASSIGN_OR_RETURN(std::shared_ptr<StagedModel> model, impl_->LoadStagedFromManifest(id));
  return InstallStaged(std::move(model));
}

Status Engine::InstallSplit(std::shared_ptr<StagedModel> model) {
  if (!model) return InvalidArgument("cannot install a null staged model");
  if (impl_->config.split.mode == SplitMode::kOff) {
    return FailedPrecondition("split computing is off; set the engine's split mode to auto or "
                              "always to install a staged program for it");
  }
  KC_RETURN_IF_ERROR(impl_->CheckPinned(model->info()));
  KC_RETURN_IF_ERROR(CheckCutPoint(*model, impl_->config.split.cut_stage));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->split_model = std::move(model);
  impl_->cut_bytes = -1;
  return Status::Ok();
}

StatusOr<LayerCacheStats> Engine::LayerCacheStatistics() const {
  std::shared_ptr<LayerCache> cache = impl_->Staged();
  if (!cache) return NotFound("no staged model is installed");
  return cache->Stats();
}

Status Engine::Activate(const std::string& id) {
  if (!impl_->cache->Contains(id)) return NotFound("partition '" + id + "' is not cached");
  impl_->SetActive(id);
  return Status::Ok();
}

LocalMode Engine::Mode() const {
  return impl_->Staged() ? LocalMode::kStaged : LocalMode::kPartitions;
}

StatusOr<InputSpec> Engine::LocalInput() const {
  if (auto staged = impl_->Staged()) return staged->model().info().input;
  if (auto model = impl_->cache->Peek(ActiveId())) return model->info().input;
  return NotFound("no partition is installed");
}

StatusOr<InferenceResult> Engine::Infer(const TensorView& input) {
  const auto t0 = Clock::now();
  KC_RETURN_IF_ERROR(input.Validate());
  KC_RETURN_IF_ERROR(CheckFinite(input));
  ++impl_->queries;
  if (std::shared_ptr<LayerCache> staged = impl_->Staged()) {
    return impl_->AnswerStaged(*staged, input, t0);
  }
  return impl_->AnswerTwoStage(input, t0);
}

bool Engine::WaitForFetches(int timeout_ms) {
  return impl_->fetcher ? impl_->fetcher->WaitIdle(timeout_ms) : true;
}

std::vector<std::string> Engine::CachedIds() const { return impl_->cache->Ids(); }

std::string Engine::ActiveId() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->active_id;
}

EngineStats Engine::Stats() const {
  EngineStats s;
  const EngineImpl& e = *impl_;
  s.queries = e.queries;
  s.local = e.local;
  s.cloud = e.cloud_answers;
  s.degraded = e.degraded;
  s.cloud_errors = e.cloud_errors;
  s.uplink_bytes = e.uplink_bytes;
  s.feature_uploads = e.feature_uploads;
  s.kept_private = e.kept_private;
  s.kept_local_only = e.kept_local_only;
  if (e.fetcher) {
    FetchStats f = e.fetcher->Stats();
    s.fetches = f.fetches;
    s.fetch_failures = f.failures;
    s.fetched_bytes = f.bytes;
    s.last_fetch_error = f.last_error;
  }
  s.cache = e.cache->Stats();
  return s;
}

const EngineConfig& Engine::config() const { return impl_->config; }

}  // namespace knowcache
