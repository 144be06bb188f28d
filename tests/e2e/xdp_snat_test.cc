// The eBPF dataplane's masquerade, pod veth watching and ABI upgrade check,
// end to end in namespaces this test creates (prefix kpxs-):
//   client c0 10.251.0.2 ---veth--- n0 10.251.0.1 [XDP + tc]  node (router)
//                                    n1 10.252.0.1 [tc]  ---veth--- p0 10.252.0.2 pod (echo :8080)
// The pod routes only to the node's address (no default route), as a pod on
// another node would see an off-cluster client: without masquerade its
// replies have no way back. Root.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataplane/xdp/xdp_dataplane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/netns.h"
#include "tests/testlib/testlib.h"

namespace kpx::xdp {
namespace {

using controller::Backend;
using controller::FrontendKey;
using controller::FrontendType;
using controller::ServiceRule;
using controller::ServiceTable;
using kpx::testing::NetNs;
using ::testing::HasSubstr;

constexpr char kPrefix[] = "kpxs-";
constexpr absl::Duration kIoTimeout = absl::Seconds(3);

Ipv4 Ip(const char* s) { return *Ipv4::Parse(s); }

sockaddr_in Addr(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

// Echo server that also records each connection's peer address (what the
// pod sees: the client, or the node when masqueraded).
class EchoServer {
 public:
  explicit EchoServer(int listen_fd) : listen_fd_(listen_fd), thread_([this] { Run(); }) {}
  ~EchoServer() {
    stop_ = true;
    thread_.join();
    for (int fd : conns_) close(fd);
    close(listen_fd_);
  }
  std::vector<std::string> peers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peers_;
  }

 private:
  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (int fd : conns_) fds.push_back({fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        sockaddr_in peer{};
        socklen_t len = sizeof(peer);
        int c = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
        if (c >= 0) {
          conns_.push_back(c);
          char buf[INET_ADDRSTRLEN] = {};
          inet_ntop(AF_INET, &peer.sin_addr, buf, sizeof(buf));
          std::lock_guard<std::mutex> lock(mu_);
          peers_.push_back(buf);
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        char buf[4096];
        ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0 || write(fds[i].fd, buf, n) != n) {
          close(fds[i].fd);
          conns_.erase(std::find(conns_.begin(), conns_.end(), fds[i].fd));
          break;
        }
      }
    }
  }

  int listen_fd_;
  std::atomic<bool> stop_{false};
  std::vector<int> conns_;
  mutable std::mutex mu_;
  std::vector<std::string> peers_;
  std::thread thread_;
};

int ConnectWithin(int fd, const sockaddr_in& to, absl::Duration timeout) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) == 0) return 0;
  if (errno != EINPROGRESS) return errno;
  pollfd p{fd, POLLOUT, 0};
  if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) return ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err;
}

std::string EchoRoundTrip(int fd, const std::string& msg) {
  if (write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return "<write failed>";
  std::string got;
  const absl::Time deadline = absl::Now() + kIoTimeout;
  while (got.size() < msg.size() && absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) != 1) continue;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return got + "<closed>";
    got.append(buf, n);
  }
  return got;
}

bool SetFeature(const char* ifname, uint32_t cmd, bool on) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ethtool_value ev{};
  ev.cmd = cmd;
  ev.data = on ? 1 : 0;
  ifreq ifr{};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  ifr.ifr_data = reinterpret_cast<char*>(&ev);
  bool ok = ioctl(fd, SIOCETHTOOL, &ifr) == 0;
  close(fd);
  return ok;
}

// Checksums in software, so the receivers verify every one kpx rewrote.
bool SoftwareChecksums(const char* ifname) {
  return SetFeature(ifname, ETHTOOL_STXCSUM, false) && SetFeature(ifname, ETHTOOL_SRXCSUM, false);
}

