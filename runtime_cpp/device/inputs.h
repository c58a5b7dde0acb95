// Reading a device input file into the tensor a partition expects, by the
// input contract of host_tools/knowcache/data/input_contract.py (docs/inputs.md).
//
// Audio tasks (input spec with a sample rate): a RIFF/WAVE file of integer PCM
// (8, 16, 24 or 32 bits) or float (32 bits), any channel count (mixed down), at
// the spec's rate (a board does not resample: another rate is refused with the
// sox command that converts it). A clip shorter than the input is centred in
// silence; a longer one is cut to its loudest window (by energy), with a notice.
// Refused with a sentence: other encodings, a header promising more audio than
// the file holds, an empty recording, NaN or infinite samples.
// Image tasks: raw pixels, either uint8 (C*H*W bytes, scaled to the spec's value_range,
// [0, 1] when unstated) or little-endian float32 (C*H*W*4 bytes, used as is, finite),
// channels first.
// A folder, a missing or an unreadable file is refused; nothing here throws.
#pragma once

#include <string>
#include <vector>

#include "knowcache/manifest.h"
#include "knowcache/status.h"

namespace knowcache::device {

/// Mono samples in [-1, 1] from WAV bytes at `expected_rate`; `name` only labels errors.
StatusOr<std::vector<float>> DecodeWav(const std::vector<uint8_t>& bytes, int expected_rate,
                                       const std::string& name);

/// The loudest `length` samples of `x` by energy, or `x` centred in `length` zeros;
/// `start` (optional) receives where the window begins in `x` (0 when centred).
std::vector<float> LoudestWindow(const std::vector<float>& x, size_t length,
                                 size_t* start = nullptr);

/// The float32 input for `spec` from the file at `path`; `notice` (optional) receives
/// a sentence about a conversion the user should know of (a long clip's window).
StatusOr<std::vector<float>> ReadInput(const std::string& path, const InputSpec& spec,
                                       std::string* notice = nullptr);

}  // namespace knowcache::device
