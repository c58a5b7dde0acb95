// CachedModel: anything a slot can hold and the engine can run.
//
// The production implementation is Partition (an ExecuTorch program). The
// interface exists so the slot cache and the engine's decision logic are
// written, and unit-tested, against behaviour rather than against .pte files.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "knowcache/manifest.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

class CachedModel {
 public:
  virtual ~CachedModel() = default;
  /// Manifest metadata: id, labels, threshold, input spec.
  virtual const PartitionInfo& info() const = 0;
  /// Bytes charged against the slot cache's budget while resident.
  virtual int64_t resident_bytes() const = 0;
  /// Runs one input and returns a copy of the logits. Implementations must be
  /// safe to call from several threads (they may serialize internally).
  virtual StatusOr<std::vector<float>> Run(const TensorView& input) = 0;
};

/// Builds a model from program bytes already checked against `info`
/// (Partition::FromBytes in production; scripted models in tests).
using ModelFactory = std::function<StatusOr<std::shared_ptr<CachedModel>>(
    const PartitionInfo&, std::shared_ptr<const std::vector<uint8_t>>)>;

}  // namespace knowcache
