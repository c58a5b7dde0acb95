// PartitionStore on a real directory: uploads, replacement, damage on disk,
// and a process killed at each step of a commit (fork, then _exit from the
// store's step hook) leaving a store that opens to either the old or the new
// state, never a mix.
#include "store.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "knowcache/sha256.h"
#include "temp_dir_for_testing.h"
#include "../src/test_signing.h"

namespace knowcache::device {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<uint8_t> Program(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 31 * i);
  return b;
}

std::string Sha(const std::vector<uint8_t>& b) { return Sha256Hex(b.data(), b.size()); }

// A PUT_BEGIN request for partition `id` holding `bytes`.
json BeginRequest(const std::string& id, const std::vector<uint8_t>& bytes,
                  const std::string& task = "kws") {
  return {{"task", task},
          {"labels", {"yes", "no", "up"}},
          {"entry",
           {{"id", id}, {"role", "partition"}, {"file", id + ".pte"},
            {"labels", {"yes", "no", "other"}}, {"other_label", "other"},
            {"input", {{"dtype", "float32"}, {"shape", {1, 4}}}}, {"threshold", 0.5},
            {"bytes", bytes.size()}, {"sha256", Sha(bytes)}}}};
}

std::unique_ptr<PartitionStore> OpenStore(const fs::path& dir, int64_t limit = -1) {
  auto store = PartitionStore::Open({dir.string(), limit});
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

// Uploads and commits `bytes` as `id` in one chunk.
Status Flash(PartitionStore& store, const std::string& id, const std::vector<uint8_t>& bytes) {
  auto offset = store.Begin(BeginRequest(id, bytes));
  if (!offset.ok()) return offset.status();
  auto end = store.Write(*offset, bytes.data() + *offset, bytes.size() - *offset);
  if (!end.ok()) return end.status();
  return store.Commit();
}

// id -> sha256 of what the store lists.
std::map<std::string, std::string> Listed(const PartitionStore& store) {
  std::map<std::string, std::string> out;
  const json listed = store.List();
  for (const auto& p : listed["partitions"]) out[p["id"]] = p["sha256"];
  return out;
}

// The regular files in `dir` itself, by name.
std::set<std::string> Files(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) out.insert(e.path().filename().string());
  }
  return out;
}

std::string ReadText(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

std::vector<uint8_t> ReadAll(const fs::path& path) {
  const std::string text = ReadText(path);
  return {text.begin(), text.end()};
}

// Every partition the store's manifest names is on disk with its sha256, and
// nothing else is: the invariant a crash must not break.
void ExpectConsistent(const fs::path& dir) {
  auto store = OpenStore(dir);
  ASSERT_TRUE(store);
  std::set<std::string> expected;
  if (fs::exists(dir / "manifest.json")) expected.insert("manifest.json");  // none before a commit
  auto m = store->LoadManifest();
  if (m.ok()) {
    for (const auto& p : m->partitions) {
      expected.insert(p.file);
      EXPECT_EQ(Sha(ReadAll(m->PathOf(p))), p.sha256) << p.id;
    }
  }
  EXPECT_EQ(Files(dir), expected);
}

// A store opened on a fresh directory.
class PartitionStoreTest : public ::testing::Test {
 protected:
  TempDir dir;
  std::unique_ptr<PartitionStore> store = OpenStore(dir.path);
};

TEST_F(PartitionStoreTest, CommitInstallsWhatWasUploadedInChunks) {
  const auto bytes = Program(1000, 1);
  ASSERT_EQ(*store->Begin(BeginRequest("p0", bytes)), 0);
  ASSERT_EQ(*store->Write(0, bytes.data(), 400), 400);
  ASSERT_EQ(*store->Write(400, bytes.data() + 400, 600), 1000);
  ASSERT_TRUE(store->Commit().ok());

  auto reopened = OpenStore(dir.path);
  auto m = reopened->LoadManifest();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->task, "kws");
  EXPECT_EQ(m->labels, (std::vector<std::string>{"yes", "no", "up"}));
  ASSERT_EQ(m->partitions.size(), 1u);
  const PartitionInfo& p = m->partitions[0];
  EXPECT_EQ(p.file, "p0-" + Sha(bytes).substr(0, 12) + ".pte");
  EXPECT_EQ(ReadAll(m->PathOf(p)), bytes);
  EXPECT_EQ(reopened->UsedBytes(), 1000);
  EXPECT_TRUE(fs::is_empty(dir.path / ".incoming"));
}

