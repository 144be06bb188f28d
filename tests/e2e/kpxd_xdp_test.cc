// kpxd end to end with the eBPF dataplane (XDP on the node's uplink cli0, tc
// on the pod veths) in the netns lab (prefix "kpxe2x-"): the packets take the
// BPF path (proved by its verdict counters, and no VIP is bound anywhere), a
// live flow survives `kill -9` + restart of kpxd and an unrelated endpoint
// change, a removed backend's flows fail fast, and --dataplane=auto falls
// back to the io_uring proxy when XDP cannot attach. Needs root.
#include "tests/e2e/kpxd_lab_fixture.h"

namespace kpx::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPrefix[] = "kpxe2x-";

std::string PinDir() { return absl::StrFormat("/sys/fs/bpf/kpxe2x-%d", getpid()); }

class KpxdXdpTest : public KpxdLabFixture {
 protected:
  static void SetUpTestSuite() { LabUp(kPrefix); }
  static void TearDownTestSuite() { LabDown(kPrefix); }
  std::string Prefix() const override { return kPrefix; }
  std::vector<std::string> DataplaneArgs() const override { return args_; }

  void TearDown() override {
    StopKpxd(SIGKILL);
    // Detach programs and unpin maps, as an operator would with --cleanup.
    Sh(kpx::testing::BinaryPath("tools/kpxd") + " --netns=" + Prefix() +
       "node --cleanup --bpf-pin-dir=" + PinDir() + " >/dev/null 2>&1");
    KpxdLabFixture::TearDown();
  }

  // An echo round trip on an open connection; false on any error.
  static bool Echo(int fd, const std::string& msg) {
    if (!SendAll(fd, msg.data(), msg.size())) return false;
    std::string got;
    char buf[4096];
    while (got.size() < msg.size()) {
      ssize_t r = recv(fd, buf, sizeof(buf), 0);
      if (r <= 0) return false;
      got.append(buf, r);
    }
    return got == msg;
  }

  int OpenFromClient(const char* ip, int port) {
    int fd = -1;
    InNetns(Prefix() + "client", [&] { fd = ConnectTimeout(ip, port, 2000); });
    return fd;
  }

  long Verdict(const std::string& name) {
    std::string out = ShOut(Kpxctl("--socket " + work_ + "/kpxd.sock stats -o json"));
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("\"" + name + "\": ([0-9]+)"))) return -1;
    return std::stol(m[1]);
  }

  std::vector<std::string> args_ = {"--dataplane=xdp", "--bpf-pin-dir=" + PinDir(),
                                    "--cluster-cidr=10.244.0.0/16"};
};

TEST_F(KpxdXdpTest, TrafficTakesTheEbpfPathToEveryPod) {
  CopyExample("flask.yaml");
  StartKpxd();
  EXPECT_THAT(Status(), HasSubstr("\"dataplane\":\"xdp\""));
  Spread s = Requests(60);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
  // The BPF programs carried it: one new flow per request, replies reverse-NATed.
  EXPECT_GE(Verdict("new_flow"), 60);
  EXPECT_GE(Verdict("reply"), 60);
  // ...and not a proxy or the kernel's NAT: the VIP is bound nowhere.
  EXPECT_THAT(ShOut("ip -n " + Prefix() + "node -4 addr"), Not(HasSubstr(kVip)));
}

TEST_F(KpxdXdpTest, LiveFlowSurvivesKill9RestartAndUnrelatedChange) {
  CopyExample("flask.yaml");
  WriteManifest("tcp.yaml", EchoServiceManifest({"10.244.1.2"}));
  StartKpxd();
  int fd = OpenFromClient("10.96.9.9", 5001);
  ASSERT_GE(fd, 0) << strerror(-fd);
  ASSERT_TRUE(Echo(fd, "before"));

  ASSERT_EQ(StopKpxd(SIGKILL), -1);  // killed, no cleanup ran
  EXPECT_TRUE(Echo(fd, "while kpxd is dead")) << "flow broke when kpxd died";
  EXPECT_EQ(Requests(10).failed, 0) << "new connections failed while kpxd was dead";

  StartKpxd();  // adopts the pinned maps and links
  EXPECT_THAT(Log(), HasSubstr("adopted 2 frontends"));
  EXPECT_TRUE(Echo(fd, "after restart"));
  long before = StatusField("updates");
  WriteManifest("flask.yaml", FlaskWithEndpoints(2));  // unrelated Service changes
  ASSERT_TRUE(WaitUpdates(before));
  EXPECT_TRUE(Echo(fd, "after an unrelated endpoint change"));
  close(fd);
  Spread s = Requests(20);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod3") + s.by_pod.count("pod4"), 0u);
}

