#include "inputs.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "little_endian.h"

namespace knowcache::device {
namespace {

constexpr uint16_t kPcm = 1, kFloat = 3, kExtensible = 0xFFFE;

std::string ConvertHint(int rate) {
  return "convert it first, e.g. `sox in.wav -r " + std::to_string(rate) +
         " -c 1 -b 16 out.wav`";
}

// Plain C stdio: an ifstream throws std::ios_base::failure when reading a folder.
StatusOr<std::vector<uint8_t>> ReadFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return NotFound(path + ": cannot open (" + std::strerror(errno) + "); check the path");
  }
  if (S_ISDIR(st.st_mode)) {
    return InvalidArgument(path + ": is a folder, not a file; pass the files in it (e.g. " +
                           path + "/*.wav)");
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return NotFound(path + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f.get())) > 0) {
    bytes.insert(bytes.end(), buf, buf + n);
  }
  if (std::ferror(f.get())) {
    return InvalidArgument(path + ": cannot be read (" + std::strerror(errno) + ")");
  }
  return bytes;
}

int64_t Elements(const InputSpec& spec) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d;
  return n;
}

float Sample(const uint8_t* p, int format, int bits) {
  if (format == kFloat) {
    float v;
    std::memcpy(&v, p, 4);  // little-endian hosts and boards only (as the serial protocol)
    return v;
  }
  switch (bits) {
    case 8: return (static_cast<int>(p[0]) - 128) / 128.0f;  // 8-bit WAV is unsigned
    case 16: return static_cast<int16_t>(ReadLe16(p)) / 32768.0f;
    case 24: {
      int32_t v = p[0] | p[1] << 8 | p[2] << 16;
      if (v & 0x800000) v -= 0x1000000;
      return static_cast<float>(v / 8388608.0);
    }
    default: return static_cast<float>(static_cast<int32_t>(ReadLe32(p)) / 2147483648.0);
  }
}

}  // namespace

StatusOr<std::vector<float>> DecodeWav(const std::vector<uint8_t>& b, int expected_rate,
                                       const std::string& name) {
  if (b.size() < 12 || std::memcmp(b.data(), "RIFF", 4) || std::memcmp(b.data() + 8, "WAVE", 4)) {
    return InvalidArgument(name + ": not a WAV file (no RIFF/WAVE header); " +
                           ConvertHint(expected_rate));
  }
  int channels = 0, rate = 0, bits = 0, format = 0;
  size_t pos = 12;
  while (pos + 8 <= b.size()) {
    const uint32_t size = ReadLe32(b.data() + pos + 4);
    const size_t body = pos + 8;
    if (!std::memcmp(b.data() + pos, "fmt ", 4)) {
      if (size < 16 || body + 16 > b.size()) {
        return InvalidArgument(name + ": its format chunk is cut short; the file is damaged "
                               "(copy or export it again)");
      }
      format = ReadLe16(b.data() + body);
      channels = ReadLe16(b.data() + body + 2);
      rate = static_cast<int>(ReadLe32(b.data() + body + 4));
      bits = ReadLe16(b.data() + body + 14);
      if (format == kExtensible && size >= 40 && body + 26 <= b.size()) {
        format = ReadLe16(b.data() + body + 24);
      }
    } else if (!std::memcmp(b.data() + pos, "data", 4)) {
      if (format == 0) {
        return InvalidArgument(name + ": the audio comes before its format chunk; the file is "
                               "damaged; " + ConvertHint(expected_rate));
      }
      const bool pcm = format == kPcm && (bits == 8 || bits == 16 || bits == 24 || bits == 32);
      if (!pcm && !(format == kFloat && bits == 32)) {
        return InvalidArgument(name + ": " + std::to_string(bits) + "-bit audio in WAV format " +
                               std::to_string(format) + ", which knowcache-device does not read "
                               "(it reads 8, 16, 24 or 32-bit PCM and 32-bit float WAVs); " +
                               ConvertHint(expected_rate));
      }
      if (channels < 1) return InvalidArgument(name + ": the header says 0 channels; damaged");
      if (rate != expected_rate) {
        return InvalidArgument(name + ": " + std::to_string(rate) + " Hz; the model takes " +
                               std::to_string(expected_rate) + " Hz and a board does not "
                               "resample: " + ConvertHint(expected_rate) +
                               " (or classify it on the host with `knowcache infer`)");
      }
      // A streaming writer (a pipe from sox or ffmpeg) leaves the size at 0 or 0xFFFFFFFF.
      const size_t available = b.size() - body;
      const bool unset = size == 0 || size == 0xFFFFFFFFu;
      if (!unset && size > available) {
        return InvalidArgument(name + ": the header promises " + std::to_string(size) +
                               " bytes of audio but the file holds " + std::to_string(available) +
                               "; it is cut short (copy or record it again)");
      }
      const size_t width = static_cast<size_t>(bits / 8), frame = width * channels;
      const size_t frames = (unset ? available : size) / frame;
      if (frames == 0) return InvalidArgument(name + ": the recording is empty; record it again");
      std::vector<float> x(frames);
      for (size_t i = 0; i < frames; ++i) {
        double sum = 0;
        for (int c = 0; c < channels; ++c) {
          sum += Sample(b.data() + body + i * frame + c * width, format, bits);
        }
        const float v = static_cast<float>(sum / channels);
        if (!std::isfinite(v)) {
          return InvalidArgument(name + ": the audio holds NaN or infinite samples; export it "
                                 "again as 16-bit PCM");
        }
        x[i] = v;
      }
      return x;
    }
    pos = body + size + (size & 1);
  }
  return InvalidArgument(name + ": a WAV file with no audio (no data chunk)");
}

