// Partition: one ExecuTorch program (.pte) plus its manifest metadata.
//
// Ownership: a Partition owns the program bytes (a shared buffer read from a
// file or handed over from a download) and the ExecuTorch Module built on
// them through a SharedPtrDataLoader, so nothing it needs lives elsewhere.
// Its "forward" method is loaded at construction: the first Run pays no load
// cost. Thread-safety: Run may be called from any thread; calls are
// serialized on a per-partition mutex because an ExecuTorch Module is not
// thread-safe. Outputs are copied out before the lock is released.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "knowcache/cached_model.h"
#include "knowcache/manifest.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

struct PartitionLoadOptions {
  /// Check the bytes against info.sha256 (when set) and info.bytes (when > 0)
  /// before handing them to ExecuTorch.
  bool verify = true;
  /// Method to load and run.
  std::string method = "forward";
};

class PartitionImpl;

class Partition final : public CachedModel {
 public:
  /// Reads `path` whole and loads it. `info` may be empty: the id then
  /// defaults to the file's stem and the input spec to the program's own.
  static StatusOr<std::shared_ptr<Partition>> FromFile(
      const std::string& path, PartitionInfo info = {},
      const PartitionLoadOptions& options = {});
  /// Takes shared ownership of `bytes`.
  static StatusOr<std::shared_ptr<Partition>> FromBytes(
      std::shared_ptr<const std::vector<uint8_t>> bytes, PartitionInfo info,
      const PartitionLoadOptions& options = {});

  ~Partition() override;

  const PartitionInfo& info() const override;
  int64_t resident_bytes() const override;
  StatusOr<std::vector<float>> Run(const TensorView& input) override;

  /// Input 0 as the program declares it.
  DType input_dtype() const;
  const std::vector<int64_t>& input_shape() const;
  /// Number of logits the program produces (output 0's element count).
  int64_t num_outputs() const;

 private:
  explicit Partition(std::unique_ptr<PartitionImpl> impl);
  std::unique_ptr<PartitionImpl> impl_;
};

}  // namespace knowcache
