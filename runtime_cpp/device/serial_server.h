// serve-serial: the device side of the flashing protocol on a serial line.
#pragma once

#include <string>

#include "knowcache/engine.h"
#include "store.h"

namespace knowcache::device {

struct SerialServerConfig {
  std::string port;          // /dev/ttyUSB0, /dev/ttyAMA0, a pty...
  int baud = 115200;
  StoreConfig store;
  EngineConfig engine;       // task is taken from the store
};

/// Serves until the line closes (returns 0) or a fatal error (non-zero).
int ServeSerial(const SerialServerConfig& config);

}  // namespace knowcache::device
