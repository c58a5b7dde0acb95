#include "knowcache/entropy_gate.h"

#include <algorithm>
#include <cmath>

namespace knowcache {

StatusOr<GateDecision> EntropyGate::Evaluate(const std::vector<float>& logits,
                                             float threshold, int other_index) {
  if (logits.empty()) return InvalidArgument("gate got no logits");
  if (!(threshold >= 0.0f && threshold <= 1.0f)) {
    return InvalidArgument("gate threshold must be in [0, 1], got " +
                           std::to_string(threshold));
  }
  for (float v : logits) {
    if (!std::isfinite(v)) return InvalidArgument("model produced a non-finite logit");
  }
  GateDecision d;
  const size_t n = logits.size();
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  d.probs.resize(n);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    d.probs[i] = std::exp(logits[i] - max_logit);
    sum += d.probs[i];
  }
  double h = 0.0;
  for (size_t i = 0; i < n; ++i) {
    d.probs[i] = static_cast<float>(d.probs[i] / sum);
    if (d.probs[i] > 0.0f) h -= d.probs[i] * std::log(static_cast<double>(d.probs[i]));
  }
  d.entropy = n > 1 ? static_cast<float>(std::clamp(h / std::log(static_cast<double>(n)), 0.0, 1.0))
                    : 0.0f;
  int top = 0, second = -1;
  for (size_t i = 1; i < n; ++i) {
    if (d.probs[i] > d.probs[top]) { second = top; top = static_cast<int>(i); }
    else if (second < 0 || d.probs[i] > d.probs[second]) second = static_cast<int>(i);
  }
  d.index = top;
  d.max_prob = d.probs[top];
  d.margin = second >= 0 ? d.probs[top] - d.probs[second] : d.probs[top];
  d.is_other = other_index >= 0 && top == other_index;
  d.accept = !d.is_other && d.entropy <= threshold;
  return d;
}

}  // namespace knowcache
