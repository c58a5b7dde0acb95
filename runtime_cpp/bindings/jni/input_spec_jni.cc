// knowcache::InputSpec -> org.knowcache.runtime.InputSpec.
#include <vector>

#include "jni_helper.h"
#include "values_jni.h"

namespace knowcache::jni {

jobject NewInputSpec(JNIEnv* env, const InputSpec& spec) {
  jstring dtype = ToJavaString(env, DTypeName(spec.dtype));
  jlongArray shape = env->NewLongArray(static_cast<jsize>(spec.shape.size()));
  if (dtype == nullptr || shape == nullptr) return nullptr;
  std::vector<jlong> dims(spec.shape.begin(), spec.shape.end());
  env->SetLongArrayRegion(shape, 0, static_cast<jsize>(dims.size()), dims.data());
  return NewObject(env, "org/knowcache/runtime/InputSpec", "(Ljava/lang/String;[JIIIIDD)V", dtype,
                   shape, static_cast<jint>(spec.sample_rate), static_cast<jint>(spec.image_height),
                   static_cast<jint>(spec.image_width), static_cast<jint>(spec.image_channels),
                   static_cast<jdouble>(spec.value_low), static_cast<jdouble>(spec.value_high));
}

}  // namespace knowcache::jni
