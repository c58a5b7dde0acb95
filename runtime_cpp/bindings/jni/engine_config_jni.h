// Reads the Java config objects into the core's structs (fields by name;
// NoSuchFieldError is pending when the Java class disagrees).
#pragma once

#include <jni.h>

#include "knowcache/engine.h"

namespace knowcache::jni {

/// org.knowcache.runtime.EngineConfig -> EngineConfig (validated by the core).
EngineConfig ReadEngineConfig(JNIEnv* env, jobject config);
/// org.knowcache.runtime.InstallPlan -> InstallPlan.
InstallPlan ReadInstallPlan(JNIEnv* env, jobject plan);

}  // namespace knowcache::jni
