#include "knowcache/partition_fetcher.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "knowcache/log.h"

namespace knowcache {

Status PartitionFetcherConfig::Validate() const {
  if (task.empty() || task.find_first_of("/ ") != std::string::npos) {
    return InvalidArgument("the fetcher's task must be a non-empty name like 'kws'");
  }
  if (admit_after_hints < 1 || hint_window < admit_after_hints) {
    return InvalidArgument("admit_after_hints must be >= 1 and hint_window >= admit_after_hints");
  }
  return signature.Validate();
}

std::string PartitionFetcherConfig::ToString() const {
  return "admit_after_hints=" + std::to_string(admit_after_hints) + "/" +
         std::to_string(hint_window) + ", " + signature.ToString();
}

class PartitionFetcherImpl {
 public:
  PartitionFetcherConfig config;
  std::shared_ptr<CloudBackend> cloud;
  SlotCache* cache = nullptr;
  ModelFactory factory;
  FetchHooks hooks;
  ManifestVerifier verifier;

  std::mutex hints_mu;
  std::deque<std::string> recent_hints;  // the cloud's last hint_window hints

  std::atomic<int64_t> fetches{0}, failures{0}, bytes{0};
  mutable std::mutex error_mu;
  std::string last_error;

  std::mutex mu;  // queue, pending, stopping
  std::condition_variable work_cv;
  std::condition_variable idle_cv;
  std::deque<std::string> queue;
  std::set<std::string> pending;  // queued or running
  bool stopping = false;
  std::thread worker;

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      work_cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) break;
      std::string id = queue.front();
      queue.pop_front();
      lock.unlock();
      Status s = FetchAndInstall(id);
      if (!s.ok()) {
        ++failures;
        KC_LOG(kWarn, "fetching partition '%s' failed: %s", id.c_str(), s.ToString().c_str());
        std::lock_guard<std::mutex> g(error_mu);
        last_error = s.ToString();
      }
      lock.lock();
      pending.erase(id);
      if (pending.empty()) idle_cv.notify_all();
    }
    pending.clear();
    queue.clear();
    idle_cv.notify_all();
  }

  // The cloud's manifest; with trusted keys, only one whose signature verifies.
  StatusOr<Manifest> FetchManifest() {
    if (!verifier.enabled()) return cloud->FetchManifest(config.task);
    KC_ASSIGN_OR_RETURN(ManifestDocument doc, cloud->FetchManifestDocument(config.task));
    auto fresh = verifier.ParseSigned(doc.json, doc.signature);
    if (!fresh.ok()) {
      return Status(fresh.status().code(), "the cloud's manifest is refused: " +
                                               fresh.status().message() +
                                               "; the installed partitions stay in use");
    }
    return fresh;
  }

  Status FetchAndInstall(const std::string& id) {
    if (cache->Contains(id)) return Status::Ok();
    std::optional<PartitionInfo> info = hooks.find(id);
    if (!info) {
      KC_ASSIGN_OR_RETURN(Manifest fresh, FetchManifest());
      if (fresh.task != config.task) {
        return ProtocolError("the cloud's manifest is for task '" + fresh.task + "', not '" +
                             config.task + "'; nothing was installed");
      }
      const PartitionInfo* p = fresh.Find(id);
      if (p == nullptr) {
        return NotFound("the cloud hinted partition '" + id +
                        "' but its manifest has no such entry");
      }
      info = *p;
      if (Status s = hooks.adopt(std::move(fresh)); !s.ok()) {
        return Status(s.code(), "the cloud's manifest is refused: " + s.message() +
                                    "; nothing was installed");
      }
    }
    KC_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, cloud->FetchPartition(config.task, id));
    ++fetches;
    bytes += static_cast<int64_t>(raw.size());
    // Fetched manifests always carry bytes and sha256 (the parser requires them).
    if (Status s = info->CheckBytes(raw); !s.ok()) {
      return Status(s.code(), "downloaded " + s.message());
    }
    auto shared = std::make_shared<const std::vector<uint8_t>>(std::move(raw));
    KC_ASSIGN_OR_RETURN(std::shared_ptr<CachedModel> model, factory(*info, std::move(shared)));
    KC_RETURN_IF_ERROR(cache->Install(model, /*pinned=*/false));
    hooks.installed(id);
    KC_LOG(kInfo, "installed partition '%s' from the cloud", id.c_str());
    return Status::Ok();
  }
};

PartitionFetcher::PartitionFetcher(std::unique_ptr<PartitionFetcherImpl> impl)
    : impl_(std::move(impl)) {}

PartitionFetcher::~PartitionFetcher() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

StatusOr<std::unique_ptr<PartitionFetcher>> PartitionFetcher::Create(
    PartitionFetcherConfig config, std::shared_ptr<CloudBackend> cloud, SlotCache* cache,
    ModelFactory factory, FetchHooks hooks) {
  KC_RETURN_IF_ERROR(config.Validate());
  if (!cloud || cache == nullptr || !factory) {
    return InvalidArgument("PartitionFetcher needs a cloud, a slot cache and a model factory");
  }
  if (!hooks.find || !hooks.adopt || !hooks.installed) {
    return InvalidArgument("PartitionFetcher needs every hook (find, adopt, installed)");
  }
  auto impl = std::make_unique<PartitionFetcherImpl>();
  KC_ASSIGN_OR_RETURN(impl->verifier, ManifestVerifier::Create(config.signature));
  impl->config = std::move(config);
  impl->cloud = std::move(cloud);
  impl->cache = cache;
  impl->factory = std::move(factory);
  impl->hooks = std::move(hooks);
  PartitionFetcherImpl* raw = impl.get();
  raw->worker = std::thread([raw] { raw->WorkerLoop(); });
  return std::unique_ptr<PartitionFetcher>(new PartitionFetcher(std::move(impl)));
}

bool PartitionFetcher::Admit(const std::string& id) {
  PartitionFetcherImpl& f = *impl_;
  std::lock_guard<std::mutex> lock(f.hints_mu);
  f.recent_hints.push_back(id);
  while (static_cast<int>(f.recent_hints.size()) > f.config.hint_window) {
    f.recent_hints.pop_front();
  }
  int count = 0;
  for (const auto& h : f.recent_hints) count += h == id;
  return count >= f.config.admit_after_hints;
}

void PartitionFetcher::Enqueue(const std::string& id) {
  PartitionFetcherImpl& f = *impl_;
  std::lock_guard<std::mutex> lock(f.mu);
  if (f.stopping || f.pending.count(id)) return;
  f.pending.insert(id);
  f.queue.push_back(id);
  f.work_cv.notify_one();
}

bool PartitionFetcher::WaitIdle(int timeout_ms) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->idle_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return impl_->pending.empty(); });
}

FetchStats PartitionFetcher::Stats() const {
  FetchStats s;
  s.fetches = impl_->fetches;
  s.failures = impl_->failures;
  s.bytes = impl_->bytes;
  std::lock_guard<std::mutex> lock(impl_->error_mu);
  s.last_error = impl_->last_error;
  return s;
}

}  // namespace knowcache
