// kpxd end to end in the netns lab with the io_uring dataplane (lab prefix
// "kpxe2e-"): a real kpxd process in the node namespace, real pod servers,
// real TCP from the client namespace to the Service VIP. Needs root.
#include "tests/e2e/kpxd_lab_fixture.h"
#include "tests/testlib/fake_apiserver.h"

namespace kpx::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class KpxdLabTest : public KpxdLabFixture {
 protected:
  static void SetUpTestSuite() { LabUp("kpxe2e-"); }
  static void TearDownTestSuite() { LabDown("kpxe2e-"); }
  std::string Prefix() const override { return "kpxe2e-"; }
  std::vector<std::string> DataplaneArgs() const override { return {"--dataplane=uring"}; }
};

TEST_F(KpxdLabTest, TrafficThroughTheVipReachesEveryPod) {
  CopyExample("flask.yaml");
  StartKpxd();
  Spread s = Requests(80);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u) << "pods seen: " << s.by_pod.size();
  for (const char* pod : {"pod1", "pod2", "pod3", "pod4"}) EXPECT_GT(s.by_pod[pod], 0) << pod;
}

TEST_F(KpxdLabTest, EndpointEditsTakeEffect) {
  CopyExample("flask.yaml");
  StartKpxd();
  long before = StatusField("updates");
  WriteManifest("flask.yaml", FlaskWithEndpoints(2));
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  Spread s = Requests(40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod3") + s.by_pod.count("pod4"), 0u);
  EXPECT_GT(s.by_pod["pod1"], 0);
  EXPECT_GT(s.by_pod["pod2"], 0);

  before = StatusField("updates");
  WriteManifest("flask.yaml", FlaskWithEndpoints(4));
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  s = Requests(80);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
}

TEST_F(KpxdLabTest, DeletedServiceFailsFastNotHang) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Requests(5).failed, 0);
  long before = StatusField("updates");
  fs::remove(ManifestDir() + "/flask.yaml");
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  EXPECT_EQ(StatusField("frontends"), 0);
  int err = 0;
  auto start = Clock::now();
  InNetns(Prefix() + "client", [&] {
    int fd = ConnectTimeout(kVip, 5000, 3000);
    if (fd >= 0) close(fd);
    err = fd < 0 ? -fd : 0;
  });
  auto took = Clock::now() - start;
  EXPECT_NE(err, 0) << "connect to a deleted Service succeeded";
  EXPECT_NE(err, ETIMEDOUT) << "connect to a deleted Service hung";
  EXPECT_LT(took, std::chrono::seconds(1));
}

TEST_F(KpxdLabTest, BrokenManifestKeepsPreviousRulesServing) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string broken = FlaskWithEndpoints(4);
  broken.replace(broken.find("port: 5000"), 10, "port: http");
  WriteManifest("flask.yaml", broken);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (StatusField("parse_errors") < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(StatusField("parse_errors"), 1) << Status();
  EXPECT_THAT(Status(), HasSubstr("is not a port number"));
  EXPECT_EQ(StatusField("frontends"), 1);
  Spread s = Requests(40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
  EXPECT_THAT(Log(), HasSubstr("keeping this file's previous objects"));
}

TEST_F(KpxdLabTest, KilledBackendIsRetriedWithZeroFailedRequests) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Sh(LabCmd("pod-stop 3") + " >/dev/null 2>&1"), 0);
  Spread s = Requests(100);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod3"), 0u);
  EXPECT_EQ(s.by_pod.size(), 3u);
}

TEST_F(KpxdLabTest, SessionAffinityPinsTheClient) {
  CopyExample("session-affinity.yaml");
  StartKpxd();
  Spread s = Requests(30, "10.96.7.30", 5000);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 1u) << "affinity broken: " << s.by_pod.size() << " pods answered";
}

