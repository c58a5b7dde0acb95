#include "knowcache/signature.h"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include <memory>

#include "knowcache/sha256.h"

namespace knowcache {
namespace {

using nlohmann::json;

constexpr size_t kPublicKeyBytes = 32;
constexpr size_t kSignatureBytes = 64;

// Strict base64 (RFC 4648, with padding); false on any other character.
bool DecodeBase64(const std::string& text, std::vector<uint8_t>* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.empty() || text.size() % 4 != 0) return false;
  out->clear();
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        v[j] = 0;
        ++pad;
      } else if (pad > 0 || (v[j] = value(c)) < 0) {
        return false;  // a character after padding, or not base64
      }
    }
    uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out->push_back(static_cast<uint8_t>(n >> 16));
    if (pad < 2) out->push_back(static_cast<uint8_t>(n >> 8));
    if (pad < 1) out->push_back(static_cast<uint8_t>(n));
  }
  return true;
}

std::string Trim(const std::string& s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

StatusOr<std::array<uint8_t, kPublicKeyBytes>> ParsePublicKey(const std::string& text,
                                                              size_t index) {
  std::vector<uint8_t> raw;
  if (!DecodeBase64(Trim(text), &raw) || raw.size() != kPublicKeyBytes) {
    return InvalidArgument("trusted key " + std::to_string(index) +
                           " is not an Ed25519 public key: it must be base64 of 32 bytes "
                           "(the line of a `knowcache keys generate` .pub file)");
  }
  std::array<uint8_t, kPublicKeyBytes> key;
  std::copy(raw.begin(), raw.end(), key.begin());
  return key;
}

bool VerifyEd25519(const std::array<uint8_t, kPublicKeyBytes>& key,
                   const std::vector<uint8_t>& signature, const std::string& message) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pkey(
      EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size()),
      EVP_PKEY_free);
  if (!pkey) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                              EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) {
    return false;
  }
  // Ed25519 is one-shot: EVP_DigestVerify, not Update/Final.
  return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                          reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

}  // namespace

std::string KeyId(const uint8_t* raw, size_t size) { return Sha256Hex(raw, size).substr(0, 16); }

Status SignatureConfig::Validate() const {
  if (require_signature && trusted_keys.empty()) {
    return InvalidArgument("require_signature is set but no trusted key is given; pass the "
                           "public key(s) that sign the manifests (trusted_keys)");
  }
  for (size_t i = 0; i < trusted_keys.size(); ++i) {
    auto key = ParsePublicKey(trusted_keys[i], i);
    if (!key.ok()) return key.status();
  }
  return Status::Ok();
}

std::string SignatureConfig::ToString() const {
  if (trusted_keys.empty()) {
    return std::string("signatures=off") + (require_signature ? " (required!)" : "");
  }
  auto verifier = ManifestVerifier::Create(*this);
  return "signatures=required(keys " + (verifier.ok() ? verifier->KeyIds() : "invalid") + ")";
}

StatusOr<ManifestVerifier> ManifestVerifier::Create(const SignatureConfig& config) {
  KC_RETURN_IF_ERROR(config.Validate());
  ManifestVerifier v;
  for (size_t i = 0; i < config.trusted_keys.size(); ++i) {
    KC_ASSIGN_OR_RETURN(auto key, ParsePublicKey(config.trusted_keys[i], i));
    v.keys_[KeyId(key.data(), key.size())] = key;
  }
  return v;
}

std::string ManifestVerifier::KeyIds() const {
  std::string out;
  for (const auto& [id, _] : keys_) out += (out.empty() ? "" : ", ") + id;
  return out;
}

StatusOr<std::string> ManifestVerifier::Verify(const std::string& manifest_bytes,
                                               const std::string& signature) const {
  const std::string line = Trim(signature);
  if (line.empty()) {
    return FailedPrecondition("the manifest is not signed (no manifest.sig / " +
                              std::string(kSignatureHeader) +
                              ") and trusted keys are configured; sign it with "
                              "`knowcache keys sign`");
  }
  json doc = json::parse(line, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Corrupt("the manifest signature is malformed: not a JSON object");
  }
  auto alg = doc.find("alg");
  auto key_id = doc.find("key_id");
  auto sig = doc.find("signature");
  if (alg == doc.end() || !alg->is_string() || alg->get<std::string>() != "ed25519") {
    return Corrupt("the manifest signature is malformed: alg must be \"ed25519\"");
  }
  if (key_id == doc.end() || !key_id->is_string()) {
    return Corrupt("the manifest signature is malformed: key_id must be a string");
  }
  std::vector<uint8_t> sig_bytes;
  if (sig == doc.end() || !sig->is_string() || !DecodeBase64(sig->get<std::string>(), &sig_bytes) ||
      sig_bytes.size() != kSignatureBytes) {
    return Corrupt("the manifest signature is malformed: signature must be base64 of 64 bytes");
  }
  const std::string id = key_id->get<std::string>();
  auto key = keys_.find(id);
  if (key == keys_.end()) {
    return FailedPrecondition("the manifest is signed by key " + id +
                              ", which is not trusted (trusted: " + KeyIds() + ")");
  }
  if (!VerifyEd25519(key->second, sig_bytes, manifest_bytes)) {
    return Corrupt("the manifest signature by key " + id +
                   " does not verify: the manifest or its signature was altered");
  }
  return id;
}

StatusOr<Manifest> ManifestVerifier::ParseSigned(const std::string& manifest_bytes,
                                                 const std::string& signature) const {
  std::string signed_by;
  if (enabled()) {
    KC_ASSIGN_OR_RETURN(signed_by, Verify(manifest_bytes, signature));
  }
  KC_ASSIGN_OR_RETURN(Manifest m, Manifest::Parse(manifest_bytes));
  m.signed_by = signed_by;
  return m;
}

StatusOr<Manifest> ManifestVerifier::LoadSigned(const std::string& directory) const {
  const std::string path = directory + "/manifest.json";
  KC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  std::string signature;  // read only when it is checked
  if (enabled()) {
    auto sig = ReadFileBytes(directory + "/" + kSignatureFileName);
    if (sig.ok()) {
      signature.assign(sig->begin(), sig->end());
    } else if (sig.status().code() != StatusCode::kNotFound) {
      return sig.status();
    }
  }
  auto parsed = ParseSigned(std::string(bytes.begin(), bytes.end()), signature);
  if (!parsed.ok()) return Status(parsed.status().code(), path + ": " + parsed.status().message());
  Manifest m = std::move(parsed).value();
  m.directory = directory;
  return m;
}

}  // namespace knowcache
