// CloudClient against a real HTTP server on loopback (cpp-httplib): paths
// under a base URL's prefix, the request it sends, the size cap, connection
// reuse, timeouts and how HTTP errors map to status codes; and over HTTPS
// with a CA and certificates the openssl CLI makes at test time: the right
// CA is accepted, a wrong CA, the system's CAs and a certificate for another
// host are refused, and nothing falls back to plain HTTP.
#include "knowcache/cloud_client.h"

#include <httplib.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

namespace knowcache {
namespace {

using Clock = std::chrono::steady_clock;

// A loopback server on a free port, running on its own thread until the test ends.
class Cloud {
 public:
  Cloud() {
    server.set_keep_alive_max_count(100);
  }
  ~Cloud() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
  // Starts serving; handlers must be registered before.
  void Start() {
    port = server.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port, 0);
    thread = std::thread([this] { server.listen_after_bind(); });
    for (int i = 0; i < 500 && !server.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_TRUE(server.is_running());
  }
  std::string Url(const std::string& prefix = "") const {
    return "http://127.0.0.1:" + std::to_string(port) + prefix;
  }
  // Remembers the client port of every request: one port per connection.
  void Record(const httplib::Request& req) {
    std::lock_guard<std::mutex> lock(mu);
    client_ports.insert(req.remote_port);
    ++requests;
  }

  httplib::Server server;
  std::thread thread;
  int port = -1;
  std::mutex mu;
  std::set<int> client_ports;
  int requests = 0;
};

std::unique_ptr<CloudClient> MakeClient(const std::string& url,
                                        void (*edit)(CloudClientConfig*) = nullptr) {
  CloudClientConfig config;
  config.base_url = url;
  if (edit) edit(&config);
  auto client = CloudClient::Create(config);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return std::move(client).value();
}

const float kInput[4] = {1.f, -2.f, 3.5f, 0.f};
TensorView InputView() { return {DType::kFloat32, {1, 4}, kInput, sizeof(kInput)}; }

const char* kAnswer =
    R"({"label": "yes", "index": 3, "confidence": 0.75, "partition_hint": "p2",
        "model_version": 7, "server_ms": 1.5})";

std::string ManifestJson(const std::string& task) {
  return R"({"schema_version": 1, "task": ")" + task + R"(", "labels": ["a", "b"],
      "partitions": [{"id": "p0", "role": "partition", "file": "p0.pte", "labels": ["a", "b"],
        "input": {"dtype": "float32", "shape": [1, 4]}, "threshold": 0.5, "bytes": 3,
        "sha256": ")" + std::string(64, 'c') + R"("}]})";
}

// A request header as the server saw it, "(none)" when absent.
std::string HeaderOf(const httplib::Headers& headers, const char* key) {
  auto it = headers.find(key);
  return it == headers.end() ? std::string("(none)") : it->second;
}

TEST(CloudClient, InferSendsTheTensorUnderTheBaseUrlsPrefix) {
  Cloud cloud;
  httplib::Headers seen;
  std::string body;
  cloud.server.Post("/edge/api/v1/kws/infer",
                    [&](const httplib::Request& req, httplib::Response& res) {
                      seen = req.headers;
                      body = req.body;
                      res.set_content(kAnswer, "application/json");
                    });
  cloud.Start();
  auto client = MakeClient(cloud.Url("/edge/api/"),
                           [](CloudClientConfig* c) { c->token = "s3cret"; });
  auto a = client->Infer("kws", InputView());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->label, "yes");
  EXPECT_EQ(a->index, 3);
  EXPECT_FLOAT_EQ(a->confidence, 0.75f);
  EXPECT_EQ(a->partition_hint, "p2");
  EXPECT_EQ(a->model_version, "7");
  EXPECT_DOUBLE_EQ(a->server_ms, 1.5);
  EXPECT_EQ(a->uplink_bytes, 16);

  auto header = [&](const char* key) { return HeaderOf(seen, key); };
  EXPECT_EQ(header("X-Knowcache-Dtype"), "float32");
  EXPECT_EQ(header("X-Knowcache-Shape"), "1,4");
  EXPECT_EQ(header("Authorization"), "Bearer s3cret");
  EXPECT_EQ(header("Content-Type"), "application/octet-stream");
  ASSERT_EQ(body.size(), sizeof(kInput));
  EXPECT_EQ(std::memcmp(body.data(), kInput, sizeof(kInput)), 0);
}