TEST_F(PartitionStoreTest, ReplacingAnIdKeepsOneEntryAndDeletesTheOldProgram) {
  const auto v1 = Program(300, 1), v2 = Program(500, 2), other = Program(200, 3);
  ASSERT_TRUE(Flash(*store, "p0", v1).ok());
  ASSERT_TRUE(Flash(*store, "p1", other).ok());
  const int version = OpenStore(dir.path)->LoadManifest()->version;
  ASSERT_TRUE(Flash(*store, "p0", v2).ok());
  // Before any reopening (which would also clear an orphan): v1's program is gone.
  EXPECT_EQ(Files(dir.path),
            (std::set<std::string>{"manifest.json", "p0-" + Sha(v2).substr(0, 12) + ".pte",
                                   "p1-" + Sha(other).substr(0, 12) + ".pte"}));

  auto m = OpenStore(dir.path)->LoadManifest();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->version, version + 1);
  ASSERT_EQ(m->partitions.size(), 2u);
  const PartitionInfo* p0 = m->Find("p0");
  ASSERT_NE(p0, nullptr);
  EXPECT_EQ(p0->sha256, Sha(v2));
  EXPECT_EQ(p0->bytes, 500);
  EXPECT_EQ(ReadAll(m->PathOf(*p0)), v2);
  EXPECT_EQ(store->UsedBytes(), 700);
}

