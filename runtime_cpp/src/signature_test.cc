#include "knowcache/signature.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "test_signing.h"

namespace knowcache {
namespace {

using testing::TestSigner;

const std::string kManifest = R"({"schema_version": 1, "task": "kws", "version": 4,
  "labels": ["a", "b"], "partitions": [{"id": "cached", "role": "cached", "file": "c.pte",
  "labels": ["a", "b"], "input": {"dtype": "float32", "shape": [1, 4]}, "bytes": 10, "threshold": 0.5,
  "sha256": ")" + std::string(64, 'a') + R"("}]}
)";

ManifestVerifier Trusting(std::vector<std::string> keys) {
  SignatureConfig config;
  config.trusted_keys = std::move(keys);
  auto v = ManifestVerifier::Create(config);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() ? std::move(v).value() : ManifestVerifier();
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Signature, AGoodSignatureVerifiesAndNamesItsKey) {
  TestSigner signer;
  ManifestVerifier v = Trusting({signer.PublicKey()});
  auto id = v.Verify(kManifest, signer.Sign(kManifest));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, signer.KeyId());
  EXPECT_EQ(id->size(), 16u);
  auto m = v.ParseSigned(kManifest, signer.Sign(kManifest) + "\n");  // a file's newline
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->signed_by, signer.KeyId());
  EXPECT_EQ(m->version, 4);
}

TEST(Signature, OneChangedByteOfTheManifestIsRefused) {
  TestSigner signer;
  ManifestVerifier v = Trusting({signer.PublicKey()});
  const std::string sig = signer.Sign(kManifest);
  std::string tampered = kManifest;
  tampered[tampered.find("\"version\": 4") + 11] = '5';
  auto id = v.Verify(tampered, sig);
  EXPECT_EQ(id.status().code(), StatusCode::kCorrupt);
  EXPECT_TRUE(Contains(id.status().message(), "does not verify")) << id.status().message();
  // Even one byte of whitespace counts: the signature is over the exact bytes.
  EXPECT_FALSE(v.Verify(kManifest + " ", sig).ok());
  EXPECT_FALSE(v.ParseSigned(tampered, sig).ok());
}

TEST(Signature, ASignatureByAnotherKeyUnderATrustedIdIsRefused) {
  TestSigner trusted, attacker;
  ManifestVerifier v = Trusting({trusted.PublicKey()});
  auto id = v.Verify(kManifest, attacker.Sign(kManifest, trusted.KeyId()));
  EXPECT_EQ(id.status().code(), StatusCode::kCorrupt);
  EXPECT_TRUE(Contains(id.status().message(), "does not verify")) << id.status().message();
}

TEST(Signature, AnUntrustedKeyIdIsRefusedNamingIt) {
  TestSigner trusted, other;
  ManifestVerifier v = Trusting({trusted.PublicKey()});
  auto id = v.Verify(kManifest, other.Sign(kManifest));
  EXPECT_EQ(id.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(id.status().message(), other.KeyId() + ", which is not trusted"))
      << id.status().message();
  EXPECT_TRUE(Contains(id.status().message(), trusted.KeyId())) << id.status().message();
}

TEST(Signature, AMissingSignatureIsRefusedWhenKeysAreTrusted) {
  TestSigner signer;
  ManifestVerifier v = Trusting({signer.PublicKey()});
  for (const std::string& none : {std::string(), std::string(" \n")}) {
    auto m = v.ParseSigned(kManifest, none);
    EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_TRUE(Contains(m.status().message(), "not signed")) << m.status().message();
  }
}

TEST(Signature, WithoutKeysNothingIsCheckedAndNothingIsMarkedSigned) {
  ManifestVerifier v = Trusting({});
  EXPECT_FALSE(v.enabled());
  auto m = v.ParseSigned(kManifest, "");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->signed_by.empty());
}