TEST(CloudClient, SixteenBitAudioGoesAsPcm16AndAnythingElseAsRawFloat32) {
  Cloud cloud;
  std::vector<httplib::Headers> seen;
  std::vector<std::string> bodies;
  cloud.server.Post("/v1/kws/infer", [&](const httplib::Request& req, httplib::Response& res) {
    seen.push_back(req.headers);
    bodies.push_back(req.body);
    res.set_content(kAnswer, "application/json");
  });
  cloud.Start();
  // int16 samples 1, -2, 32767, -32768, 0 as a waveform in [-1, 1)
  const float audio[5] = {1 / 32768.f, -2 / 32768.f, 32767 / 32768.f, -1.f, 0.f};
  auto client = MakeClient(cloud.Url());
  auto a = client->Infer("kws", {DType::kFloat32, {1, 5}, audio, sizeof(audio)});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->uplink_bytes, 10);
  EXPECT_EQ(HeaderOf(seen.back(), "X-Knowcache-Encoding"), "pcm16");
  EXPECT_EQ(HeaderOf(seen.back(), "X-Knowcache-Dtype"), "float32");
  EXPECT_EQ(HeaderOf(seen.back(), "X-Knowcache-Shape"), "1,5");
  EXPECT_EQ(bodies.back(), std::string("\x01\x00\xfe\xff\xff\x7f\x00\x80\x00\x00", 10));

  // Not exactly 16-bit: raw float32 bytes, no encoding header.
  const float finer[5] = {1 / 32768.f, 0.5f / 32768.f, 0.f, 0.f, 0.f};   // half a step
  const float loud[5] = {1.f, 0.f, 0.f, 0.f, 0.f};                     // 32768: out of range
  const float negative_zero[5] = {-0.f, 0.f, 0.f, 0.f, 0.f};
  for (const float* raw : {finer, loud, negative_zero}) {
    ASSERT_TRUE(client->Infer("kws", {DType::kFloat32, {1, 5}, raw, sizeof(audio)}).ok());
    EXPECT_EQ(HeaderOf(seen.back(), "X-Knowcache-Encoding"), "(none)");
    ASSERT_EQ(bodies.back().size(), sizeof(audio));
    EXPECT_EQ(std::memcmp(bodies.back().data(), raw, sizeof(audio)), 0);
  }
  // What split computing's "auto" weighs an activation against: the bytes sent.
  CloudClientConfig defaults;
  EXPECT_EQ(RawUploadBytes({DType::kFloat32, {1, 5}, audio, sizeof(audio)}, defaults), 10);
  EXPECT_EQ(RawUploadBytes({DType::kFloat32, {1, 5}, finer, sizeof(finer)}, defaults), 20);
  defaults.pcm16_uploads = false;
  EXPECT_EQ(RawUploadBytes({DType::kFloat32, {1, 5}, audio, sizeof(audio)}, defaults), 20);
  // Turned off, 16-bit audio goes raw too.
  auto plain = MakeClient(cloud.Url(), [](CloudClientConfig* c) { c->pcm16_uploads = false; });
  ASSERT_TRUE(plain->Infer("kws", {DType::kFloat32, {1, 5}, audio, sizeof(audio)}).ok());
  EXPECT_EQ(HeaderOf(seen.back(), "X-Knowcache-Encoding"), "(none)");
  EXPECT_EQ(bodies.back().size(), sizeof(audio));
}

TEST(CloudClient, InferFromStageSendsTheInt8ActivationItsScaleAndTheStagedVersion) {
  Cloud cloud;
  httplib::Headers seen;
  std::string body, stage;
  cloud.server.Post("/v1/kws/infer", [&](const httplib::Request& req, httplib::Response& res) {
    seen = req.headers;
    body = req.body;
    stage = req.get_param_value("from_stage");
    res.set_content(kAnswer, "application/json");
  });
  cloud.Start();
  auto client = MakeClient(cloud.Url());
  const SplitUpload upload{"staged", 3, 5, {{1, 6}, 0.015625f, {1, -2, 127, -127, 0, 9}}};
  auto a = client->InferFromStage("kws", upload);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->label, "yes");
  EXPECT_EQ(a->uplink_bytes, 6);
  EXPECT_EQ(stage, "5");
  auto header = [&](const char* key) { return HeaderOf(seen, key); };
  EXPECT_EQ(header("X-Knowcache-Dtype"), "int8");
  EXPECT_EQ(header("X-Knowcache-Shape"), "1,6");
  EXPECT_EQ(header("X-Knowcache-Scale"), "0.015625");
  EXPECT_EQ(header("X-Knowcache-Staged-Version"), "3");
  EXPECT_EQ(body, std::string("\x01\xfe\x7f\x81\x00\x09", 6));
  // An activation whose shape its data does not fill is refused before sending.
  const SplitUpload bad{"staged", 3, 5, {{1, 7}, 0.5f, {1, 2}}};
  EXPECT_EQ(client->InferFromStage("kws", bad).status().code(), StatusCode::kInvalidArgument);
}

