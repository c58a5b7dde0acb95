// SHA-256 over bytes and files (OpenSSL's EVP), as lowercase hex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "knowcache/status.h"

namespace knowcache {

std::string Sha256Hex(const void* data, size_t size);
StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path);

}  // namespace knowcache
