#include "knowcache/exit_gate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "knowcache/entropy_gate.h"

namespace knowcache {
namespace {

constexpr int64_t kEntryOverhead = sizeof(float) + sizeof(int) + sizeof(uint64_t) + 24;

// int8 per vector, scaled so the largest magnitude is 127.
std::vector<int8_t> Quantize(const std::vector<float>& v, float* norm) {
  float peak = 0.0f;
  for (float x : v) peak = std::max(peak, std::fabs(x));
  std::vector<int8_t> q(v.size());
  double sq = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    float scaled = peak > 0.0f ? v[i] / peak * 127.0f : 0.0f;
    q[i] = static_cast<int8_t>(std::lrint(scaled));
    sq += static_cast<double>(q[i]) * q[i];
  }
  *norm = static_cast<float>(std::sqrt(sq));
  return q;
}

int32_t Dot(const int8_t* a, const int8_t* b, size_t n) {
  int32_t s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<int32_t>(a[i]) * b[i];
  return s;
}

class HeadGate final : public ExitGate {
 public:
  explicit HeadGate(ExitGateKind kind) : kind_(kind) {}
  ExitGateKind kind() const override { return kind_; }

  StatusOr<ExitVerdict> Evaluate(int /*exit*/, const ExitOutput& out, double threshold) override {
    KC_ASSIGN_OR_RETURN(GateDecision d, EntropyGate::Evaluate(out.logits, 1.0f, -1));
    ExitVerdict v;
    v.index = d.index;
    v.confidence = d.max_prob;
    switch (kind_) {
      case ExitGateKind::kLearned:
        if (!std::isfinite(out.selector)) return InvalidArgument("selector logit is not finite");
        v.score = 1.0 / (1.0 + std::exp(-static_cast<double>(out.selector)));
        v.hit = v.score >= threshold;
        break;
      case ExitGateKind::kConfidence:
        v.score = d.max_prob;
        v.hit = v.score >= threshold;
        break;
      default:
        v.score = d.entropy;
        v.hit = v.score <= threshold;
        break;
    }
    return v;
  }

 private:
  ExitGateKind kind_;
};

}  // namespace

const char* ExitGateKindName(ExitGateKind kind) {
  switch (kind) {
    case ExitGateKind::kLearned: return "learned";
    case ExitGateKind::kConfidence: return "confidence";
    case ExitGateKind::kEntropy: return "entropy";
    case ExitGateKind::kActivation: return "activation";
  }
  return "unknown";
}

StatusOr<ExitGateKind> ParseExitGateKind(const std::string& name) {
  for (auto k : {ExitGateKind::kLearned, ExitGateKind::kConfidence, ExitGateKind::kEntropy,
                 ExitGateKind::kActivation}) {
    if (name == ExitGateKindName(k)) return k;
  }
  return InvalidArgument("exit gate '" + name +
                         "' is unknown; choose learned, confidence, entropy or activation");
}

Status ActivationCacheConfig::Validate() const {
  if (max_entries_per_exit < 1) return InvalidArgument("activation cache needs max_entries >= 1");
  if (max_bytes < 1024) return InvalidArgument("activation cache max_bytes must be >= 1024");
  return Status::Ok();
}

int64_t ActivationCache::EntryBytes(int64_t dim) { return dim + kEntryOverhead; }

ActivationCache::ActivationCache(ActivationCacheConfig config) : config_(config) {}

StatusOr<ExitVerdict> ActivationCache::Evaluate(int exit, const ExitOutput& out, double threshold) {
  if (exit < 0) return InvalidArgument("exit index must be >= 0");
  if (out.feature.empty()) return InvalidArgument("exit produced no compact feature");
  float norm = 0.0f;
  std::vector<int8_t> q = Quantize(out.feature, &norm);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.lookups;
  ExitVerdict v;
  v.score = std::numeric_limits<double>::infinity();
  if (exit >= static_cast<int>(exits_.size()) || norm == 0.0f) return v;
  Entry* best = nullptr;
  for (auto& e : exits_[exit]) {
    if (e.q.size() != q.size() || e.norm == 0.0f) continue;
    double distance = 1.0 - Dot(q.data(), e.q.data(), q.size()) / (static_cast<double>(norm) * e.norm);
    if (distance < v.score) {
      v.score = distance;
      best = &e;
    }
  }
  if (best && v.score <= threshold) {
    v.hit = true;
    v.index = best->label;
    v.confidence = static_cast<float>(1.0 - v.score);
    best->last_used = ++clock_;
    ++stats_.hits;
  }
  return v;
}

void ActivationCache::Observe(int exit, const ExitOutput& out, int final_index) {
  if (exit < 0 || out.feature.empty() || final_index < 0) return;
  Entry entry;
  entry.q = Quantize(out.feature, &entry.norm);
  entry.label = final_index;
  const int64_t bytes = EntryBytes(static_cast<int64_t>(entry.q.size()));
  if (bytes > config_.max_bytes) return;  // one entry would not fit the budget
  std::lock_guard<std::mutex> lock(mu_);
  if (exit >= static_cast<int>(exits_.size())) exits_.resize(exit + 1);
  auto& list = exits_[exit];
  if (static_cast<int>(list.size()) >= config_.max_entries_per_exit) {
    auto lru = std::min_element(list.begin(), list.end(), [](const Entry& a, const Entry& b) {
      return a.last_used < b.last_used;
    });
    stats_.memory_bytes -= EntryBytes(static_cast<int64_t>(lru->q.size()));
    list.erase(lru);
    --stats_.entries;
    ++stats_.evictions;
  }
  while (stats_.memory_bytes + bytes > config_.max_bytes && stats_.entries > 0) {
    EvictOneLocked();
  }
  entry.last_used = ++clock_;
  list.push_back(std::move(entry));
  stats_.memory_bytes += bytes;
  ++stats_.entries;
  ++stats_.inserts;
}

void ActivationCache::EvictOneLocked() {
  std::vector<Entry>* owner = nullptr;
  std::vector<Entry>::iterator lru;
  for (auto& list : exits_) {
    for (auto it = list.begin(); it != list.end(); ++it) {
      if (!owner || it->last_used < lru->last_used) {
        owner = &list;
        lru = it;
      }
    }
  }
  if (!owner) return;
  stats_.memory_bytes -= EntryBytes(static_cast<int64_t>(lru->q.size()));
  owner->erase(lru);
  --stats_.entries;
  ++stats_.evictions;
}

ActivationCacheStats ActivationCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

StatusOr<std::unique_ptr<ExitGate>> MakeExitGate(ExitGateKind kind,
                                                 const ActivationCacheConfig& activation) {
  if (kind == ExitGateKind::kActivation) {
    KC_RETURN_IF_ERROR(activation.Validate());
    return std::unique_ptr<ExitGate>(new ActivationCache(activation));
  }
  return std::unique_ptr<ExitGate>(new HeadGate(kind));
}

}  // namespace knowcache
