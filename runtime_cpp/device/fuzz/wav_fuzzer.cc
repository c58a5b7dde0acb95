// libFuzzer target for the device's WAV reader (device/inputs.cc): arbitrary
// bytes through DecodeWav at 16 kHz, then LoudestWindow as ReadInput uses it.
// Nothing may crash or hit undefined behaviour; an accepted file gives finite
// samples and a one-second window of exactly 16,000 that lies inside them.
// Built by `make build-fuzz`.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "../inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using knowcache::device::DecodeWav;
  using knowcache::device::LoudestWindow;
  const std::vector<uint8_t> bytes(data, data + size);
  auto samples = DecodeWav(bytes, 16000, "fuzz.wav");
  if (!samples.ok()) {
    if (samples.status().message().empty()) std::abort();   // a refusal says why
    return 0;
  }
  if (samples->empty()) std::abort();
  for (float v : *samples) {
    if (!std::isfinite(v)) std::abort();
  }
  size_t start = 0;
  std::vector<float> window = LoudestWindow(*samples, 16000, &start);
  if (window.size() != 16000) std::abort();
  if (samples->size() > 16000 && start + 16000 > samples->size()) std::abort();
  return 0;
}
