#include "knowcache/layer_cache.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "knowcache/entropy_gate.h"

namespace knowcache {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MicrosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

}  // namespace

Status LayerCacheConfig::Validate() const {
  KC_RETURN_IF_ERROR(ParseExitGateKind(gate).status());
  return activation.Validate();
}

StatusOr<std::unique_ptr<LayerCache>> LayerCache::Create(std::shared_ptr<StagedModel> model,
                                                         LayerCacheConfig config) {
  if (!model) return InvalidArgument("LayerCache needs a staged model");
  KC_RETURN_IF_ERROR(config.Validate());
  KC_ASSIGN_OR_RETURN(ExitGateKind kind, ParseExitGateKind(config.gate));
  KC_ASSIGN_OR_RETURN(auto gate, MakeExitGate(kind, config.activation));
  std::unique_ptr<LayerCache> cache(new LayerCache(std::move(model), std::move(gate)));
  for (const auto& e : cache->model_->info().staged.exits) {
    auto it = e.thresholds.find(config.gate);
    cache->thresholds_.push_back(it == e.thresholds.end()
                                     ? std::numeric_limits<double>::quiet_NaN()
                                     : it->second);
  }
  return cache;
}

LayerCache::LayerCache(std::shared_ptr<StagedModel> model, std::unique_ptr<ExitGate> gate)
    : model_(std::move(model)), gate_(std::move(gate)) {
  for (int i = 0; i < model_->num_exits(); ++i) {
    hits_.push_back(std::make_unique<std::atomic<int64_t>>(0));
  }
}

StatusOr<LayerCacheResult> LayerCache::Run(const TensorView& input) {
  const auto t0 = Clock::now();
  const StagedInfo& st = model_->info().staged;
  LayerCacheResult r;
  std::vector<std::pair<int, ExitOutput>> missed;  // for Observe
  KC_ASSIGN_OR_RETURN(Activation act, model_->RunFirstStage(input));
  r.flops += st.stages[0].flops;
  size_t next_exit = 0;
  for (int s = 0;; ++s) {
    while (next_exit < st.exits.size() && st.exits[next_exit].after_stage == s) {
      const int e = static_cast<int>(next_exit++);
      if (std::isnan(thresholds_[e])) continue;  // no cache at this exit for this gate
      const auto t_lookup = Clock::now();
      KC_ASSIGN_OR_RETURN(ExitOutput out, model_->RunExit(e, act));
      r.flops += st.exits[e].cost.flops;
      KC_ASSIGN_OR_RETURN(ExitVerdict v, gate_->Evaluate(e, out, thresholds_[e]));
      r.lookup_us += MicrosSince(t_lookup);
      if (v.hit) {
        r.index = v.index;
        r.confidence = v.confidence;
        r.exit = e;
        r.total_us = MicrosSince(t0);
        ++queries_;
        ++*hits_[e];
        flops_ += r.flops;
        return r;
      }
      if (gate_->kind() == ExitGateKind::kActivation) missed.emplace_back(e, std::move(out));
    }
    if (s + 1 >= model_->num_stages()) break;
    KC_ASSIGN_OR_RETURN(act, model_->RunStage(s + 1, act, input));
    r.flops += st.stages[s + 1].flops;
  }
  KC_ASSIGN_OR_RETURN(std::vector<float> logits, model_->RunHead(act));
  r.flops += st.head.flops;
  KC_ASSIGN_OR_RETURN(GateDecision whole, EntropyGate::Evaluate(logits, 1.0f, -1));
  r.index = whole.index;
  r.confidence = whole.max_prob;
  for (const auto& [e, out] : missed) gate_->Observe(e, out, r.index);
  r.total_us = MicrosSince(t0);
  ++queries_;
  ++full_runs_;
  flops_ += r.flops;
  return r;
}

LayerCacheStats LayerCache::Stats() const {
  LayerCacheStats s;
  s.queries = queries_;
  s.full_runs = full_runs_;
  s.flops = flops_;
  for (const auto& h : hits_) s.exit_hits.push_back(*h);
  if (auto* a = dynamic_cast<const ActivationCache*>(gate_.get())) s.activation = a->Stats();
  return s;
}

}  // namespace knowcache
