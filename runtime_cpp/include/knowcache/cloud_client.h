// CloudClient: the device's HTTP link to the knowcache cloud tier.
//
// Protocol (served by `knowcache serve`):
//   POST /v1/{task}/infer           body: raw little-endian tensor bytes,
//        headers X-Knowcache-Dtype: float32, X-Knowcache-Shape: 1,16000
//        -> {"label", "index", "confidence", "partition_hint",
//            "model_version", "server_ms"}
//        A float32 tensor whose values are all multiples of 2^-15 in [-1, 1)
//        (16-bit audio) goes as X-Knowcache-Encoding: pcm16, little-endian
//        int16 q with value q / 32768: half the bytes, the same tensor.
//   POST /v1/{task}/infer?from_stage=k  split computing (split.h): body the int8
//        activation at cut k, headers X-Knowcache-Dtype: int8, X-Knowcache-Shape,
//        X-Knowcache-Scale (its per-tensor scale), X-Knowcache-Staged-Version
//        -> the same answer; 409 (kUnavailable) for another staged program
//        version or activation shape
//   GET  /v1/{task}/manifest        -> manifest JSON (see manifest.h); header
//        X-Knowcache-Signature: its detached signature when signed (signature.h)
//   GET  /v1/{task}/partitions/{id} -> .pte bytes, ETag = sha256
//
// Built on cpp-httplib with keep-alive connections. An https:// URL is spoken
// over TLS with the server's certificate verified (chain and host name)
// against `ca_file` or the system's CAs; a certificate that does not verify
// fails the request (kUnavailable, saying why). There is no fallback to plain
// HTTP, and a build without TLS refuses https:// URLs. Thread-safe: concurrent
// calls each borrow a connection from a small pool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "knowcache/manifest.h"
#include "knowcache/split.h"
#include "knowcache/status.h"
#include "knowcache/tensor.h"

namespace knowcache {

struct CloudAnswer {
  std::string label;
  int index = -1;
  float confidence = 0.0f;
  std::string partition_hint;  // empty when the cloud has no hint
  std::string model_version;
  double server_ms = 0.0;
  int64_t uplink_bytes = 0;    // request body bytes sent
};

/// A manifest as served: its exact bytes (what a signature covers) and the
/// detached signature sent with it (empty when the cloud serves it unsigned).
struct ManifestDocument {
  std::string json;
  std::string signature;
};

/// What the engine needs from a cloud. CloudClient is the HTTP
/// implementation; tests substitute scripted ones.
class CloudBackend {
 public:
  virtual ~CloudBackend() = default;
  virtual StatusOr<CloudAnswer> Infer(const std::string& task,
                                      const TensorView& input) = 0;
  /// Split computing: the cloud resumes the staged program from the upload's
  /// stage; a backend that cannot says so (FailedPrecondition).
  virtual StatusOr<CloudAnswer> InferFromStage(const std::string& task,
                                               const SplitUpload& upload);
  virtual StatusOr<Manifest> FetchManifest(const std::string& task) = 0;
  /// The manifest's bytes and signature, for a fetcher that verifies
  /// signatures; a backend that cannot give them says so (FailedPrecondition).
  virtual StatusOr<ManifestDocument> FetchManifestDocument(const std::string& task);
  virtual StatusOr<std::vector<uint8_t>> FetchPartition(
      const std::string& task, const std::string& id) = 0;
};

struct CloudClientConfig {
  std::string base_url;  // "http://127.0.0.1:8000"; empty disables the cloud
  std::string token;     // bearer token, empty for none; never logged or printed
  /// https only: PEM file of the CA certificates the cloud's certificate must
  /// chain to; empty: the system's CAs. Set with an http:// URL it is refused.
  std::string ca_file;
  int connect_timeout_ms = 1000;
  int read_timeout_ms = 5000;
  int64_t max_response_bytes = 256ll << 20;  // refuse larger downloads
  int max_idle_connections = 4;
  /// Send a float32 input that 16-bit PCM holds exactly (16-bit audio) as
  /// pcm16, half the bytes; off: always the raw float32 bytes (for a cloud
  /// older than the pcm16 encoding).
  bool pcm16_uploads = true;

  Status Validate() const;
  std::string ToString() const;  // never prints the token
  bool tls() const { return base_url.rfind("https://", 0) == 0; }
};

/// The body bytes CloudClient::Infer sends for `input` under `config`: half the
/// float32 bytes for an input that goes as pcm16, else its own bytes.
int64_t RawUploadBytes(const TensorView& input, const CloudClientConfig& config);

class CloudClientImpl;

class CloudClient final : public CloudBackend {
 public:
  static StatusOr<std::unique_ptr<CloudClient>> Create(CloudClientConfig config);
  ~CloudClient() override;

  StatusOr<CloudAnswer> Infer(const std::string& task,
                              const TensorView& input) override;
  StatusOr<CloudAnswer> InferFromStage(const std::string& task,
                                       const SplitUpload& upload) override;
  StatusOr<Manifest> FetchManifest(const std::string& task) override;
  StatusOr<ManifestDocument> FetchManifestDocument(const std::string& task) override;
  StatusOr<std::vector<uint8_t>> FetchPartition(const std::string& task,
                                                const std::string& id) override;
  const CloudClientConfig& config() const;

 private:
  explicit CloudClient(std::unique_ptr<CloudClientImpl> impl);
  std::unique_ptr<CloudClientImpl> impl_;
};

}  // namespace knowcache
