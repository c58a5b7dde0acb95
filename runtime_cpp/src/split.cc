#include "knowcache/split.h"

#include <algorithm>
#include <cmath>

namespace knowcache {

const char* SplitModeName(SplitMode mode) {
  switch (mode) {
    case SplitMode::kOff: return "off";
    case SplitMode::kAuto: return "auto";
    case SplitMode::kAlways: return "always";
  }
  return "unknown";
}

StatusOr<SplitMode> ParseSplitMode(const std::string& name) {
  for (SplitMode m : {SplitMode::kOff, SplitMode::kAuto, SplitMode::kAlways}) {
    if (name == SplitModeName(m)) return m;
  }
  return InvalidArgument("split mode '" + name + "' is not one of off, auto, always");
}

Status SplitConfig::Validate() const {
  if (mode != SplitMode::kOff && cut_stage < 1) {
    return InvalidArgument("split mode '" + std::string(SplitModeName(mode)) +
                           "' needs a cut stage >= 1 (the stage the cloud resumes from), got " +
                           std::to_string(cut_stage));
  }
  return Status::Ok();
}

std::string SplitConfig::ToString() const {
  if (mode == SplitMode::kOff) return "split=off";
  return std::string("split=") + SplitModeName(mode) + "@" + std::to_string(cut_stage);
}

const char* UplinkName(Uplink uplink) {
  switch (uplink) {
    case Uplink::kNone: return "none";
    case Uplink::kRaw: return "raw";
    case Uplink::kFeatures: return "features";
  }
  return "unknown";
}

TensorView QuantizedActivation::view() const {
  return {DType::kInt8, shape, data.data(), data.size()};
}

QuantizedActivation QuantizeActivation(const Activation& activation) {
  float peak = 0.0f;
  for (float v : activation.data) {
    if (std::isfinite(v)) peak = std::max(peak, std::fabs(v));
  }
  QuantizedActivation q;
  q.shape = activation.shape;
  // An all-zero activation still gets a usable scale.
  q.scale = peak > 0.0f ? peak / 127.0f : 1.0f;
  q.data.resize(activation.data.size());
  for (size_t i = 0; i < activation.data.size(); ++i) {
    const float v = activation.data[i] / q.scale;
    q.data[i] = static_cast<int8_t>(std::isfinite(v) ? std::clamp(std::round(v), -127.0f, 127.0f)
                                                     : 0.0f);
  }
  return q;
}

StatusOr<Activation> DequantizeActivation(const QuantizedActivation& q) {
  if (!(q.scale > 0.0f) || !std::isfinite(q.scale)) {
    return InvalidArgument("activation scale must be > 0 and finite, got " +
                           std::to_string(q.scale));
  }
  KC_RETURN_IF_ERROR(q.view().Validate());
  Activation a;
  a.shape = q.shape;
  a.data.resize(q.data.size());
  for (size_t i = 0; i < q.data.size(); ++i) a.data[i] = static_cast<float>(q.data[i]) * q.scale;
  return a;
}

Status CheckCutPoint(const StagedModel& model, int cut) {
  const std::string who = "staged program '" + model.info().id + "'";
  if (cut < 1 || cut > model.num_stages()) {
    return FailedPrecondition(who + " has stages 0.." + std::to_string(model.num_stages() - 1) +
                              ": a cut stage must be in 1.." +
                              std::to_string(model.num_stages()) + ", got " +
                              std::to_string(cut));
  }
  for (int s = cut; s < model.num_stages(); ++s) {
    if (model.StageReadsInput(s)) {
      return FailedPrecondition(
          who + " cannot be cut at stage " + std::to_string(cut) + ": stage " +
          std::to_string(s) + " reads the raw model input, so the cloud would need the raw "
          "input; cut at stage " + std::to_string(s + 1) + " or later, or turn split off");
    }
  }
  return Status::Ok();
}

StatusOr<QuantizedActivation> RunToCut(StagedModel& model, int cut, const TensorView& input) {
  KC_RETURN_IF_ERROR(CheckCutPoint(model, cut));
  KC_ASSIGN_OR_RETURN(Activation act, model.RunFirstStage(input));
  for (int s = 1; s < cut; ++s) {
    KC_ASSIGN_OR_RETURN(act, model.RunStage(s, act, input));
  }
  return QuantizeActivation(act);
}

}  // namespace knowcache
