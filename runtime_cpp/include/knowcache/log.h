// One logging switch for every platform: logcat on Android, stderr elsewhere.
// Level from KNOWCACHE_LOG (error|warn|info|debug), "warn" by default.
#pragma once

namespace knowcache {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

bool LogEnabled(LogLevel level);
void LogMessage(LogLevel level, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

}  // namespace knowcache

#define KC_LOG(level, ...)                                                  \
  do {                                                                      \
    if (::knowcache::LogEnabled(::knowcache::LogLevel::level))              \
      ::knowcache::LogMessage(::knowcache::LogLevel::level, __FILE__, __LINE__, \
                              __VA_ARGS__);                                 \
  } while (0)