TEST_F(KpxdLabTest, HalfCloseAndLargeTransferThroughTheProxy) {
  WriteManifest("tcp.yaml", R"(apiVersion: v1
kind: Service
metadata: {name: tcp, namespace: default}
spec:
  clusterIP: 10.96.9.9
  ports:
  - {name: echo, port: 5001}
  - {name: sink, port: 5002}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: tcp-1
  namespace: default
  labels: {kubernetes.io/service-name: tcp}
addressType: IPv4
ports:
- {name: echo, port: 5001}
- {name: sink, port: 5002}
endpoints:
- addresses: [10.244.1.2]
- addresses: [10.244.2.2]
)");
  StartKpxd();
  InNetns(Prefix() + "client", [&] {
    // Half-close: the echo server sees our EOF only through the proxy's
    // shutdown(SHUT_WR), then sends the rest and closes.
    int fd = ConnectTimeout("10.96.9.9", 5001, 2000);
    ASSERT_GE(fd, 0) << strerror(-fd);
    std::string msg(100000, 'x');
    for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>('a' + i % 26);
    ASSERT_TRUE(SendAll(fd, msg.data(), msg.size()));
    shutdown(fd, SHUT_WR);
    EXPECT_EQ(ReadToEof(fd), msg);
    close(fd);

    // 64 MiB to the sink; it answers "<count> <fnv1a64>" after our EOF.
    fd = ConnectTimeout("10.96.9.9", 5002, 2000);
    ASSERT_GE(fd, 0) << strerror(-fd);
    constexpr size_t kTotal = 64u << 20;
    std::string chunk(1 << 20, 0);
    uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
    for (size_t sent = 0; sent < kTotal; sent += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((sent + i) * 7 + 3);
      for (unsigned char c : chunk) hash = (hash ^ c) * 0x100000001b3ull;
      ASSERT_TRUE(SendAll(fd, chunk.data(), chunk.size()));
    }
    shutdown(fd, SHUT_WR);
    EXPECT_EQ(ReadToEof(fd), absl::StrFormat("%d %016x\n", kTotal, hash));
    close(fd);
  });
}

TEST_F(KpxdLabTest, AdminApiShowsRulesCountersAndErrors) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Requests(8).failed, 0);
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  std::string out = ShOut(Kpxctl(sock + "get services default/flask-svc -o json"));
  EXPECT_THAT(out, HasSubstr("\"programmed\": true"));
  EXPECT_THAT(out, HasSubstr("\"dataplane\": \"uring\""));
  EXPECT_THAT(out, HasSubstr("\"total\": 8")) << out;  // frontend connection counter
  out = ShOut(Kpxctl(sock + "get backends default/flask-svc"));
  EXPECT_THAT(out, HasSubstr("10.244.3.3:5000"));
  EXPECT_THAT(out, HasSubstr("HEALTHY"));
  // Unknown service: exit 1 and kpxd's error message; nothing changes.
  EXPECT_EQ(Sh(Kpxctl(sock + "get services default/nope >/dev/null 2>&1")), 1);
  EXPECT_THAT(ShOut(Kpxctl(sock + "get services default/nope 2>&1")), HasSubstr("not found"));
  // The socket is root-only: an unprivileged user cannot talk to kpxd.
  EXPECT_EQ(Sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + Kpxctl(sock + "version") +
               " >/dev/null 2>&1"),
            3);
  EXPECT_EQ(Sh(Kpxctl(sock + "version >/dev/null")), 0);
}

TEST_F(KpxdLabTest, EndpointOverridesApplyValidateAndSurviveRestart) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  ASSERT_EQ(Sh(Kpxctl(sock + "endpoints set default/flask-svc 10.244.1.2:5000 >/dev/null")), 0);
  Spread s = Requests(20);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod["pod1"], 20);
  // Bad input: clear error, exit 1, nothing changed.
  EXPECT_THAT(ShOut(Kpxctl(sock + "endpoints add default/flask-svc 10.244.2.2:99999 2>&1")),
              HasSubstr("port must be 1..65535"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "endpoints add default/nope 10.244.2.2:5000 2>&1")),
              HasSubstr("service default/nope not found"));
  EXPECT_EQ(Sh(Kpxctl(sock + "endpoints add default/flask-svc bogus >/dev/null 2>&1")), 1);
  EXPECT_EQ(Requests(10).by_pod["pod1"], 10);
  // The override is persisted: a restarted kpxd serves it again.
  ASSERT_EQ(StopKpxd(), 0);
  StartKpxd();
  EXPECT_EQ(Requests(10).by_pod["pod1"], 10);
  EXPECT_THAT(ShOut(Kpxctl(sock + "get services default/flask-svc -o json")),
              HasSubstr("\"overridden\": true"));
  ASSERT_EQ(Sh(Kpxctl(sock + "endpoints reset default/flask-svc >/dev/null")), 0);
  EXPECT_EQ(Requests(60).by_pod.size(), 4u);
}

