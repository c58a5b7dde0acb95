#include "knowcache/cloud_client.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>

#include "knowcache/log.h"
#include "knowcache/signature.h"

namespace knowcache {

namespace {

// A float32 tensor as 16-bit PCM, little-endian int16 q with value q / 32768, when
// that is exact: every value a multiple of 2^-15 in [-1, 1), none -0 (what 16-bit
// audio converted to float is). False otherwise; `out` (may be null: only check)
// then holds nothing useful.
bool EncodePcm16(const TensorView& input, std::string* out) {
  if (input.dtype != DType::kFloat32) return false;
  const size_t n = input.nbytes / sizeof(float);
  if (out) out->resize(2 * n);
  const char* data = static_cast<const char*>(input.data);
  for (size_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, data + i * sizeof(float), sizeof(float));
    const float q = v * 32768.0f;  // a power of two: exact
    if (!(q >= -32768.0f && q <= 32767.0f) || q != std::nearbyint(q) ||
        (q == 0.0f && std::signbit(v))) {
      return false;
    }
    if (!out) continue;
    const auto bits = static_cast<uint16_t>(static_cast<int16_t>(q));
    (*out)[2 * i] = static_cast<char>(bits & 0xff);
    (*out)[2 * i + 1] = static_cast<char>(bits >> 8);
  }
  return true;
}

}  // namespace

using nlohmann::json;

Status CloudClientConfig::Validate() const {
  if (base_url.rfind("http://", 0) != 0 && base_url.rfind("https://", 0) != 0) {
    return InvalidArgument("cloud URL '" + base_url +
                           "' must start with http:// or https://");
  }
  if (connect_timeout_ms <= 0 || read_timeout_ms <= 0) {
    return InvalidArgument("cloud timeouts must be positive milliseconds");
  }
  if (max_response_bytes <= 0) return InvalidArgument("max_response_bytes must be > 0");
  if (max_idle_connections < 0) return InvalidArgument("max_idle_connections must be >= 0");
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
  if (tls()) {
    return InvalidArgument("cloud URL '" + base_url + "' is https:// but this build of the "
                           "runtime has no TLS (cpp-httplib without OpenSSL)");
  }
#endif
  if (!ca_file.empty()) {
    if (!tls()) {
      return InvalidArgument("a CA file is given but the cloud URL '" + base_url +
                             "' is plain http://; use https:// (nothing falls back to HTTP)");
    }
    if (!std::ifstream(ca_file).good()) {
      return NotFound("CA file '" + ca_file + "' cannot be read");
    }
  }
  return Status::Ok();
}

std::string CloudClientConfig::ToString() const {
  return "CloudClientConfig(base_url=" + base_url + ", token=" + (token.empty() ? "none" : "***") +
         (ca_file.empty() ? std::string() : ", ca_file=" + ca_file) +
         ", connect_timeout_ms=" + std::to_string(connect_timeout_ms) +
         ", read_timeout_ms=" + std::to_string(read_timeout_ms) +
         ", pcm16_uploads=" + (pcm16_uploads ? "true" : "false") + ")";
}

class CloudClientImpl {
 public:
  explicit CloudClientImpl(CloudClientConfig c) : config(std::move(c)) {
    // "http://host:port/prefix" -> origin "http://host:port", prefix "/prefix".
    auto scheme_end = config.base_url.find("://") + 3;
    auto slash = config.base_url.find('/', scheme_end);
    origin = config.base_url.substr(0, slash);
    if (slash != std::string::npos) prefix = config.base_url.substr(slash);
    while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  }

  // A connection from the pool, or a new one. Returned by Release.
  std::unique_ptr<httplib::Client> Acquire() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        auto c = std::move(idle.back());
        idle.pop_back();
        return c;
      }
    }
    auto c = std::make_unique<httplib::Client>(origin);
    c->set_connection_timeout(std::chrono::milliseconds(config.connect_timeout_ms));
    c->set_read_timeout(std::chrono::milliseconds(config.read_timeout_ms));
    c->set_write_timeout(std::chrono::milliseconds(config.read_timeout_ms));
    c->set_keep_alive(true);
    // Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds
    // the body until the server's delayed ACK (up to 40 ms per request on Linux).
    c->set_tcp_nodelay(true);
    if (!config.token.empty()) c->set_bearer_token_auth(config.token);
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
    if (config.tls()) {
      c->enable_server_certificate_verification(true);
      if (!config.ca_file.empty()) c->set_ca_cert_path(config.ca_file.c_str());
    }