TEST(Signature, RotationTrustsEitherKeyAndDroppingOneRefusesIt) {
  TestSigner old_key, new_key;
  ManifestVerifier both = Trusting({old_key.PublicKey(), new_key.PublicKey()});
  auto a = both.Verify(kManifest, old_key.Sign(kManifest));
  auto b = both.Verify(kManifest, new_key.Sign(kManifest));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, old_key.KeyId());
  EXPECT_EQ(*b, new_key.KeyId());
  ManifestVerifier retired = Trusting({new_key.PublicKey()});
  EXPECT_TRUE(retired.Verify(kManifest, new_key.Sign(kManifest)).ok());
  EXPECT_EQ(retired.Verify(kManifest, old_key.Sign(kManifest)).status().code(),
            StatusCode::kFailedPrecondition);
}

struct Malformed {
  const char* name;
  std::string line;
  const char* says;
};

class SignatureMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(SignatureMalformed, IsRefusedAsMalformed) {
  TestSigner signer;
  ManifestVerifier v = Trusting({signer.PublicKey()});
  auto id = v.Verify(kManifest, GetParam().line);
  EXPECT_EQ(id.status().code(), StatusCode::kCorrupt) << id.status().ToString();
  EXPECT_TRUE(Contains(id.status().message(), "malformed")) << id.status().message();
  EXPECT_TRUE(Contains(id.status().message(), GetParam().says)) << id.status().message();
}

std::string WithSignature(const std::string& b64, const std::string& alg = "ed25519") {
  return R"({"alg": ")" + alg + R"(", "key_id": "0123456789abcdef", "signature": ")" + b64 +
         R"("})";
}

INSTANTIATE_TEST_SUITE_P(
    Signature, SignatureMalformed,
    ::testing::Values(
        Malformed{"NotJson", "ed25519 AAAA", "not a JSON object"},
        Malformed{"JsonList", "[1, 2]", "not a JSON object"},
        Malformed{"OtherAlg", WithSignature(std::string(86, 'A') + "==", "rsa"), "alg"},
        Malformed{"NoKeyId", R"({"alg": "ed25519", "signature": "AAAA"})", "key_id"},
        Malformed{"NotBase64", WithSignature(std::string(86, '!') + "=="), "base64 of 64"},
        Malformed{"ShortSignature", WithSignature("AAAA"), "base64 of 64"},
        Malformed{"BadPadding", WithSignature(std::string(85, 'A') + "=A="), "base64 of 64"}),
    [](const ::testing::TestParamInfo<Malformed>& info) { return std::string(info.param.name); });

TEST(Signature, ConfigRefusesAKeyThatIsNotBase64Of32BytesAndRequireWithoutKeys) {
  TestSigner signer;
  SignatureConfig c;
  c.trusted_keys = {signer.PublicKey(), "AAAA"};
  Status s = c.Validate();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.message(), "trusted key 1")) << s.message();
  EXPECT_FALSE(ManifestVerifier::Create(c).ok());
  SignatureConfig required;
  required.require_signature = true;
  EXPECT_TRUE(Contains(required.Validate().message(), "no trusted key"));
  required.trusted_keys = {signer.PublicKey() + "\n"};  // a .pub file's line, newline and all
  EXPECT_TRUE(required.Validate().ok());
  EXPECT_TRUE(Contains(required.ToString(), signer.KeyId()));
}

TEST(Signature, LoadSignedReadsManifestSigBesideTheManifest) {
  TestSigner signer;
  ManifestVerifier v = Trusting({signer.PublicKey()});
  std::string dir = ::testing::TempDir() + "signed_models";
  std::remove((dir + "/manifest.sig").c_str());
  ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
  std::ofstream(dir + "/manifest.json", std::ios::binary) << kManifest;
  auto unsigned_ = v.LoadSigned(dir);
  EXPECT_EQ(unsigned_.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(unsigned_.status().message(), dir + "/manifest.json: "));
  std::ofstream(dir + "/manifest.sig") << signer.Sign(kManifest) << "\n";
  auto m = v.LoadSigned(dir);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->signed_by, signer.KeyId());
  EXPECT_EQ(m->directory, dir);
}

}  // namespace
}  // namespace knowcache
