#include "store.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "knowcache/sha256.h"

namespace knowcache::device {
namespace fs = std::filesystem;
namespace {

StoreStepHook step_hook = nullptr;

void Step(const char* name) {
  if (step_hook) step_hook(name);
}

Status WriteFileSynced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Internal("cannot write " + path);
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  return ok ? Status::Ok() : Internal("writing " + path + " failed (disk full?)");
}

void SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

bool ValidSha(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace

void SetStoreStepHookForTesting(StoreStepHook hook) { step_hook = hook; }

PartitionStore::PartitionStore(StoreConfig config) : config_(std::move(config)) {}

StatusOr<std::unique_ptr<PartitionStore>> PartitionStore::Open(StoreConfig config) {
  if (config.dir.empty()) return InvalidArgument("--store needs a directory");
  std::error_code ec;
  fs::create_directories(fs::path(config.dir) / ".incoming", ec);
  if (ec) return Internal("cannot create store " + config.dir + ": " + ec.message());
  KC_ASSIGN_OR_RETURN(ManifestVerifier verifier, ManifestVerifier::Create(config.signature));
  std::unique_ptr<PartitionStore> store(new PartitionStore(config));
  store->verifier_ = std::move(verifier);
  const fs::path manifest = fs::path(config.dir) / "manifest.json";
  fs::remove(fs::path(config.dir) / "manifest.json.tmp", ec);
  store->doc_ = nlohmann::json{{"schema_version", kManifestSchemaVersion}, {"task", ""},
                               {"version", 1}, {"labels", nlohmann::json::array()},
                               {"partitions", nlohmann::json::array()}};
  if (fs::exists(manifest)) {
    std::ifstream f(manifest);
    nlohmann::json doc = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object() || !doc.contains("partitions") || !doc["partitions"].is_array()) {
      return Corrupt("store manifest " + manifest.string() + " is not a manifest");
    }
    if (!doc["partitions"].empty()) {
      auto parsed = Manifest::Parse(doc.dump());
      if (!parsed.ok()) {
        return Corrupt("store manifest " + manifest.string() + ": " + parsed.status().message());
      }
    }
    store->doc_ = std::move(doc);
  }
  // Programs the manifest does not name are leftovers of an interrupted install.
  std::set<std::string> named;
  for (const auto& p : store->doc_["partitions"]) named.insert(p.value("file", ""));
  for (const auto& e : fs::directory_iterator(config.dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && e.path().extension() == ".pte" && !named.count(name)) {
      fs::remove(e.path(), ec);
    }
  }
  return store;
}

nlohmann::json PartitionStore::List() const {
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& p : doc_["partitions"]) {
    parts.push_back({{"id", p["id"]}, {"role", p["role"]}, {"version", p.value("version", 1)},
                     {"bytes", p["bytes"]}, {"sha256", p["sha256"]}});
  }
  return {{"task", doc_["task"]}, {"partitions", parts}};
}

int64_t PartitionStore::UsedBytes() const {
  int64_t used = 0;
  for (const auto& p : doc_["partitions"]) used += p.value("bytes", int64_t{0});
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(config_.dir) / ".incoming", ec)) {
    if (e.is_regular_file()) used += static_cast<int64_t>(e.file_size(ec));
  }
  return used;
}

int64_t PartitionStore::FreeBytes() const {
  if (config_.limit_bytes >= 0) return std::max<int64_t>(0, config_.limit_bytes - UsedBytes());
  struct statvfs s {};
  if (::statvfs(config_.dir.c_str(), &s) != 0) return 0;
  return static_cast<int64_t>(s.f_bavail) * static_cast<int64_t>(s.f_frsize);
}

StatusOr<Manifest> PartitionStore::LoadManifest() const {
  if (doc_["partitions"].empty()) return NotFound("the store holds no partitions; flash some first");
  KC_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(doc_.dump()));
  m.directory = config_.dir;
  if (verifier_.enabled()) {
    for (const auto& p : doc_["partitions"]) {
      const std::string by = p.value("signed_by", "");
      if (!verifier_.Trusts(by)) {
        return FailedPrecondition("partition '" + p["id"].get<std::string>() +
                                  "' in the store was not flashed with a manifest signed by a "
                                  "trusted key (trusted: " + verifier_.KeyIds() +
                                  "); flash it again from a signed models folder");
      }
      m.signed_by = by;
    }
    m.version = doc_.value("signed_version", 0);
  }
  return m;
}

std::string PartitionStore::IncomingPath() const {
  return (fs::path(config_.dir) / ".incoming" / (upload_sha_ + ".part")).string();
}