uint64_t CsumErrors(const NetNs& ns) {
  absl::StatusOr<std::string> out = ns.Exec("nstat -az TcpInCsumErrors | awk '/TcpInCsumErrors/ {print $2}'");
  uint64_t n = 0;
  return out.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*out), &n) ? n : ~0ull;
}

template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

class XdpSnatE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    for (auto* ns : {&client_, &node_, &pod_}) {
      absl::StatusOr<std::unique_ptr<NetNs>> n = NetNs::Create(kPrefix);
      ASSERT_TRUE(n.ok()) << n.status();
      *ns = std::move(*n);
    }
    absl::StatusOr<std::string> out = node_->Exec(absl::StrCat(
        "ip link add n0 type veth peer name c0 netns ", client_->name(),
        " && ip link add n1 type veth peer name p0 netns ", pod_->name(),
        " && ip addr add 10.251.0.1/24 dev n0 && ip addr add 10.252.0.1/24 dev n1"
        " && ip link set n0 up && ip link set n1 up && sysctl -qw net.ipv4.ip_forward=1"));
    ASSERT_TRUE(out.ok()) << out.status();
    out = client_->Exec("ip addr add 10.251.0.2/24 dev c0 && ip link set c0 up && ip route add default via 10.251.0.1");
    ASSERT_TRUE(out.ok()) << out.status();
    // The pod knows the way to the node's address and to Services only.
    out = pod_->Exec(
        "ip addr add 10.252.0.2/24 dev p0 && ip link set p0 up && ip route add 10.251.0.1/32 via 10.252.0.1"
        " && ip route add 10.96.0.0/12 via 10.252.0.1");
    ASSERT_TRUE(out.ok()) << out.status();
    bool ok = false;
    ASSERT_TRUE(client_->RunIn([&] { ok = SoftwareChecksums("c0"); }).ok());
    ASSERT_TRUE(ok);
    ASSERT_TRUE(pod_->RunIn([&] { ok = SoftwareChecksums("p0"); }).ok());
    ASSERT_TRUE(ok);

    int lfd = -1;
    ASSERT_TRUE(pod_->RunIn([&] { lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }).ok());
    ASSERT_GE(lfd, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in any = Addr("0.0.0.0", 8080);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&any), sizeof(any)), 0) << strerror(errno);
    ASSERT_EQ(listen(lfd, 64), 0);
    server_ = std::make_unique<EchoServer>(lfd);

    static std::atomic<int> seq{0};
    pin_parent_ = absl::StrCat("/sys/fs/bpf/kpxs-", getpid(), "-t", seq.fetch_add(1));
    pin_dir_ = pin_parent_ + "/v" + std::to_string(KPX_ABI_VERSION);
    mkdir(pin_parent_.c_str(), 0700);
    auto scope = node_->Enter();
    ASSERT_TRUE(scope.ok()) << scope.status();
    scope_ = std::move(*scope);
  }

  void TearDown() override {
    dp_.reset();
    if (scope_ != nullptr) {
      absl::Status s = XdpDataplane::Cleanup(pin_dir_);
      EXPECT_TRUE(s.ok()) << s;
      XdpDataplane::Cleanup(pin_parent_ + "/v1").IgnoreError();
      XdpDataplane::Cleanup(pin_parent_ + "/v2").IgnoreError();
      rmdir(pin_parent_.c_str());
    }
    scope_.reset();
    server_.reset();
    extra_.reset();
    pod_.reset();
    node_.reset();
    client_.reset();
  }

  XdpOptions Options(const char* cluster_cidr) {
    XdpOptions o;
    o.pin_dir = pin_dir_;
    o.xdp_interfaces = std::vector<std::string>{"n0"};
    o.tc_interfaces = {"n1"};
    o.cluster_cidr = *ParseIpv4Cidr(cluster_cidr);
    o.map_sizes = MapSizes{.frontends = 256, .backends = 1024, .services = 256, .conntrack = 4096, .affinity = 256};
    return o;
  }

  void Start(XdpOptions o) {
    absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(std::move(o));
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
    ServiceTable table;
    for (ServiceRule r : {Rule(FrontendKey{Ip("10.96.0.10"), 80}, FrontendType::kClusterIP),
                          Rule(FrontendKey{Ipv4(), 30080}, FrontendType::kNodePort)}) {
      table[r.frontend] = r;
    }
    ASSERT_TRUE(dp_->Apply(controller::Diff(table, {})).ok());
  }

  static ServiceRule Rule(FrontendKey fk, FrontendType type) {
    ServiceRule r;
    r.service.service = {"default", "echo"};
    r.frontend = fk;
    r.type = type;
    Backend b;
    b.ip = Ip("10.252.0.2");
    b.port = 8080;
    r.backends.push_back(b);
    return r;
  }

  // Connects from `ns` and echoes once; "" on success, else what went wrong.
  std::string EchoFrom(const NetNs& ns, const char* ip, uint16_t port, const std::string& msg) {
    int fd = -1;
    EXPECT_TRUE(ns.RunIn([&] { fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }).ok());
    if (fd < 0) return "socket failed";
    int err = ConnectWithin(fd, Addr(ip, port), kIoTimeout);
    std::string got = err == 0 ? EchoRoundTrip(fd, msg) : std::string("connect: ") + strerror(err);
    close(fd);
    return got == msg ? "" : got;
  }

  uint64_t Verdict(int v) {
    auto verdicts = dp_->VerdictStats();
    return verdicts.ok() ? (*verdicts)[v] : ~0ull;
  }

  std::unique_ptr<NetNs> client_, node_, pod_, extra_;
  std::unique_ptr<NetNs::Scope> scope_;
  std::unique_ptr<EchoServer> server_;
  std::string pin_parent_, pin_dir_;
  std::unique_ptr<XdpDataplane> dp_;
};

