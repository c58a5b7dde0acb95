#include "inputs.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "little_endian.h"

namespace knowcache::device {
namespace {

StatusOr<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound(path + ": cannot open (no such file, or not readable)");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

int64_t Elements(const InputSpec& spec) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d;
  return n;
}

}  // namespace

StatusOr<std::vector<float>> DecodeWav(const std::vector<uint8_t>& b, int expected_rate,
                                       const std::string& name) {
  if (b.size() < 12 || std::memcmp(b.data(), "RIFF", 4) || std::memcmp(b.data() + 8, "WAVE", 4)) {
    return InvalidArgument(name + ": not a WAV file (no RIFF/WAVE header)");
  }
  int channels = 0, rate = 0, bits = 0, format = 0;
  size_t pos = 12;
  while (pos + 8 <= b.size()) {
    const uint32_t size = ReadLe32(b.data() + pos + 4);
    const size_t body = pos + 8;
    if (!std::memcmp(b.data() + pos, "fmt ", 4)) {
      if (size < 16 || body + 16 > b.size()) return InvalidArgument(name + ": truncated fmt chunk");
      format = ReadLe16(b.data() + body);
      channels = ReadLe16(b.data() + body + 2);
      rate = static_cast<int>(ReadLe32(b.data() + body + 4));
      bits = ReadLe16(b.data() + body + 14);
    } else if (!std::memcmp(b.data() + pos, "data", 4)) {
      if (format == 0) return InvalidArgument(name + ": data chunk before the fmt chunk");
      if (format != 1 || bits != 16) {
        return InvalidArgument(name + ": " + std::to_string(bits) + "-bit format " +
                               std::to_string(format) + "; expected 16-bit PCM");
      }
      if (channels != 1 || rate != expected_rate) {
        return InvalidArgument(name + ": " + std::to_string(rate) + " Hz, " +
                               std::to_string(channels) + " channel(s); expected " +
                               std::to_string(expected_rate) + " Hz mono (convert it first, "
                               "e.g. `sox in.wav -r " + std::to_string(expected_rate) +
                               " -c 1 -b 16 out.wav`)");
      }
      const size_t n = std::min<size_t>(size, b.size() - body) / 2;
      std::vector<float> x(n);
      for (size_t i = 0; i < n; ++i) {
        x[i] = static_cast<int16_t>(ReadLe16(b.data() + body + 2 * i)) / 32768.0f;
      }
      return x;
    }
    pos = body + size + (size & 1);
  }
  return InvalidArgument(name + ": no data chunk");
}

StatusOr<std::vector<float>> ReadInput(const std::string& path, const InputSpec& spec) {
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFile(path));
  const int64_t n = Elements(spec);
  if (spec.sample_rate > 0) {
    KC_ASSIGN_OR_RETURN(std::vector<float> x, DecodeWav(bytes, spec.sample_rate, path));
    x.resize(static_cast<size_t>(n), 0.0f);
    return x;
  }
  std::vector<float> x(static_cast<size_t>(n));
  if (static_cast<int64_t>(bytes.size()) == n) {
    for (int64_t i = 0; i < n; ++i) x[i] = bytes[i] / 255.0f;
  } else if (static_cast<int64_t>(bytes.size()) == 4 * n) {
    std::memcpy(x.data(), bytes.data(), bytes.size());
  } else {
    return InvalidArgument(path + ": " + std::to_string(bytes.size()) + " bytes; the model takes " +
                           std::to_string(n) + " uint8 pixels (" + std::to_string(n) +
                           " bytes) or float32 (" + std::to_string(4 * n) + " bytes), channels first");
  }
  return x;
}

}  // namespace knowcache::device