std::vector<float> LoudestWindow(const std::vector<float>& x, size_t length, size_t* start) {
  std::vector<float> out(length, 0.0f);
  if (x.size() <= length) {
    std::copy(x.begin(), x.end(), out.begin() + (length - x.size()) / 2);
    if (start) *start = 0;
    return out;
  }
  // A running sum of squares; the first maximum wins, as numpy's argmax.
  double energy = 0;
  for (size_t i = 0; i < length; ++i) energy += static_cast<double>(x[i]) * x[i];
  double best = energy;
  size_t best_start = 0;
  for (size_t s = 1; s + length <= x.size(); ++s) {
    energy += static_cast<double>(x[s + length - 1]) * x[s + length - 1] -
              static_cast<double>(x[s - 1]) * x[s - 1];
    if (energy > best * (1 + 1e-9) + 1e-12) {
      best = energy;
      best_start = s;
    }
  }
  std::copy(x.begin() + best_start, x.begin() + best_start + length, out.begin());
  if (start) *start = best_start;
  return out;
}

StatusOr<std::vector<float>> ReadInput(const std::string& path, const InputSpec& spec,
                                       std::string* notice) {
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFile(path));
  const int64_t n = Elements(spec);
  if (spec.sample_rate > 0) {
    KC_ASSIGN_OR_RETURN(std::vector<float> x, DecodeWav(bytes, spec.sample_rate, path));
    size_t start = 0;
    std::vector<float> window = LoudestWindow(x, static_cast<size_t>(n), &start);
    if (notice && x.size() > static_cast<size_t>(n)) {
      char buf[160];
      const double rate = spec.sample_rate;
      std::snprintf(buf, sizeof(buf), ": %.2f s long; classified its loudest %g s (%.2f-%.2f s)",
                    x.size() / rate, n / rate, start / rate, (start + n) / rate);
      *notice = path + buf;
    }
    return window;
  }
  std::vector<float> x(static_cast<size_t>(n));
  if (static_cast<int64_t>(bytes.size()) == n) {
    // uint8 0 -> low, 255 -> high of the model's value_range ([0, 1] when unstated).
    const double low = spec.has_value_range() ? spec.value_low : 0.0;
    const double step = ((spec.has_value_range() ? spec.value_high : 1.0) - low) / 255.0;
    for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(low + bytes[i] * step);
  } else if (static_cast<int64_t>(bytes.size()) == 4 * n) {
    std::memcpy(x.data(), bytes.data(), bytes.size());
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i])) {
        return InvalidArgument(path + ": holds NaN or infinite values (first at element " +
                               std::to_string(i) + "); the models take finite numbers");
      }
    }
  } else {
    return InvalidArgument(path + ": " + std::to_string(bytes.size()) + " bytes; the model takes " +
                           std::to_string(n) + " uint8 pixels (" + std::to_string(n) +
                           " bytes) or float32 (" + std::to_string(4 * n) +
                           " bytes), channels first");
  }
  return x;
}

}  // namespace knowcache::device
