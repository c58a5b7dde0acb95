// EntropyGate: decides whether a local answer is good enough to keep.
//
// The gate computes the softmax of a partition's logits and its normalized
// predictive entropy H(p)/log(C) in [0, 1]. An answer is accepted when that
// entropy is at or below the partition's calibrated threshold, unless the
// argmax is the partition's "other" class, which by construction means "not
// mine": those always go to the cloud. Stateless and thread-safe.
#pragma once

#include <vector>

#include "knowcache/status.h"

namespace knowcache {

struct GateDecision {
  bool accept = false;
  int index = -1;             // argmax over the partition's labels
  float entropy = 1.0f;       // normalized, in [0, 1]
  float max_prob = 0.0f;
  float margin = 0.0f;        // top-1 minus top-2 probability
  bool is_other = false;      // argmax is the "other" label
  std::vector<float> probs;   // softmax of the logits
};

class EntropyGate {
 public:
  /// `other_index` < 0 when the partition has no "other" label.
  /// InvalidArgument for empty logits, a non-finite logit, or a threshold
  /// outside [0, 1].
  static StatusOr<GateDecision> Evaluate(const std::vector<float>& logits,
                                         float threshold, int other_index);
};

}  // namespace knowcache