#endif
    return c;
  }

  void Release(std::unique_ptr<httplib::Client> c) {
    std::lock_guard<std::mutex> lock(mu);
    if (static_cast<int>(idle.size()) < config.max_idle_connections) idle.push_back(std::move(c));
  }

  std::string Url(const std::string& path) const { return origin + prefix + path; }

  /// `started`: when the request began; a read error before the read timeout is a
  /// connection the other side (or the link) closed, not a slow cloud.
  Status TransportError(httplib::Error err, const std::string& path,
                        const httplib::Client& client,
                        std::chrono::steady_clock::time_point started) const {
    std::string what = "cloud request " + Url(path) + " failed: " + httplib::to_string(err);
    switch (err) {
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
      case httplib::Error::SSLServerVerification: {
        const long result = client.get_openssl_verify_result();
        return Unavailable(
            what + " (TLS: the cloud's certificate " +
            (result == X509_V_OK ? std::string("does not name the host in the URL")
                                 : std::string("does not verify: ") +
                                       X509_verify_cert_error_string(result)) +
            "; checked against " +
            (config.ca_file.empty() ? std::string("the system's CAs") : config.ca_file) + ")");
      }
      case httplib::Error::SSLLoadingCerts:
        return Unavailable(what + " (TLS: the CA certificates in " +
                           (config.ca_file.empty() ? std::string("the system store")
                                                   : config.ca_file) +
                           " could not be loaded)");
      case httplib::Error::SSLConnection:
        return Unavailable(what + " (TLS handshake failed: is the cloud speaking https?)");
#endif
      case httplib::Error::ConnectionTimeout:
        return DeadlineExceeded(what + " (connect timeout " +
                                std::to_string(config.connect_timeout_ms) + " ms)");
      case httplib::Error::Read: {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - started).count();
        if (ms < config.read_timeout_ms) {
          return Unavailable(what + " (the connection closed after " + std::to_string(ms) +
                             " ms, before a complete answer)");
        }
        return DeadlineExceeded(what + " (no complete answer within " +
                                std::to_string(config.read_timeout_ms) + " ms)");
      }
      default:
        return Unavailable(what);
    }
  }

  static Status HttpError(const httplib::Response& res, const std::string& url) {
    std::string detail;
    json body = json::parse(res.body, nullptr, false);
    if (!body.is_discarded() && body.is_object() && body.contains("detail")) {
      detail = body["detail"].is_string() ? body["detail"].get<std::string>()
                                          : body["detail"].dump();
    } else {
      detail = res.body.substr(0, 200);
    }
    std::string what = "cloud answered HTTP " + std::to_string(res.status) + " for " + url +
                       (detail.empty() ? "" : ": " + detail);
    if (res.status == 401 || res.status == 403) {
      return FailedPrecondition(what + " (check the bearer token)");
    }
    if (res.status == 404) return NotFound(what);
    if (res.status == 400 || res.status == 413 || res.status == 415 || res.status == 422) {
      return InvalidArgument(what);
    }
    return Unavailable(what);
  }

  // POSTs `body` to an infer route and parses the answer.
  StatusOr<CloudAnswer> PostInfer(const std::string& path, const httplib::Headers& headers,
                                  const void* body, size_t nbytes) {
    auto client = Acquire();
    const auto started = std::chrono::steady_clock::now();
    auto res = client->Post((prefix + path).c_str(), headers, static_cast<const char*>(body),
                            nbytes, "application/octet-stream");
    if (!res) return TransportError(res.error(), path, *client, started);
    Release(std::move(client));
    if (res->status != 200) return HttpError(*res, Url(path));

    json answer = json::parse(res->body, nullptr, false);
    const std::string where = "cloud answer from " + Url(path);
    if (answer.is_discarded() || !answer.is_object()) {
      return ProtocolError(where + " is not a JSON object");
    }
    CloudAnswer a;
    a.uplink_bytes = static_cast<int64_t>(nbytes);
    auto label = answer.find("label");
    auto index = answer.find("index");
    auto conf = answer.find("confidence");
    if (label == answer.end() || !label->is_string()) return ProtocolError(where + " lacks a string 'label'");
    if (index == answer.end() || !index->is_number_integer()) return ProtocolError(where + " lacks an integer 'index'");
    if (conf == answer.end() || !conf->is_number()) return ProtocolError(where + " lacks a numeric 'confidence'");
    a.label = label->get<std::string>();
    a.index = index->get<int>();
    a.confidence = conf->get<float>();
    auto hint = answer.find("partition_hint");
    if (hint != answer.end() && hint->is_string()) a.partition_hint = hint->get<std::string>();
    auto version = answer.find("model_version");
    if (version != answer.end()) {
      a.model_version = version->is_string() ? version->get<std::string>() : version->dump();
    }
    auto server_ms = answer.find("server_ms");
    if (server_ms != answer.end() && server_ms->is_number()) a.server_ms = server_ms->get<double>();
    return a;
  }

  // GET with a size cap; the body lands in *out.
  Status Get(const std::string& path, std::string* out, httplib::Headers* headers_out) {
    auto client = Acquire();
    bool too_big = false;
    out->clear();
    const auto started = std::chrono::steady_clock::now();
    auto res = client->Get(
        (prefix + path).c_str(), httplib::Headers{},
        [&](const char* data, size_t n) {
          if (static_cast<int64_t>(out->size() + n) > config.max_response_bytes) {
            too_big = true;
            return false;
          }
          out->append(data, n);
          return true;
        });
    if (too_big) {
      return ResourceExhausted("cloud response for " + Url(path) + " exceeds " +
                               std::to_string(config.max_response_bytes) + " bytes");
    }
    if (!res) return TransportError(res.error(), path, *client, started);
    Release(std::move(client));
    if (res->status != 200) {
      res->body = *out;
      return HttpError(*res, Url(path));
    }
    if (headers_out) *headers_out = res->headers;
    return Status::Ok();
  }

  CloudClientConfig config;
  std::string origin;
  std::string prefix;
  std::mutex mu;
  std::vector<std::unique_ptr<httplib::Client>> idle;
};