TEST_F(PartitionStoreTest, CommitBeforeAllBytesInstallsNothingAndTheUploadResumes) {
  const auto bytes = Program(1000, 4);
  ASSERT_EQ(*store->Begin(BeginRequest("p0", bytes)), 0);
  ASSERT_EQ(*store->Write(0, bytes.data(), 600), 600);
  Status early = store->Commit();
  EXPECT_EQ(early.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(early.message().find("upload has 600 of 1000 bytes"), std::string::npos)
      << early.message();
  EXPECT_EQ(OpenStore(dir.path)->LoadManifest().status().code(), StatusCode::kNotFound);

  // A new session (the device restarted) resumes at the 600 bytes it kept.
  auto again = OpenStore(dir.path);
  ASSERT_EQ(*again->Begin(BeginRequest("p0", bytes)), 600);
  ASSERT_EQ(*again->Write(600, bytes.data() + 600, 400), 1000);
  ASSERT_TRUE(again->Commit().ok());
  EXPECT_EQ(Listed(*OpenStore(dir.path)), (std::map<std::string, std::string>{{"p0", Sha(bytes)}}));
}

TEST_F(PartitionStoreTest, APartialUploadLongerThanItsEntryStartsOver) {
  // The upload file is named by the sha256, so an entry that declares fewer
  // bytes for the same digest finds more on disk than it can take.
  const auto bytes = Program(100, 4);
  ASSERT_EQ(*store->Begin(BeginRequest("p0", bytes)), 0);
  ASSERT_EQ(*store->Write(0, bytes.data(), 100), 100);
  json shorter = BeginRequest("p0", bytes);
  shorter["entry"]["bytes"] = 60;
  ASSERT_EQ(*store->Begin(shorter), 0);
  EXPECT_TRUE(fs::is_empty(dir.path / ".incoming"));
  EXPECT_EQ(*store->Write(0, bytes.data(), 60), 60);
}

TEST_F(PartitionStoreTest, WritesPastTheDeclaredSizeOrAfterAGapAreRefused) {
  const auto bytes = Program(100, 5);
  EXPECT_EQ(store->Write(0, bytes.data(), 10).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_EQ(*store->Begin(BeginRequest("p0", bytes)), 0);
  const std::vector<uint8_t> big(101, 0);
  auto past = store->Write(0, big.data(), big.size());
  EXPECT_EQ(past.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(past.status().message().find("runs past the partition's 100 bytes"), std::string::npos)
      << past.status().message();
  ASSERT_EQ(*store->Write(0, bytes.data(), 60), 60);
  EXPECT_EQ(store->Write(50, big.data(), 51).status().code(), StatusCode::kInvalidArgument);
  auto gap = store->Write(61, bytes.data() + 61, 10);
  EXPECT_EQ(gap.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(gap.status().message().find("the device has 60 bytes"), std::string::npos)
      << gap.status().message();
  // A retried chunk overwrites from its offset; the declared size is exactly enough.
  ASSERT_EQ(*store->Write(50, bytes.data() + 50, 50), 100);
  ASSERT_TRUE(store->Commit().ok());
  auto m = OpenStore(dir.path)->LoadManifest();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(ReadAll(m->PathOf(m->partitions.at(0))), bytes);
}

TEST_F(PartitionStoreTest, ABadDigestInstallsNothingAndDropsTheUpload) {
  const auto bytes = Program(100, 6);
  ASSERT_EQ(*store->Begin(BeginRequest("p0", bytes)), 0);
  auto damaged = bytes;
  damaged[50] ^= 1;
  ASSERT_EQ(*store->Write(0, damaged.data(), damaged.size()), 100);
  Status s = store->Commit();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("nothing was installed"), std::string::npos) << s.message();
  EXPECT_TRUE(fs::is_empty(dir.path / ".incoming"));
  EXPECT_EQ(store->Commit().code(), StatusCode::kFailedPrecondition);
  ExpectConsistent(dir.path);
  EXPECT_TRUE(Listed(*OpenStore(dir.path)).empty());
}

TEST(PartitionStore, BeginChecksTheEntryTheTaskAndTheSpace) {
  TempDir dir;
  auto store = OpenStore(dir.path, /*limit=*/1000);
  const auto bytes = Program(600, 7);
  json bad = BeginRequest("p0", bytes);
  bad["entry"]["threshold"] = 2.0;
  auto r = store->Begin(bad);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("threshold"), std::string::npos) << r.status().message();
  EXPECT_EQ(store->Begin(BeginRequest("p.0", bytes)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Begin(json{{"task", "kws"}}).status().code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE(Flash(*store, "p0", bytes).ok());
  EXPECT_EQ(store->FreeBytes(), 400);
  auto full = store->Begin(BeginRequest("p1", Program(401, 8)));
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("needs 401 more bytes, 400 are free"), std::string::npos)
      << full.status().message();
  EXPECT_TRUE(store->Begin(BeginRequest("p1", Program(400, 8))).ok());

  auto other_task = store->Begin(BeginRequest("q0", Program(10, 9), "vision"));
  EXPECT_EQ(other_task.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(other_task.status().message().find("holds 'kws' partitions"), std::string::npos);
}

TEST_F(PartitionStoreTest, RemoveDeletesTheEntryAndItsProgram) {
  ASSERT_TRUE(Flash(*store, "p0", Program(100, 1)).ok());
  const auto p1 = Program(100, 2);
  ASSERT_TRUE(Flash(*store, "p1", p1).ok());
  const int version = store->LoadManifest()->version;
  ASSERT_TRUE(store->Remove("p0").ok());
  EXPECT_EQ(Files(dir.path),
            (std::set<std::string>{"manifest.json", "p1-" + Sha(p1).substr(0, 12) + ".pte"}));
  EXPECT_EQ(store->LoadManifest()->version, version + 1);
  EXPECT_EQ(store->Remove("p0").code(), StatusCode::kNotFound);
  EXPECT_EQ(Listed(*OpenStore(dir.path)).count("p0"), 0u);
  ExpectConsistent(dir.path);
  ASSERT_TRUE(store->Remove("p1").ok());
  EXPECT_EQ(store->List()["task"], "");  // an empty store takes any task again
  EXPECT_TRUE(store->Begin(BeginRequest("q0", Program(10, 3), "vision")).ok());
  ExpectConsistent(dir.path);
}

TEST(PartitionStore, OpenRemovesALeftoverTemporaryManifestAndUnnamedPrograms) {
  TempDir dir;
  const auto bytes = Program(100, 1);
  ASSERT_TRUE(Flash(*OpenStore(dir.path), "p0", bytes).ok());
  { std::ofstream(dir.path / "manifest.json.tmp") << "{\"half\": "; }
  { std::ofstream(dir.path / "stray-0123456789ab.pte") << "x"; }
  { std::ofstream(dir.path / "notes.txt") << "kept"; }
  auto store = OpenStore(dir.path);
  EXPECT_EQ(Listed(*store), (std::map<std::string, std::string>{{"p0", Sha(bytes)}}));
  EXPECT_EQ(Files(dir.path), (std::set<std::string>{"manifest.json", "notes.txt",
                                                    "p0-" + Sha(bytes).substr(0, 12) + ".pte"}));
}

TEST(PartitionStore, ACorruptManifestIsReportedNotReplaced) {
  TempDir dir;
  ASSERT_TRUE(Flash(*OpenStore(dir.path), "p0", Program(100, 1)).ok());
  const fs::path manifest = dir.path / "manifest.json";
  const std::string good = ReadText(manifest);
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {good.substr(0, good.size() / 2), "is not a manifest"},
           {"[]", "is not a manifest"},
           {json{{"partitions", 3}}.dump(), "is not a manifest"},
           {[&] {
              json doc = json::parse(good);
              doc["partitions"][0]["bytes"] = -1;
              return doc.dump();
            }(),
            ".bytes must be positive"}}) {
    { std::ofstream(manifest, std::ios::trunc) << text; }
    auto store = PartitionStore::Open({dir.path.string(), -1});
    ASSERT_FALSE(store.ok()) << text;
    EXPECT_EQ(store.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(store.status().message().find(manifest.string()), std::string::npos);
    EXPECT_NE(store.status().message().find(message), std::string::npos)
        << store.status().message();
    EXPECT_EQ(ReadText(manifest), text);  // left as it was, for a person to look at
  }
}

// A commit killed at one of the store's steps, for a new id or a replacement.
struct Crash {
  const char* name;
  const char* step;
  bool replace;      // p0 is already installed and the upload replaces it
  bool committed;    // the step comes after manifest.json was replaced
};

void PrintTo(const Crash& c, std::ostream* os) { *os << c.name; }

const char* crash_at = nullptr;

void ExitAtStep(const char* step) {
  if (std::strcmp(step, crash_at) == 0) ::_exit(0);
}

class StoreCrash : public ::testing::TestWithParam<Crash> {};

TEST_P(StoreCrash, LeavesTheOldOrTheNewStateNeverAMix) {
  const Crash& c = GetParam();
  TempDir dir;
  const auto old_p0 = Program(300, 1), keep = Program(200, 2), upload = Program(500, 3);
  {
    auto store = OpenStore(dir.path);
    ASSERT_TRUE(Flash(*store, "keep", keep).ok());
    if (c.replace) ASSERT_TRUE(Flash(*store, "p0", old_p0).ok());
  }
  std::map<std::string, std::string> before = {{"keep", Sha(keep)}};
  if (c.replace) before["p0"] = Sha(old_p0);
  std::map<std::string, std::string> after = {{"keep", Sha(keep)}, {"p0", Sha(upload)}};

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the device: killed at the step, or exits 3 if it never came
    crash_at = c.step;
    SetStoreStepHookForTesting(ExitAtStep);
    auto store = PartitionStore::Open({dir.path.string(), -1});
    if (!store.ok() || !Flash(**store, "p0", upload).ok()) ::_exit(2);
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the commit never reached '" << c.step << "'";

  ExpectConsistent(dir.path);
  auto store = OpenStore(dir.path);
  EXPECT_EQ(Listed(*store), c.committed ? after : before);
  EXPECT_FALSE(fs::exists(dir.path / "manifest.json.tmp"));
  // The store takes the same upload again and ends in the new state.
  ASSERT_TRUE(Flash(*store, "p0", upload).ok());
  EXPECT_EQ(Listed(*OpenStore(dir.path)), after);
  ExpectConsistent(dir.path);
}

INSTANTIATE_TEST_SUITE_P(
    PartitionStore, StoreCrash,
    ::testing::Values(Crash{"NewIdAfterVerifying", "upload verified", false, false},
                      Crash{"NewIdAfterTheRename", "program renamed", false, false},
                      Crash{"NewIdAfterTheTemporaryManifest", "manifest.json.tmp written", false,
                            false},
                      Crash{"NewIdAfterTheManifest", "manifest.json replaced", false, true},
                      Crash{"ReplacementAfterVerifying", "upload verified", true, false},
                      Crash{"ReplacementAfterTheRename", "program renamed", true, false},
                      Crash{"ReplacementAfterTheTemporaryManifest", "manifest.json.tmp written",
                            true, false},
                      Crash{"ReplacementAfterTheManifest", "manifest.json replaced", true, true}),
    [](const ::testing::TestParamInfo<Crash>& info) { return info.param.name; });

TEST(PartitionStore, ARemoveKilledAfterTheManifestLeavesNoOrphan) {
  TempDir dir;
  ASSERT_TRUE(Flash(*OpenStore(dir.path), "p0", Program(100, 1)).ok());
  ASSERT_TRUE(Flash(*OpenStore(dir.path), "p1", Program(100, 2)).ok());
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    crash_at = "manifest.json replaced";
    SetStoreStepHookForTesting(ExitAtStep);
    auto store = PartitionStore::Open({dir.path.string(), -1});
    if (!store.ok() || !(*store)->Remove("p0").ok()) ::_exit(2);
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ExpectConsistent(dir.path);
  EXPECT_EQ(Listed(*OpenStore(dir.path)).count("p0"), 0u);
}

// Signed manifests: a store trusting one key installs an upload only when the
// PUT_BEGIN carries a manifest signed by it that pins the upload, at a version
// no older than the newest signed one it holds. Each refusal keeps what the
// store holds.
class SignedStore : public ::testing::Test {
 protected:
  // A signed manifest of task kws at `version` pinning `pins` (id -> bytes).
  json Signed(int version, const std::map<std::string, std::vector<uint8_t>>& pins,
              const testing::TestSigner& signer) const {
    json parts = json::array();
    for (const auto& [id, bytes] : pins) parts.push_back(BeginRequest(id, bytes)["entry"]);
    const std::string text = json{{"schema_version", 1}, {"task", "kws"}, {"version", version},
                                  {"labels", {"yes", "no", "up"}}, {"partitions", parts}}
                                 .dump(2);
    return {{"manifest", text}, {"signature", signer.Sign(text)}};
  }
  std::unique_ptr<PartitionStore> Open() {
    StoreConfig config{dir_.path.string(), -1, {}};
    config.signature.trusted_keys = {signer_.PublicKey()};
    auto store = PartitionStore::Open(config);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }
  // Uploads `bytes` as `id` with `signed_manifest`'s fields added to PUT_BEGIN.
  Status FlashSigned(PartitionStore& store, const std::string& id,
                     const std::vector<uint8_t>& bytes, const json& signed_manifest) {
    json req = BeginRequest(id, bytes);
    req.update(signed_manifest);
    auto offset = store.Begin(req);
    if (!offset.ok()) return offset.status();
    auto end = store.Write(*offset, bytes.data() + *offset, bytes.size() - *offset);
    if (!end.ok()) return end.status();
    return store.Commit();
  }
  void ExpectRefusedKeeping(const Status& s, const std::string& says,
                            const std::map<std::string, std::string>& kept) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(says), std::string::npos) << s.message();
    EXPECT_EQ(Listed(*Open()), kept);
  }

  TempDir dir_;
  testing::TestSigner signer_;
  const std::vector<uint8_t> p0_ = Program(100, 1), p1_ = Program(120, 2);
};

TEST_F(SignedStore, AnUploadPinnedByATrustedSignedManifestIsInstalledAndVouchedFor) {
  auto store = Open();
  ASSERT_TRUE(FlashSigned(*store, "p0", p0_, Signed(3, {{"p0", p0_}}, signer_)).ok());
  auto m = Open()->LoadManifest();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->signed_by, signer_.KeyId());
  EXPECT_EQ(m->version, 3);  // the signed version, for the engine's rollback check
}

