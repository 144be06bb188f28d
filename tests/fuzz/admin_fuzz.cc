// libFuzzer target: kpxd's admin API in-process. A Daemon on a FakeDataplane
// (one Service from a manifest directory, --state-dir for apply/delete) runs
// its reconcile loop in a thread; each input is one HTTP request, handed to
// cpp-httplib's request processing over an in-memory stream with the routes
// kpxd's AdminServer installs (InstallAdminRoutes), so the handlers in
// daemon_ops.cc see exactly what a socket client could send.
//
// Input: bytes starting with an HTTP method are a raw request; anything else
// is (route selector byte, JSON body), framed into a well-formed POST so the
// fuzzer spends its time in the handlers rather than on Content-Length.
#include <httplib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dataplane/fake/fake_dataplane.h"
#include "tests/fuzz/fuzz_util.h"
#include "tools/kpxd/admin_server.h"
#include "tools/kpxd/daemon.h"

namespace {

constexpr char kManifest[] = R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints:
- {addresses: [10.244.1.2], nodeName: node-a, conditions: {ready: true}}
- {addresses: [10.244.2.2], nodeName: node-b, conditions: {ready: true}}
)";

// A request in, the response out.
class MemoryStream : public httplib::Stream {
 public:
  explicit MemoryStream(std::string_view in) : in_(in) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, in_.size());
    std::memcpy(ptr, in_.data(), n);
    in_.remove_prefix(n);
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "";
    port = 0;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "";
    port = 0;
  }
  socket_t socket() const override { return INVALID_SOCKET; }
  const std::string& out() const { return out_; }

 private:
  std::string_view in_;
  std::string out_;
};

// process_request is protected: this is the one-request entry point.
class InMemoryServer : public httplib::Server {
 public:
  std::string Handle(std::string_view request) {
    MemoryStream stream(request);
    bool closed = false;
    process_request(stream, /*close_connection=*/true, closed, [](httplib::Request&) {});
    return stream.out();
  }
};

struct World {
  std::string dir;
  std::unique_ptr<kpx::kpxd::Daemon> daemon;
  InMemoryServer server;
};
World* g_world = nullptr;

std::string Framed(uint8_t selector, absl::string_view body) {
  static const char* const kPaths[] = {"/v1/endpoints", "/v1/drain", "/v1/apply", "/v1/delete",
                                       "/v1/services?name=default/web", "/v1/stats",
                                       "/v1/version"};
  const size_t n = sizeof(kPaths) / sizeof(kPaths[0]);
  const char* path = kPaths[selector % n];
  const bool get = selector % n >= 4;
  return absl::StrCat(get ? "GET " : "POST ", path,
                      " HTTP/1.1\r\nHost: kpxd\r\nContent-Type: application/json\r\n"
                      "Content-Length: ",
                      body.size(), "\r\n\r\n", body);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kpx::fuzz::QuietLogs();
  auto* w = new World;
  w->dir = absl::StrCat("/tmp/kpx-admin-fuzz-", getpid());
  std::filesystem::create_directories(w->dir + "/manifests");
  std::ofstream(w->dir + "/manifests/web.yaml") << kManifest;
  kpx::kpxd::DaemonOptions options;
  options.manifest_dir = w->dir + "/manifests";
  options.state_dir = w->dir + "/state";
  options.node = {"node-a", "zone-a"};
  options.health = false;
  auto daemon = kpx::kpxd::Daemon::Create(options, std::make_unique<kpx::dataplane::FakeDataplane>());
  if (!daemon.ok()) {
    std::fprintf(stderr, "admin_fuzz: %s\n", std::string(daemon.status().message()).c_str());
    std::abort();
  }
  w->daemon = std::move(*daemon);
  kpx::kpxd::InstallAdminRoutes(w->server, w->daemon.get());
  // The reconcile loop; no signal fd: it runs until the process exits.
  std::thread([d = w->daemon.get()] { d->Run(-1); }).detach();
  g_world = w;
  // Let the initial manifest load finish before the first input.
  std::string r = w->server.Handle(Framed(4, ""));
  KPX_FUZZ_CHECK(absl::StartsWith(r, "HTTP/1.1 200"), "the seeded Service is not served");
  std::atexit([] { std::filesystem::remove_all(g_world->dir); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  std::string request;
  if (absl::StartsWith(in, "GET ") || absl::StartsWith(in, "POST ") ||
      absl::StartsWith(in, "PUT ") || absl::StartsWith(in, "DELETE ") ||
      absl::StartsWith(in, "HEAD ")) {
    request = std::string(in);
  } else if (!in.empty()) {
    request = Framed(static_cast<uint8_t>(in[0]), in.substr(1));
  }
  const std::string response = g_world->server.Handle(request);
  KPX_FUZZ_CHECK(response.empty() || absl::StartsWith(response, "HTTP/1.1 "),
                 "response is not HTTP");
  KPX_FUZZ_CHECK(response.find("HTTP/1.1 503") != 0, "the reconcile loop stopped answering");

  // Undo what the input applied, through the same handler, so every input
  // starts from the one-Service world (bounded state, reproducible crashes).
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(g_world->dir + "/state/applied", ec)) {
    const std::string name = e.path().filename().string();
    if (name[0] == '.') continue;
    g_world->daemon->loop().RunSync(
        [name] { g_world->daemon->HandleDelete({{"filename", name}}); }, absl::Seconds(5));
  }
  g_world->daemon->loop().RunSync(
      [] { g_world->daemon->HandleEndpoints({{"service", "default/web"}, {"op", "reset"}}); },
      absl::Seconds(5));
  return 0;
}
