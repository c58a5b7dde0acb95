// Reading a device input file into the tensor a partition expects.
//
// Audio tasks (input spec with a sample rate): a RIFF/WAVE file, 16-bit PCM,
// mono, at the spec's rate; shorter clips are zero-padded, longer ones cut.
// Image tasks: raw pixels, either uint8 (C*H*W bytes, scaled to [0, 1]) or
// little-endian float32 (C*H*W*4 bytes, used as is), channels first.
#pragma once

#include <string>
#include <vector>

#include "knowcache/manifest.h"
#include "knowcache/status.h"

namespace knowcache::device {

/// Parses WAV bytes; `name` only labels errors.
StatusOr<std::vector<float>> DecodeWav(const std::vector<uint8_t>& bytes, int expected_rate,
                                       const std::string& name);

/// The float32 input for `spec` from the file at `path`.
StatusOr<std::vector<float>> ReadInput(const std::string& path, const InputSpec& spec);

}  // namespace knowcache::device