TEST_F(KpxdXdpTest, FlowsOfARemovedBackendFailFast) {
  WriteManifest("tcp.yaml", EchoServiceManifest({"10.244.1.2"}));
  StartKpxd();
  int fd = OpenFromClient("10.96.9.9", 5001);
  ASSERT_GE(fd, 0) << strerror(-fd);
  ASSERT_TRUE(Echo(fd, "hello"));
  long before = StatusField("updates");
  WriteManifest("tcp.yaml", EchoServiceManifest({"10.244.2.2"}));
  ASSERT_TRUE(WaitUpdates(before));
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(Echo(fd, "to a removed backend"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2))
      << "the flow hung instead of failing fast";
  close(fd);
  EXPECT_GE(Verdict("dead_backend"), 1);
  // New connections go to the new backend.
  int fd2 = OpenFromClient("10.96.9.9", 5001);
  ASSERT_GE(fd2, 0);
  EXPECT_TRUE(Echo(fd2, "new flow"));
  close(fd2);
}

// `kpxctl get` shows open flows on the eBPF path (the conntrack walk): one
// while a connection is open, none once both sides closed it.
TEST_F(KpxdXdpTest, KpxctlShowsActiveFlowsPerBackend) {
  WriteManifest("tcp.yaml", EchoServiceManifest({"10.244.1.2"}));
  StartKpxd();
  const std::string get = Kpxctl("--socket " + work_ + "/kpxd.sock get services default/tcp -o json");
  auto wait_active = [&](const char* want) {
    for (int i = 0; i < 100; ++i) {  // the walk runs at most once a second: <= 5 s
      if (ShOut(get).find(want) != std::string::npos) return true;
      usleep(50 * 1000);
    }
    return false;
  };
  int fd = OpenFromClient("10.96.9.9", 5001);
  ASSERT_GE(fd, 0) << strerror(-fd);
  ASSERT_TRUE(Echo(fd, "open"));
  EXPECT_TRUE(wait_active("\"active\": 1")) << ShOut(get);
  EXPECT_EQ(ShOut(get).find("\"active\": 2"), std::string::npos);
  close(fd);
  EXPECT_TRUE(wait_active("\"active\": 0")) << ShOut(get);
  EXPECT_EQ(ShOut(get).find("\"active\": 1"), std::string::npos);
}

TEST_F(KpxdXdpTest, HealthChecksStopNewFlowsToAKilledPod) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Sh(LabCmd("pod-stop 4") + " >/dev/null 2>&1"), 0);
  auto took = WaitHealth("default/flask-svc", "10.244.3.3", false, std::chrono::seconds(3));
  ASSERT_TRUE(took.has_value()) << Log();
  EXPECT_LT(took->count(), 1500);
  // After removal no new connection goes to the dead pod (the eBPF path has
  // no connect retry, so this is what the health checker buys).
  Spread s = Requests(60);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod4"), 0u);
  ASSERT_EQ(Sh(LabCmd("pod-start 4") + " >/dev/null 2>&1"), 0);
  EXPECT_TRUE(WaitHealth("default/flask-svc", "10.244.3.3", true, std::chrono::seconds(8)));
}

TEST_F(KpxdXdpTest, AutoFallsBackToTheUringProxyWhenXdpCannotAttach) {
  args_ = {"--dataplane=auto", "--bpf-pin-dir=" + PinDir(), "--interfaces=nonexistent0"};
  CopyExample("flask.yaml");
  StartKpxd();
  EXPECT_THAT(Status(), HasSubstr("\"dataplane\":\"uring\""));
  EXPECT_THAT(Log(), HasSubstr("XDP unavailable"));
  EXPECT_THAT(ShOut(Kpxctl("--socket " + work_ + "/kpxd.sock stats")), HasSubstr("xdp_unavailable"));
  Spread s = Requests(60);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
}