TEST_F(XdpSnatE2E, OffClusterClientsAreMasqueradedSoRepliesReturnThroughTheNode) {
  // Without kpx the pod cannot answer the client at all.
  EXPECT_NE(EchoFrom(*client_, "10.252.0.2", 8080, "direct"), "");
  Start(Options("10.252.0.0/16"));
  for (auto [ip, port] : {std::pair<const char*, uint16_t>{"10.96.0.10", 80}, {"10.251.0.1", 30080}}) {
    SCOPED_TRACE(absl::StrCat(ip, ":", port));
    const size_t before = server_->peers().size();
    EXPECT_EQ(EchoFrom(*client_, ip, port, "masqueraded"), "");
    std::vector<std::string> peers = server_->peers();
    ASSERT_EQ(peers.size(), before + 1);
    EXPECT_EQ(peers.back(), "10.251.0.1") << "the pod sees the node's address";
  }
  EXPECT_GE(Verdict(KPX_V_NEW_FLOW), 2u);
  EXPECT_GE(Verdict(KPX_V_REPLY), 2u);
  EXPECT_GE(Verdict(KPX_V_REDIRECT), 4u) << "masqueraded packets are redirected, never passed to the stack";
  // Closed flows are not active; the conntrack walk sees them closing.
  EXPECT_TRUE(WaitFor([&] {
    auto c = dp_->WalkConntrack();
    return c.ok() && c->active.empty() && c->closing >= 2;
  }));
  EXPECT_EQ(CsumErrors(*client_), 0u);
  EXPECT_EQ(CsumErrors(*pod_), 0u);
}

TEST_F(XdpSnatE2E, ClientsInsideTheClusterCidrKeepTheirAddress) {
  ASSERT_TRUE(pod_->Exec("ip route add default via 10.252.0.1").ok());
  Start(Options("10.0.0.0/8"));
  EXPECT_EQ(EchoFrom(*client_, "10.96.0.10", 80, "as-is"), "");
  ASSERT_EQ(server_->peers().size(), 1u);
  EXPECT_EQ(server_->peers()[0], "10.251.0.2");
}