TEST(CloudClient, FetchesTheManifestAndAPartitionUnderThePrefix) {
  Cloud cloud;
  cloud.server.Get("/edge/v1/vision/manifest", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(ManifestJson("vision"), "application/json");
  });
  cloud.server.Get("/edge/v1/vision/partitions/p0",
                   [](const httplib::Request&, httplib::Response& res) {
                     res.set_content(std::string("\x01\x00\x02", 3), "application/octet-stream");
                   });
  cloud.Start();
  auto client = MakeClient(cloud.Url("/edge"));
  auto m = client->FetchManifest("vision");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->task, "vision");
  ASSERT_NE(m->Find("p0"), nullptr);
  auto bytes = client->FetchPartition("vision", "p0");
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, (std::vector<uint8_t>{1, 0, 2}));
  // Without the prefix the paths do not exist on this server.
  auto bare = MakeClient(cloud.Url());
  EXPECT_EQ(bare->FetchManifest("vision").status().code(), StatusCode::kNotFound);
}

TEST(CloudClient, RefusesResponsesOverTheSizeCap) {
  Cloud cloud;
  cloud.server.Get(R"(/v1/kws/partitions/(\d+))",
                   [](const httplib::Request& req, httplib::Response& res) {
                     res.set_content(std::string(std::stoul(req.matches[1]), 'x'),
                                     "application/octet-stream");
                   });
  cloud.server.Get("/v1/kws/manifest", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(5000, ' ') + ManifestJson("kws"), "application/json");
  });
  cloud.Start();
  auto client =
      MakeClient(cloud.Url(), [](CloudClientConfig* c) { c->max_response_bytes = 4096; });
  auto at_cap = client->FetchPartition("kws", "4096");
  ASSERT_TRUE(at_cap.ok()) << at_cap.status().ToString();
  EXPECT_EQ(at_cap->size(), 4096u);
  auto over = client->FetchPartition("kws", "4097");
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("exceeds 4096 bytes"), std::string::npos)
      << over.status().message();
  EXPECT_EQ(client->FetchManifest("kws").status().code(), StatusCode::kResourceExhausted);
  // The client still works after refusing (the oversized connection is dropped).
  EXPECT_TRUE(client->FetchPartition("kws", "10").ok());
}

TEST(CloudClient, ReusesOneConnectionForSequentialRequests) {
  Cloud cloud;
  cloud.server.Post("/v1/kws/infer", [&](const httplib::Request& req, httplib::Response& res) {
    cloud.Record(req);
    res.set_content(kAnswer, "application/json");
  });
  cloud.server.Get("/v1/kws/manifest", [&](const httplib::Request& req, httplib::Response& res) {
    cloud.Record(req);
    res.set_content(ManifestJson("kws"), "application/json");
  });
  cloud.Start();
  auto client = MakeClient(cloud.Url());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(client->Infer("kws", InputView()).ok());
    ASSERT_TRUE(client->FetchManifest("kws").ok());
  }
  EXPECT_EQ(cloud.requests, 8);
  EXPECT_EQ(cloud.client_ports.size(), 1u);

  // With no idle pool every request opens its own connection.
  cloud.client_ports.clear();
  auto no_pool = MakeClient(cloud.Url(), [](CloudClientConfig* c) { c->max_idle_connections = 0; });
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(no_pool->Infer("kws", InputView()).ok());
  EXPECT_GT(cloud.client_ports.size(), 1u);
}