CloudClient::CloudClient(std::unique_ptr<CloudClientImpl> impl) : impl_(std::move(impl)) {}
CloudClient::~CloudClient() = default;

StatusOr<std::unique_ptr<CloudClient>> CloudClient::Create(CloudClientConfig config) {
  KC_RETURN_IF_ERROR(config.Validate());
  return std::unique_ptr<CloudClient>(
      new CloudClient(std::make_unique<CloudClientImpl>(std::move(config))));
}

const CloudClientConfig& CloudClient::config() const { return impl_->config; }

int64_t RawUploadBytes(const TensorView& input, const CloudClientConfig& config) {
  const auto bytes = static_cast<int64_t>(input.nbytes);
  return config.pcm16_uploads && EncodePcm16(input, nullptr) ? bytes / 2 : bytes;
}

StatusOr<CloudAnswer> CloudClient::Infer(const std::string& task, const TensorView& input) {
  KC_RETURN_IF_ERROR(input.Validate());
  httplib::Headers headers{{"X-Knowcache-Dtype", DTypeName(input.dtype)},
                           {"X-Knowcache-Shape", ShapeToString(input.shape, ',')}};
  std::string pcm16;
  if (impl_->config.pcm16_uploads && EncodePcm16(input, &pcm16)) {
    headers.emplace("X-Knowcache-Encoding", "pcm16");
    return impl_->PostInfer("/v1/" + task + "/infer", headers, pcm16.data(), pcm16.size());
  }
  return impl_->PostInfer("/v1/" + task + "/infer", headers, input.data, input.nbytes);
}

StatusOr<CloudAnswer> CloudBackend::InferFromStage(const std::string&, const SplitUpload&) {
  return FailedPrecondition("this cloud backend cannot resume a staged program from a stage");
}

StatusOr<CloudAnswer> CloudClient::InferFromStage(const std::string& task,
                                                  const SplitUpload& upload) {
  const TensorView view = upload.activation.view();
  KC_RETURN_IF_ERROR(view.Validate());
  char scale[32];
  std::snprintf(scale, sizeof(scale), "%.9g", upload.activation.scale);
  return impl_->PostInfer(
      "/v1/" + task + "/infer?from_stage=" + std::to_string(upload.from_stage),
      {{"X-Knowcache-Dtype", DTypeName(view.dtype)},
       {"X-Knowcache-Shape", ShapeToString(view.shape, ',')},
       {"X-Knowcache-Scale", scale},
       {"X-Knowcache-Staged-Version", std::to_string(upload.staged_version)}},
      view.data, view.nbytes);
}

StatusOr<ManifestDocument> CloudBackend::FetchManifestDocument(const std::string&) {
  return FailedPrecondition("this cloud backend does not serve manifest bytes and signatures, "
                            "so signed manifests cannot be checked");
}

StatusOr<ManifestDocument> CloudClient::FetchManifestDocument(const std::string& task) {
  ManifestDocument doc;
  httplib::Headers headers;
  KC_RETURN_IF_ERROR(impl_->Get("/v1/" + task + "/manifest", &doc.json, &headers));
  auto sig = headers.find(kSignatureHeader);
  if (sig != headers.end()) doc.signature = sig->second;
  return doc;
}

StatusOr<Manifest> CloudClient::FetchManifest(const std::string& task) {
  const std::string path = "/v1/" + task + "/manifest";
  KC_ASSIGN_OR_RETURN(ManifestDocument doc, FetchManifestDocument(task));
  auto manifest = Manifest::Parse(doc.json);
  if (!manifest.ok()) {
    return ProtocolError("manifest from " + impl_->Url(path) + " is invalid: " +
                         manifest.status().message());
  }
  return manifest;
}

StatusOr<std::vector<uint8_t>> CloudClient::FetchPartition(const std::string& task,
                                                           const std::string& id) {
  std::string body;
  httplib::Headers headers;
  const std::string path = "/v1/" + task + "/partitions/" + id;
  KC_RETURN_IF_ERROR(impl_->Get(path, &body, &headers));
  auto etag = headers.find("ETag");
  if (etag != headers.end()) {
    KC_LOG(kDebug, "fetched %s: %zu bytes, ETag %s", path.c_str(), body.size(),
           etag->second.c_str());
  }
  return std::vector<uint8_t>(body.begin(), body.end());
}

}  // namespace knowcache
