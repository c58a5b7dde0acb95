#include "knowcache/threads.h"

#include <cstdint>

// The executorch wheel ships libexecutorch_threadpool.so but not its
// threadpool.h, so the two entry points we need are declared here, exactly
// as ExecuTorch defines them (extension/threadpool/threadpool.h, v1.5).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t new_thread_count);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace knowcache {

Status SetComputeThreads(int n) {
  if (n < 1 || n > 256) return InvalidArgument("thread count must be in [1, 256]");
  auto* pool = ::executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return Internal("ExecuTorch has no thread pool");
  if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(n))) {
    return Internal("ExecuTorch refused to resize its thread pool");
  }
  return Status::Ok();
}

}  // namespace knowcache
