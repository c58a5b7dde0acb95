"""A mutation check of the C++ core and the server's input path (`make mutants`).

Each mutant below is one hand-written change to a source file: a check removed,
a comparison moved by one, a step dropped. The script applies them one at a
time, rebuilds only the unit tests of that file (C++) or runs only that file's
tests (Python), and calls the mutant killed when a test fails, survived when
every test passes. The source is restored after each mutant, also on Ctrl-C.

    python scripts/mutants.py                  # every file
    python scripts/mutants.py manifest.cc      # one file (its basename)
    python scripts/mutants.py --list           # the mutants, nothing run

The C++ tests run from build/host (`make build-cpp` first). A mutant whose
original text is no longer in the file exactly once is reported as stale: the
source moved on and the list needs updating. A mutant that does not compile
is reported and left out of the score. The run fails (exit 1) when a mutant
survives that the list does not explain, or when a mutant is stale.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "host"


@dataclass(frozen=True)
class Mutant:
    name: str
    old: str
    new: str
    survives: str = ""   # why no test can kill it, for a mutant known to survive


@dataclass(frozen=True)
class Target:
    """A source file, its mutants, and the tests that must notice each."""
    path: str
    tests: tuple[str, ...]   # C++: test binaries in build/host/runtime_cpp; Python: pytest args
    mutants: tuple[Mutant, ...]

    @property
    def is_cpp(self) -> bool:
        return self.path.endswith(".cc")


M = Mutant

MANIFEST = Target("runtime_cpp/src/manifest.cc", ("manifest_test", "partition_test"), (
    M("labels needs at least 2", "if (p->labels.size() < 2)", "if (false)"),
    M("labels: one label is enough", "if (p->labels.size() < 2)", "if (p->labels.size() < 1)"),
    M("bytes must be positive", "if (p->bytes <= 0)", "if (false)"),
    M("bytes: zero accepted", "if (p->bytes <= 0)", "if (p->bytes < 0)"),
    M("threshold above 1 accepted", "if (!(t >= 0.0 && t <= 1.0))", "if (!(t >= 0.0))"),
    M("threshold below 0 accepted", "if (!(t >= 0.0 && t <= 1.0))", "if (!(t <= 1.0))"),
    M("threshold 0 refused", "if (!(t >= 0.0 && t <= 1.0))", "if (!(t > 0.0 && t <= 1.0))"),
    M("threshold 1 refused", "if (!(t >= 0.0 && t <= 1.0))", "if (!(t >= 0.0 && t < 1.0))"),
    M("threshold must be a number", "thr == obj.end() || !thr->is_number()",
      "thr == obj.end()"),
    M("after_stage must increase", "if (i > 0 && after <= st->exits.back().after_stage)",
      "if (false)"),
    M("after_stage may repeat", "if (i > 0 && after <= st->exits.back().after_stage)",
      "if (i > 0 && after < st->exits.back().after_stage)"),
    M("after_stage may be negative", "if (after < 0 || after + 1 >=", "if (after + 1 >="),
    M("after_stage may be the last stage", "after + 1 >= static_cast<int64_t>(st->stages.size())",
      "after >= static_cast<int64_t>(st->stages.size())"),
    M("feature_dim must be positive", "if (dim <= 0)", "if (false)"),
    M("feature_dim: zero accepted", "if (dim <= 0)", "if (dim < 0)"),
    M("classes must equal the labels", "if (ncls != static_cast<int64_t>(classes))", "if (false)"),
    M("stage flops >= 0", "if (s->flops < 0)", "if (false)"),
    M("stage flops: zero refused", "if (s->flops < 0)", "if (s->flops <= 0)"),
    M("stage us >= 0", "if (!us->is_number() || us->get<double>() < 0)", "if (!us->is_number())"),
    M("exit thresholds in [0, 1]",
      "!value.is_number() || !(value.get<double>() >= 0.0 && value.get<double>() <= 1.0)",
      "!value.is_number()"),
    M("exit threshold 1 refused", "value.get<double>() <= 1.0)", "value.get<double>() < 1.0)"),
    M("stages may be empty", "!stages->is_array() || stages->empty()", "!stages->is_array()"),
    M("other_label must be a label", "if (it == p->labels.end()) {", "if (false) {"),
    M("id may hold '/'", "p->id.find_first_of(\"/\\\\ \")", "p->id.find_first_of(\"\\\\ \")"),
    M("id may be empty", "if (p->id.empty() || p->id.find_first_of", "if (p->id.find_first_of"),
    M("sha256 must be hex", "if (!IsSha256Hex(p->sha256))", "if (false)"),
    M("sha256 may be short", "return s.size() == 64 &&", "return s.size() <= 64 &&"),
    M("sha256 not lowercased", "std::transform(p->sha256.begin(), p->sha256.end(), "
      "p->sha256.begin(),", "std::transform(p->sha256.begin(), p->sha256.begin(), "
      "p->sha256.begin(),"),
    M("staged layout never read", "if (p->role == PartitionRole::kStaged) {", "if (false) {"),
    M("shape dims may be 0", "!d.is_number_integer() || d.get<int64_t>() <= 0",
      "!d.is_number_integer() || d.get<int64_t>() < 0"),
    M("shape may be empty", "!shape->is_array() || shape->empty()", "!shape->is_array()"),
    M("image_size dims may be 0", "x.is_number_integer() && x.get<int64_t>() > 0",
      "x.is_number_integer() && x.get<int64_t>() >= 0"),
    M("labels may repeat", "if (!seen.insert(v.get<std::string>()).second)",
      "if (!seen.insert(v.get<std::string>()).second && false)"),
    M("labels may be empty strings", "!v.is_string() || v.get<std::string>().empty()",
      "!v.is_string()"),
    M("partition ids may repeat", "if (!ids.insert(p.id).second)", "if (false)"),
    M("any schema_version", "if (schema != kManifestSchemaVersion)", "if (false)"),
    M("integers may be fractional", "if (!it->is_number_integer()) {", "if (!it->is_number()) {"),
    M("total_flops without the head", "st->total_flops += st->head.flops;", ""),
    M("total_flops 0 kept", "if (st->total_flops <= 0) {", "if (st->total_flops < 0) {"),
    M("input dtype not named", "where + \".dtype: \" +", ""),
    M("CheckBytes ignores the size",
      "if (bytes > 0 && static_cast<int64_t>(data.size()) != bytes)", "if (false)"),
    M("CheckBytes ignores the sha256", "if (actual != sha256)", "if (false)"),
    M("InputSpec ignores the dtype", "if (view.dtype != dtype)", "if (false)"),
    M("InputSpec ignores the shape", "if (view.shape != shape)", "if (false)"),
))

ENGINE = Target("runtime_cpp/src/engine.cc", ("engine_test",), (
    M("a cloud 4xx degrades instead of failing Infer",
      "if (answer.status().code() == StatusCode::kInvalidArgument) return answer.status();", ""),
    M("every cloud error fails Infer",
      "if (answer.status().code() == StatusCode::kInvalidArgument) return answer.status();",
      "return answer.status();"),
    M("a local answer is not a slot-cache hit", "cache->Get(info.id);  // a hit", "// a hit"),
    M("a later accepting slot does not answer", "if (!have_local || d.accept) {",
      "if (!have_local) {"),
    M("the gate is ignored", "      if (d.accept) {\n", "      if (true) {\n"),
    M("a degraded 'other' keeps a task index", "r->index = d.is_other ? -1 : TaskIndex",
      "r->index = TaskIndex"),
    M("a private answer the gate rejects is uploaded",
      "if (privacy.is_private) {\n      ++kept_private;", "if (false) {\n      ++kept_private;"),
    M("private mass over the share is ignored", "} else if (m > share) {", "} else if (false) {"),
    M("unseen private classes are not checked before an upload",
      "KC_RETURN_IF_ERROR(CheckUncovered(*privates, input, &ran, &privacy, &r));", ""),
    M("a fetched manifest replaces the private set", "AddPrivateLocked(fresh.private_labels);",
      "private_labels = std::make_shared<const LabelSet>(fresh.private_labels.begin(), "
      "fresh.private_labels.end());"),
    M("local-only still asks the cloud", "if (config.local_only) {", "if (false) {"),
    M("private_share outside [0, 1] accepted",
      "if (!(private_share >= 0.0f && private_share <= 1.0f)) {", "if (false) {"),
    M("no partition and a failed cloud degrades", "if (!have_local) {\n        return Unavailable",
      "if (false) {\n        return Unavailable"),
    M("a hint for a cached partition does not activate it",
      "if (cache->Get(r.partition_hint)) {\n        SetActive(r.partition_hint);",
      "if (cache->Get(r.partition_hint)) {\n"),
    M("hints fetch before admission", "} else if (config.fetch_hints && admitted) {",
      "} else if (config.fetch_hints) {"),
    M("max_local_attempts ignored",
      "if (static_cast<int>(out.size()) >= config.max_local_attempts) break;", ""),
    M("the active partition is tried twice", "if (id != active) {", "{"),
    M("threshold_override ignored",
      "return config.threshold_override >= 0.0f ? config.threshold_override : info.threshold;",
      "return info.threshold;"),
    M("max_local_attempts 0 accepted", "if (max_local_attempts < 1)", "if (false)"),
    M("threshold_override above 1 accepted", "if (threshold_override > 1.0f)", "if (false)"),
    M("an install does not activate", "  impl_->SetActive(id);\n  return Status::Ok();\n}\n\n"
      "Status Engine::InstallStaged", "  return Status::Ok();\n}\n\nStatus Engine::InstallStaged"),
    M("a manifest of another task accepted", "if (manifest.task != impl_->config.task) {",
      "if (false) {"),
    M("uplink bytes not counted", "uplink_bytes += answer->uplink_bytes;", ""),
    M("degraded answers not counted", "r.degraded_reason = answer.status().ToString();\n"
      "      ++degraded;", "r.degraded_reason = answer.status().ToString();"),
    M("cloud errors not counted", "      ++cloud_errors;\n", "\n"),
    M("a finished download does not activate",
      "hooks.installed = [raw](const std::string& id) { raw->SetActive(id); };",
      "hooks.installed = [](const std::string&) {};"),
    M("no cloud: an unsure answer fails", "r.degraded_reason = \"gate rejected the local answer "
      "and no cloud is configured\";", "return FailedPrecondition(\"unsure\");"),
    # Signed manifests (docs/security.md).
    M("an unverified manifest accepted with keys", "if (verifier.enabled() && "
      "!verifier.Trusts(next.signed_by)) {", "if (false) {"),
    M("a signed rollback accepted", "if (verifier.enabled() && has_manifest && next.version < "
      "manifest.version) {", "if (false) {"),
    M("a rollback to the same version refused", "has_manifest && next.version < manifest.version",
      "has_manifest && next.version <= manifest.version"),
    M("an unpinned program installed", "if (!verifier.enabled()) return Status::Ok();\n"
      "    std::lock_guard", "return Status::Ok();\n    std::lock_guard"),
    M("a pinned id with other bytes installed", "pinned->sha256 != info.sha256 || ", ""),
    M("a refused fetched manifest adopted anyway",
      "hooks.adopt = [raw](Manifest fresh) { return raw->Adopt(std::move(fresh)); };",
      "hooks.adopt = [raw](Manifest fresh) { (void)raw->Adopt(std::move(fresh)); "
      "return Status::Ok(); };"),
))

STORE = Target("runtime_cpp/device/store.cc", ("store_test",), (
    M("a leftover manifest.json.tmp is kept",
      "fs::remove(fs::path(config.dir) / \"manifest.json.tmp\", ec);", ""),
    M("unnamed programs are kept",
      "!named.count(name)) {\n      fs::remove(e.path(), ec);", "!named.count(name)) {\n"),
    M("a manifest that is not an object is read", "if (!doc.is_object() || !doc.contains"
      "(\"partitions\") || !doc[\"partitions\"].is_array()) {", "if (doc.is_discarded()) {"),
    M("an invalid manifest is read", "if (!parsed.ok()) {\n        return Corrupt(\"store manifest",
      "if (false) {\n        return Corrupt(\"store manifest"),
    M("writes may run past the declared size", "if (offset + static_cast<int64_t>(n) > bytes) {",
      "if (false) {"),
    M("a chunk may not end at the declared size",
      "if (offset + static_cast<int64_t>(n) > bytes) {",
      "if (offset + static_cast<int64_t>(n) >= bytes) {"),
    M("a chunk may leave a gap", "if (offset < 0 || offset > have) {", "if (offset < 0) {"),
    M("commit before all bytes", "if (static_cast<int64_t>(data.size()) != bytes) {",
      "if (false) {"),
    M("commit without the digest check", "if (digest != upload_sha_) {", "if (false) {"),
    M("a replaced program is kept",
      "if (!old_file.empty() && old_file != file) fs::remove", "if (false) fs::remove"),
    M("manifest.json written in place (no temporary, no rename)",
      "KC_RETURN_IF_ERROR(WriteFileSynced(path + \".tmp\", doc.dump(1)));\n"
      "  Step(\"manifest.json.tmp written\");\n"
      "  if (std::rename((path + \".tmp\").c_str(), path.c_str()) != 0) {",
      "KC_RETURN_IF_ERROR(WriteFileSynced(path, doc.dump(1)));\n"
      "  Step(\"manifest.json.tmp written\");\n  if (false) {"),
    M("the program is never renamed into place",
      "  fs::rename(part, final_path, ec);\n  if (ec) return Internal(\"installing \" + file + "
      "\": \" + ec.message());\n  Step(\"program renamed\");\n",
      "  Step(\"program renamed\");\n"),
    M("no space check", "if (bytes - have > FreeBytes()) {", "if (false) {"),
    M("space check off by one", "if (bytes - have > FreeBytes()) {",
      "if (bytes - have >= FreeBytes()) {"),
    M("any task", "if (!task.empty() && task != req[\"task\"]) {", "if (false) {"),
    M("any id", "if (!ValidId(id))", "if (false)"),
    M("the version is not bumped on commit",
      "  doc[\"version\"] = doc.value(\"version\", 1) + 1;\n  KC_RETURN_IF_ERROR(WriteManifest(doc));\n"
      "  if (!old_file.empty()", "  KC_RETURN_IF_ERROR(WriteManifest(doc));\n  if (!old_file.empty()"),
    M("the version is not bumped on remove",
      "  doc[\"version\"] = doc.value(\"version\", 1) + 1;\n  KC_RETURN_IF_ERROR(WriteManifest(doc));\n"
      "  std::error_code ec;", "  KC_RETURN_IF_ERROR(WriteManifest(doc));\n  std::error_code ec;"),
    M("an emptied store keeps its task", "if (parts.empty()) doc[\"task\"] = \"\";", ""),
    M("a removed program is kept", "  fs::remove(fs::path(config_.dir) / file, ec);\n"
      "  return Status::Ok();", "  return Status::Ok();"),
    M("the manifest is not fsynced", "text.size()) &&\n                  ::fsync(fd) == 0;",
      "text.size());",
      survives="fsync only matters when the machine loses power: a killed process leaves its "
               "writes in the page cache, where the next open reads them"),
    M("a partial upload longer than the entry is kept", "  if (have > bytes) {\n"
      "    fs::remove(part, ec);\n    return int64_t{0};\n  }\n", ""),
    # Signed uploads (docs/security.md).
    M("an unsigned upload accepted with keys", "if (!req.contains(\"manifest\") || "
      "!req[\"manifest\"].is_string()) {", "if (false) {"),
    M("an upload the signed manifest does not pin accepted", "pinned == nullptr || "
      "pinned->sha256 != sha ||", "pinned == nullptr ||"),
    M("a signed rollback accepted by the store", "if (m.version < installed) {", "if (false) {"),
    M("the signed version is not recorded", "    doc[\"signed_version\"] =\n", "    doc[\"x\"] =\n"),
    M("an entry nobody vouched for is loaded", "if (!verifier_.Trusts(by)) {", "if (false) {"),
))

# The server's input path and auth, against the tests that drive the real server.
APP = Target("host_tools/knowcache/server/app.py",
             ("tests/test_server.py", "tests/test_server_input.py"), (
    M("any dtype", "if dtype != models.dtype:", "if False:"),
    M("any shape", "if dims != models.shape:", "if False:"),
    M("a declared oversize body is a 400", "raise HTTPException(413 if int(declared) > limit "
      "else 400,", "raise HTTPException(400,"),
    M("no streaming size limit", "if len(body) > limit:", "if False:"),
    M("a short body reaches the model", "if len(body) != expected:",
      "if len(body) > expected:"),
    M("NaN reaches the model", "if x.dtype.kind == \"f\" and not np.isfinite(x).all():",
      "if False:"),
    M("no token needed", "        if not token:\n            return\n",
      "        return\n"),
    M("the scheme compared case-sensitively", 'scheme.lower() == "bearer"',
      'scheme == "Bearer"'),
    M("answers before the models are loaded", "if not state.ready.is_set():\n"
      "            raise HTTPException(503", "if False:\n            raise HTTPException(503"),
    M("If-None-Match ignored", "if if_none_match and etag in", "if False and etag in"),
    M("manifest without auth", "@app.get(\"/v1/{task}/manifest\", tags=[\"models\"], "
      "responses=ERRORS,\n             dependencies=[Depends(authorized)])",
      "@app.get(\"/v1/{task}/manifest\", tags=[\"models\"], responses=ERRORS)"),
    M("partitions without auth", "        dependencies=[Depends(authorized)], "
      "response_class=Response)", "        response_class=Response)"),
    M("layer-cache without auth", "@app.get(\"/v1/{task}/layer-cache\", tags=[\"models\"], "
      "responses=ERRORS,\n             dependencies=[Depends(authorized)])",
      "@app.get(\"/v1/{task}/layer-cache\", tags=[\"models\"], responses=ERRORS)"),
    M("the token compared with ==", "hmac.compare_digest(credentials.strip().encode(), "
      "token.encode())", "credentials.strip() == token",
      survives="answers are the same; only the time a wrong token takes to refuse differs, "
               "which a test on a shared machine cannot measure reliably"),
    M("no early refusal of a declared oversize body",
      "if declared is not None and declared.isdigit() and int(declared) > min(limit, expected):",
      "if False:"),
    M("a full queue is not a 429", "except QueueFull:\n            raise HTTPException(429",
      "except QueueFull:\n            raise HTTPException(503"),
))

PROTOCOL = Target("runtime_cpp/device/serial_protocol.cc", ("serial_server_test",), (
    M("the CRC is not checked",
      "if (ReadLe32(b.data() + b.size() - 4) != Crc32(b.data(), b.size() - 4)) {", "if (false) {"),
    M("any protocol version", "if (b[0] != kProtocolVersion) {", "if (false) {"),
    M("the length field is not checked",
      "if (b.size() != kHeaderBytes + length + 4) return Corrupt", "if (false) return Corrupt"),
    M("no payload limit", "if (length > kMaxPayload) return ProtocolError",
      "if (false) return ProtocolError"),
    M("COBS: a zero after a full block", "if (code != 0xFF && i < in.size()) out.push_back(0);",
      "if (i < in.size()) out.push_back(0);"),
    M("COBS: a zero byte inside a block is data",
      "if (in[i] == 0) return Corrupt(\"COBS: zero byte inside a block\");", ""),
    M("an overlong frame is parsed", "    if (overflow_) {\n", "    if (false) {\n"),
    M("bad frames are not counted",
      "        ++bad_frames_;\n        last_error_ = frame.status().ToString();",
      "        last_error_ = frame.status().ToString();"),
))

SERIAL = Target("runtime_cpp/device/serial_server.cc", ("serial_server_test",), (
    M("a reply without the request's seq", "resp.seq = req.seq;", "resp.seq = 0;"),
    M("an error reply typed as the request's answer",
      "resp.type = static_cast<uint8_t>(MsgType::kError) | kResponseBit;",
      "resp.type = req.type | kResponseBit;"),
    M("store full reported as internal", "case StatusCode::kResourceExhausted: return \"store_full\";",
      "case StatusCode::kResourceExhausted: return \"internal\";"),
    M("the engine survives a commit",
      "KC_RETURN_IF_ERROR(store_->Commit());\n        engine_.reset();",
      "KC_RETURN_IF_ERROR(store_->Commit());"),
    M("the engine survives a delete",
      "KC_RETURN_IF_ERROR(store_->Remove(j[\"id\"]));\n        engine_.reset();",
      "KC_RETURN_IF_ERROR(store_->Remove(j[\"id\"]));"),
    M("PUT_CHUNK offset one byte short", "if (req.payload.size() < 8)",
      "if (req.payload.size() < 7)"),
    M("an INFER header may run one byte past the payload", "if (hlen > p.size() - 4)",
      "if (hlen > p.size() - 3)"),
    M("DELETE without an id", "if (!j.is_object() || !j.contains(\"id\") || !j[\"id\"].is_string()) {",
      "if (!j.is_object()) {"),
))

TARGETS = (MANIFEST, ENGINE, STORE, APP, PROTOCOL, SERIAL)


def run(cmd: list[str], timeout: int = 900) -> bool:
    """True when ``cmd`` exits 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False   # a test that hangs under a mutant noticed it


