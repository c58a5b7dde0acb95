// knowcache-device: the knowcache runtime as a program for Linux boards.
//
//   knowcache-device run --models DIR [--cloud URL] [--token T] [--ca-file PEM]
//                        [--slots N] [--budget BYTES] [--install ID]... [--threads N]
//                        [--threshold T] [--layer-cache GATE] [--private-share S]
//                        [--local-only] [--trusted-key FILE]... [--require-signature]
//                        [--split off|auto|always --split-cut K] INPUT...
//   knowcache-device serve-serial --port TTY --store DIR [--baud B]
//                        [--store-limit BYTES] [--cloud URL] [--ca-file PEM] [--slots N]
//                        [--local-only] [--trusted-key FILE]... [--require-signature]
//
// --trusted-key FILE (a `knowcache keys generate` .pub file, repeatable for key
// rotation) makes the device refuse any manifest not signed by one of the keys:
// `run` checks DIR/manifest.sig, serve-serial refuses uploads not pinned by a
// signed manifest, and both refuse signed manifests older than the installed
// one fetched from the cloud (docs/security.md).
//
// Classifies each INPUT (a 16 kHz WAV for keyword models, its loudest second
// when longer; raw pixels for image models: runtime_cpp/device/inputs.h,
// docs/inputs.md) with the same Engine as the Python bindings and prints one
// JSON line per input; an input it cannot read is reported on stderr and
// skipped, and the exit status is then 1. With --layer-cache GATE (learned, confidence, entropy
// or activation) it runs the manifest's staged program exit by exit instead
// (layer caching; the JSON line says which exit answered and the FLOPs
// spent). An input of a private class (the manifest's private_labels) is
// answered on the device ("source": "private"); --local-only never asks the
// cloud ("source": "local_only"). --split always|auto --split-cut K uploads the
// staged program's activation at stage K instead of the raw input on a gate miss
// (split computing; the JSON line's "uplink" says what was sent). Logs go to stderr; any error exits non-zero with a
// message that says what to fix.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "inputs.h"
#include "serial_server.h"
#include "knowcache/engine.h"
#include "knowcache/sha256.h"
#include "knowcache/threads.h"

namespace {

using namespace knowcache;

constexpr const char* kUsage =
    "usage: knowcache-device run --models DIR [--cloud URL] [--token T] [--ca-file PEM]\n"
    "                            [--slots N] [--budget BYTES] [--install ID]... [--threads N]\n"
    "                            [--threshold T] [--layer-cache GATE] [--private-share S]\n"
    "                            [--local-only] [--trusted-key FILE]... [--require-signature]\n"
    "                            [--split off|auto|always --split-cut K] INPUT...\n"
    "       knowcache-device serve-serial --port TTY --store DIR [--baud B]\n"
    "                            [--store-limit BYTES] [--cloud URL] [--ca-file PEM]\n"
    "                            [--slots N] [--local-only] [--trusted-key FILE]...\n"
    "                            [--require-signature]\n"
    "\n"
    "run classifies each INPUT and prints one JSON line per input: a WAV at the models'\n"
    "rate (PCM 8-32 bit or 32-bit float, any channels; its loudest second when longer) for\n"
    "keyword models, raw C*H*W uint8 or float32 pixels for image models (docs/inputs.md).\n"
    "serve-serial answers the knowcache serial protocol on a tty (docs/serial-protocol.md).\n"
    "--trusted-key FILE (a .pub file of `knowcache keys generate`; repeat it to trust several\n"
    "keys during a rotation) refuses every manifest not signed by one of them (run: DIR's\n"
    "manifest.sig; serve-serial: each upload), and signed manifests older than the installed\n"
    "one; --require-signature refuses to start without a trusted key (docs/security.md).\n";

struct RunOptions {
  bool help = false;
  std::string models;
  EngineConfig engine;
  std::vector<std::string> install;
  bool layer_cache = false;
  int threads = 1;
  std::vector<std::string> inputs;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "knowcache-device: %s\n", message.c_str());
  return 1;
}

StatusOr<int64_t> ParseInt(const std::string& flag, const char* text, int64_t lo, int64_t hi) {
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi) {
    return InvalidArgument(flag + " needs an integer in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "], not '" + text + "'");
  }
  return static_cast<int64_t>(v);
}

