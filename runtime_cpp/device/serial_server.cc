#include "serial_server.h"

#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "knowcache/log.h"
#include "little_endian.h"
#include "serial_protocol.h"

namespace knowcache::device {
namespace {

speed_t BaudConstant(int baud) {
  switch (baud) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
    case 230400: return B230400;
    case 460800: return B460800;
    case 921600: return B921600;
    default: return 0;
  }
}

StatusOr<int> OpenPort(const std::string& port, int baud) {
  const speed_t speed = BaudConstant(baud);
  if (speed == 0) return InvalidArgument("unsupported baud rate " + std::to_string(baud));
  const int fd = ::open(port.c_str(), O_RDWR | O_NOCTTY);
  if (fd < 0) return NotFound("cannot open " + port + ": " + std::strerror(errno));
  termios tio{};
  if (::tcgetattr(fd, &tio) != 0) {
    // A regular file or /dev/null reads as an at once closed line: say so, not exit 0.
    const std::string why = std::strerror(errno);
    ::close(fd);
    return InvalidArgument(port + " is not a serial line (" + why + "); pass the board's "
                           "port (/dev/ttyUSB0, /dev/ttyAMA0...) or a pty");
  }
  ::cfmakeraw(&tio);
  ::cfsetispeed(&tio, speed);
  ::cfsetospeed(&tio, speed);
  tio.c_cflag |= CLOCAL | CREAD;
  ::tcsetattr(fd, TCSANOW, &tio);
  return fd;
}

bool WriteAll(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::vector<uint8_t> JsonBytes(const nlohmann::json& j) {
  const std::string s = j.dump();
  return {s.begin(), s.end()};
}

const char* CodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kCorrupt: return "corrupt";
    case StatusCode::kResourceExhausted: return "store_full";
    case StatusCode::kFailedPrecondition: return "failed_precondition";
    case StatusCode::kUnavailable: return "unavailable";
    default: return "internal";
  }
}

}  // namespace

class SerialSession::Impl {
 public:
  Impl(EngineConfig engine, std::unique_ptr<PartitionStore> store)
      : engine_config_(std::move(engine)), store_(std::move(store)) {}

  Frame Handle(const Frame& req) {
    auto body = Dispatch(req);
    Frame resp;
    resp.seq = req.seq;
    if (body.ok()) {
      resp.type = req.type | kResponseBit;
      resp.payload = std::move(body).value();
    } else {
      resp.type = static_cast<uint8_t>(MsgType::kError) | kResponseBit;
      resp.payload = JsonBytes({{"code", CodeName(body.status().code())},
                                {"message", body.status().message()}});
    }
    return resp;
  }

 private:
  StatusOr<nlohmann::json> JsonOf(const std::vector<uint8_t>& p) {
    auto j = nlohmann::json::parse(p.begin(), p.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return InvalidArgument("payload is not JSON");
    return j;
  }

  StatusOr<std::vector<uint8_t>> Dispatch(const Frame& req) {
    switch (static_cast<MsgType>(req.type)) {
      case MsgType::kHello:
        return JsonBytes({{"protocol", kProtocolVersion}, {"program", "knowcache-device"},
                          {"version", "0.1.0"}, {"task", store_->List()["task"]},
                          {"store_bytes", store_->UsedBytes()},
                          {"store_free", store_->FreeBytes()}});
      case MsgType::kList:
        return JsonBytes(store_->List());
      case MsgType::kPutBegin: {
        KC_ASSIGN_OR_RETURN(nlohmann::json j, JsonOf(req.payload));
        KC_ASSIGN_OR_RETURN(int64_t offset, store_->Begin(j));
        return JsonBytes({{"offset", offset}});
      }
      case MsgType::kPutChunk: {
        if (req.payload.size() < 8) return InvalidArgument("PUT_CHUNK needs an 8-byte offset");
        const auto offset = static_cast<int64_t>(ReadLe64(req.payload.data()));
        KC_ASSIGN_OR_RETURN(int64_t have, store_->Write(offset, req.payload.data() + 8,
                                                        req.payload.size() - 8));
        return JsonBytes({{"offset", have}});
      }
      case MsgType::kPutCommit:
        KC_RETURN_IF_ERROR(store_->Commit());
        engine_.reset();
        return JsonBytes(store_->List());
      case MsgType::kDelete: {
        KC_ASSIGN_OR_RETURN(nlohmann::json j, JsonOf(req.payload));
        if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) {
          return InvalidArgument("DELETE needs {\"id\"}");
        }
        KC_RETURN_IF_ERROR(store_->Remove(j["id"]));
        engine_.reset();
        return JsonBytes(store_->List());
      }
      case MsgType::kInfer:
        return Infer(req.payload);
      case MsgType::kStats: {
        nlohmann::json j = {{"store_bytes", store_->UsedBytes()}, {"store_free", store_->FreeBytes()}};
        if (engine_) {
          EngineStats s = engine_->Stats();
          j["engine"] = {{"queries", s.queries}, {"local", s.local}, {"cloud", s.cloud},
                         {"degraded", s.degraded}, {"fetches", s.fetches},
                         {"kept_private", s.kept_private},
                         {"kept_local_only", s.kept_local_only},
                         {"cache_hits", s.cache.hits}, {"resident_bytes", s.cache.resident_bytes}};
        }
        return JsonBytes(j);
      }
      default:
        return InvalidArgument("unknown message type " + std::to_string(req.type));
    }
  }