TEST_F(KpxdXdpTest, TraceReplaysTheProgramsPickForRealFlows) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_TRUE(WaitAllHealthy("default/flask-svc", 4));
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  auto trace = [&](const std::string& src) {
    return nlohmann::json::parse(ShOut(Kpxctl(sock + "trace " + src + " " + kVip + ":5000 -o json")),
                                 nullptr, false);
  };
  // Source ports of our own choosing, so each flow's 5-tuple is known; spread
  // over a range so several Maglev slots (and backends) are exercised.
  int base = 20000 + (getpid() % 20000);
  std::set<std::string> backends_seen;
  for (int i = 0; i < 12; ++i) {
    int sport = base + i * 7;
    nlohmann::json t = trace(absl::StrFormat("10.244.0.2:%d", sport));
    ASSERT_TRUE(t.is_object());
    std::string decision = t.value("decision", "");
    ASSERT_TRUE(decision == "maglev" || decision == "conntrack") << t.dump(2);
    std::string predicted = t.value("backend", "");
    HttpReply r;
    InNetns(Prefix() + "client", [&] { r = HttpFetch(kVip, 5000, "/", sport); });
    ASSERT_EQ(r.status, 200) << "sport " << sport;
    std::string pod = r.body.substr(0, r.body.find('\n'));
    EXPECT_EQ(PodIp(pod) + ":5000", predicted) << "sport " << sport << ": " << t.dump(2);
    backends_seen.insert(predicted);
    if (decision == "maglev") {
      EXPECT_LT(t["maglev"].value("slot", 0u), t["maglev"].value("table_size", 0u));
    }
  }
  EXPECT_GE(backends_seen.size(), 2u) << "12 flows all hashed to one backend";

  // A live flow: its conntrack entry decides, and names the same backend.
  int sport = base + 1000;
  nlohmann::json before = trace(absl::StrFormat("10.244.0.2:%d", sport));
  int fd = -1;
  InNetns(Prefix() + "client", [&] {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_port = htons(sport);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)), 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(5000);
    inet_pton(AF_INET, kVip, &sa.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << strerror(errno);
  });
  ASSERT_GE(fd, 0);
  nlohmann::json live = trace(absl::StrFormat("10.244.0.2:%d", sport));
  close(fd);
  EXPECT_EQ(live.value("decision", ""), "conntrack") << live.dump(2);
  EXPECT_EQ(live.value("backend", ""), before.value("backend", "x"));
  EXPECT_TRUE(live["conntrack"].value("seen_reply", false)) << live.dump(2);

  // Without a source port only the frontend and the candidates are known.
  nlohmann::json noport = trace("10.244.0.2");
  EXPECT_EQ(noport.value("decision", ""), "need_source_port");
  EXPECT_EQ(noport["backends"].size(), 4u);
  std::string table = ShOut(Kpxctl(sock + "trace 10.244.0.2:5555 " + std::string(kVip) + ":5000"));
  EXPECT_THAT(table, HasSubstr("Maglev: hash 0x"));
}

TEST_F(KpxdXdpTest, MetricsCountPacketsOnTheEbpfPath) {
  extra_args_ = {"--metrics-bind-address=127.0.0.1:0", "--healthz-bind-address=127.0.0.1:0"};
  CopyExample("flask.yaml");
  StartKpxd();
  std::string m1 = Scrape();
  ASSERT_EQ(CheckExposition(m1), "") << m1;
  EXPECT_EQ(MetricSum(m1, "kpx_dataplane", "dataplane=\"xdp\""), 1);
  EXPECT_GE(MetricSum(m1, "kpx_bpf_map_entries", "map=\"kpx_services\""), 1);
  const std::string fe = "frontend=\"10.96.4.197:5000/TCP\"";
  double packets = MetricSum(m1, "kpx_service_packets_total", fe);
  double flows = MetricSum(m1, "kpx_service_connections_total", fe);
  double new_flow = MetricSum(m1, "kpx_xdp_verdicts_total", "verdict=\"new_flow\"");
  ASSERT_GE(packets, 0) << m1;
  ASSERT_EQ(Requests(10).failed, 0);
  std::string m2 = Scrape();
  EXPECT_GE(MetricSum(m2, "kpx_service_packets_total", fe), packets + 10 * 3);
  EXPECT_EQ(MetricSum(m2, "kpx_service_connections_total", fe), flows + 10);
  EXPECT_GE(MetricSum(m2, "kpx_xdp_verdicts_total", "verdict=\"new_flow\""), new_flow + 10);
  EXPECT_EQ(NodeHttp("healthz_address", "/healthz").status, 200);
}

}  // namespace
}  // namespace kpx::e2e
