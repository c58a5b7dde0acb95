// libFuzzer target for the serial session's request dispatch (serial_server.cc):
// whole decoded requests, as FrameDecoder yields them, through SerialSession
// against a real partition store. Built by `make build-fuzz`.
//
// An input is a list of requests, each  type:u8 | length:u32 LE | payload
// (a length past the input's end takes what is left; at most kMaxPayload,
// as the decoder allows). Every input starts from a fresh copy of a store
// holding the shipped vision cached program (flashed through a session at
// start-up), so INFER runs the real engine and PUT/DELETE change a real store.
// Nothing may crash or hit undefined behaviour; each reply carries the
// request's seq, is the request's type or an error, and is a JSON object (an
// error names a code and says why); and the store opens again afterwards.
// Seeds: runtime_cpp/device/fuzz/corpus_session (scripts/session_fuzz_seeds.py).
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../little_endian.h"
#include "../serial_protocol.h"
#include "../serial_server.h"
#include "../temp_dir_for_testing.h"

namespace {

namespace fs = std::filesystem;
using knowcache::device::Frame;
using knowcache::device::MsgType;
using knowcache::device::PartitionStore;
using knowcache::device::SerialSession;
using knowcache::device::TempDir;

constexpr size_t kMaxRequests = 16;
constexpr uint8_t kErrorReply =
    static_cast<uint8_t>(MsgType::kError) | knowcache::device::kResponseBit;

void Check(bool ok) {
  if (!ok) std::abort();
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

// The store every input starts from: the shipped vision cached program,
// flashed through a session as `knowcache flash` would.
TempDir* Template() {
  static TempDir* dir = [] {
    auto* d = new TempDir;
    const fs::path models = KNOWCACHE_SOURCE_DIR "/models/vision";
    const nlohmann::json shipped = nlohmann::json::parse(std::ifstream(models / "manifest.json"));
    nlohmann::json cached;
    for (const auto& p : shipped["partitions"]) {
      if (p["id"] == "cached") cached = p;
    }
    std::ifstream f(models / cached["file"].get<std::string>(), std::ios::binary);
    const std::vector<uint8_t> program{std::istreambuf_iterator<char>(f), {}};
    auto store = PartitionStore::Open({d->path.string(), -1});
    Check(store.ok());
    SerialSession session({}, std::move(store).value());
    const nlohmann::json begin = {
        {"task", shipped["task"]}, {"labels", shipped["labels"]}, {"entry", cached}};
    std::vector<uint8_t> chunk(8, 0);   // offset 0
    chunk.insert(chunk.end(), program.begin(), program.end());
    for (const Frame& req : {Frame{uint8_t(MsgType::kPutBegin), 0, Bytes(begin.dump())},
                             Frame{uint8_t(MsgType::kPutChunk), 1, chunk},
                             Frame{uint8_t(MsgType::kPutCommit), 2, {}}}) {
      Check(session.Handle(req).type == (req.type | knowcache::device::kResponseBit));
    }
    return d;
  }();
  return dir;
}

void CheckReply(const Frame& req, const Frame& reply) {
  Check(reply.seq == req.seq);
  const auto body = nlohmann::json::parse(reply.payload.begin(), reply.payload.end(), nullptr,
                                          /*allow_exceptions=*/false);
  Check(body.is_object());
  if (reply.type == kErrorReply) {
    Check(body.contains("code") && body["code"].is_string());
    Check(body.contains("message") && body["message"].is_string() &&
          !body["message"].get<std::string>().empty());
  } else {
    Check(reply.type == (req.type | knowcache::device::kResponseBit));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("KNOWCACHE_LOG", "error", /*overwrite=*/0);   // an engine's warnings per input are noise
  Template();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using knowcache::device::kMaxPayload;
  TempDir dir;
  fs::copy(Template()->path, dir.path, fs::copy_options::recursive);
  auto store = PartitionStore::Open({dir.path.string(), 4 << 20});
  Check(store.ok());
  {
    SerialSession session({}, std::move(store).value());
    size_t at = 0;
    for (uint16_t seq = 0; seq < kMaxRequests && at + 5 <= size; ++seq) {
      Frame req;
      req.type = data[at];
      req.seq = seq;
      const size_t left = size - at - 5;
      size_t n = knowcache::device::ReadLe32(data + at + 1);
      n = std::min({n, left, kMaxPayload});
      req.payload.assign(data + at + 5, data + at + 5 + n);
      at += 5 + n;
      CheckReply(req, session.Handle(req));
    }
  }
  // Whatever the requests did, the store is consistent: it opens again.
  Check(PartitionStore::Open({dir.path.string(), 4 << 20}).ok());
  return 0;
}
