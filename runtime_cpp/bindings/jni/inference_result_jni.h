// The core's result and statistics structs as Java objects.
#pragma once

#include <jni.h>

#include "knowcache/engine.h"

namespace knowcache::jni {

/// null with a Java exception pending on failure.
jobject NewInferenceResult(JNIEnv* env, const InferenceResult& result);
jobject NewEngineStats(JNIEnv* env, const EngineStats& stats);
jobject NewInputSpec(JNIEnv* env, const InputSpec& spec);

}  // namespace knowcache::jni