TEST(CloudClient, ConcurrentCallersEachGetTheirOwnAnswer) {
  Cloud cloud;
  // Echoes the first input value as the index, after a delay that makes calls overlap.
  cloud.server.Post("/v1/kws/infer", [&](const httplib::Request& req, httplib::Response& res) {
    cloud.Record(req);
    float first = 0;
    std::memcpy(&first, req.body.data(), sizeof(first));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    res.set_content(R"({"label": "l", "index": )" + std::to_string(static_cast<int>(first)) +
                        R"(, "confidence": 1.0})",
                    "application/json");
  });
  cloud.Start();
  auto client = MakeClient(cloud.Url());
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const float x[4] = {static_cast<float>(10 * t + i), 0, 0, 0};
        auto a = client->Infer("kws", {DType::kFloat32, {1, 4}, x, sizeof(x)});
        if (!a.ok() || a->index != 10 * t + i) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(cloud.requests, 20);
  // A connection is only opened when the pool is empty: at most one per caller.
  EXPECT_LE(cloud.client_ports.size(), 4u);
}

TEST(CloudClient, ASlowAnswerIsADeadlineWithinTheReadTimeout) {
  Cloud cloud;
  cloud.server.Post("/v1/kws/infer", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    res.set_content(kAnswer, "application/json");
  });
  cloud.Start();
  auto client = MakeClient(cloud.Url(), [](CloudClientConfig* c) { c->read_timeout_ms = 200; });
  const auto t0 = Clock::now();
  auto a = client->Infer("kws", InputView());
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  EXPECT_EQ(a.status().code(), StatusCode::kDeadlineExceeded) << a.status().ToString();
  EXPECT_NE(a.status().message().find("within 200 ms"), std::string::npos) << a.status().message();
  EXPECT_GE(ms, 150);
  EXPECT_LT(ms, 1200);
}

TEST(CloudClient, NoServerIsUnavailableNamingTheUrl) {
  int port;
  {
    Cloud closed;
    closed.Start();
    port = closed.port;
  }  // stopped: nothing listens on the port any more
  auto client = MakeClient("http://127.0.0.1:" + std::to_string(port) + "/p");
  auto a = client->Infer("kws", InputView());
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().ToString();
  EXPECT_NE(a.status().message().find("/p/v1/kws/infer"), std::string::npos)
      << a.status().message();
}

TEST(CloudClient, AConnectionClosedBeforeTheAnswerIsUnavailableNotATimeout) {
  // A listener that reads the request and closes without answering (a cloud
  // killed mid-request, a link that dropped): no wait for the read timeout.
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::thread closer([listener] {
    const int conn = accept(listener, nullptr, nullptr);
    if (conn < 0) return;
    // Read the whole request (until 200 ms pass with nothing more), so that the
    // client fails reading the answer, not writing the request.
    timeval wait{0, 200000};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
    char buf[4096];
    while (recv(conn, buf, sizeof(buf), 0) > 0) {
    }
    close(conn);
  });
  auto client = MakeClient("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)),
                           [](CloudClientConfig* c) { c->read_timeout_ms = 5000; });
  const auto t0 = Clock::now();
  auto a = client->Infer("kws", InputView());
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  closer.join();
  close(listener);
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().ToString();
  EXPECT_NE(a.status().message().find("before a complete answer"), std::string::npos)
      << a.status().message();
  EXPECT_LT(ms, 4000);
}

TEST(CloudClient, HttpErrorsMapToStatusCodesWithTheServersDetail) {
  Cloud cloud;
  cloud.server.Post(R"(/v1/(\d+)/infer)", [](const httplib::Request& req, httplib::Response& res) {
    res.status = std::stoi(req.matches[1]);
    res.set_content(R"({"detail": "because )" + std::string(req.matches[1]) + R"("})",
                    "application/json");
  });
  cloud.Start();
  auto client = MakeClient(cloud.Url());
  for (const auto& [http, code] : std::vector<std::pair<int, StatusCode>>{
           {400, StatusCode::kInvalidArgument},
           {413, StatusCode::kInvalidArgument},
           {415, StatusCode::kInvalidArgument},
           {422, StatusCode::kInvalidArgument},
           {401, StatusCode::kFailedPrecondition},
           {403, StatusCode::kFailedPrecondition},
           {404, StatusCode::kNotFound},
           {409, StatusCode::kUnavailable},
           {500, StatusCode::kUnavailable},
           {503, StatusCode::kUnavailable}}) {
    const std::string task = std::to_string(http);
    auto a = client->Infer(task, InputView());
    EXPECT_EQ(a.status().code(), code) << a.status().ToString();
    EXPECT_NE(a.status().message().find("HTTP " + task), std::string::npos);
    EXPECT_NE(a.status().message().find("because " + task), std::string::npos);
  }
  EXPECT_NE(client->Infer("401", InputView()).status().message().find("bearer token"),
            std::string::npos);
}

