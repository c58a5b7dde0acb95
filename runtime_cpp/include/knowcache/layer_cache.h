// LayerCache: runs a staged model stage by stage and stops at the first exit
// whose gate hits ("late binding": each query spends only the computation it
// needs). A query that misses everywhere runs the head, i.e. the whole model,
// and the gate observes the answer (the activation cache learns from it).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "knowcache/exit_gate.h"
#include "knowcache/staged_model.h"
#include "knowcache/status.h"

namespace knowcache {

struct LayerCacheConfig {
  std::string gate = "learned";  // learned | confidence | entropy | activation
  ActivationCacheConfig activation;

  Status Validate() const;
};

struct LayerCacheResult {
  int index = -1;             // in the staged model's label order
  float confidence = 0.0f;
  int exit = -1;              // the exit that answered; -1: the whole model ran
  int64_t flops = 0;          // stages, exit heads and head actually run
  int64_t lookup_us = 0;      // time in exit heads and gates (the caches' own cost)
  int64_t total_us = 0;
};

struct LayerCacheStats {
  int64_t queries = 0;
  std::vector<int64_t> exit_hits;  // per exit
  int64_t full_runs = 0;
  int64_t flops = 0;
  ActivationCacheStats activation;  // zero unless the gate is the activation cache
};

class LayerCache {
 public:
  static StatusOr<std::unique_ptr<LayerCache>> Create(std::shared_ptr<StagedModel> model,
                                                      LayerCacheConfig config);

  StatusOr<LayerCacheResult> Run(const TensorView& input);
  LayerCacheStats Stats() const;
  const StagedModel& model() const { return *model_; }

 private:
  LayerCache(std::shared_ptr<StagedModel> model, std::unique_ptr<ExitGate> gate);

  std::shared_ptr<StagedModel> model_;
  std::unique_ptr<ExitGate> gate_;
  std::vector<double> thresholds_;  // per exit; NaN: this gate has no threshold there
  std::atomic<int64_t> queries_{0}, full_runs_{0}, flops_{0};
  std::vector<std::unique_ptr<std::atomic<int64_t>>> hits_;
};

}  // namespace knowcache