TEST_F(KpxdLabTest, DrainStopsNewConnectionsToOneBackend) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  ASSERT_EQ(Sh(Kpxctl(sock + "drain default/flask-svc 10.244.2.2:5000 >/dev/null")), 0);
  Spread s = Requests(60);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod2"), 0u);
  EXPECT_EQ(s.by_pod.size(), 3u);
  EXPECT_THAT(ShOut(Kpxctl(sock + "get services default/flask-svc -o json")),
              HasSubstr("\"draining\": true"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "drain default/flask-svc 10.244.9.9:5000 2>&1")),
              HasSubstr("is not a backend of default/flask-svc"));
}

TEST_F(KpxdLabTest, ApplyAndDeletePushManifestsIntoTheRunningDaemon) {
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  std::string example = kpx::testing::SourcePath("config/examples/session-affinity.yaml");
  ASSERT_EQ(Sh(Kpxctl(sock + "apply -f " + example + " >/dev/null")), 0);
  Spread s = Requests(5, "10.96.7.30", 5000);
  EXPECT_EQ(s.failed, 0);
  // A broken manifest is refused with the parser's message; nothing changes.
  std::string bad = work_ + "/bad.yaml";
  std::ofstream(bad) << "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - port: http\n";
  EXPECT_THAT(ShOut(Kpxctl(sock + "apply -f " + bad + " 2>&1")), HasSubstr("is not a port number"));
  EXPECT_EQ(Requests(3, "10.96.7.30", 5000).failed, 0);
  ASSERT_EQ(Sh(Kpxctl(sock + "delete -f " + example + " >/dev/null")), 0);
  EXPECT_TRUE(WaitStatusField("frontends", 0)) << Status();
}

TEST_F(KpxdLabTest, FollowsTheKubernetesApiWatch) {
  // A fake API server (real HTTP list + chunked watch) inside the node
  // namespace, where kpxd can reach it on 127.0.0.1.
  std::unique_ptr<kpx::testing::FakeApiServer> api;
  InNetns(Prefix() + "node", [&] {
    auto started = kpx::testing::FakeApiServer::Start({});
    ASSERT_TRUE(started.ok()) << started.status();
    api = std::move(*started);
  });
  ASSERT_NE(api, nullptr);
  nlohmann::json svc = {
      {"metadata", {{"name", "flask-svc"}, {"namespace", "default"}}},
      {"spec", {{"clusterIP", kVip}, {"ports", {{{"name", "http"}, {"port", 5000}}}}}}};
  auto slice = [](std::vector<std::string> ips) {
    nlohmann::json eps = nlohmann::json::array();
    for (const auto& ip : ips) eps.push_back({{"addresses", {ip}}, {"conditions", {{"ready", true}}}});
    return nlohmann::json{
        {"metadata",
         {{"name", "flask-svc-1"},
          {"namespace", "default"},
          {"labels", {{"kubernetes.io/service-name", "flask-svc"}}}}},
        {"addressType", "IPv4"},
        {"ports", {{{"name", "http"}, {"port", 5000}, {"protocol", "TCP"}}}},
        {"endpoints", eps}};
  };
  api->Apply("services", svc);
  api->Apply("endpointslices", slice({"10.244.1.2", "10.244.2.2", "10.244.3.2", "10.244.3.3"}));
  extra_args_ = {"--master=" + api->url()};
  StartKpxd();
  ASSERT_TRUE(WaitStatusField("frontends", 1)) << Status() << Log();
  Spread s = Requests(60);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
  // A watch event (the slice scaled to one pod) reaches the dataplane.
  ASSERT_TRUE(api->WaitForOpenWatches("endpointslices", 1, absl::Seconds(5)));
  long before = StatusField("api_updates");
  api->Apply("endpointslices", slice({"10.244.2.2"}));
  ASSERT_TRUE(WaitStatusField("api_updates", before + 1)) << Status();
  s = Requests(10);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod["pod2"], 10);
  // Deleting the Service removes its frontend.
  api->Delete("services", "default", "flask-svc");
  EXPECT_TRUE(WaitStatusField("frontends", 0)) << Status();
  StopKpxd();
  api.reset();
}

