// serve-serial: the device side of the flashing protocol on a serial line.
#pragma once

#include <memory>
#include <string>

#include "knowcache/engine.h"
#include "serial_protocol.h"
#include "store.h"

namespace knowcache::device {

struct SerialServerConfig {
  std::string port;          // /dev/ttyUSB0, /dev/ttyAMA0, a pty...
  int baud = 115200;
  StoreConfig store;
  EngineConfig engine;       // task is taken from the store
};

/// The requests of one serial line against a partition store: each request
/// frame gets one reply frame (no I/O here). Owns the store, and the engine it
/// starts from the store's partitions at the first INFER (restarted after a
/// commit or a delete). Not thread-safe: one line, one session.
class SerialSession {
 public:
  SerialSession(EngineConfig engine, std::unique_ptr<PartitionStore> store);
  ~SerialSession();

  /// The reply to `request`: the same seq; type `request.type | kResponseBit`
  /// with the answer, or `kError | kResponseBit` with {"code", "message"}.
  Frame Handle(const Frame& request);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// Serves until the line closes (returns 0) or a fatal error (non-zero).
int ServeSerial(const SerialServerConfig& config);

}  // namespace knowcache::device
