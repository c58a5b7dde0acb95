// knowcache::EngineStats (with its SlotCacheStats) -> org.knowcache.runtime.EngineStats.
#include "jni_helper.h"
#include "values_jni.h"

namespace knowcache::jni {

jobject NewEngineStats(JNIEnv* env, const EngineStats& s) {
  const SlotCacheStats& c = s.cache;
  jobject cache = NewObject(env, "org/knowcache/runtime/SlotCacheStats", "(JJJJJI)V",
                            static_cast<jlong>(c.hits), static_cast<jlong>(c.misses),
                            static_cast<jlong>(c.installs), static_cast<jlong>(c.evictions),
                            static_cast<jlong>(c.resident_bytes), static_cast<jint>(c.slots_used));
  if (cache == nullptr) return nullptr;
  jstring error = ToJavaString(env, s.last_fetch_error);
  if (error == nullptr) return nullptr;
  return NewObject(env, "org/knowcache/runtime/EngineStats",
                   "(JJJJJJJJJJJJLjava/lang/String;Lorg/knowcache/runtime/SlotCacheStats;)V",
                   static_cast<jlong>(s.queries), static_cast<jlong>(s.local),
                   static_cast<jlong>(s.cloud), static_cast<jlong>(s.degraded),
                   static_cast<jlong>(s.cloud_errors), static_cast<jlong>(s.fetches),
                   static_cast<jlong>(s.fetch_failures), static_cast<jlong>(s.fetched_bytes),
                   static_cast<jlong>(s.uplink_bytes), static_cast<jlong>(s.feature_uploads),
                   static_cast<jlong>(s.kept_private),
                   static_cast<jlong>(s.kept_local_only), error, cache);
}

}  // namespace knowcache::jni
