// SlotCache: the device's LRU cache of partitions.
//
// A fixed number of slots and a byte budget; installing evicts least recently
// used unpinned entries until both fit. Pinned entries are never evicted.
// Counts hits, misses, installs and evictions. Thread-safe: every method
// takes one internal mutex; models are handed out as shared_ptr so an entry
// evicted while another thread runs it stays alive until that run ends.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "knowcache/cached_model.h"
#include "knowcache/status.h"

namespace knowcache {

struct SlotCacheConfig {
  int num_slots = 2;
  int64_t byte_budget = 64ll << 20;  // 64 MiB

  Status Validate() const;
  std::string ToString() const;
};

struct SlotCacheStats {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t installs = 0;
  int64_t evictions = 0;
  int64_t resident_bytes = 0;
  int slots_used = 0;
};

class SlotCacheImpl;

class SlotCache {
 public:
  static StatusOr<std::unique_ptr<SlotCache>> Create(SlotCacheConfig config);
  ~SlotCache();

  /// Counts a hit and marks the entry most recently used, or counts a miss
  /// and returns nullptr.
  std::shared_ptr<CachedModel> Get(const std::string& id);
  /// Like Get but touches neither counters nor LRU order.
  std::shared_ptr<CachedModel> Peek(const std::string& id) const;
  bool Contains(const std::string& id) const;

  /// Installs (or replaces, same id) a model as most recently used, evicting
  /// LRU unpinned entries as needed. ResourceExhausted, with nothing evicted,
  /// when it cannot fit even after evicting every unpinned entry.
  Status Install(std::shared_ptr<CachedModel> model, bool pinned = false);
  Status SetPinned(const std::string& id, bool pinned);
  /// Removes an entry; NotFound if absent. Pinned entries can be removed
  /// explicitly.
  Status Remove(const std::string& id);

  /// Ids from most to least recently used.
  std::vector<std::string> Ids() const;
  /// The most recently used model, or nullptr when empty.
  std::shared_ptr<CachedModel> MostRecent() const;
  SlotCacheStats Stats() const;
  const SlotCacheConfig& config() const;

 private:
  explicit SlotCache(std::unique_ptr<SlotCacheImpl> impl);
  std::unique_ptr<SlotCacheImpl> impl_;
};

}  // namespace knowcache
