// Split computing (Neurosurgeon, SPINN): on a gate miss the device runs the
// staged program's first stages itself and uploads the activation at a cut
// point, int8 with one per-tensor symmetric scale, instead of the raw input;
// the cloud resumes the same staged program version from that stage
// (`POST /v1/{task}/infer?from_stage=k`, docs/server.md).
//
// A cut at stage k means: stages 0..k-1 run on the device, stages k..n-1 and
// the head in the cloud (k == n: the cloud runs only the head). A cut is
// refused when a stage from k on reads the model input (StageReadsInput: the
// kws program's last stage starts from the waveform), since the cloud would
// then need the raw input: such a cut could not keep the input on the device.
//
// Pure functions over StagedModel; thread-safety is the model's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "knowcache/staged_model.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

/// kAuto uploads whichever of raw input and cut activation is fewer bytes;
/// kAlways uploads the activation (never the raw input).
enum class SplitMode { kOff, kAuto, kAlways };
const char* SplitModeName(SplitMode mode);
StatusOr<SplitMode> ParseSplitMode(const std::string& name);

struct SplitConfig {
  SplitMode mode = SplitMode::kOff;
  int cut_stage = 0;  // the stage the cloud resumes from; >= 1 unless mode is kOff

  Status Validate() const;
  std::string ToString() const;
};

/// What a query uploaded: nothing, the raw input, or the activation at a cut.
enum class Uplink { kNone, kRaw, kFeatures };
const char* UplinkName(Uplink uplink);

/// An activation quantized per tensor, symmetrically: value = data[i] * scale,
/// data in [-127, 127], scale > 0 and finite.
struct QuantizedActivation {
  std::vector<int64_t> shape;
  float scale = 1.0f;
  std::vector<int8_t> data;

  TensorView view() const;  // int8, `shape`, the data bytes
};

QuantizedActivation QuantizeActivation(const Activation& activation);
/// InvalidArgument when the shape and data disagree or the scale is not > 0 and finite.
StatusOr<Activation> DequantizeActivation(const QuantizedActivation& q);

/// OK when `model` can be cut at `cut` with the input kept on the device;
/// FailedPrecondition naming the stage that reads the input, or the valid range.
Status CheckCutPoint(const StagedModel& model, int cut);

/// The device's half: stages 0..cut-1 on `input`, then quantized. The cut
/// must pass CheckCutPoint.
StatusOr<QuantizedActivation> RunToCut(StagedModel& model, int cut, const TensorView& input);

/// What the device uploads, and the staged program the cloud must resume with.
struct SplitUpload {
  std::string staged_id;
  int staged_version = 0;
  int from_stage = 0;
  QuantizedActivation activation;
};

}  // namespace knowcache
