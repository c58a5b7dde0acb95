// StagedModel: a staged ExecuTorch program (methods stage_0..stage_n,
// exit_0..exit_{n-1}, head) that can be run one piece at a time.
//
// Layer caching runs stage i, then exit i's cache head, and stops when the
// exit's gate hits. A stage after the first may also read the model input (its
// method then takes a second argument: a branch that starts from the raw
// waveform, as in the kws full model); the program says which, and callers
// pass the input to every stage. Activations pass between methods as float32 tensors the
// model owns copies of, so a caller can keep them (the server records them).
// StagedModel is an interface, like CachedModel, so LayerCache and the engine's
// staged mode are unit-tested without .pte files; FromBytes / FromFile build
// the ExecuTorch implementation. Thread-safety: that implementation
// serializes calls on one mutex (an ExecuTorch Module is not thread-safe);
// outputs are copied out before it is released.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "knowcache/manifest.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

/// A float32 tensor passed from one stage to the next.
struct Activation {
  std::vector<int64_t> shape;
  std::vector<float> data;

  TensorView view() const;
};

/// What an exit's cache head produced.
struct ExitOutput {
  std::vector<float> logits;  // the predictor's, over the task's labels
  float selector = 0.0f;      // logit of "the predictor agrees with the full model"
  std::vector<float> feature; // compact (pooled) activation
};

class StagedModel {
 public:
  /// The ExecuTorch implementation. `info.role` must be kStaged; every method
  /// it lists must be in the program.
  static StatusOr<std::shared_ptr<StagedModel>> FromBytes(
      std::shared_ptr<const std::vector<uint8_t>> bytes, PartitionInfo info, bool verify = true);
  static StatusOr<std::shared_ptr<StagedModel>> FromFile(const std::string& path,
                                                         PartitionInfo info, bool verify = true);
  virtual ~StagedModel() = default;

  virtual const PartitionInfo& info() const = 0;
  int num_stages() const { return static_cast<int>(info().staged.stages.size()); }
  int num_exits() const { return static_cast<int>(info().staged.exits.size()); }
  virtual int64_t resident_bytes() const = 0;

  /// Stage 0 takes the model input (checked against info().input).
  virtual StatusOr<Activation> RunFirstStage(const TensorView& input) = 0;
  /// Stage `stage` on the previous stage's output `in`; `input` is the model
  /// input, read only by stages for which StageReadsInput is true (it may be
  /// an empty view for the others). Stage 0 runs on `input`.
  virtual StatusOr<Activation> RunStage(int stage, const Activation& in,
                                        const TensorView& input) = 0;
  virtual bool StageReadsInput(int /*stage*/) const { return false; }
  virtual StatusOr<ExitOutput> RunExit(int exit, const Activation& in) = 0;
  virtual StatusOr<std::vector<float>> RunHead(const Activation& in) = 0;
};

}  // namespace knowcache
