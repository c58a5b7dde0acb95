// libFuzzer target for the manifest parser (src/manifest.cc): arbitrary text
// through Manifest::Parse and PartitionInfo::Parse. Nothing may crash, leak or
// hit undefined behaviour (ASan, UBSan), and whatever the parser accepts must
// hold the promises the engine relies on. Built by `make build-fuzz`.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "knowcache/manifest.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckPartition(const knowcache::PartitionInfo& p) {
  Check(!p.id.empty());
  Check(p.bytes > 0);
  Check(p.threshold >= 0.0f && p.threshold <= 1.0f);
  Check(p.labels.size() >= 2);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto manifest = knowcache::Manifest::Parse(text);
  if (manifest.ok()) {
    Check(manifest->labels.size() >= 2);
    std::set<std::string> ids;
    for (const auto& p : manifest->partitions) {
      CheckPartition(p);
      Check(ids.insert(p.id).second);   // ids are unique
    }
  } else {
    Check(!manifest.status().message().empty());   // a refusal says why
  }
  auto info = knowcache::PartitionInfo::Parse(text);
  if (info.ok()) {
    CheckPartition(*info);
  } else {
    Check(!info.status().message().empty());
  }
  return 0;
}
