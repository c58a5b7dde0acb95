// org.knowcache.runtime.Engine's native methods over knowcache::Engine.
//
// The Java Engine owns the handle (an Engine* as a long), serializes every
// call under its lock and never passes a closed (0) handle, so these
// functions do no locking of their own; the core is thread-safe anyway.
// Engines are built only through Engine::FromModelsDir, the core's one
// factory (the same call the Python runtime and knowcache-device make).
#include <jni.h>

#include <memory>
#include <vector>

#include "engine_config_jni.h"
#include "jni_helper.h"
#include "knowcache/engine.h"
#include "values_jni.h"

using knowcache::Engine;

namespace {

Engine* FromHandle(jlong handle) { return reinterpret_cast<Engine*>(handle); }

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_org_knowcache_runtime_Engine_nativeFromModelsDir(
    JNIEnv* env, jclass, jobject config, jstring directory, jobject plan) {
  using namespace knowcache::jni;
  knowcache::EngineConfig c = ReadEngineConfig(env, config);
  if (env->ExceptionCheck()) return 0;
  knowcache::InstallPlan p = ReadInstallPlan(env, plan);
  if (env->ExceptionCheck()) return 0;
  std::string dir = ToStdString(env, directory);
  auto engine = Engine::FromModelsDir(std::move(c), dir, p);
  if (ThrowIfError(env, engine.status())) return 0;
  return reinterpret_cast<jlong>(std::move(engine).value().release());
}

JNIEXPORT void JNICALL Java_org_knowcache_runtime_Engine_nativeDestroy(JNIEnv*, jclass,
                                                                       jlong handle) {
  delete FromHandle(handle);  // joins the download thread
}

JNIEXPORT jobject JNICALL Java_org_knowcache_runtime_Engine_nativeInfer(
    JNIEnv* env, jclass, jlong handle, jfloatArray data, jlongArray shape) {
  using namespace knowcache::jni;
  // Copied out of the Java arrays: a cloud call may take seconds, too long to
  // hold them pinned with Get*ArrayCritical.
  std::vector<float> values(static_cast<size_t>(env->GetArrayLength(data)));
  env->GetFloatArrayRegion(data, 0, static_cast<jsize>(values.size()), values.data());
  std::vector<jlong> dims(static_cast<size_t>(env->GetArrayLength(shape)));
  env->GetLongArrayRegion(shape, 0, static_cast<jsize>(dims.size()), dims.data());
  knowcache::TensorView view;
  view.dtype = knowcache::DType::kFloat32;
  view.shape.assign(dims.begin(), dims.end());
  view.data = values.data();
  view.nbytes = values.size() * sizeof(float);
  auto result = FromHandle(handle)->Infer(view);
  if (ThrowIfError(env, result.status())) return nullptr;
  return NewInferenceResult(env, result.value());
}

JNIEXPORT void JNICALL Java_org_knowcache_runtime_Engine_nativeInstallFromManifest(
    JNIEnv* env, jclass, jlong handle, jstring id, jboolean pinned) {
  using namespace knowcache::jni;
  ThrowIfError(env, FromHandle(handle)->InstallFromManifest(ToStdString(env, id),
                                                            pinned == JNI_TRUE));
}

JNIEXPORT void JNICALL Java_org_knowcache_runtime_Engine_nativeActivate(JNIEnv* env, jclass,
                                                                        jlong handle, jstring id) {
  using namespace knowcache::jni;
  ThrowIfError(env, FromHandle(handle)->Activate(ToStdString(env, id)));
}

JNIEXPORT jboolean JNICALL Java_org_knowcache_runtime_Engine_nativeWaitForFetches(
    JNIEnv*, jclass, jlong handle, jint timeout_ms) {
  return FromHandle(handle)->WaitForFetches(timeout_ms) ? JNI_TRUE : JNI_FALSE;
}

JNIEXPORT jobjectArray JNICALL Java_org_knowcache_runtime_Engine_nativeCachedIds(JNIEnv* env,
                                                                                 jclass,
                                                                                 jlong handle) {
  return knowcache::jni::ToJavaStrings(env, FromHandle(handle)->CachedIds());
}

JNIEXPORT jstring JNICALL Java_org_knowcache_runtime_Engine_nativeActiveId(JNIEnv* env, jclass,
                                                                           jlong handle) {
  return knowcache::jni::ToJavaString(env, FromHandle(handle)->ActiveId());
}

JNIEXPORT jstring JNICALL Java_org_knowcache_runtime_Engine_nativeMode(JNIEnv* env, jclass,
                                                                       jlong handle) {
  return knowcache::jni::ToJavaString(env, knowcache::LocalModeName(FromHandle(handle)->Mode()));
}

JNIEXPORT jobject JNICALL Java_org_knowcache_runtime_Engine_nativeLocalInput(JNIEnv* env, jclass,
                                                                             jlong handle) {
  using namespace knowcache::jni;
  auto spec = FromHandle(handle)->LocalInput();
  if (ThrowIfError(env, spec.status())) return nullptr;
  return NewInputSpec(env, spec.value());
}

JNIEXPORT jobject JNICALL Java_org_knowcache_runtime_Engine_nativeStats(JNIEnv* env, jclass,
                                                                        jlong handle) {
  return knowcache::jni::NewEngineStats(env, FromHandle(handle)->Stats());
}

}  // extern "C"