StatusOr<int64_t> PartitionStore::Begin(const nlohmann::json& req) {
  if (!req.is_object() || !req.contains("entry") || !req["entry"].is_object() ||
      !req.contains("task") || !req["task"].is_string() || !req.contains("labels")) {
    return InvalidArgument("PUT_BEGIN needs {\"task\", \"labels\", \"entry\"}");
  }
  const nlohmann::json& entry = req["entry"];
  // The entry must be a valid manifest partition for this task: check by parsing.
  nlohmann::json probe = {{"schema_version", kManifestSchemaVersion}, {"task", req["task"]},
                          {"version", 1}, {"labels", req["labels"]},
                          {"partitions", nlohmann::json::array({entry})}};
  auto parsed = Manifest::Parse(probe.dump());
  if (!parsed.ok()) return InvalidArgument("PUT_BEGIN entry: " + parsed.status().message());
  const std::string id = entry["id"], sha = entry["sha256"];
  if (!ValidId(id)) return InvalidArgument("partition id '" + id + "' must be 1-64 of [A-Za-z0-9_-]");
  if (!ValidSha(sha)) return InvalidArgument("entry sha256 must be 64 lowercase hex digits");
  const std::string task = doc_["task"];
  if (!task.empty() && task != req["task"]) {
    return FailedPrecondition("the store holds '" + task + "' partitions; DELETE them before "
                              "flashing '" + std::string(req["task"]) + "'");
  }
  const int64_t bytes = entry["bytes"];
  KC_ASSIGN_OR_RETURN(nlohmann::json vouched, CheckSigned(req, id, sha, bytes));
  std::error_code ec;
  // Only one upload at a time: other partial files are dropped.
  for (const auto& e : fs::directory_iterator(fs::path(config_.dir) / ".incoming", ec)) {
    if (e.path().stem().string() != sha) fs::remove(e.path(), ec);
  }
  upload_ = {{"task", req["task"]}, {"labels", req["labels"]}, {"entry", entry}};
  if (!vouched.is_null()) upload_["signed"] = vouched;
  upload_sha_ = sha;
  const std::string part = IncomingPath();
  const int64_t have = fs::exists(part) ? static_cast<int64_t>(fs::file_size(part, ec)) : 0;
  if (have > bytes) {
    fs::remove(part, ec);
    return int64_t{0};
  }
  if (bytes - have > FreeBytes()) {
    upload_ = nullptr;
    return ResourceExhausted("store full: '" + id + "' needs " + std::to_string(bytes - have) +
                             " more bytes, " + std::to_string(FreeBytes()) + " are free; "
                             "DELETE a partition first");
  }
  return have;
}

StatusOr<nlohmann::json> PartitionStore::CheckSigned(const nlohmann::json& req,
                                                     const std::string& id,
                                                     const std::string& sha,
                                                     int64_t bytes) const {
  if (!verifier_.enabled()) return nlohmann::json();
  if (!req.contains("manifest") || !req["manifest"].is_string()) {
    return FailedPrecondition("this device only installs partitions pinned by a signed "
                              "manifest: PUT_BEGIN needs \"manifest\" (its exact text) and "
                              "\"signature\"; flash a signed models folder (knowcache keys sign)");
  }
  const std::string signature =
      req.contains("signature") && req["signature"].is_string() ? req["signature"].get<std::string>()
                                                                 : std::string();
  auto signed_manifest = verifier_.ParseSigned(req["manifest"].get<std::string>(), signature);
  if (!signed_manifest.ok()) {
    return Status(signed_manifest.status().code(),
                  "PUT_BEGIN: " + signed_manifest.status().message() + "; nothing was installed");
  }
  const Manifest& m = *signed_manifest;
  const PartitionInfo* pinned = m.Find(id);
  if (m.task != req["task"] || pinned == nullptr || pinned->sha256 != sha ||
      pinned->bytes != bytes) {
    return FailedPrecondition("partition '" + id + "' (sha256 " + sha +
                              ") is not pinned by the signed manifest of task '" + m.task +
                              "'; nothing was installed");
  }
  const int64_t installed = doc_.value("signed_version", int64_t{0});
  if (m.version < installed) {
    return FailedPrecondition("signed manifest version " + std::to_string(m.version) +
                              " is older than the installed version " +
                              std::to_string(installed) +
                              " (a rollback); the installed partitions stay in use");
  }
  return nlohmann::json{{"by", m.signed_by}, {"version", m.version}};
}

