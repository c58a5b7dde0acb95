// How many threads ExecuTorch's kernels and the XNNPACK delegate may use.
// Process-wide: it resets ExecuTorch's shared thread pool. Call it before
// inference starts (not while another thread is running a partition).
#pragma once

#include "knowcache/status.h"

namespace knowcache {

/// n >= 1. The benchmark pins the device side to one thread, a phone-class
/// core budget.
Status SetComputeThreads(int n);

}  // namespace knowcache