// A trusted key file: the base64 line of a `knowcache keys generate` .pub file.
Status AddTrustedKey(const char* path, SignatureConfig* signature) {
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return InvalidArgument("--trusted-key: " + bytes.status().message());
  signature->trusted_keys.emplace_back(bytes->begin(), bytes->end());
  if (Status s = signature->Validate(); !s.ok()) {
    signature->trusted_keys.pop_back();
    return InvalidArgument("--trusted-key " + std::string(path) + ": " + s.message());
  }
  return Status::Ok();
}

StatusOr<RunOptions> ParseRun(int argc, char** argv) {
  RunOptions o;
  o.engine.fetch_hints = true;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      o.help = true;
      return o;
    }
    if (a == "--require-signature") {
      o.engine.signature.require_signature = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      o.inputs.push_back(a);
      continue;
    }
    if (a == "--local-only") {
      o.engine.local_only = true;
      continue;
    }
    if (i + 1 >= argc) return InvalidArgument(a + " needs a value\n" + kUsage);
    const char* v = argv[++i];
    if (a == "--models") {
      o.models = v;
    } else if (a == "--cloud") {
      o.engine.cloud.base_url = v;
    } else if (a == "--token") {
      o.engine.cloud.token = v;
    } else if (a == "--ca-file") {
      o.engine.cloud.ca_file = v;
    } else if (a == "--private-share") {
      char* end = nullptr;
      const float s = std::strtof(v, &end);
      if (end == v || *end != '\0' || !(s >= 0.0f && s <= 1.0f)) {
        return InvalidArgument("--private-share needs a number in [0, 1], not '" +
                               std::string(v) + "'");
      }
      o.engine.private_share = s;
    } else if (a == "--slots") {
      KC_ASSIGN_OR_RETURN(int64_t n, ParseInt(a, v, 1, 64));
      o.engine.cache.num_slots = static_cast<int>(n);
    } else if (a == "--budget") {
      KC_ASSIGN_OR_RETURN(o.engine.cache.byte_budget, ParseInt(a, v, 1, int64_t{1} << 40));
    } else if (a == "--install") {
      o.install.push_back(v);
    } else if (a == "--trusted-key") {
      KC_RETURN_IF_ERROR(AddTrustedKey(v, &o.engine.signature));
    } else if (a == "--layer-cache") {
      KC_RETURN_IF_ERROR(ParseExitGateKind(v).status());
      o.layer_cache = true;
      o.engine.layer_cache.gate = v;
    } else if (a == "--threads") {
      KC_ASSIGN_OR_RETURN(int64_t n, ParseInt(a, v, 1, 256));
      o.threads = static_cast<int>(n);
    } else if (a == "--split") {
      auto mode = ParseSplitMode(v);
      if (!mode.ok()) return InvalidArgument("--split: " + mode.status().message());
      o.engine.split.mode = *mode;
    } else if (a == "--split-cut") {
      KC_ASSIGN_OR_RETURN(int64_t n, ParseInt(a, v, 1, 1024));
      o.engine.split.cut_stage = static_cast<int>(n);
    } else if (a == "--threshold") {
      char* end = nullptr;
      const float t = std::strtof(v, &end);
      if (end == v || *end != '\0' || t < 0.0f || t > 1.0f) {
        return InvalidArgument("--threshold needs a number in [0, 1], not '" + std::string(v) + "'");
      }
      o.engine.threshold_override = t;
    } else {
      return InvalidArgument("unknown option " + a + "\n" + kUsage);
    }
  }
  if (o.models.empty()) return InvalidArgument(std::string("--models is required\n") + kUsage);
  if (o.inputs.empty()) return InvalidArgument(std::string("no INPUT files given\n") + kUsage);
  if (Status s = o.engine.split.Validate(); !s.ok()) {
    return InvalidArgument("--split/--split-cut: " + s.message());
  }
  return o;
}