TEST_F(XdpSnatE2E, HairpinPodReachesItselfThroughTheVip) {
  Start(Options("10.252.0.0/16"));
  // While the connection is open the census counts it on the pod.
  int fd = -1;
  ASSERT_TRUE(pod_->RunIn([&] { fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }).ok());
  ASSERT_EQ(ConnectWithin(fd, Addr("10.96.0.10", 80), kIoTimeout), 0);
  EXPECT_EQ(EchoRoundTrip(fd, "hairpin"), "hairpin");
  ASSERT_EQ(server_->peers().size(), 1u);
  EXPECT_EQ(server_->peers()[0], "10.251.0.1") << "a pod reaching itself is masqueraded";
  dataplane::DataplaneStats st = dp_->Stats();
  uint64_t active = 0;
  for (const auto& f : st.frontends) {
    for (const auto& b : f.backends) active += b.active;
  }
  EXPECT_EQ(active, 1u);
  close(fd);
  EXPECT_EQ(CsumErrors(*pod_), 0u);
}

// A pod that starts after kpx: its veth gets the tc program from the link
// watcher, and its traffic to the VIP takes the eBPF path (the node has no
// route for the VIP: nothing else could carry it).
TEST_F(XdpSnatE2E, NewPodVethGetsTcAndReachesTheVip) {
  ASSERT_TRUE(pod_->Exec("ip route add default via 10.252.0.1").ok());
  XdpOptions o = Options("10.0.0.0/8");
  o.tc_interfaces.clear();
  o.watch_veths = true;
  Start(std::move(o));
  EXPECT_TRUE(WaitFor([&] { return dp_->WatchedVeths() == std::vector<std::string>{"n1"}; }))
      << "the veth that existed at start is reported by the dump";

  absl::StatusOr<std::unique_ptr<NetNs>> n = NetNs::Create(kPrefix);
  ASSERT_TRUE(n.ok()) << n.status();
  extra_ = std::move(*n);
  ASSERT_TRUE(node_->Exec(absl::StrCat("ip link add n2 type veth peer name q0 netns ", extra_->name(),
                                       " && ip addr add 10.253.0.1/24 dev n2 && ip link set n2 up"))
                  .ok());
  ASSERT_TRUE(
      extra_->Exec("ip addr add 10.253.0.2/24 dev q0 && ip link set q0 up && ip route add default via 10.253.0.1").ok());
  ASSERT_TRUE(WaitFor([&] {
    const int ifindex = static_cast<int>(if_nametoindex("n2"));
    return ifindex > 0 && HasKpxTc(ifindex);
  })) << "tc was not attached to the new veth";
  EXPECT_EQ(dp_->WatchedVeths(), (std::vector<std::string>{"n1", "n2"}));

  const uint64_t before = Verdict(KPX_V_NEW_FLOW);
  EXPECT_EQ(EchoFrom(*extra_, "10.96.0.10", 80, "new-pod"), "");
  EXPECT_EQ(Verdict(KPX_V_NEW_FLOW), before + 1);
  ASSERT_EQ(server_->peers().size(), 1u);
  EXPECT_EQ(server_->peers()[0], "10.253.0.2");

  ASSERT_TRUE(node_->Exec("ip link del n2").ok());
  EXPECT_TRUE(WaitFor([&] { return dp_->WatchedVeths() == std::vector<std::string>{"n1"}; }))
      << "a removed veth is forgotten";
}