TEST_F(SignedStore, AnUnsignedUploadIsRefused) {
  auto store = Open();
  ASSERT_TRUE(FlashSigned(*store, "p0", p0_, Signed(3, {{"p0", p0_}}, signer_)).ok());
  const auto kept = Listed(*store);
  ExpectRefusedKeeping(Flash(*store, "p1", p1_), "needs \"manifest\"", kept);
  json unsigned_manifest = Signed(3, {{"p1", p1_}}, signer_);
  unsigned_manifest.erase("signature");
  ExpectRefusedKeeping(FlashSigned(*store, "p1", p1_, unsigned_manifest), "not signed", kept);
}

TEST_F(SignedStore, ATamperedOrUntrustedManifestIsRefused) {
  auto store = Open();
  ASSERT_TRUE(FlashSigned(*store, "p0", p0_, Signed(3, {{"p0", p0_}}, signer_)).ok());
  const auto kept = Listed(*store);
  json tampered = Signed(3, {{"p1", p1_}}, signer_);
  tampered["manifest"] = tampered["manifest"].get<std::string>() + " ";
  ExpectRefusedKeeping(FlashSigned(*store, "p1", p1_, tampered), "does not verify", kept);
  testing::TestSigner other;
  ExpectRefusedKeeping(FlashSigned(*store, "p1", p1_, Signed(3, {{"p1", p1_}}, other)),
                       "which is not trusted", kept);
}

