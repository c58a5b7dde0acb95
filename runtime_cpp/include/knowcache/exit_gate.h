// Exit gates: whether a cache on a hidden layer answers (a hit) or the
// model runs on (a miss). One pluggable gate per engine, evaluated at every
// exit with that exit's calibrated threshold:
//
//   learned     GATI: the selector's probability that the predictor agrees
//               with the full model, hit when >= threshold
//   confidence  BranchyNet / layer caching: the head's max probability, >=
//   entropy     the head's normalized predictive entropy, hit when <=
//   activation  Freeze Inference: cosine distance from the exit's compact
//               feature (int8) to the nearest stored entry, hit when <=;
//               the entry's stored final label is the answer. Entries come
//               from queries the whole model answered (Observe), bounded in
//               count per exit and in bytes overall, least recently used out.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "knowcache/staged_model.h"
#include "knowcache/status.h"

namespace knowcache {

enum class ExitGateKind { kLearned, kConfidence, kEntropy, kActivation };
const char* ExitGateKindName(ExitGateKind kind);
StatusOr<ExitGateKind> ParseExitGateKind(const std::string& name);

struct ExitVerdict {
  bool hit = false;
  int index = -1;          // the answer, in the head's label order
  float confidence = 0.0f; // the head's probability of that answer (activation: 1 - distance)
  double score = 0.0;      // what was compared with the threshold
};

class ExitGate {
 public:
  virtual ~ExitGate() = default;
  virtual ExitGateKind kind() const = 0;
  virtual StatusOr<ExitVerdict> Evaluate(int exit, const ExitOutput& out, double threshold) = 0;
  /// The whole model answered `final_index` for a query that reached `exit`
  /// and missed there. Stateless gates ignore it.
  virtual void Observe(int /*exit*/, const ExitOutput& /*out*/, int /*final_index*/) {}
};

struct ActivationCacheConfig {
  int max_entries_per_exit = 512;
  int64_t max_bytes = 1 << 20;  // all exits together, entries and bookkeeping

  Status Validate() const;
};

struct ActivationCacheStats {
  int64_t lookups = 0;
  int64_t hits = 0;
  int64_t inserts = 0;
  int64_t evictions = 0;
  int64_t entries = 0;
  int64_t memory_bytes = 0;
};

class ActivationCache final : public ExitGate {
 public:
  /// Bytes one entry of `dim` features takes, as counted against max_bytes.
  static int64_t EntryBytes(int64_t dim);

  explicit ActivationCache(ActivationCacheConfig config);
  ExitGateKind kind() const override { return ExitGateKind::kActivation; }
  StatusOr<ExitVerdict> Evaluate(int exit, const ExitOutput& out, double threshold) override;
  void Observe(int exit, const ExitOutput& out, int final_index) override;
  ActivationCacheStats Stats() const;

 private:
  struct Entry {
    std::vector<int8_t> q;
    float norm = 0.0f;
    int label = -1;
    uint64_t last_used = 0;
  };
  void EvictOneLocked();

  ActivationCacheConfig config_;
  mutable std::mutex mu_;
  std::vector<std::vector<Entry>> exits_;
  uint64_t clock_ = 0;
  ActivationCacheStats stats_;
};

/// A fresh gate of `kind` (the activation cache starts empty).
StatusOr<std::unique_ptr<ExitGate>> MakeExitGate(ExitGateKind kind,
                                                 const ActivationCacheConfig& activation = {});

}  // namespace knowcache