// Defaults: interval 300 ms, timeout 200 ms, fall 2 -> documented bound
// (1 + 20 % jitter) x interval + (fall - 1) x max(suspect interval, timeout)
// + timeout, under 1 s; the assertion adds polling and scheduling slack.
TEST_F(KpxdLabTest, HealthChecksTakeAKilledPodOutAndBringItBack) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(BackendHealthy("default/flask-svc", "10.244.3.2"), true);
  ASSERT_EQ(Sh(LabCmd("pod-stop 3") + " >/dev/null 2>&1"), 0);
  auto took = WaitHealth("default/flask-svc", "10.244.3.2", false, std::chrono::seconds(3));
  ASSERT_TRUE(took.has_value()) << "pod3 never marked down\n" << Log();
  EXPECT_LT(took->count(), 1500) << "detection slower than fall x interval + timeout + slack";
  std::cerr << "pod3 kill -> out of rotation: " << took->count() << " ms\n";
  Spread s = Requests(40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod3"), 0u);
  ASSERT_EQ(Sh(LabCmd("pod-start 3") + " >/dev/null 2>&1"), 0);
  took = WaitHealth("default/flask-svc", "10.244.3.2", true, std::chrono::seconds(8));
  ASSERT_TRUE(took.has_value()) << "pod3 never came back\n" << Log();
  EXPECT_GT(Requests(60).by_pod["pod3"], 0);
}

TEST_F(KpxdLabTest, HttpHealthCheckRemovesAPodWhosePortStillAnswers) {
  std::string flask = FlaskWithEndpoints(4);
  size_t meta = flask.find("kind: Service\nmetadata:\n");
  ASSERT_NE(meta, std::string::npos);
  flask.insert(meta + 24,
               "  annotations:\n    kpx.io/health-check: http\n    kpx.io/health-path: /healthz\n");
  WriteManifest("flask.yaml", flask);
  StartKpxd();
  ASSERT_EQ(Sh(LabCmd("pod-health 2 fail") + " >/dev/null 2>&1"), 0);
  auto took = WaitHealth("default/flask-svc", "10.244.2.2", false, std::chrono::seconds(3));
  Sh(LabCmd("pod-health 2 ok") + " >/dev/null 2>&1");
  ASSERT_TRUE(took.has_value()) << "pod2 (/healthz 503, port open) never marked down\n" << Log();
  EXPECT_EQ(BackendHealthy("default/flask-svc", "10.244.1.2"), true);
  // Down probes back off 1 s, 2 s, 4 s...: allow two back-off steps under load.
  EXPECT_TRUE(WaitHealth("default/flask-svc", "10.244.2.2", true, std::chrono::seconds(8)));
}

TEST_F(KpxdLabTest, SigtermExitsCleanlyAndRemovesVips) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string ns = Prefix() + "node";
  EXPECT_THAT(ShOut("ip -n " + ns + " -4 addr show dev kpx0"), HasSubstr(kVip));
  EXPECT_EQ(StopKpxd(), 0) << Log();
  EXPECT_THAT(ShOut("ip -n " + ns + " -4 addr show dev kpx0 2>&1"), Not(HasSubstr(kVip)));
}

