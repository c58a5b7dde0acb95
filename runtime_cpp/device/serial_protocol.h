// The knowcache serial protocol's framing (docs/serial-protocol.md).
//
// A frame is  version:u8 | type:u8 | seq:u16 | length:u32 | payload | crc32:u32
// (little-endian; the CRC-32 (zlib) covers everything before it), COBS-encoded
// and terminated by a 0x00 byte, so a lost or corrupted byte costs one frame
// and the receiver resynchronizes at the next 0x00. Pure functions: no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "knowcache/status.h"

namespace knowcache::device {

constexpr uint8_t kProtocolVersion = 1;
constexpr size_t kMaxPayload = 256 * 1024;
constexpr size_t kHeaderBytes = 8;

enum class MsgType : uint8_t {
  kHello = 0x01,
  kList = 0x02,
  kPutBegin = 0x03,
  kPutChunk = 0x04,
  kPutCommit = 0x05,
  kDelete = 0x06,
  kInfer = 0x07,
  kStats = 0x08,
  kError = 0x7F,  // a response: {"code", "message"}
};
constexpr uint8_t kResponseBit = 0x80;

struct Frame {
  uint8_t type = 0;
  uint16_t seq = 0;
  std::vector<uint8_t> payload;
};

std::vector<uint8_t> CobsEncode(const std::vector<uint8_t>& in);
/// Corrupt when the bytes are not valid COBS.
StatusOr<std::vector<uint8_t>> CobsDecode(const std::vector<uint8_t>& in);

/// The bytes to write: COBS(frame) + 0x00.
std::vector<uint8_t> EncodeFrame(const Frame& frame);
/// Parses one COBS-decoded frame body; Corrupt/ProtocolError on any defect.
StatusOr<Frame> ParseFrame(const std::vector<uint8_t>& body);

/// Accumulates received bytes and yields whole frames; bad frames are counted
/// and dropped, and a frame longer than the maximum is discarded up to the
/// next delimiter.
class FrameDecoder {
 public:
  /// Feeds bytes; frames complete in them are appended to `out`.
  void Feed(const uint8_t* data, size_t n, std::vector<Frame>* out);
  int64_t bad_frames() const { return bad_frames_; }
  std::string last_error() const { return last_error_; }

 private:
  std::vector<uint8_t> buf_;
  bool overflow_ = false;
  int64_t bad_frames_ = 0;
  std::string last_error_;
};

}  // namespace knowcache::device
