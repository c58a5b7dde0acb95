// Test helper: an Ed25519 key generated at test time (OpenSSL 3) that signs
// manifests the way `knowcache keys sign` does. Not part of the library.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "knowcache/signature.h"

namespace knowcache::testing {

class TestSigner {
 public:
  TestSigner() : key_(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), EVP_PKEY_free) {
    size_t len = raw_.size();
    EVP_PKEY_get_raw_public_key(key_.get(), raw_.data(), &len);
  }

  /// The trusted-key form: base64 of the 32 raw public bytes.
  std::string PublicKey() const { return Base64(raw_.data(), raw_.size()); }
  std::string KeyId() const { return knowcache::KeyId(raw_.data(), raw_.size()); }

  /// The raw 64-byte signature over `message`.
  std::vector<uint8_t> SignRaw(const std::string& message) const {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                EVP_MD_CTX_free);
    EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get());
    std::vector<uint8_t> sig(64);
    size_t len = sig.size();
    EVP_DigestSign(ctx.get(), sig.data(), &len,
                   reinterpret_cast<const unsigned char*>(message.data()), message.size());
    return sig;
  }

  /// A manifest.sig line over `message`, naming `key_id` (this key's by default).
  std::string Sign(const std::string& message, const std::string& key_id = "") const {
    auto sig = SignRaw(message);
    return R"({"alg": "ed25519", "key_id": ")" + (key_id.empty() ? KeyId() : key_id) +
           R"(", "signature": ")" + Base64(sig.data(), sig.size()) + R"("})";
  }

  static std::string Base64(const uint8_t* data, size_t n) {
    std::string out(4 * ((n + 2) / 3) + 1, '\0');
    int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data,
                                  static_cast<int>(n));
    out.resize(written);
    return out;
  }

 private:
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key_;
  std::array<uint8_t, 32> raw_{};
};

}  // namespace knowcache::testing
