// Helpers shared by the JNI files: the one place the core's Status becomes a
// Java exception, and field readers that fail loudly when the Java classes
// and this C++ disagree (a renamed field throws NoSuchFieldError at once
// instead of reading garbage).
//
// Every helper that can fail leaves a pending Java exception and returns a
// false / empty value; callers return to Java straight away when
// env->ExceptionCheck() is true.
#pragma once

#include <jni.h>

#include <cstdint>
#include <string>
#include <vector>

#include "knowcache/status.h"

namespace knowcache::jni {

/// Throws the org.knowcache.runtime.KnowcacheException subclass matching
/// `status` (status_jni.cc). Returns true when it threw, false when ok.
bool ThrowIfError(JNIEnv* env, const Status& status);
/// Throws `class_name` (JNI form, "java/lang/IllegalStateException").
void Throw(JNIEnv* env, const char* class_name, const std::string& message);

/// Java String -> UTF-8; "" for null.
std::string ToStdString(JNIEnv* env, jstring s);
jstring ToJavaString(JNIEnv* env, const std::string& s);
jobjectArray ToJavaStrings(JNIEnv* env, const std::vector<std::string>& items);
std::vector<std::string> ToStdStrings(JNIEnv* env, jobjectArray items);

/// `new class_name(...)` through the constructor of JNI `signature`; null with
/// NoClassDefFoundError / NoSuchMethodError pending when the Java side disagrees.
/// Varargs promote float to double, as JNI's NewObjectV expects.
jobject NewObject(JNIEnv* env, const char* class_name, const char* signature, ...);

/// Reads a field of `obj`, whose class must declare it with this JNI type.
/// On a missing field NoSuchFieldError is pending and 0 / "" returned.
int32_t GetInt(JNIEnv* env, jobject obj, const char* field);
int64_t GetLong(JNIEnv* env, jobject obj, const char* field);
float GetFloat(JNIEnv* env, jobject obj, const char* field);
bool GetBool(JNIEnv* env, jobject obj, const char* field);
std::string GetString(JNIEnv* env, jobject obj, const char* field);
jobject GetObject(JNIEnv* env, jobject obj, const char* field, const char* signature);

}  // namespace knowcache::jni