StatusOr<int64_t> PartitionStore::Write(int64_t offset, const uint8_t* data, size_t n) {
  if (upload_.is_null()) return FailedPrecondition("PUT_CHUNK without PUT_BEGIN");
  const std::string part = IncomingPath();
  std::error_code ec;
  const int64_t have = fs::exists(part) ? static_cast<int64_t>(fs::file_size(part, ec)) : 0;
  if (offset < 0 || offset > have) {
    return InvalidArgument("chunk at offset " + std::to_string(offset) + " but the device has " +
                           std::to_string(have) + " bytes; resume from there");
  }
  const int64_t bytes = upload_["entry"]["bytes"];
  if (offset + static_cast<int64_t>(n) > bytes) {
    return InvalidArgument("chunk runs past the partition's " + std::to_string(bytes) + " bytes");
  }
  const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT, 0644);
  if (fd < 0) return Internal("cannot write " + part);
  bool ok = ::ftruncate(fd, offset) == 0 &&
            ::pwrite(fd, data, n, offset) == static_cast<ssize_t>(n) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return ResourceExhausted("writing the upload failed (disk full?)");
  return offset + static_cast<int64_t>(n);
}

Status PartitionStore::Commit() {
  if (upload_.is_null()) return FailedPrecondition("PUT_COMMIT without PUT_BEGIN");
  nlohmann::json entry = upload_["entry"];
  const std::string part = IncomingPath();
  std::ifstream f(part, std::ios::binary);
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), {});
  const int64_t bytes = entry["bytes"];
  if (static_cast<int64_t>(data.size()) != bytes) {
    return FailedPrecondition("upload has " + std::to_string(data.size()) + " of " +
                              std::to_string(bytes) + " bytes; send the rest first");
  }
  const std::string digest = Sha256Hex(data.data(), data.size());
  if (digest != upload_sha_) {
    std::error_code ec;
    fs::remove(part, ec);
    upload_ = nullptr;
    return Corrupt("upload sha256 is " + digest + ", the entry says " + upload_sha_ +
                   "; nothing was installed");
  }
  Step("upload verified");
  const std::string id = entry["id"];
  const std::string file = id + "-" + upload_sha_.substr(0, 12) + ".pte";
  const fs::path final_path = fs::path(config_.dir) / file;
  std::error_code ec;
  fs::rename(part, final_path, ec);
  if (ec) return Internal("installing " + file + ": " + ec.message());
  Step("program renamed");
  entry["file"] = file;
  nlohmann::json doc = doc_;
  doc["task"] = upload_["task"];
  doc["labels"] = upload_["labels"];
  std::string old_file;
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& p : doc["partitions"]) {
    if (p["id"] == id) {
      old_file = p.value("file", "");
    } else {
      parts.push_back(p);
    }
  }
  if (upload_.contains("signed")) {
    entry["signed_by"] = upload_["signed"]["by"];
    doc["signed_version"] =
        std::max<int64_t>(doc.value("signed_version", int64_t{0}), upload_["signed"]["version"]);
  }
  parts.push_back(entry);
  doc["partitions"] = parts;
  doc["version"] = doc.value("version", 1) + 1;
  KC_RETURN_IF_ERROR(WriteManifest(doc));
  if (!old_file.empty() && old_file != file) fs::remove(fs::path(config_.dir) / old_file, ec);
  upload_ = nullptr;
  return Status::Ok();
}

Status PartitionStore::Remove(const std::string& id) {
  nlohmann::json doc = doc_;
  nlohmann::json parts = nlohmann::json::array();
  std::string file;
  for (const auto& p : doc["partitions"]) {
    if (p["id"] == id) {
      file = p.value("file", "");
    } else {
      parts.push_back(p);
    }
  }
  if (file.empty()) return NotFound("the store has no partition '" + id + "'");
  doc["partitions"] = parts;
  if (parts.empty()) doc["task"] = "";
  doc["version"] = doc.value("version", 1) + 1;
  KC_RETURN_IF_ERROR(WriteManifest(doc));
  std::error_code ec;
  fs::remove(fs::path(config_.dir) / file, ec);
  return Status::Ok();
}

Status PartitionStore::WriteManifest(const nlohmann::json& doc) {
  if (!doc["partitions"].empty()) {
    auto check = Manifest::Parse(doc.dump());
    if (!check.ok()) return Internal("refusing to write an invalid manifest: " + check.status().message());
  }
  const std::string path = (fs::path(config_.dir) / "manifest.json").string();
  KC_RETURN_IF_ERROR(WriteFileSynced(path + ".tmp", doc.dump(1)));
  Step("manifest.json.tmp written");
  if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0) {
    return Internal("cannot replace " + path);
  }
  Step("manifest.json replaced");
  SyncDir(config_.dir);
  doc_ = doc;
  return Status::Ok();
}

}  // namespace knowcache::device