TEST_F(KpxdLabTest, MetricsAndHealthzFollowTrafficAndSyncs) {
  extra_args_ = {"--metrics-bind-address=127.0.0.1:0", "--healthz-bind-address=127.0.0.1:0"};
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_NE(BoundAddress("metrics_address").second, 0) << Status() << Log();
  ASSERT_NE(BoundAddress("healthz_address").second, 0) << Status();

  HttpReply hz = NodeHttp("healthz_address", "/healthz");
  EXPECT_EQ(hz.status, 200) << hz.body;
  nlohmann::json j = nlohmann::json::parse(hz.body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << hz.body;
  EXPECT_FALSE(j.value("lastUpdated", "").empty()) << hz.body;
  EXPECT_FALSE(j.value("currentTime", "").empty()) << hz.body;
  EXPECT_EQ(NodeHttp("healthz_address", "/livez").status, 200);
  // Not served on the health listener, as with kube-proxy.
  EXPECT_EQ(NodeHttp("healthz_address", "/metrics").status, 404);

  std::string m1 = Scrape();
  ASSERT_EQ(CheckExposition(m1), "") << m1;
  EXPECT_EQ(MetricSum(m1, "kpx_dataplane", "dataplane=\"uring\""), 1);
  EXPECT_GE(MetricSum(m1, "kubeproxy_sync_proxy_rules_duration_seconds_count"), 1);
  double last = MetricSum(m1, "kubeproxy_sync_proxy_rules_last_timestamp_seconds");
  EXPECT_NEAR(last, absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()), 120);
  EXPECT_GE(MetricSum(m1, "kubeproxy_sync_proxy_rules_service_changes_total"), 1);
  EXPECT_GE(MetricSum(m1, "kubeproxy_network_programming_duration_seconds_count"), 1);
  EXPECT_EQ(MetricSum(m1, "kubeproxy_proxy_healthz_total", "code=\"200\""), 1);
  EXPECT_EQ(MetricSum(m1, "kpx_backend_up", "service=\"flask-svc\""), 4);
  const std::string fe = "frontend=\"10.96.4.197:5000/TCP\"";
  double conns = MetricSum(m1, "kpx_service_connections_total", fe);
  double bytes = MetricSum(m1, "kpx_service_bytes_total", fe);
  ASSERT_GE(conns, 0) << m1;

  ASSERT_EQ(Requests(20).failed, 0);
  std::string m2 = Scrape();
  EXPECT_EQ(MetricSum(m2, "kpx_service_connections_total", fe), conns + 20);
  EXPECT_GT(MetricSum(m2, "kpx_service_bytes_total", fe), bytes + 20 * 40);
  EXPECT_GE(MetricSum(m2, "kpx_backend_connections_total", fe), conns + 20);

  // An endpoint change is one more sync, endpoint change and programming sample.
  long before = StatusField("updates");
  double syncs = MetricSum(m2, "kubeproxy_sync_proxy_rules_duration_seconds_count");
  double eps = MetricSum(m2, "kubeproxy_sync_proxy_rules_endpoint_changes_total");
  double prog = MetricSum(m2, "kubeproxy_network_programming_duration_seconds_count");
  WriteManifest("flask.yaml", FlaskWithEndpoints(2));
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  std::string m3 = Scrape();
  EXPECT_GT(MetricSum(m3, "kubeproxy_sync_proxy_rules_duration_seconds_count"), syncs);
  EXPECT_GT(MetricSum(m3, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), eps);
  EXPECT_GT(MetricSum(m3, "kubeproxy_network_programming_duration_seconds_count"), prog);
  EXPECT_EQ(MetricSum(m3, "kpx_backend_up", "service=\"flask-svc\""), 2);
  EXPECT_EQ(CheckExposition(m3), "");
  // Probes start within one interval of a target appearing; each backend
  // turns healthy on its first good probe.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (MetricSum(Scrape(), "kpx_health_backend_state", "state=\"healthy\"") < 2 &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string m4 = Scrape();
  EXPECT_GE(MetricSum(m4, "kpx_health_probes_total"), 1);
  EXPECT_EQ(MetricSum(m4, "kpx_health_backend_state", "state=\"healthy\""), 2) << m4;
}

