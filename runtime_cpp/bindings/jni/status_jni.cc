// Status -> Java exception: the only place the core's errors become throws.
// The classes mirror knowcache.runtime's Python ones (status_py.cc):
// KnowcacheException and its nested subclasses in
// android_app/runtime/src/main/java/org/knowcache/runtime/KnowcacheException.java.
#include "jni_helper.h"

namespace knowcache::jni {
namespace {

const char* ClassFor(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
      return "org/knowcache/runtime/KnowcacheException$InvalidInputException";
    case StatusCode::kNotFound:
      return "org/knowcache/runtime/KnowcacheException$NotFoundException";
    case StatusCode::kCorrupt:
      return "org/knowcache/runtime/KnowcacheException$CorruptPartitionException";
    case StatusCode::kUnavailable:
      return "org/knowcache/runtime/KnowcacheException$CloudUnavailableException";
    case StatusCode::kDeadlineExceeded:
      return "org/knowcache/runtime/KnowcacheException$CloudTimeoutException";
    case StatusCode::kResourceExhausted:
      return "org/knowcache/runtime/KnowcacheException$ResourceExhaustedException";
    case StatusCode::kFailedPrecondition:
      return "org/knowcache/runtime/KnowcacheException$FailedPreconditionException";
    case StatusCode::kProtocol:
      return "org/knowcache/runtime/KnowcacheException$ProtocolException";
    case StatusCode::kOk:
    case StatusCode::kInternal:
      break;
  }
  return "org/knowcache/runtime/KnowcacheException";
}

}  // namespace

bool ThrowIfError(JNIEnv* env, const Status& status) {
  if (status.ok()) return false;
  Throw(env, ClassFor(status.code()), status.message());
  return true;
}

}  // namespace knowcache::jni
