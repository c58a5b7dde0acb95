// knowcache::InferenceResult, EngineStats, SlotCacheStats and InputSpec ->
// their org.knowcache.runtime value classes, through each class's one
// constructor (a signature mismatch leaves NoSuchMethodError pending).
#include "inference_result_jni.h"

#include <cstdarg>

#include "jni_helper.h"

namespace knowcache::jni {
namespace {

jobject New(JNIEnv* env, const char* class_name, const char* signature, ...) {
  jclass cls = FindClass(env, class_name);
  if (cls == nullptr) return nullptr;
  jmethodID ctor = env->GetMethodID(cls, "<init>", signature);
  if (ctor == nullptr) {
    env->DeleteLocalRef(cls);
    return nullptr;
  }
  va_list args;
  va_start(args, signature);
  jobject obj = env->NewObjectV(cls, ctor, args);
  va_end(args);
  env->DeleteLocalRef(cls);
  return obj;
}

}  // namespace

jobject NewInferenceResult(JNIEnv* env, const InferenceResult& r) {
  jstring label = ToJavaString(env, r.label);
  jstring source = ToJavaString(env, AnswerSourceName(r.source));
  jstring partition = ToJavaString(env, r.partition_id);
  jstring hint = ToJavaString(env, r.partition_hint);
  jstring reason = ToJavaString(env, r.degraded_reason);
  if (env->ExceptionCheck()) return nullptr;
  return New(env, "org/knowcache/runtime/InferenceResult",
             "(Ljava/lang/String;IFFLjava/lang/String;Ljava/lang/String;Ljava/lang/String;"
             "Ljava/lang/String;IJJJJIJJ)V",
             label, static_cast<jint>(r.index), static_cast<jdouble>(r.confidence),
             static_cast<jdouble>(r.entropy), source, partition, hint, reason,
             static_cast<jint>(r.local_attempts), static_cast<jlong>(r.local_us),
             static_cast<jlong>(r.network_us), static_cast<jlong>(r.total_us),
             static_cast<jlong>(r.uplink_bytes), static_cast<jint>(r.exit_index),
             static_cast<jlong>(r.flops), static_cast<jlong>(r.lookup_us));
}

jobject NewEngineStats(JNIEnv* env, const EngineStats& s) {
  const SlotCacheStats& c = s.cache;
  jobject cache = New(env, "org/knowcache/runtime/SlotCacheStats", "(JJJJJI)V",
                      static_cast<jlong>(c.hits), static_cast<jlong>(c.misses),
                      static_cast<jlong>(c.installs), static_cast<jlong>(c.evictions),
                      static_cast<jlong>(c.resident_bytes), static_cast<jint>(c.slots_used));
  if (cache == nullptr) return nullptr;
  jstring error = ToJavaString(env, s.last_fetch_error);
  if (error == nullptr) return nullptr;
  return New(env, "org/knowcache/runtime/EngineStats",
             "(JJJJJJJJJLjava/lang/String;Lorg/knowcache/runtime/SlotCacheStats;)V",
             static_cast<jlong>(s.queries), static_cast<jlong>(s.local),
             static_cast<jlong>(s.cloud), static_cast<jlong>(s.degraded),
             static_cast<jlong>(s.cloud_errors), static_cast<jlong>(s.fetches),
             static_cast<jlong>(s.fetch_failures), static_cast<jlong>(s.fetched_bytes),
             static_cast<jlong>(s.uplink_bytes), error, cache);
}

jobject NewInputSpec(JNIEnv* env, const InputSpec& spec) {
  jstring dtype = ToJavaString(env, DTypeName(spec.dtype));
  jlongArray shape = env->NewLongArray(static_cast<jsize>(spec.shape.size()));
  if (dtype == nullptr || shape == nullptr) return nullptr;
  std::vector<jlong> dims(spec.shape.begin(), spec.shape.end());
  env->SetLongArrayRegion(shape, 0, static_cast<jsize>(dims.size()), dims.data());
  return New(env, "org/knowcache/runtime/InputSpec", "(Ljava/lang/String;[JIIII)V", dtype, shape,
             static_cast<jint>(spec.sample_rate), static_cast<jint>(spec.image_height),
             static_cast<jint>(spec.image_width), static_cast<jint>(spec.image_channels));
}

}  // namespace knowcache::jni
