#include "jni_helper.h"

#include <cstdarg>

namespace knowcache::jni {
namespace {

jfieldID Field(JNIEnv* env, jobject obj, const char* name, const char* signature) {
  if (obj == nullptr) {
    Throw(env, "java/lang/NullPointerException",
          std::string("reading field '") + name + "' of a null object");
    return nullptr;
  }
  jclass cls = env->GetObjectClass(obj);
  jfieldID id = env->GetFieldID(cls, name, signature);  // NoSuchFieldError when absent
  env->DeleteLocalRef(cls);
  return id;
}

}  // namespace

void Throw(JNIEnv* env, const char* class_name, const std::string& message) {
  jclass cls = env->FindClass(class_name);
  if (cls == nullptr) return;  // NoClassDefFoundError is pending
  env->ThrowNew(cls, message.c_str());
  env->DeleteLocalRef(cls);
}

std::string ToStdString(JNIEnv* env, jstring s) {
  if (s == nullptr) return "";
  const char* chars = env->GetStringUTFChars(s, nullptr);
  if (chars == nullptr) return "";  // OutOfMemoryError pending
  std::string out(chars);
  env->ReleaseStringUTFChars(s, chars);
  return out;
}

jstring ToJavaString(JNIEnv* env, const std::string& s) { return env->NewStringUTF(s.c_str()); }

jobjectArray ToJavaStrings(JNIEnv* env, const std::vector<std::string>& items) {
  jclass string_class = env->FindClass("java/lang/String");
  if (string_class == nullptr) return nullptr;
  jobjectArray out = env->NewObjectArray(static_cast<jsize>(items.size()), string_class, nullptr);
  env->DeleteLocalRef(string_class);
  if (out == nullptr) return nullptr;
  for (size_t i = 0; i < items.size(); ++i) {
    jstring s = ToJavaString(env, items[i]);
    if (s == nullptr) return nullptr;
    env->SetObjectArrayElement(out, static_cast<jsize>(i), s);
    env->DeleteLocalRef(s);
  }
  return out;
}

std::vector<std::string> ToStdStrings(JNIEnv* env, jobjectArray items) {
  std::vector<std::string> out;
  if (items == nullptr) return out;
  jsize n = env->GetArrayLength(items);
  for (jsize i = 0; i < n; ++i) {
    auto s = static_cast<jstring>(env->GetObjectArrayElement(items, i));
    out.push_back(ToStdString(env, s));
    env->DeleteLocalRef(s);
  }
  return out;
}

jobject NewObject(JNIEnv* env, const char* class_name, const char* signature, ...) {
  jclass cls = env->FindClass(class_name);
  if (cls == nullptr) return nullptr;
  jmethodID ctor = env->GetMethodID(cls, "<init>", signature);
  jobject obj = nullptr;
  if (ctor != nullptr) {
    va_list args;
    va_start(args, signature);
    obj = env->NewObjectV(cls, ctor, args);
    va_end(args);
  }
  env->DeleteLocalRef(cls);
  return obj;
}

int32_t GetInt(JNIEnv* env, jobject obj, const char* field) {
  jfieldID id = Field(env, obj, field, "I");
  return id ? env->GetIntField(obj, id) : 0;
}

int64_t GetLong(JNIEnv* env, jobject obj, const char* field) {
  jfieldID id = Field(env, obj, field, "J");
  return id ? env->GetLongField(obj, id) : 0;
}

float GetFloat(JNIEnv* env, jobject obj, const char* field) {
  jfieldID id = Field(env, obj, field, "F");
  return id ? env->GetFloatField(obj, id) : 0.0f;
}

bool GetBool(JNIEnv* env, jobject obj, const char* field) {
  jfieldID id = Field(env, obj, field, "Z");
  return id ? env->GetBooleanField(obj, id) == JNI_TRUE : false;
}

std::string GetString(JNIEnv* env, jobject obj, const char* field) {
  jfieldID id = Field(env, obj, field, "Ljava/lang/String;");
  if (id == nullptr) return "";
  auto s = static_cast<jstring>(env->GetObjectField(obj, id));
  std::string out = ToStdString(env, s);
  env->DeleteLocalRef(s);
  return out;
}

jobject GetObject(JNIEnv* env, jobject obj, const char* field, const char* signature) {
  jfieldID id = Field(env, obj, field, signature);
  return id ? env->GetObjectField(obj, id) : nullptr;
}

}  // namespace knowcache::jni
