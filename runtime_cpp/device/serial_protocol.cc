#include "serial_protocol.h"

#include <zlib.h>

#include "little_endian.h"

namespace knowcache::device {
namespace {

void Put16(std::vector<uint8_t>* b, uint16_t v) {
  b->push_back(v & 0xFF);
  b->push_back(v >> 8);
}
void Put32(std::vector<uint8_t>* b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b->push_back((v >> (8 * i)) & 0xFF);
}

uint32_t Crc32(const uint8_t* data, size_t n) {
  return static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), data, static_cast<uInt>(n)));
}

// An encoded frame is at most this long (COBS adds one byte per 254).
constexpr size_t kMaxEncoded = kHeaderBytes + kMaxPayload + 4 + (kHeaderBytes + kMaxPayload + 4) / 254 + 2;

}  // namespace

std::vector<uint8_t> CobsEncode(const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out;
  out.reserve(in.size() + in.size() / 254 + 2);
  size_t code_pos = out.size();
  out.push_back(0);
  uint8_t code = 1;
  for (uint8_t byte : in) {
    if (byte == 0) {
      out[code_pos] = code;
      code_pos = out.size();
      out.push_back(0);
      code = 1;
      continue;
    }
    out.push_back(byte);
    if (++code == 0xFF) {
      out[code_pos] = code;
      code_pos = out.size();
      out.push_back(0);
      code = 1;
    }
  }
  out[code_pos] = code;
  return out;
}

StatusOr<std::vector<uint8_t>> CobsDecode(const std::vector<uint8_t>& in) {
  std::vector<uint8_t> out;
  out.reserve(in.size());
  size_t i = 0;
  while (i < in.size()) {
    const uint8_t code = in[i++];
    if (code == 0) return Corrupt("COBS: zero byte inside a frame");
    if (i + code - 1 > in.size()) return Corrupt("COBS: block runs past the frame end");
    for (uint8_t k = 1; k < code; ++k) {
      if (in[i] == 0) return Corrupt("COBS: zero byte inside a block");
      out.push_back(in[i++]);
    }
    if (code != 0xFF && i < in.size()) out.push_back(0);
  }
  return out;
}

std::vector<uint8_t> EncodeFrame(const Frame& frame) {
  std::vector<uint8_t> body;
  body.reserve(kHeaderBytes + frame.payload.size() + 4);
  body.push_back(kProtocolVersion);
  body.push_back(frame.type);
  Put16(&body, frame.seq);
  Put32(&body, static_cast<uint32_t>(frame.payload.size()));
  body.insert(body.end(), frame.payload.begin(), frame.payload.end());
  Put32(&body, Crc32(body.data(), body.size()));
  std::vector<uint8_t> out = CobsEncode(body);
  out.push_back(0);
  return out;
}

StatusOr<Frame> ParseFrame(const std::vector<uint8_t>& b) {
  if (b.size() < kHeaderBytes + 4) return Corrupt("frame shorter than its header and CRC");
  const uint32_t length = ReadLe32(b.data() + 4);
  if (length > kMaxPayload) return ProtocolError("frame payload over the 256 KiB limit");
  if (b.size() != kHeaderBytes + length + 4) return Corrupt("frame length field does not match");
  if (ReadLe32(b.data() + b.size() - 4) != Crc32(b.data(), b.size() - 4)) {
    return Corrupt("frame CRC-32 mismatch");
  }
  if (b[0] != kProtocolVersion) {
    return ProtocolError("protocol version " + std::to_string(b[0]) + "; this side speaks " +
                         std::to_string(kProtocolVersion));
  }
  Frame f;
  f.type = b[1];
  f.seq = ReadLe16(b.data() + 2);
  f.payload.assign(b.begin() + kHeaderBytes, b.end() - 4);
  return f;
}

void FrameDecoder::Feed(const uint8_t* data, size_t n, std::vector<Frame>* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint8_t byte = data[i];
    if (byte != 0) {
      if (buf_.size() < kMaxEncoded) {
        buf_.push_back(byte);
      } else {
        overflow_ = true;
      }
      continue;
    }
    if (overflow_) {
      ++bad_frames_;
      last_error_ = "frame longer than the maximum; dropped";
    } else if (!buf_.empty()) {
      auto body = CobsDecode(buf_);
      StatusOr<Frame> frame = body.ok() ? ParseFrame(*body) : StatusOr<Frame>(body.status());
      if (frame.ok()) {
        out->push_back(std::move(frame).value());
      } else {
        ++bad_frames_;
        last_error_ = frame.status().ToString();
      }
    }
    buf_.clear();
    overflow_ = false;
  }
}

}  // namespace knowcache::device