nlohmann::json ToJson(const std::string& input, const InferenceResult& r) {
  nlohmann::json j = {{"input", input},
                      {"label", r.label},
                      {"index", r.index},
                      {"confidence", r.confidence},
                      {"entropy", r.entropy},
                      {"source", AnswerSourceName(r.source)},
                      {"partition", r.partition_id},
                      {"local_us", r.local_us},
                      {"network_us", r.network_us},
                      {"total_us", r.total_us}};
  if (!r.partition_hint.empty()) j["hint"] = r.partition_hint;
  if (!r.degraded_reason.empty()) j["degraded_reason"] = r.degraded_reason;
  if (r.is_private) j["private"] = true;
  if (!r.kept_reason.empty()) j["kept_reason"] = r.kept_reason;
  if (r.uplink != Uplink::kNone) {
    j["uplink"] = UplinkName(r.uplink);
    j["uplink_bytes"] = r.uplink_bytes;
  }
  if (!r.split_reason.empty()) j["split_reason"] = r.split_reason;
  if (r.flops > 0) {
    j["exit"] = r.exit_index;
    j["flops"] = r.flops;
    j["lookup_us"] = r.lookup_us;
  }
  return j;
}

int Run(int argc, char** argv) {
  auto parsed = ParseRun(argc, argv);
  if (!parsed.ok()) return Fail(parsed.status().message());
  RunOptions o = std::move(parsed).value();
  if (o.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (Status s = SetComputeThreads(o.threads); !s.ok()) return Fail(s.ToString());

  const InstallPlan plan = o.layer_cache      ? InstallPlan::Staged()
                           : o.install.empty() ? InstallPlan::Cached()
                                               : InstallPlan::Ids(o.install);
  auto engine = Engine::FromModelsDir(o.engine, o.models, plan);
  if (!engine.ok()) return Fail(engine.status().ToString());
  auto input = (*engine)->LocalInput();
  if (!input.ok()) return Fail(input.status().ToString());

  int failures = 0;
  for (const auto& path : o.inputs) {
    std::string notice;
    auto x = device::ReadInput(path, *input, &notice);
    if (!x.ok()) {
      ++failures;
      Fail(x.status().message());
      continue;
    }
    if (!notice.empty()) std::fprintf(stderr, "knowcache-device: note: %s\n", notice.c_str());
    TensorView view{DType::kFloat32, input->shape, x->data(), x->size() * sizeof(float)};
    auto r = (*engine)->Infer(view);
    if (!r.ok()) {
      ++failures;
      Fail(path + ": " + r.status().ToString());
      continue;
    }
    std::printf("%s\n", ToJson(path, *r).dump().c_str());
    std::fflush(stdout);
  }
  (*engine)->WaitForFetches(5000);
  return failures == 0 ? 0 : 1;
}

int ServeSerialCommand(int argc, char** argv) {
  device::SerialServerConfig c;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--require-signature") {
      c.engine.signature.require_signature = true;
      continue;
    }
    if (a == "--local-only") {
      c.engine.local_only = true;
      continue;
    }
    if (i + 1 >= argc) return Fail(a + " needs a value\n" + kUsage);
    const char* v = argv[++i];
    StatusOr<int64_t> n = int64_t{0};
    if (a == "--port") {
      c.port = v;
    } else if (a == "--store") {
      c.store.dir = v;
    } else if (a == "--cloud") {
      c.engine.cloud.base_url = v;
    } else if (a == "--ca-file") {
      c.engine.cloud.ca_file = v;
    } else if (a == "--baud") {
      if (!(n = ParseInt(a, v, 1, 4000000)).ok()) return Fail(n.status().message());
      c.baud = static_cast<int>(*n);
    } else if (a == "--store-limit") {
      if (!(n = ParseInt(a, v, 0, int64_t{1} << 50)).ok()) return Fail(n.status().message());
      c.store.limit_bytes = *n;
    } else if (a == "--slots") {
      if (!(n = ParseInt(a, v, 1, 64)).ok()) return Fail(n.status().message());
      c.engine.cache.num_slots = static_cast<int>(*n);
    } else if (a == "--trusted-key") {
      if (Status s = AddTrustedKey(v, &c.engine.signature); !s.ok()) return Fail(s.message());
    } else {
      return Fail("unknown option " + a + "\n" + kUsage);
    }
  }
  if (c.port.empty() || c.store.dir.empty()) {
    return Fail(std::string("serve-serial needs --port and --store\n") + kUsage);
  }
  if (Status s = c.engine.signature.Validate(); !s.ok()) return Fail(s.message());
  c.store.signature = c.engine.signature;  // the store and the engine trust the same keys
  if (Status s = SetComputeThreads(1); !s.ok()) return Fail(s.ToString());
  return device::ServeSerial(c);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "run")) return Run(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "serve-serial")) return ServeSerialCommand(argc - 2, argv + 2);
  return Fail(std::string("unknown command '") + argv[1] + "'\n" + kUsage);
}