TEST_F(KpxdLabTest, MetricsListenerCanBeDisabled) {
  extra_args_ = {"--metrics-bind-address=", "--healthz-bind-address="};
  CopyExample("flask.yaml");
  StartKpxd();
  EXPECT_EQ(BoundAddress("metrics_address").second, 0);
  EXPECT_THAT(Log(), Not(HasSubstr("metrics on http")));
}

TEST_F(KpxdLabTest, TraceNamesTheRoundRobinPickAndHealthShowsProbes) {
  extra_args_ = {"--lb-algorithm=round-robin"};
  CopyExample("flask.yaml");
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  // Every backend probed and healthy first: a health transition between a
  // trace and the connection would change the candidate list under it.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  nlohmann::json h;
  while (Clock::now() < deadline) {
    h = nlohmann::json::parse(ShOut(Kpxctl(sock + "health default/flask-svc -o json")), nullptr, false);
    if (h.is_object() && h["services"][0]["counts"].value("healthy", 0) == 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(h.is_object());
  EXPECT_EQ(h["services"][0]["counts"].value("healthy", 0), 4) << h.dump();
  for (const auto& b : h["services"][0]["backends"]) {
    EXPECT_GE(b.value("probes", 0), 1) << b.dump();
    EXPECT_EQ(b.value("last_result", ""), "ok") << b.dump();
  }
  for (int i = 0; i < 4; ++i) {
    nlohmann::json t = nlohmann::json::parse(
        ShOut(Kpxctl(sock + "trace 10.244.0.2 10.96.4.197:5000 -o json")), nullptr, false);
    ASSERT_TRUE(t.is_object());
    EXPECT_EQ(t.value("decision", ""), "round-robin") << t.dump();
    EXPECT_EQ(t.value("service", ""), "default/flask-svc");
    std::string predicted = t.value("backend", "");
    Spread s = Requests(1);
    ASSERT_EQ(s.by_pod.size(), 1u);
    EXPECT_EQ(PodIp(s.by_pod.begin()->first) + ":5000", predicted) << "connection " << i;
  }
  std::string table = ShOut(Kpxctl(sock + "trace 10.244.0.2:40000 10.96.4.197:5000"));
  EXPECT_THAT(table, HasSubstr("round-robin"));
  EXPECT_THAT(table, HasSubstr("default/flask-svc"));
  // Validation: 4xx from kpxd, exit 1, a message naming the problem.
  EXPECT_THAT(ShOut(Kpxctl(sock + "trace 10.244.0.2 10.96.4.197 2>&1")), HasSubstr("IP:PORT"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "trace 10.244.0.2 10.96.4.197:99999 2>&1")),
              HasSubstr("port must be 1..65535"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "trace bogus 10.96.4.197:5000 2>&1")), HasSubstr("not an IPv4"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "trace 10.244.0.2 10.96.9.99:80 2>&1")),
              HasSubstr("no TCP frontend"));
  EXPECT_EQ(Sh(Kpxctl(sock + "trace 10.244.0.2 10.96.9.99:80 >/dev/null 2>&1")), 1);

  // A stopped pod goes down, and trace says why it gets no new flows.
  EXPECT_THAT(ShOut(Kpxctl(sock + "health default/nope 2>&1")), HasSubstr("not found"));
  ASSERT_EQ(Sh(LabCmd("pod-stop 4") + " >/dev/null 2>&1"), 0);
  ASSERT_TRUE(WaitHealth("default/flask-svc", "10.244.3.3", false, std::chrono::seconds(3)));
  std::string table_h = ShOut(Kpxctl(sock + "health default/flask-svc"));
  EXPECT_THAT(table_h, HasSubstr("down"));
  EXPECT_THAT(table_h, HasSubstr("Connection refused"));
  std::string why = ShOut(Kpxctl(sock + "trace 10.244.0.2 10.96.4.197:5000"));
  EXPECT_THAT(why, HasSubstr("10.244.3.3:5000 takes no new flows: health checks failed (down)"));
}

}  // namespace
}  // namespace kpx::e2e
