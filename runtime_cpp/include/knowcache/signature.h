// Signed manifests: Ed25519 signatures over a manifest's exact bytes.
//
// A manifest pins every program's size and sha256, so a signed manifest pins
// the programs. The signature is detached (`manifest.sig` beside
// `manifest.json`, or the X-Knowcache-Signature header of GET /v1/{task}/manifest)
// and is one line of JSON written by `knowcache keys sign` / `export --sign`:
//
//   {"alg": "ed25519", "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}
//
// It covers the manifest's bytes as served, so no JSON canonicalization is
// needed between the Python signer and this verifier. A key id is the first 16
// hex digits of the sha256 of the 32 raw public-key bytes. Trusted keys are
// given as base64 of those 32 bytes (a `.pub` file's line); several may be
// trusted at once, so a new key can be rolled out before the old one retires.
// The threat model is docs/security.md.
//
// Verification uses OpenSSL 3's EVP (EVP_PKEY_new_raw_public_key +
// EVP_DigestVerify). ManifestVerifier is immutable after Create: safe to share
// between threads.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "knowcache/manifest.h"
#include "knowcache/status.h"

namespace knowcache {

inline constexpr char kSignatureFileName[] = "manifest.sig";
inline constexpr char kSignatureHeader[] = "X-Knowcache-Signature";

struct SignatureConfig {
  /// Trusted Ed25519 public keys, each base64 of the 32 raw bytes. When any is
  /// given, every manifest must carry a valid signature by one of them.
  std::vector<std::string> trusted_keys;
  /// Refuse to start without trusted keys: a deployment that must never run an
  /// unsigned program sets this so a missing key is an error, not a silent "off".
  bool require_signature = false;

  bool enabled() const { return !trusted_keys.empty(); }
  /// InvalidArgument for a key that is not base64 of 32 bytes, or
  /// require_signature without keys.
  Status Validate() const;
  std::string ToString() const;  // key ids, never the keys' bytes in full
};

/// The id of a raw 32-byte public key: the first 16 hex digits of its sha256.
std::string KeyId(const uint8_t* raw, size_t size);

/// Checks manifest signatures against a set of trusted keys.
class ManifestVerifier {
 public:
  /// A verifier for `config`'s keys; one with no keys is disabled (enabled()
  /// false) and is only useful to say "no checks".
  static StatusOr<ManifestVerifier> Create(const SignatureConfig& config);
  ManifestVerifier() = default;

  bool enabled() const { return !keys_.empty(); }
  bool Trusts(const std::string& key_id) const { return keys_.count(key_id) > 0; }
  /// The trusted key ids, comma-separated (for messages).
  std::string KeyIds() const;

  /// The id of the trusted key whose signature `signature` (a manifest.sig
  /// line; empty when the manifest came unsigned) verifies over `manifest_bytes`.
  /// FailedPrecondition when unsigned or signed by an untrusted key; Corrupt
  /// when the signature is malformed or does not verify.
  StatusOr<std::string> Verify(const std::string& manifest_bytes,
                               const std::string& signature) const;

  /// Verify, then Manifest::Parse; the manifest's `signed_by` is the key id.
  /// With no keys, parses without checking (signed_by stays empty).
  StatusOr<Manifest> ParseSigned(const std::string& manifest_bytes,
                                 const std::string& signature) const;
  /// `directory`/manifest.json with `directory`/manifest.sig (absent: unsigned),
  /// through ParseSigned; the manifest's directory is set.
  StatusOr<Manifest> LoadSigned(const std::string& directory) const;

 private:
  std::map<std::string, std::array<uint8_t, 32>> keys_;  // by key id
};

}  // namespace knowcache
