// org.knowcache.runtime.EngineConfig and InstallPlan -> the core's structs.
#include "engine_config_jni.h"

#include "jni_helper.h"

namespace knowcache::jni {

EngineConfig ReadEngineConfig(JNIEnv* env, jobject config) {
  EngineConfig c;
  c.task = GetString(env, config, "task");
  c.cache.num_slots = GetInt(env, config, "slots");
  c.cache.byte_budget = GetLong(env, config, "budgetBytes");
  c.cloud.base_url = GetString(env, config, "cloudUrl");
  c.cloud.token = GetString(env, config, "token");
  c.cloud.ca_file = GetString(env, config, "caFile");
  c.cloud.connect_timeout_ms = GetInt(env, config, "connectTimeoutMs");
  c.cloud.read_timeout_ms = GetInt(env, config, "readTimeoutMs");
  c.cloud.pcm16_uploads = GetBool(env, config, "pcm16Uploads");
  c.fetch_hints = GetBool(env, config, "fetchHints");
  c.max_local_attempts = GetInt(env, config, "maxLocalAttempts");
  c.threshold_override = GetFloat(env, config, "threshold");
  c.admit_after_hints = GetInt(env, config, "admitAfterHints");
  c.hint_window = GetInt(env, config, "hintWindow");
  c.layer_cache.gate = GetString(env, config, "exitGate");
  c.layer_cache.activation.max_entries_per_exit = GetInt(env, config, "activationEntries");
  c.layer_cache.activation.max_bytes = GetLong(env, config, "activationBytes");
  c.private_share = GetFloat(env, config, "privateShare");
  c.local_only = GetBool(env, config, "localOnly");
  auto keys = static_cast<jobjectArray>(
      GetObject(env, config, "trustedKeys", "[Ljava/lang/String;"));
  c.signature.trusted_keys = ToStdStrings(env, keys);
  env->DeleteLocalRef(keys);
  c.signature.require_signature = GetBool(env, config, "requireSignature");
  auto split = ParseSplitMode(GetString(env, config, "split"));
  if (ThrowIfError(env, split.status())) return c;
  c.split = {*split, GetInt(env, config, "splitCut")};
  return c;
}

InstallPlan ReadInstallPlan(JNIEnv* env, jobject plan) {
  std::string kind = GetString(env, plan, "kind");
  bool pinned = GetBool(env, plan, "pinned");
  if (kind == "ids") {
    auto ids = static_cast<jobjectArray>(GetObject(env, plan, "ids", "[Ljava/lang/String;"));
    std::vector<std::string> out = ToStdStrings(env, ids);
    env->DeleteLocalRef(ids);
    return InstallPlan::Ids(std::move(out), pinned);
  }
  if (kind == "staged") return InstallPlan::Staged();
  if (kind == "none") return InstallPlan::None();
  return InstallPlan::Cached(pinned);  // InstallPlan.java only makes these four kinds
}

}  // namespace knowcache::jni