TEST(CloudClient, MalformedAnswersAreProtocolErrors) {
  Cloud cloud;
  cloud.server.Post(R"(/v1/(\w+)/infer)", [](const httplib::Request& req, httplib::Response& res) {
    const std::string kind = req.matches[1];
    if (kind == "text") res.set_content("hello", "text/plain");
    if (kind == "list") res.set_content("[1, 2]", "application/json");
    if (kind == "nolabel") res.set_content(R"({"index": 1, "confidence": 1})", "application/json");
    if (kind == "noindex") res.set_content(R"({"label": "a", "confidence": 1})", "application/json");
    if (kind == "noconf") res.set_content(R"({"label": "a", "index": 1})", "application/json");
  });
  cloud.server.Get("/v1/bad/manifest", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"schema_version": 1, "task": "bad", "partitions": 3})", "application/json");
  });
  cloud.Start();
  auto client = MakeClient(cloud.Url());
  for (const auto& [kind, message] : std::vector<std::pair<std::string, std::string>>{
           {"text", "is not a JSON object"},
           {"list", "is not a JSON object"},
           {"nolabel", "lacks a string 'label'"},
           {"noindex", "lacks an integer 'index'"},
           {"noconf", "lacks a numeric 'confidence'"}}) {
    auto a = client->Infer(kind, InputView());
    EXPECT_EQ(a.status().code(), StatusCode::kProtocol) << kind << ": " << a.status().ToString();
    EXPECT_NE(a.status().message().find(message), std::string::npos) << a.status().message();
  }
  auto m = client->FetchManifest("bad");
  EXPECT_EQ(m.status().code(), StatusCode::kProtocol);
  EXPECT_NE(m.status().message().find("manifest.partitions must be a list"), std::string::npos)
      << m.status().message();
}

TEST(CloudClient, ConfigValidationNamesTheSetting) {
  auto message = [](void (*edit)(CloudClientConfig*)) {
    CloudClientConfig c;
    c.base_url = "http://127.0.0.1:1";
    edit(&c);
    return c.Validate().message();
  };
  EXPECT_EQ(message([](CloudClientConfig*) {}), "");
  EXPECT_NE(message([](CloudClientConfig* c) { c->base_url = "127.0.0.1:1"; })
                .find("must start with http:// or https://"),
            std::string::npos);
  EXPECT_NE(message([](CloudClientConfig* c) { c->connect_timeout_ms = 0; }).find("timeouts"),
            std::string::npos);
  EXPECT_NE(message([](CloudClientConfig* c) { c->read_timeout_ms = -1; }).find("timeouts"),
            std::string::npos);
  EXPECT_NE(message([](CloudClientConfig* c) { c->max_response_bytes = 0; })
                .find("max_response_bytes"),
            std::string::npos);
  EXPECT_NE(message([](CloudClientConfig* c) { c->max_idle_connections = -1; })
                .find("max_idle_connections"),
            std::string::npos);
  EXPECT_EQ(message([](CloudClientConfig* c) { c->max_idle_connections = 0; }), "");
  CloudClientConfig c;
  c.base_url = "https://x";
  c.token = "s3cret";
  EXPECT_EQ(c.ToString().find("s3cret"), std::string::npos);
}

// ---- HTTPS -------------------------------------------------------------------

// Two CAs and three server certificates in a fresh folder, made once by the
// openssl CLI: "server" (127.0.0.1, signed by "ca"), "elsewhere" (only
// example.com, signed by "ca"); "other_ca" signs nothing here.
class TestPki {
 public:
  static const TestPki& Get() {
    static const TestPki pki;
    return pki;
  }
  std::string Path(const std::string& name) const { return dir + "/" + name; }
  bool ok = false;
  std::string dir;

 private:
  ~TestPki() {
    if (!dir.empty()) std::system(("rm -rf " + dir).c_str());
  }
  TestPki() {
    char tmpl[] = "/tmp/knowcache-pki-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir = tmpl;
    const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    auto run = [&](const std::string& cmd) {
      return std::system(("cd " + dir + " && " + cmd + " > /dev/null 2>&1").c_str()) == 0;
    };
    std::ofstream(Path("server.ext")) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    std::ofstream(Path("elsewhere.ext")) << "subjectAltName=DNS:example.com\n";
    ok = run("openssl req -x509" + key + "-keyout ca.key -out ca.pem -days 2 -subj /CN=kc-test-ca") &&
         run("openssl req -x509" + key + "-keyout other_ca.key -out other_ca.pem -days 2 "
             "-subj /CN=kc-other-ca");
    for (const std::string name : {"server", "elsewhere"}) {
      ok = ok &&
           run("openssl req -new" + key + "-keyout " + name + ".key -out " + name +
               ".csr -subj /CN=" + name) &&
           run("openssl x509 -req -in " + name + ".csr -CA ca.pem -CAkey ca.key "
               "-CAcreateserial -days 2 -out " + name + ".pem -extfile " + name + ".ext");
    }
  }
};