def build(target: Target) -> bool:
    return run(["cmake", "--build", str(BUILD), "-j1", "--target", *target.tests])


def tests_pass(target: Target) -> bool:
    if target.is_cpp:
        return all(run([str(BUILD / "runtime_cpp" / t)], timeout=300) for t in target.tests)
    return run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly",
                "-p", "no:cacheprovider", *target.tests])


def check(target: Target, only: set[str]) -> dict[str, list[str]]:
    path = ROOT / target.path
    original = path.read_text()
    result: dict[str, list[str]] = {"killed": [], "survived": [], "stale": [],
                                    "no build": []}
    if target.is_cpp and not build(target):
        sys.exit(f"{target.path}: the unmutated tests do not build; run `make build-cpp`")
    if not tests_pass(target):
        sys.exit(f"{target.path}: the tests fail without any mutant; fix them first")
    try:
        for m in target.mutants:
            if only and m.name not in only:
                continue
            if original.count(m.old) != 1:
                result["stale"].append(m.name)
                print(f"  stale     {m.name}", flush=True)
                continue
            path.write_text(original.replace(m.old, m.new))
            t0 = time.monotonic()
            if target.is_cpp and not build(target):
                outcome = "no build"
            else:
                outcome = "survived" if tests_pass(target) else "killed"
            result[outcome].append(m.name)
            print(f"  {outcome:9} {m.name} ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        path.write_text(original)
        if target.is_cpp:
            build(target)   # leave the unmutated tests built
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="basenames: manifest.cc engine.cc store.cc "
                        "app.py serial_protocol.cc serial_server.cc")
    parser.add_argument("--mutant", action="append", default=[], help="only the named mutant(s)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.files or Path(t.path).name in args.files]
    if not targets:
        parser.error(f"no such file; choose from {', '.join(Path(t.path).name for t in TARGETS)}")
    if args.list:
        for t in targets:
            print(f"{t.path} ({len(t.mutants)} mutants; tests {', '.join(t.tests)})")
            for m in t.mutants:
                print(f"  {m.name}")
        return 0
    scores = []
    for t in targets:
        print(f"{t.path}: {len(t.mutants)} mutants, tests {', '.join(t.tests)}", flush=True)
        r = check(t, set(args.mutant))
        scored = len(r["killed"]) + len(r["survived"])
        scores.append((t.path, r, scored))
    print("\nfile: killed / scored (score); survived; stale; did not build")
    failed = False
    for path, r, scored in scores:
        pct = f"{100 * len(r['killed']) / scored:.0f}%" if scored else "n/a"
        print(f"{path}: {len(r['killed'])} / {scored} ({pct})")
        why = {m.name: m.survives for t in TARGETS if t.path == path for m in t.mutants}
        for kind in ("survived", "stale", "no build"):
            for name in r[kind]:
                explained = kind == "survived" and why[name]
                print(f"  {kind}: {name}" + (f" (explained: {why[name]})" if explained else ""))
                failed |= kind == "stale" or (kind == "survived" and not explained)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