// Upgrade from ABI v1: its pins (here a v1-sized kpx_config next to, or in,
// the pin dir) make Create refuse with the command that removes them; after
// that cleanup it starts.
TEST_F(XdpSnatE2E, OlderAbiPinsAreRefusedUntilCleanedUp) {
  const std::string v1 = pin_parent_ + "/v1";
  ASSERT_EQ(mkdir(v1.c_str(), 0700), 0) << strerror(errno);
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_config", 4, 24, 1, nullptr);  // v1: 24-byte values
  ASSERT_GE(fd, 0) << strerror(errno);
  uint32_t zero = 0, v1_config[6] = {1, 0, 0, 0, 0, 0};
  ASSERT_EQ(bpf_map_update_elem(fd, &zero, v1_config, BPF_ANY), 0);
  ASSERT_EQ(bpf_obj_pin(fd, (v1 + "/kpx_config").c_str()), 0) << strerror(errno);

  absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(Options("10.252.0.0/16"));
  ASSERT_FALSE(dp.ok());
  EXPECT_EQ(dp.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(dp.status().message(), HasSubstr("kpxd --cleanup --bpf-pin-dir=" + v1));

  // The same layout in the pin dir itself.
  ASSERT_EQ(mkdir(pin_dir_.c_str(), 0700), 0) << strerror(errno);
  ASSERT_EQ(bpf_obj_pin(fd, (pin_dir_ + "/kpx_config").c_str()), 0) << strerror(errno);
  close(fd);
  ASSERT_TRUE(XdpDataplane::Cleanup(v1).ok());
  dp = XdpDataplane::Create(Options("10.252.0.0/16"));
  ASSERT_FALSE(dp.ok());
  EXPECT_THAT(dp.status().message(), HasSubstr("kpxd --cleanup --bpf-pin-dir=" + pin_dir_));
  EXPECT_THAT(dp.status().message(), HasSubstr("24 bytes"));

  ASSERT_TRUE(XdpDataplane::Cleanup(pin_dir_).ok());
  Start(Options("10.252.0.0/16"));
  EXPECT_EQ(EchoFrom(*client_, "10.96.0.10", 80, "after-upgrade"), "");
}

// Upgrade from ABI v2 (per-service Maglev inner maps): its kpx_config has
// v3's size, so the version inside it decides. Refused like v1, next to the
// pin dir or in it, until `kpxd --cleanup` of that directory.
TEST_F(XdpSnatE2E, AbiV2PinsAreRefusedUntilCleanedUp) {
  const std::string v2 = pin_parent_ + "/v2";
  ASSERT_EQ(mkdir(v2.c_str(), 0700), 0) << strerror(errno);
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_config", 4, sizeof(kpx_config), 1, nullptr);
  ASSERT_GE(fd, 0) << strerror(errno);
  uint32_t zero = 0;
  kpx_config v2_config{};
  v2_config.abi_version = 2;
  ASSERT_EQ(bpf_map_update_elem(fd, &zero, &v2_config, BPF_ANY), 0);
  ASSERT_EQ(bpf_obj_pin(fd, (v2 + "/kpx_config").c_str()), 0) << strerror(errno);

  absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(Options("10.252.0.0/16"));
  ASSERT_FALSE(dp.ok());
  EXPECT_EQ(dp.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(dp.status().message(), HasSubstr("kpxd --cleanup --bpf-pin-dir=" + v2));

  ASSERT_EQ(mkdir(pin_dir_.c_str(), 0700), 0) << strerror(errno);
  ASSERT_EQ(bpf_obj_pin(fd, (pin_dir_ + "/kpx_config").c_str()), 0) << strerror(errno);
  close(fd);
  ASSERT_TRUE(XdpDataplane::Cleanup(v2).ok());
  dp = XdpDataplane::Create(Options("10.252.0.0/16"));
  ASSERT_FALSE(dp.ok());
  EXPECT_THAT(dp.status().message(), HasSubstr("kpxd --cleanup --bpf-pin-dir=" + pin_dir_));
  EXPECT_THAT(dp.status().message(), HasSubstr("maps of kpx ABI v2"));

  ASSERT_TRUE(XdpDataplane::Cleanup(pin_dir_).ok());
  Start(Options("10.252.0.0/16"));
  EXPECT_EQ(EchoFrom(*client_, "10.96.0.10", 80, "after-upgrade"), "");
}

}  // namespace
}  // namespace kpx::xdp
