#include "knowcache/engine.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "knowcache/entropy_gate.h"
#include "knowcache/log.h"
#include "knowcache/partition.h"

namespace knowcache {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MicrosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

StatusOr<std::shared_ptr<CachedModel>> LoadPartition(
    const PartitionInfo& info, std::shared_ptr<const std::vector<uint8_t>> bytes) {
  PartitionLoadOptions options;
  options.verify = false;  // the engine has checked size and sha256 already
  KC_ASSIGN_OR_RETURN(std::shared_ptr<Partition> p,
                      Partition::FromBytes(std::move(bytes), info, options));
  return std::shared_ptr<CachedModel>(std::move(p));
}

}  // namespace

const char* AnswerSourceName(AnswerSource source) {
  switch (source) {
    case AnswerSource::kLocal: return "local";
    case AnswerSource::kCloud: return "cloud";
    case AnswerSource::kDegraded: return "degraded";
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
  if (admit_after_hints < 1 || hint_window < admit_after_hints) {
    return InvalidArgument("admit_after_hints must be >= 1 and hint_window >= admit_after_hints");
  }
  return Status::Ok();
}

std::string EngineConfig::ToString() const {
  return "EngineConfig(task=" + task + ", " + cache.ToString() + ", " +
         (cloud.base_url.empty() ? std::string("cloud=none") : cloud.ToString()) +
         ", fetch_hints=" + (fetch_hints ? "true" : "false") +
         ", admit_after_hints=" + std::to_string(admit_after_hints) + "/" +
         std::to_string(hint_window) +
         ", max_local_attempts=" + std::to_string(max_local_attempts) + ")";
}

class EngineImpl {
 public:
  EngineConfig config;
  std::unique_ptr<SlotCache> cache;
  std::shared_ptr<CloudBackend> cloud;
  ModelFactory factory;

  mutable std::mutex mu;  // manifest, active_id, last_fetch_error, recent_hints
  Manifest manifest;
  bool has_manifest = false;
  std::string active_id;
  std::string last_fetch_error;
  std::deque<std::string> recent_hints;  // the cloud's last hint_window hints
  std::shared_ptr<LayerCache> layer_cache;  // staged model, when installed

  std::atomic<int64_t> queries{0}, local{0}, cloud_answers{0}, degraded{0}, cloud_errors{0},
      fetches{0}, fetch_failures{0}, fetched_bytes{0}, uplink_bytes{0};

  // Background downloads.
  std::mutex fetch_mu;
  std::condition_variable fetch_cv;
  std::condition_variable idle_cv;
  std::deque<std::string> queue;
  std::set<std::string> pending;  // queued or running
  bool stopping = false;
  std::thread worker;

  // A partition's manifest entry and the path of its file.
  StatusOr<std::pair<PartitionInfo, std::string>> Lookup(const std::string& id) const {
    std::lock_guard<std::mutex> lock(mu);
    if (!has_manifest) return FailedPrecondition("set a manifest before installing by id");
    const PartitionInfo* p = manifest.Find(id);
    if (p == nullptr) return NotFound("manifest has no partition '" + id + "'");
    return std::make_pair(*p, manifest.PathOf(*p));
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

  // Records a hint; true when `id` has now been hinted often enough to download.
  bool Admit(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu);
    recent_hints.push_back(id);
    while (static_cast<int>(recent_hints.size()) > config.hint_window) recent_hints.pop_front();
    int count = 0;
    for (const auto& h : recent_hints) count += h == id;
    return count >= config.admit_after_hints;
  }

  void Enqueue(const std::string& id) {
    std::lock_guard<std::mutex> lock(fetch_mu);
    if (stopping || pending.count(id)) return;
    pending.insert(id);
    queue.push_back(id);
    fetch_cv.notify_one();
  }

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(fetch_mu);
    while (true) {
      fetch_cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) break;
      std::string id = queue.front();
      queue.pop_front();
      lock.unlock();
      Status s = FetchAndInstall(id);
      if (!s.ok()) {
        ++fetch_failures;
        KC_LOG(kWarn, "fetching partition '%s' failed: %s", id.c_str(), s.ToString().c_str());
        std::lock_guard<std::mutex> g(mu);
        last_fetch_error = s.ToString();
      }
      lock.lock();
      pending.erase(id);
      if (pending.empty()) idle_cv.notify_all();
    }
    pending.clear();
    queue.clear();
    idle_cv.notify_all();
  }

  Status FetchAndInstall(const std::string& id) {
    if (cache->Contains(id)) return Status::Ok();
    PartitionInfo info;
    bool known = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (has_manifest) {
        if (const PartitionInfo* p = manifest.Find(id)) {
          info = *p;
          known = true;
        }
      }
    }
    if (!known) {
      KC_ASSIGN_OR_RETURN(Manifest fresh, cloud->FetchManifest(config.task));
      const PartitionInfo* p = fresh.Find(id);
      if (p == nullptr) return NotFound("the cloud hinted partition '" + id + "' but its manifest has no such entry");
      info = *p;
      std::lock_guard<std::mutex> lock(mu);
      fresh.directory = manifest.directory;
      manifest = std::move(fresh);
      has_manifest = true;
    }
    KC_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, cloud->FetchPartition(config.task, id));
    ++fetches;
    fetched_bytes += static_cast<int64_t>(raw.size());
    // Fetched manifests always carry bytes and sha256 (the parser requires them).
    if (Status s = info.CheckBytes(raw); !s.ok()) {
      return Status(s.code(), "downloaded " + s.message());
    }
    auto bytes = std::make_shared<const std::vector<uint8_t>>(std::move(raw));
    KC_ASSIGN_OR_RETURN(std::shared_ptr<CachedModel> model, factory(info, std::move(bytes)));
    KC_RETURN_IF_ERROR(cache->Install(model, /*pinned=*/false));
    std::lock_guard<std::mutex> lock(mu);
    active_id = id;
    KC_LOG(kInfo, "installed partition '%s' from the cloud", id.c_str());
    return Status::Ok();
  }
};

