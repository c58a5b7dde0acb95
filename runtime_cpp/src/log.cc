#include "knowcache/log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <executorch/runtime/platform/platform.h>

#ifdef __ANDROID_API__
#include <android/log.h>
#endif

namespace knowcache {
namespace {

LogLevel ThresholdFromEnv() {
  const char* v = std::getenv("KNOWCACHE_LOG");
  if (v == nullptr) return LogLevel::kWarn;
  if (!std::strcmp(v, "error")) return LogLevel::kError;
  if (!std::strcmp(v, "info")) return LogLevel::kInfo;
  if (!std::strcmp(v, "debug")) return LogLevel::kDebug;
  return LogLevel::kWarn;
}

// ExecuTorch logs INFO lines (cpuinfo, thread pool) on stderr in every process by
// default; its messages go through KNOWCACHE_LOG's threshold like ours instead.
void EmitExecuTorchLog(et_timestamp_t, et_pal_log_level_t level, const char* filename,
                       const char*, size_t line, const char* message, size_t length) {
  const LogLevel ours = level == kError || level == kFatal ? LogLevel::kError
                        : level == kInfo                   ? LogLevel::kInfo
                                                           : LogLevel::kDebug;
  if (!LogEnabled(ours)) return;
  const char* base = filename ? std::strrchr(filename, '/') : nullptr;
  base = base ? base + 1 : (filename ? filename : "?");
  LogMessage(ours, base, static_cast<int>(line), "executorch: %.*s", static_cast<int>(length),
             message);
}

// Registered while the library loads, before any program or thread pool logs.
[[maybe_unused]] const bool kExecuTorchLogsRouted = ::executorch::runtime::register_pal(
    ::executorch::runtime::PalImpl::create(&EmitExecuTorchLog, __FILE__));

}  // namespace

bool LogEnabled(LogLevel level) {
  static const LogLevel threshold = ThresholdFromEnv();
  return static_cast<int>(level) <= static_cast<int>(threshold);
}

void LogMessage(LogLevel level, const char* file, int line, const char* fmt, ...) {
  static const char* kNames[] = {"E", "W", "I", "D"};
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
#ifdef __ANDROID_API__
  static const int kPriorities[] = {ANDROID_LOG_ERROR, ANDROID_LOG_WARN,
                                    ANDROID_LOG_INFO, ANDROID_LOG_DEBUG};
  __android_log_print(kPriorities[static_cast<int>(level)], "knowcache", "%s:%d %s",
                      base, line, buf);
#else
  std::fprintf(stderr, "[knowcache %s %s:%d] %s\n", kNames[static_cast<int>(level)],
               base, line, buf);
#endif
}

}  // namespace knowcache
