// The serial protocol's framing (COBS, header, CRC-32, the stream decoder)
// against bytes worked out by hand, and the device's serial session: every
// request type dispatched against a real store holding the shipped vision
// program, bad requests answered with an error frame naming the problem, and
// the serve loop on a pseudo-terminal.
#include "serial_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <thread>

#include "knowcache/sha256.h"
#include "little_endian.h"
#include "serial_protocol.h"
#include "temp_dir_for_testing.h"

namespace knowcache::device {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Bytes = std::vector<uint8_t>;

// ---------------------------------------------------------------- framing

// COBS examples from the original paper's scheme (Cheshire & Baker), by hand.
TEST(Cobs, EncodesZeroRunsAsCodeBytes) {
  EXPECT_EQ(CobsEncode({0x00}), (Bytes{0x01, 0x01}));
  EXPECT_EQ(CobsEncode({0x00, 0x00}), (Bytes{0x01, 0x01, 0x01}));
  EXPECT_EQ(CobsEncode({0x11, 0x22, 0x00, 0x33}), (Bytes{0x03, 0x11, 0x22, 0x02, 0x33}));
  EXPECT_EQ(CobsEncode({0x11, 0x22, 0x33, 0x44}), (Bytes{0x05, 0x11, 0x22, 0x33, 0x44}));
  EXPECT_EQ(CobsEncode({0x11, 0x00, 0x00, 0x00}), (Bytes{0x02, 0x11, 0x01, 0x01, 0x01}));
  EXPECT_EQ(CobsEncode({}), (Bytes{0x01}));
}

TEST(Cobs, SplitsBlocksAfter254NonZeroBytes) {
  Bytes run(254);
  for (int i = 0; i < 254; ++i) run[i] = static_cast<uint8_t>(i + 1);  // 01..FE
  // The canonical encoding is FF 01..FE; this encoder closes with an empty
  // block (a trailing 01), which decodes the same.
  Bytes canonical(255, 0xFF), closed(256, 0x01);
  std::copy(run.begin(), run.end(), canonical.begin() + 1);
  std::copy(canonical.begin(), canonical.end(), closed.begin());
  EXPECT_EQ(CobsEncode(run), closed);
  EXPECT_EQ(*CobsDecode(canonical), run);
  EXPECT_EQ(*CobsDecode(closed), run);
  // 00 01..FE: a zero first, then the full block.
  Bytes zero_first = {0x00};
  zero_first.insert(zero_first.end(), run.begin(), run.end());
  Bytes want = {0x01};
  want.insert(want.end(), closed.begin(), closed.end());
  EXPECT_EQ(CobsEncode(zero_first), want);
  EXPECT_EQ(*CobsDecode(want), zero_first);
}

TEST(Cobs, DecodeRefusesZerosAndBlocksRunningPastTheEnd) {
  EXPECT_EQ(*CobsDecode({0x03, 0x11, 0x22, 0x02, 0x33}), (Bytes{0x11, 0x22, 0x00, 0x33}));
  auto zero = CobsDecode({0x03, 0x11, 0x00, 0x02});
  EXPECT_EQ(zero.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(zero.status().message().find("zero byte inside a block"), std::string::npos);
  auto code_zero = CobsDecode({0x02, 0x11, 0x00});
  EXPECT_EQ(code_zero.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(code_zero.status().message().find("zero byte inside a frame"), std::string::npos);
  auto past = CobsDecode({0x05, 0x11, 0x22});
  EXPECT_EQ(past.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(past.status().message().find("runs past the frame end"), std::string::npos);
}

// HELLO, seq 0x0203, payload "a\0b": header 01 01 03 02 | 03 00 00 00, the
// payload, then zlib's CRC-32 of those 11 bytes (0xE5228554, computed apart
// with Python's zlib.crc32) little-endian; COBS-encoded, then the delimiter.
const Bytes kHelloBody = {0x01, 0x01, 0x03, 0x02, 0x03, 0x00, 0x00, 0x00, 0x61, 0x00, 0x62,
                          0x54, 0x85, 0x22, 0xE5};
const Bytes kHelloWire = {0x06, 0x01, 0x01, 0x03, 0x02, 0x03, 0x01, 0x01, 0x02,
                          0x61, 0x06, 0x62, 0x54, 0x85, 0x22, 0xE5, 0x00};

Frame HelloFrame() { return {static_cast<uint8_t>(MsgType::kHello), 0x0203, {'a', 0, 'b'}}; }

TEST(Frame, EncodesHeaderPayloadAndCrcAsTheProtocolSays) {
  EXPECT_EQ(EncodeFrame(HelloFrame()), kHelloWire);
  auto parsed = ParseFrame(kHelloBody);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->type, 0x01);
  EXPECT_EQ(parsed->seq, 0x0203);
  EXPECT_EQ(parsed->payload, (Bytes{'a', 0, 'b'}));
}

TEST(Frame, ParseRefusesEachDefectWithItsReason) {
  struct Case {
    const char* name;
    Bytes body;
    StatusCode code;
    const char* message;
  };
  Bytes bad_crc = kHelloBody;
  bad_crc[9] ^= 0x40;  // a payload byte flipped
  Bytes long_length = kHelloBody;
  long_length[4] = 0x04;  // declares 4 payload bytes, carries 3
  Bytes over_limit = kHelloBody;
  over_limit[6] = 0x04;   // 0x40003 bytes: over 256 KiB
  // Version 2 with a CRC that matches (computed apart: zlib.crc32 = 0x7CC0E355).
  Bytes version2 = {0x02, 0x01, 0x03, 0x02, 0x03, 0x00, 0x00, 0x00, 0x61, 0x00, 0x62,
                    0x55, 0xE3, 0xC0, 0x7C};
  for (const Case& c : std::vector<Case>{
           {"short", Bytes(11, 1), StatusCode::kCorrupt, "shorter than its header and CRC"},
           {"crc", bad_crc, StatusCode::kCorrupt, "CRC-32 mismatch"},
           {"length", long_length, StatusCode::kCorrupt, "length field does not match"},
           {"limit", over_limit, StatusCode::kProtocol, "over the 256 KiB limit"},
           {"version", version2, StatusCode::kProtocol,
            "protocol version 2; this side speaks 1"}}) {
    auto f = ParseFrame(c.body);
    ASSERT_FALSE(f.ok()) << c.name;
    EXPECT_EQ(f.status().code(), c.code) << c.name;
    EXPECT_NE(f.status().message().find(c.message), std::string::npos)
        << c.name << ": " << f.status().message();
  }
}

TEST(FrameDecoder, YieldsWholeFramesFromAnySplitOfTheStream) {
  Frame second{static_cast<uint8_t>(MsgType::kList), 7, {}};
  Bytes stream = kHelloWire;
  const Bytes list = EncodeFrame(second);
  stream.insert(stream.end(), list.begin(), list.end());
  for (size_t split : {size_t{1}, size_t{3}, stream.size()}) {
    FrameDecoder d;
    std::vector<Frame> out;
    for (size_t i = 0; i < stream.size(); i += split) {
      d.Feed(stream.data() + i, std::min(split, stream.size() - i), &out);
    }
    ASSERT_EQ(out.size(), 2u) << split;
    EXPECT_EQ(out[0].seq, 0x0203);
    EXPECT_EQ(out[0].payload, (Bytes{'a', 0, 'b'}));
    EXPECT_EQ(out[1].type, static_cast<uint8_t>(MsgType::kList));
    EXPECT_EQ(out[1].seq, 7);
    EXPECT_EQ(d.bad_frames(), 0);
  }
}

TEST(FrameDecoder, DropsADamagedFrameAndResynchronizesAtTheNextDelimiter) {
  Bytes damaged = kHelloWire;
  damaged[3] ^= 0x01;  // the seq's low byte: the CRC no longer matches
  Bytes stream = {0x00, 0x00};  // empty frames between delimiters are not errors
  stream.insert(stream.end(), damaged.begin(), damaged.end());
  stream.insert(stream.end(), {0x13, 0x37, 0x00});  // line noise
  stream.insert(stream.end(), kHelloWire.begin(), kHelloWire.end());
  FrameDecoder d;
  std::vector<Frame> out;
  d.Feed(stream.data(), stream.size(), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 0x0203);
  EXPECT_EQ(d.bad_frames(), 2);
  EXPECT_NE(d.last_error().find("COBS"), std::string::npos) << d.last_error();
}

TEST(FrameDecoder, DiscardsAnOverlongFrameUpToItsDelimiter) {
  FrameDecoder d;
  std::vector<Frame> out;
  const Bytes flood(kMaxPayload + 4096, 0x55);  // never a delimiter: longer than any frame
  d.Feed(flood.data(), flood.size(), &out);
  const uint8_t zero = 0;
  d.Feed(&zero, 1, &out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(d.bad_frames(), 1);
  EXPECT_EQ(d.last_error(), "frame longer than the maximum; dropped");
  d.Feed(kHelloWire.data(), kHelloWire.size(), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 0x0203);
}

// ---------------------------------------------------------------- session

const std::string kModels = KNOWCACHE_SOURCE_DIR "/models/vision";
constexpr uint8_t kErrorReply = static_cast<uint8_t>(MsgType::kError) | kResponseBit;

Bytes ReadFile(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

Bytes JsonPayload(const json& j) {
  const std::string s = j.dump();
  return {s.begin(), s.end()};
}

// An INFER payload: header length (u32 LE), {"shape": ...}, float32 data.
Bytes InferPayload(const json& header, const std::vector<float>& x) {
  const Bytes h = JsonPayload(header);
  Bytes p(4 + h.size() + x.size() * sizeof(float));
  for (size_t i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(h.size() >> (8 * i));
  std::copy(h.begin(), h.end(), p.begin() + 4);
  if (!x.empty()) std::memcpy(p.data() + 4 + h.size(), x.data(), x.size() * sizeof(float));
  return p;
}

std::vector<float> Image(int seed) {
  std::vector<float> x(28 * 28);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7 + seed * 13) % 17) / 16.f;
  return x;
}

class SerialSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = PartitionStore::Open({dir.path.string(), -1});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    session = std::make_unique<SerialSession>(EngineConfig{}, std::move(store).value());
    shipped = json::parse(ReadFile(kModels + "/manifest.json"));
    for (const auto& p : shipped["partitions"]) {
      if (p["id"] == "cached") cached = p;
    }
    ASSERT_TRUE(cached.is_object());
    program = ReadFile(fs::path(kModels) / cached["file"].get<std::string>());
    ASSERT_EQ(program.size(), cached["bytes"].get<size_t>());
  }

  // Sends one request; checks the reply's seq and type; returns its JSON.
  json Ask(MsgType type, const Bytes& payload, bool ok = true) {
    const uint16_t seq = next_seq++;
    const Frame reply = session->Handle({static_cast<uint8_t>(type), seq, payload});
    EXPECT_EQ(reply.seq, seq);
    EXPECT_EQ(reply.type, ok ? (static_cast<uint8_t>(type) | kResponseBit) : kErrorReply)
        << std::string(reply.payload.begin(), reply.payload.end());
    return json::parse(reply.payload.begin(), reply.payload.end());
  }

  // The error reply to a request that must fail: {"code", "message"}.
  json Refused(MsgType type, const Bytes& payload) { return Ask(type, payload, false); }

  Bytes Chunk(int64_t offset, size_t n) {
    Bytes p(8);
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(static_cast<uint64_t>(offset) >> (8 * i));
    p.insert(p.end(), program.begin() + offset, program.begin() + offset + n);
    return p;
  }

  json BeginRequest() const {
    return {{"task", shipped["task"]}, {"labels", shipped["labels"]}, {"entry", cached}};
  }

  // PUT_BEGIN, two PUT_CHUNKs, PUT_COMMIT: the LIST the commit answers.
  json Flash() {
    EXPECT_EQ(Ask(MsgType::kPutBegin, JsonPayload(BeginRequest())), (json{{"offset", 0}}));
    const int64_t half = static_cast<int64_t>(program.size() / 2);
    EXPECT_EQ(Ask(MsgType::kPutChunk, Chunk(0, half)), (json{{"offset", half}}));
    EXPECT_EQ(Ask(MsgType::kPutChunk, Chunk(half, program.size() - half)),
              (json{{"offset", program.size()}}));
    return Ask(MsgType::kPutCommit, {});
  }

  TempDir dir;
  std::unique_ptr<SerialSession> session;
  json shipped, cached;
  Bytes program;
  uint16_t next_seq = 0xFFF0;  // wraps past 0xFFFF during a test
};

TEST_F(SerialSessionTest, HelloAndListDescribeAnEmptyStore) {
  const json hello = Ask(MsgType::kHello, {});
  EXPECT_EQ(hello["protocol"], kProtocolVersion);
  EXPECT_EQ(hello["program"], "knowcache-device");
  EXPECT_EQ(hello["task"], "");
  EXPECT_EQ(hello["store_bytes"], 0);
  EXPECT_GT(hello["store_free"].get<int64_t>(), 0);
  EXPECT_EQ(Ask(MsgType::kList, {}), (json{{"task", ""}, {"partitions", json::array()}}));
}

TEST_F(SerialSessionTest, AFlashedProgramIsListedAnsweredAndDeleted) {
  const json listed = Flash();
  EXPECT_EQ(listed["task"], "vision");
  ASSERT_EQ(listed["partitions"].size(), 1u);
  EXPECT_EQ(listed["partitions"][0]["id"], "cached");
  EXPECT_EQ(listed["partitions"][0]["sha256"], Sha256Hex(program.data(), program.size()));
  EXPECT_EQ(listed["partitions"][0]["bytes"], program.size());
  EXPECT_EQ(Ask(MsgType::kList, {}), listed);
  EXPECT_EQ(Ask(MsgType::kHello, {})["store_bytes"], program.size());

  // INFER answers what an engine over the same store answers to the same image.
  auto m = Manifest::Load((dir.path / "manifest.json").string());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto engine = Engine::FromManifest(EngineConfig{}, *m, InstallPlan::Ids({"cached"}));
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  for (int seed : {0, 1, 2}) {
    const std::vector<float> x = Image(seed);
    auto want = (*engine)->Infer({DType::kFloat32, {1, 1, 28, 28}, x.data(), x.size() * 4});
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    const json got = Ask(MsgType::kInfer, InferPayload({{"shape", {1, 1, 28, 28}}}, x));
    EXPECT_EQ(got["label"], want->label) << seed;
    EXPECT_EQ(got["index"], want->index) << seed;
    EXPECT_EQ(got["source"], AnswerSourceName(want->source)) << seed;
    EXPECT_EQ(got["partition"], "cached");
    EXPECT_NEAR(got["confidence"].get<double>(), want->confidence, 1e-6) << seed;
    EXPECT_NEAR(got["entropy"].get<double>(), want->entropy, 1e-6) << seed;
  }
  const json stats = Ask(MsgType::kStats, {});
  EXPECT_EQ(stats["engine"]["queries"], 3);
  EXPECT_EQ(stats["store_bytes"], program.size());
  // A new commit restarts the engine on what the store now holds.
  EXPECT_EQ(Flash(), listed);
  EXPECT_FALSE(Ask(MsgType::kStats, {}).contains("engine"));
  Ask(MsgType::kInfer, InferPayload({{"shape", {1, 1, 28, 28}}}, Image(0)));
  EXPECT_EQ(Ask(MsgType::kStats, {})["engine"]["queries"], 1);

  const json after = Ask(MsgType::kDelete, JsonPayload({{"id", "cached"}}));
  EXPECT_EQ(after, (json{{"task", ""}, {"partitions", json::array()}}));
  EXPECT_FALSE(Ask(MsgType::kStats, {}).contains("engine"));  // the engine was dropped
  const json gone = Refused(MsgType::kDelete, JsonPayload({{"id", "cached"}}));
  EXPECT_EQ(gone["code"], "not_found");
  const json none = Refused(MsgType::kInfer, InferPayload({{"shape", {1, 1, 28, 28}}}, Image(0)));
  EXPECT_EQ(none["code"], "not_found");
  EXPECT_NE(none["message"].get<std::string>().find("holds no partitions"), std::string::npos);
}

TEST_F(SerialSessionTest, BadRequestsAreAnsweredWithTheirReason) {
  struct Case {
    const char* name;
    MsgType type;
    Bytes payload;
    const char* code;
    const char* message;
  };
  json no_labels = BeginRequest();
  no_labels.erase("labels");
  const std::vector<Case> cases = {
      {"unknown type", static_cast<MsgType>(0x42), {}, "invalid_argument",
       "unknown message type 66"},
      {"begin not JSON", MsgType::kPutBegin, {'{', 'x'}, "invalid_argument",
       "payload is not JSON"},
      {"begin without labels", MsgType::kPutBegin, JsonPayload(no_labels), "invalid_argument",
       "PUT_BEGIN needs {\"task\", \"labels\", \"entry\"}"},
      {"chunk without offset", MsgType::kPutChunk, {1, 2, 3, 4, 5, 6, 7}, "invalid_argument",
       "PUT_CHUNK needs an 8-byte offset"},
      {"chunk before begin", MsgType::kPutChunk, Bytes(9, 0), "failed_precondition", ""},
      {"commit before begin", MsgType::kPutCommit, {}, "failed_precondition", ""},
      {"delete without id", MsgType::kDelete, JsonPayload({{"name", "cached"}}),
       "invalid_argument", "DELETE needs {\"id\"}"},
      {"delete not JSON", MsgType::kDelete, {'x'}, "invalid_argument", "payload is not JSON"},
      {"infer too short", MsgType::kInfer, {1, 0}, "invalid_argument",
       "INFER needs a 4-byte header length"},
      {"infer header past the end", MsgType::kInfer, {0xFF, 0, 0, 0, '{', '}'},
       "invalid_argument", "INFER header runs past the payload"},
      {"infer header one byte past the end", MsgType::kInfer, {3, 0, 0, 0, '{', '}'},
       "invalid_argument", "INFER header runs past the payload"},
      {"infer header not JSON", MsgType::kInfer, {2, 0, 0, 0, '{', 'x'}, "invalid_argument",
       "payload is not JSON"},
  };
  for (const Case& c : cases) {
    const json e = Refused(c.type, c.payload);
    EXPECT_EQ(e["code"], c.code) << c.name << ": " << e.dump();
    EXPECT_NE(e["message"].get<std::string>().find(c.message), std::string::npos)
        << c.name << ": " << e.dump();
  }
  EXPECT_EQ(Ask(MsgType::kList, {})["partitions"], json::array());  // nothing was installed
}

TEST_F(SerialSessionTest, BadInferHeadersAndInputsAreRefusedOnceAProgramIsFlashed) {
  Flash();
  const std::vector<float> x = Image(0);
  const json no_shape = Refused(MsgType::kInfer, InferPayload({{"dims", {1, 784}}}, x));
  EXPECT_EQ(no_shape["code"], "invalid_argument");
  EXPECT_NE(no_shape["message"].get<std::string>().find("needs {\"shape\": [...]}"),
            std::string::npos);
  const json float_dims = Refused(MsgType::kInfer, InferPayload({{"shape", {1, 1.5}}}, x));
  EXPECT_NE(float_dims["message"].get<std::string>().find("shape must be integers"),
            std::string::npos);
  const json wrong = Refused(MsgType::kInfer, InferPayload({{"shape", {1, 784}}}, x));
  EXPECT_EQ(wrong["code"], "invalid_argument");
  EXPECT_NE(wrong["message"].get<std::string>().find(
                "input shape is 1x784 but the model expects 1x1x28x28"),
            std::string::npos)
      << wrong.dump();
  // Dimensions whose product overflows (session_fuzzer): refused, the session lives on.
  const json huge =
      Refused(MsgType::kInfer, InferPayload({{"shape", {4294967296, 4294967296, 4294967296}}}, x));
  EXPECT_NE(huge["message"].get<std::string>().find("has too many elements"), std::string::npos)
      << huge.dump();
  const std::vector<float> short_x(100, 0.5f);
  EXPECT_EQ(Refused(MsgType::kInfer, InferPayload({{"shape", {1, 1, 28, 28}}}, short_x))["code"],
            "invalid_argument");
  // The session still answers after refusing.
  EXPECT_TRUE(Ask(MsgType::kInfer, InferPayload({{"shape", {1, 1, 28, 28}}}, x))
                  .contains("label"));
}

TEST_F(SerialSessionTest, AProgramOverTheStoreLimitIsStoreFull) {
  TempDir small;
  auto store = PartitionStore::Open({small.path.string(), static_cast<int64_t>(program.size() - 1)});
  ASSERT_TRUE(store.ok());
  session = std::make_unique<SerialSession>(EngineConfig{}, std::move(store).value());
  const json e = Refused(MsgType::kPutBegin, JsonPayload(BeginRequest()));
  EXPECT_EQ(e["code"], "store_full");
  EXPECT_NE(e["message"].get<std::string>().find(std::to_string(program.size())),
            std::string::npos) << e.dump();
}

// ---------------------------------------------------------------- serve loop

// Reads reply frames from `fd` until `want` arrived or 10 s passed.
std::vector<Frame> ReadFrames(int fd, size_t want) {
  FrameDecoder d;
  std::vector<Frame> out;
  uint8_t buf[4096];
  for (int waited = 0; out.size() < want && waited < 100; ++waited) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    d.Feed(buf, static_cast<size_t>(n), &out);
  }
  return out;
}

TEST(ServeSerial, AnswersEachGoodFrameOnAPtySkipsNoiseAndEndsWhenTheLineCloses) {
  TempDir dir;
  int master = -1, slave = -1;
  char name[256];
  ASSERT_EQ(::openpty(&master, &slave, name, nullptr, nullptr), 0);
  termios raw{};
  ::tcgetattr(slave, &raw);
  ::cfmakeraw(&raw);
  ::tcsetattr(slave, TCSANOW, &raw);  // no echo or line editing before the server sets it
  SerialServerConfig config;
  config.port = name;
  config.store.dir = dir.path.string();
  int rc = -1;
  std::thread server([&] { rc = ServeSerial(config); });

  Bytes out = {0x13, 0x37, 0x00};  // noise, then two requests in one write
  const Bytes hello = EncodeFrame({static_cast<uint8_t>(MsgType::kHello), 41, {}});
  const Bytes bogus = EncodeFrame({0x42, 42, {}});
  out.insert(out.end(), hello.begin(), hello.end());
  out.insert(out.end(), bogus.begin(), bogus.end());
  ASSERT_EQ(::write(master, out.data(), out.size()), static_cast<ssize_t>(out.size()));
  const std::vector<Frame> replies = ReadFrames(master, 2);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].seq, 41);
  EXPECT_EQ(replies[0].type, static_cast<uint8_t>(MsgType::kHello) | kResponseBit);
  EXPECT_EQ(json::parse(replies[0].payload.begin(), replies[0].payload.end())["protocol"],
            kProtocolVersion);
  EXPECT_EQ(replies[1].seq, 42);
  EXPECT_EQ(replies[1].type, kErrorReply);

  ::close(slave);
  ::close(master);  // the line closes: the server returns 0
  server.join();
  EXPECT_EQ(rc, 0);
}

TEST(ServeSerial, RefusesWhatIsNotASerialLineSayingWhy) {
  TempDir dir;
  const fs::path file = dir.path / "not-a-tty";
  { std::ofstream(file) << "x"; }
  SerialServerConfig good;
  good.port = file.string();
  good.store.dir = (dir.path / "store").string();
  SerialServerConfig baud = good, missing = good, no_store = good;
  baud.baud = 12345;
  missing.port = (dir.path / "missing").string();
  no_store.store.dir = "";
  for (const auto& [config, message] : std::vector<std::pair<SerialServerConfig, std::string>>{
           {good, file.string() + " is not a serial line"},
           {baud, "unsupported baud rate 12345"},
           {missing, "cannot open " + missing.port},
           {no_store, "--store needs a directory"}}) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(ServeSerial(config), 1) << message;
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find(message), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace knowcache::device