// An HTTPS server on loopback presenting `cert`, answering infer with kAnswer.
class TlsCloud {
 public:
  explicit TlsCloud(const std::string& cert)
      : server(TestPki::Get().Path(cert + ".pem").c_str(),
               TestPki::Get().Path(cert + ".key").c_str()) {
    server.Post("/v1/kws/infer", [this](const httplib::Request& req, httplib::Response& res) {
      authorization = req.get_header_value("Authorization");
      res.set_content(kAnswer, "application/json");
    });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    for (int i = 0; i < 500 && !server.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  ~TlsCloud() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
  std::string Url() const { return "https://127.0.0.1:" + std::to_string(port); }

  httplib::SSLServer server;
  std::thread thread;
  int port = -1;
  std::string authorization;
};

StatusOr<CloudAnswer> InferOverTls(const std::string& url, const std::string& ca_file) {
  CloudClientConfig config;
  config.base_url = url;
  config.ca_file = ca_file;
  config.token = "s3cret";
  KC_ASSIGN_OR_RETURN(std::unique_ptr<CloudClient> client, CloudClient::Create(config));
  return client->Infer("kws", InputView());
}

class CloudClientTls : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(TestPki::Get().ok) << "the openssl CLI could not make test certificates in "
                                   << TestPki::Get().dir;
  }
  std::string Pem(const std::string& name) { return TestPki::Get().Path(name + ".pem"); }
};

TEST_F(CloudClientTls, TheRightCaIsAcceptedAndTheTokenTravelsEncrypted) {
  TlsCloud cloud("server");
  ASSERT_TRUE(cloud.server.is_valid() && cloud.port > 0);
  auto a = InferOverTls(cloud.Url(), Pem("ca"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->label, "yes");
  EXPECT_EQ(cloud.authorization, "Bearer s3cret");
}

TEST_F(CloudClientTls, AWrongCaOrTheSystemsCasAreRefusedSayingWhy) {
  TlsCloud cloud("server");
  auto wrong = InferOverTls(cloud.Url(), Pem("other_ca"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(wrong.status().message().find("TLS: the cloud's certificate does not verify"),
            std::string::npos) << wrong.status().message();
  EXPECT_NE(wrong.status().message().find("other_ca.pem"), std::string::npos);
  auto system = InferOverTls(cloud.Url(), "");  // a private CA is in no system store
  ASSERT_FALSE(system.ok());
  EXPECT_NE(system.status().message().find("the system's CAs"), std::string::npos)
      << system.status().message();
  EXPECT_TRUE(cloud.authorization.empty());  // the token was never sent
}

TEST_F(CloudClientTls, ACertificateForAnotherHostIsRefused) {
  TlsCloud cloud("elsewhere");
  auto a = InferOverTls(cloud.Url(), Pem("ca"));
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("does not name the host"), std::string::npos)
      << a.status().message();
  EXPECT_TRUE(cloud.authorization.empty());
}

TEST_F(CloudClientTls, NothingFallsBackToPlainHttp) {
  // https:// to a server speaking plain HTTP: a handshake failure, not an answer.
  Cloud plain;
  plain.server.Post("/v1/kws/infer", [&plain](const httplib::Request& req,
                                              httplib::Response& res) {
    plain.Record(req);
    res.set_content(kAnswer, "application/json");
  });
  plain.Start();
  auto a = InferOverTls("https://127.0.0.1:" + std::to_string(plain.port), Pem("ca"));
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(plain.requests, 0);
  // A CA file with an http:// URL, and a CA file that is not there, are refused up front.
  auto http = InferOverTls(plain.Url(), Pem("ca"));
  EXPECT_EQ(http.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(http.status().message().find("use https://"), std::string::npos);
  auto missing = InferOverTls("https://127.0.0.1:1", Pem("nope"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.pem"), std::string::npos);
}

}  // namespace
}  // namespace knowcache