TEST_F(SignedStore, AnUploadTheSignedManifestDoesNotPinIsRefused) {
  auto store = Open();
  ASSERT_TRUE(FlashSigned(*store, "p0", p0_, Signed(3, {{"p0", p0_}}, signer_)).ok());
  const auto kept = Listed(*store);
  // Signed, but for p0 only; and a p1 whose bytes differ from what is pinned.
  ExpectRefusedKeeping(FlashSigned(*store, "p1", p1_, Signed(3, {{"p0", p0_}}, signer_)),
                       "'p1' (sha256 " + Sha(p1_) + ") is not pinned", kept);
  ExpectRefusedKeeping(
      FlashSigned(*store, "p1", p1_, Signed(3, {{"p1", Program(120, 9)}}, signer_)),
      "is not pinned by the signed manifest", kept);
}

TEST_F(SignedStore, AnOlderSignedManifestIsARollbackAndRefused) {
  auto store = Open();
  ASSERT_TRUE(FlashSigned(*store, "p0", p0_, Signed(3, {{"p0", p0_}}, signer_)).ok());
  const auto kept = Listed(*store);
  ExpectRefusedKeeping(FlashSigned(*store, "p1", p1_, Signed(2, {{"p1", p1_}}, signer_)),
                       "older than the installed version 3 (a rollback)", kept);
  ASSERT_TRUE(FlashSigned(*store, "p1", p1_, Signed(3, {{"p1", p1_}}, signer_)).ok());
}

TEST_F(SignedStore, AnEntryNoTrustedKeyVouchedForIsNotLoaded) {
  ASSERT_TRUE(Flash(*OpenStore(dir_.path), "p0", p0_).ok());  // flashed before keys were set
  auto m = Open()->LoadManifest();
  EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("was not flashed with a manifest signed"),
            std::string::npos) << m.status().message();
}

}  // namespace
}  // namespace knowcache::device
