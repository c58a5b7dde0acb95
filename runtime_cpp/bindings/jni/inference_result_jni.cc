// knowcache::InferenceResult -> org.knowcache.runtime.InferenceResult.
#include "jni_helper.h"
#include "values_jni.h"

namespace knowcache::jni {

jobject NewInferenceResult(JNIEnv* env, const InferenceResult& r) {
  jstring label = ToJavaString(env, r.label);
  jstring source = ToJavaString(env, AnswerSourceName(r.source));
  jstring partition = ToJavaString(env, r.partition_id);
  jstring hint = ToJavaString(env, r.partition_hint);
  jstring reason = ToJavaString(env, r.degraded_reason);
  jstring kept = ToJavaString(env, r.kept_reason);
  jstring uplink = ToJavaString(env, UplinkName(r.uplink));
  jstring split_reason = ToJavaString(env, r.split_reason);
  if (env->ExceptionCheck()) return nullptr;
  return NewObject(env, "org/knowcache/runtime/InferenceResult",
                   "(Ljava/lang/String;IFFLjava/lang/String;Ljava/lang/String;Ljava/lang/String;"
                   "Ljava/lang/String;IJJJJLjava/lang/String;Ljava/lang/String;IJJZF"
                   "Ljava/lang/String;)V",
                   label, static_cast<jint>(r.index), static_cast<jdouble>(r.confidence),
                   static_cast<jdouble>(r.entropy), source, partition, hint, reason,
                   static_cast<jint>(r.local_attempts), static_cast<jlong>(r.local_us),
                   static_cast<jlong>(r.network_us), static_cast<jlong>(r.total_us),
                   static_cast<jlong>(r.uplink_bytes), uplink, split_reason,
                   static_cast<jint>(r.exit_index),
                   static_cast<jlong>(r.flops), static_cast<jlong>(r.lookup_us),
                   static_cast<jboolean>(r.is_private), static_cast<jdouble>(r.private_mass),
                   kept);
}

}  // namespace knowcache::jni
