// The core's result, statistics and input structs as Java objects, each built
// through its Java class's one constructor (one .cc per class:
// inference_result_jni.cc, engine_stats_jni.cc, input_spec_jni.cc).
#pragma once

#include <jni.h>

#include "knowcache/engine.h"

namespace knowcache::jni {

/// null with a Java exception pending on failure.
jobject NewInferenceResult(JNIEnv* env, const InferenceResult& result);
/// EngineStats with its SlotCacheStats.
jobject NewEngineStats(JNIEnv* env, const EngineStats& stats);
jobject NewInputSpec(JNIEnv* env, const InputSpec& spec);

}  // namespace knowcache::jni