Engine::Engine(std::unique_ptr<EngineImpl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(impl_->fetch_mu);
    impl_->stopping = true;
  }
  impl_->fetch_cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineConfig config,
                                                 std::shared_ptr<CloudBackend> cloud,
                                                 ModelFactory factory) {
  KC_RETURN_IF_ERROR(config.Validate());
  auto impl = std::make_unique<EngineImpl>();
  KC_ASSIGN_OR_RETURN(impl->cache, SlotCache::Create(config.cache));
  if (!cloud && !config.cloud.base_url.empty()) {
    KC_ASSIGN_OR_RETURN(std::unique_ptr<CloudClient> client, CloudClient::Create(config.cloud));
    cloud = std::move(client);
  }
  impl->cloud = std::move(cloud);
  impl->factory = factory ? std::move(factory) : ModelFactory(LoadPartition);
  impl->config = std::move(config);
  EngineImpl* raw = impl.get();
  if (raw->cloud) raw->worker = std::thread([raw] { raw->WorkerLoop(); });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Status Engine::SetManifest(Manifest manifest) {
  if (manifest.task != impl_->config.task) {
    return InvalidArgument("manifest is for task '" + manifest.task + "' but the engine runs '" +
                           impl_->config.task + "'");
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->manifest = std::move(manifest);
  impl_->has_manifest = true;
  return Status::Ok();
}

Status Engine::InstallFromManifest(const std::string& id, bool pinned) {
  KC_ASSIGN_OR_RETURN(auto found, impl_->Lookup(id));
  KC_ASSIGN_OR_RETURN(std::shared_ptr<Partition> partition,
                      Partition::FromFile(found.second, found.first));
  return Install(std::move(partition), pinned);
}

Status Engine::Install(std::shared_ptr<CachedModel> model, bool pinned) {
  if (!model) return InvalidArgument("cannot install a null model");
  std::string id = model->info().id;
  KC_RETURN_IF_ERROR(impl_->cache->Install(std::move(model), pinned));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->active_id = id;
  return Status::Ok();
}

Status Engine::InstallStaged(std::shared_ptr<StagedModel> model) {
  KC_ASSIGN_OR_RETURN(std::unique_ptr<LayerCache> cache,
                      LayerCache::Create(std::move(model), impl_->config.layer_cache));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->layer_cache = std::move(cache);
  return Status::Ok();
}

Status Engine::InstallStagedFromManifest(const std::string& id) {
  KC_ASSIGN_OR_RETURN(auto found, impl_->Lookup(id));
  KC_ASSIGN_OR_RETURN(std::shared_ptr<StagedModel> model,
                      StagedModel::FromFile(found.second, found.first));
  return InstallStaged(std::move(model));
}

StatusOr<LayerCacheStats> Engine::LayerCacheStatistics() const {
  std::shared_ptr<LayerCache> cache;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    cache = impl_->layer_cache;
  }
  if (!cache) return NotFound("no staged model is installed");
  return cache->Stats();
}

Status Engine::Activate(const std::string& id) {
  if (!impl_->cache->Contains(id)) return NotFound("partition '" + id + "' is not cached");
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->active_id = id;
  return Status::Ok();
}

StatusOr<InferenceResult> Engine::Infer(const TensorView& input) {
  const auto t0 = Clock::now();
  KC_RETURN_IF_ERROR(input.Validate());
  EngineImpl& e = *impl_;
  ++e.queries;
  InferenceResult r;

  std::shared_ptr<LayerCache> staged;
  {
    std::lock_guard<std::mutex> lock(e.mu);
    staged = e.layer_cache;
  }
  if (staged) {
    KC_ASSIGN_OR_RETURN(LayerCacheResult lc, staged->Run(input));
    const PartitionInfo& info = staged->model().info();
    r.source = AnswerSource::kLocal;
    r.partition_id = info.id;
    r.label = lc.index >= 0 && lc.index < static_cast<int>(info.labels.size())
                  ? info.labels[lc.index] : std::to_string(lc.index);
    r.index = e.TaskIndex(r.label, lc.index);
    r.confidence = lc.confidence;
    r.exit_index = lc.exit;
    r.flops = lc.flops;
    r.lookup_us = lc.lookup_us;
    r.local_attempts = 1;
    r.local_us = lc.total_us;
    ++e.local;
    r.total_us = MicrosSince(t0);
    return r;
  }

  // Stage one: the cached partitions.
  bool have_local = false;
  for (const auto& model : e.Candidates()) {
    const auto t_local = Clock::now();
    KC_ASSIGN_OR_RETURN(std::vector<float> logits, model->Run(input));
    const PartitionInfo& info = model->info();
    KC_ASSIGN_OR_RETURN(GateDecision d,
                        EntropyGate::Evaluate(logits, e.ThresholdFor(info), info.other_index));
    r.local_us += MicrosSince(t_local);
    ++r.local_attempts;
    if (!have_local || d.accept) {
      have_local = true;
      r.partition_id = info.id;
      r.entropy = d.entropy;
      r.confidence = d.max_prob;
      r.label = d.index < static_cast<int>(info.labels.size()) ? info.labels[d.index]
                                                              : std::to_string(d.index);
      r.index = d.is_other ? -1 : e.TaskIndex(r.label, d.index);
    }
    if (d.accept) {
      e.cache->Get(info.id);  // a hit: keeps the answering partition most recent
      r.source = AnswerSource::kLocal;
      ++e.local;
      r.total_us = MicrosSince(t0);
      return r;
    }
  }

  // Stage two: the cloud.
  if (!e.cloud) {
    if (!have_local) {
      return FailedPrecondition("no partition is cached and no cloud is configured");
    }
    r.source = AnswerSource::kDegraded;
    r.degraded_reason = "gate rejected the local answer and no cloud is configured";
    ++e.degraded;
    r.total_us = MicrosSince(t0);
    return r;
  }
  const auto t_net = Clock::now();
  auto answer = e.cloud->Infer(e.config.task, input);
  r.network_us = MicrosSince(t_net);
  if (!answer.ok()) {
    ++e.cloud_errors;
    if (answer.status().code() == StatusCode::kInvalidArgument) return answer.status();
    if (!have_local) {
      return Unavailable("no partition is cached and the cloud failed: " +
                         answer.status().message());
    }
    r.source = AnswerSource::kDegraded;
    r.degraded_reason = answer.status().ToString();
    ++e.degraded;
    r.total_us = MicrosSince(t0);
    return r;
  }
  r.source = AnswerSource::kCloud;
  r.label = answer->label;
  r.index = answer->index;
  r.confidence = answer->confidence;
  r.partition_hint = answer->partition_hint;
  r.uplink_bytes = answer->uplink_bytes;
  e.uplink_bytes += answer->uplink_bytes;
  ++e.cloud_answers;
  if (!r.partition_hint.empty()) {
    const bool admitted = e.Admit(r.partition_hint);
    if (e.cache->Get(r.partition_hint)) {
      std::lock_guard<std::mutex> lock(e.mu);
      e.active_id = r.partition_hint;
    } else if (e.config.fetch_hints && admitted) {
      e.Enqueue(r.partition_hint);
    }
  }
  r.total_us = MicrosSince(t0);
  return r;
}

bool Engine::WaitForFetches(int timeout_ms) {
  std::unique_lock<std::mutex> lock(impl_->fetch_mu);
  return impl_->idle_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return impl_->pending.empty(); });
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
  s.fetches = e.fetches;
  s.fetch_failures = e.fetch_failures;
  s.fetched_bytes = e.fetched_bytes;
  s.uplink_bytes = e.uplink_bytes;
  {
    std::lock_guard<std::mutex> lock(e.mu);
    s.last_fetch_error = e.last_fetch_error;
  }
  s.cache = e.cache->Stats();
  return s;
}

const EngineConfig& Engine::config() const { return impl_->config; }

}  // namespace knowcache
