// libFuzzer target for the serial protocol's receive path: arbitrary bytes
// through FrameDecoder (COBS, length, CRC, version checks), and every frame it
// accepts must re-encode to bytes that decode to the same frame. Built with
// clang -fsanitize=fuzzer,address,undefined by `make fuzz`.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "../serial_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace knowcache::device;
  FrameDecoder decoder;
  std::vector<Frame> frames;
  // Feed in two pieces so frames split across reads are exercised too.
  const size_t half = size / 2;
  decoder.Feed(data, half, &frames);
  decoder.Feed(data + half, size - half, &frames);
  for (const Frame& f : frames) {
    if (f.payload.size() > kMaxPayload) std::abort();
    std::vector<uint8_t> wire = EncodeFrame(f);
    FrameDecoder again;
    std::vector<Frame> back;
    again.Feed(wire.data(), wire.size(), &back);
    if (back.size() != 1 || back[0].type != f.type || back[0].seq != f.seq ||
        back[0].payload != f.payload) {
      std::abort();
    }
  }
  auto decoded = CobsDecode(std::vector<uint8_t>(data, data + size));
  if (decoded.ok()) {
    std::vector<uint8_t> round = CobsEncode(*decoded);
    auto again = CobsDecode(round);
    if (!again.ok() || *again != *decoded) std::abort();
  }
  return 0;
}
