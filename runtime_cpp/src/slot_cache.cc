#include "knowcache/slot_cache.h"

#include <list>
#include <mutex>
#include <unordered_map>

#include "knowcache/log.h"

namespace knowcache {

Status SlotCacheConfig::Validate() const {
  if (num_slots < 1) return InvalidArgument("SlotCacheConfig.num_slots must be >= 1");
  if (byte_budget < 1) return InvalidArgument("SlotCacheConfig.byte_budget must be > 0");
  return Status::Ok();
}

std::string SlotCacheConfig::ToString() const {
  return "SlotCacheConfig(num_slots=" + std::to_string(num_slots) +
         ", byte_budget=" + std::to_string(byte_budget) + ")";
}

class SlotCacheImpl {
 public:
  struct Entry {
    std::string id;
    std::shared_ptr<CachedModel> model;
    int64_t bytes;
    bool pinned;
  };

  explicit SlotCacheImpl(SlotCacheConfig config) : config_(config) {}

  // Front = most recently used.
  std::list<Entry> lru_;
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  SlotCacheConfig config_;
  SlotCacheStats stats_;
  mutable std::mutex mu_;

  void EraseLocked(std::list<Entry>::iterator it) {
    stats_.resident_bytes -= it->bytes;
    index_.erase(it->id);
    lru_.erase(it);
  }
};

SlotCache::SlotCache(std::unique_ptr<SlotCacheImpl> impl) : impl_(std::move(impl)) {}
SlotCache::~SlotCache() = default;

StatusOr<std::unique_ptr<SlotCache>> SlotCache::Create(SlotCacheConfig config) {
  KC_RETURN_IF_ERROR(config.Validate());
  return std::unique_ptr<SlotCache>(new SlotCache(std::make_unique<SlotCacheImpl>(config)));
}

std::shared_ptr<CachedModel> SlotCache::Get(const std::string& id) {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  auto it = impl_->index_.find(id);
  if (it == impl_->index_.end()) {
    ++impl_->stats_.misses;
    return nullptr;
  }
  ++impl_->stats_.hits;
  impl_->lru_.splice(impl_->lru_.begin(), impl_->lru_, it->second);
  return it->second->model;
}

std::shared_ptr<CachedModel> SlotCache::Peek(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  auto it = impl_->index_.find(id);
  return it == impl_->index_.end() ? nullptr : it->second->model;
}

bool SlotCache::Contains(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->index_.count(id) > 0;
}

Status SlotCache::Install(std::shared_ptr<CachedModel> model, bool pinned) {
  if (!model) return InvalidArgument("cannot install a null model");
  const std::string id = model->info().id;
  if (id.empty()) return InvalidArgument("cannot install a model without an id");
  const int64_t bytes = model->resident_bytes();
  if (bytes <= 0) return InvalidArgument("model '" + id + "' reports no size");

  std::lock_guard<std::mutex> lock(impl_->mu_);
  const auto& cfg = impl_->config_;
  // What must stay no matter what: pinned entries other than the one replaced.
  int64_t pinned_bytes = 0;
  int pinned_count = 0;
  for (const auto& e : impl_->lru_) {
    if (e.pinned && e.id != id) {
      pinned_bytes += e.bytes;
      ++pinned_count;
    }
  }
  if (pinned_count + 1 > cfg.num_slots) {
    return ResourceExhausted("cannot install '" + id + "': all " +
                             std::to_string(cfg.num_slots) + " slots hold pinned partitions");
  }
  if (pinned_bytes + bytes > cfg.byte_budget) {
    return ResourceExhausted("cannot install '" + id + "' (" + std::to_string(bytes) +
                             " bytes): the byte budget is " + std::to_string(cfg.byte_budget) +
                             " and pinned partitions hold " + std::to_string(pinned_bytes));
  }
  auto existing = impl_->index_.find(id);
  if (existing != impl_->index_.end()) impl_->EraseLocked(existing->second);
  // Evict from the LRU end, skipping pinned entries, until the newcomer fits.
  auto it = impl_->lru_.end();
  while ((static_cast<int>(impl_->lru_.size()) + 1 > cfg.num_slots ||
          impl_->stats_.resident_bytes + bytes > cfg.byte_budget) &&
         it != impl_->lru_.begin()) {
    --it;
    if (it->pinned) continue;
    KC_LOG(kInfo, "evicting partition '%s' (%lld bytes)", it->id.c_str(),
           static_cast<long long>(it->bytes));
    auto victim = it++;
    impl_->EraseLocked(victim);
    ++impl_->stats_.evictions;
  }
  impl_->lru_.push_front(SlotCacheImpl::Entry{id, std::move(model), bytes, pinned});
  impl_->index_[id] = impl_->lru_.begin();
  impl_->stats_.resident_bytes += bytes;
  ++impl_->stats_.installs;
  return Status::Ok();
}

Status SlotCache::SetPinned(const std::string& id, bool pinned) {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  auto it = impl_->index_.find(id);
  if (it == impl_->index_.end()) return NotFound("partition '" + id + "' is not cached");
  it->second->pinned = pinned;
  return Status::Ok();
}

Status SlotCache::Remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  auto it = impl_->index_.find(id);
  if (it == impl_->index_.end()) return NotFound("partition '" + id + "' is not cached");
  impl_->EraseLocked(it->second);
  return Status::Ok();
}

std::vector<std::string> SlotCache::Ids() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  std::vector<std::string> ids;
  for (const auto& e : impl_->lru_) ids.push_back(e.id);
  return ids;
}

std::shared_ptr<CachedModel> SlotCache::MostRecent() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->lru_.empty() ? nullptr : impl_->lru_.front().model;
}

SlotCacheStats SlotCache::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  SlotCacheStats s = impl_->stats_;
  s.slots_used = static_cast<int>(impl_->lru_.size());
  return s;
}

const SlotCacheConfig& SlotCache::config() const { return impl_->config_; }

}  // namespace knowcache