  StatusOr<std::vector<uint8_t>> Infer(const std::vector<uint8_t>& p) {
    if (p.size() < 4) return InvalidArgument("INFER needs a 4-byte header length");
    const uint32_t hlen = ReadLe32(p.data());
    if (hlen > p.size() - 4) return InvalidArgument("INFER header runs past the payload");
    KC_ASSIGN_OR_RETURN(nlohmann::json h, JsonOf({p.begin() + 4, p.begin() + 4 + hlen}));
    if (!engine_) KC_RETURN_IF_ERROR(StartEngine());
    if (!h.is_object() || !h.contains("shape") || !h["shape"].is_array()) {
      return InvalidArgument("INFER header needs {\"shape\": [...]} (float32 data)");
    }
    std::vector<int64_t> shape;
    for (const auto& d : h["shape"]) {
      if (!d.is_number_integer()) return InvalidArgument("INFER shape must be integers");
      shape.push_back(d.get<int64_t>());
    }
    const size_t data_bytes = p.size() - 4 - hlen;
    std::vector<float> x(data_bytes / sizeof(float));
    std::memcpy(x.data(), p.data() + 4 + hlen, x.size() * sizeof(float));
    TensorView view{DType::kFloat32, shape, x.data(), data_bytes};
    KC_ASSIGN_OR_RETURN(InferenceResult r, engine_->Infer(view));
    return JsonBytes({{"label", r.label}, {"index", r.index}, {"confidence", r.confidence},
                      {"entropy", r.entropy}, {"source", AnswerSourceName(r.source)},
                      {"partition", r.partition_id}, {"total_us", r.total_us},
                      {"private", r.is_private}});
  }

  // The store's cached model, or its first partition when it holds no cached one.
  Status StartEngine() {
    KC_ASSIGN_OR_RETURN(Manifest m, store_->LoadManifest());
    if (m.partitions.empty()) return FailedPrecondition("the store holds no partition; flash one");
    std::vector<std::string> cached = m.IdsWithRole(PartitionRole::kCached);
    const InstallPlan plan =
        InstallPlan::Ids({cached.empty() ? m.partitions.front().id : cached.front()});
    KC_ASSIGN_OR_RETURN(engine_, Engine::FromManifest(engine_config_, std::move(m), plan));
    return Status::Ok();
  }

  const EngineConfig engine_config_;
  std::unique_ptr<PartitionStore> store_;
  std::unique_ptr<Engine> engine_;
};

SerialSession::SerialSession(EngineConfig engine, std::unique_ptr<PartitionStore> store)
    : impl_(std::make_unique<Impl>(std::move(engine), std::move(store))) {}

SerialSession::~SerialSession() = default;

Frame SerialSession::Handle(const Frame& request) { return impl_->Handle(request); }

int ServeSerial(const SerialServerConfig& config) {
  auto store = PartitionStore::Open(config.store);
  if (!store.ok()) {
    std::fprintf(stderr, "knowcache-device: %s\n", store.status().ToString().c_str());
    return 1;
  }
  auto fd = OpenPort(config.port, config.baud);
  if (!fd.ok()) {
    std::fprintf(stderr, "knowcache-device: %s\n", fd.status().ToString().c_str());
    return 1;
  }
  KC_LOG(kInfo, "serving the knowcache serial protocol on %s, store %s", config.port.c_str(),
         config.store.dir.c_str());
  SerialSession session(config.engine, std::move(store).value());
  FrameDecoder decoder;
  std::vector<uint8_t> buf(4096);
  while (true) {
    const ssize_t n = ::read(*fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the line closed
    std::vector<Frame> frames;
    const int64_t bad_before = decoder.bad_frames();
    decoder.Feed(buf.data(), static_cast<size_t>(n), &frames);
    if (decoder.bad_frames() != bad_before) {
      KC_LOG(kWarn, "dropped a bad frame: %s", decoder.last_error().c_str());
    }
    for (const Frame& f : frames) {
      if (!WriteAll(*fd, EncodeFrame(session.Handle(f)))) {
        std::fprintf(stderr, "knowcache-device: writing to %s failed\n", config.port.c_str());
        ::close(*fd);
        return 1;
      }
    }
  }
  ::close(*fd);
  return 0;
}

}  // namespace knowcache::device
