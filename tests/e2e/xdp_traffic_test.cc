// Real TCP through the XDP dataplane, in three namespaces the test creates:
//   client c0 10.251.0.2 ---veth--- n0 10.251.0.1 [XDP]  node (router)
//                                    n1 10.252.0.1 [tc]  ---veth--- p0 10.252.0.2 pod (echo :8080)
// A connection to the VIP 10.96.0.10:80 reaches the pod with every rewritten
// checksum verified by the receiver; a frontend without backends is refused
// at once (by tc, or by XDP where XDP_TX is allowed); and an open connection
// survives a dataplane restart (a new XdpDataplane adopting the pinned
// state). Root.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
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
using controller::ServiceRule;
using controller::ServiceTable;
using kpx::testing::NetNs;

constexpr absl::Duration kIoTimeout = absl::Seconds(3);

Ipv4 Ip(const char* s) { return *Ipv4::Parse(s); }

sockaddr_in Addr(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

// Echo server on a socket made inside the pod namespace; serves from a
// thread in the test's own namespace (a socket keeps its namespace).
class EchoServer {
 public:
  explicit EchoServer(int listen_fd) : listen_fd_(listen_fd), thread_([this] { Run(); }) {}
  ~EchoServer() {
    stop_ = true;
    thread_.join();
    for (int fd : conns_) close(fd);
    close(listen_fd_);
  }

 private:
  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (int fd : conns_) fds.push_back({fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) conns_.push_back(c);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        char buf[4096];
        ssize_t n = read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0 || write(fds[i].fd, buf, n) != n) {
          close(fds[i].fd);
          conns_.erase(std::find(conns_.begin(), conns_.end(), fds[i].fd));
          break;  // fds is stale now
        }
      }
    }
  }

  int listen_fd_;
  std::atomic<bool> stop_{false};
  std::vector<int> conns_;
  std::thread thread_;
};

// Connects with a deadline; the errno of the failure, or 0.
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

// Sends `msg` and waits (bounded) for the same bytes back.
std::string EchoRoundTrip(int fd, const std::string& msg) {
  if (write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return "<write failed>";
  std::string got;
  const absl::Time deadline = absl::Now() + kIoTimeout;
  while (got.size() < msg.size() && absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) != 1) continue;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return got + "<closed: " + strerror(n == 0 ? 0 : errno) + ">";
    got.append(buf, n);
  }
  return got;
}

class XdpTrafficE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    for (auto* ns : {&client_, &node_, &pod_}) {
      absl::StatusOr<std::unique_ptr<NetNs>> n = NetNs::Create();
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
    out = pod_->Exec("ip addr add 10.252.0.2/24 dev p0 && ip link set p0 up && ip route add default via 10.252.0.1");
    ASSERT_TRUE(out.ok()) << out.status();
    // Checksums in software on both ends, as a NIC delivers them: XDP sees
    // full checksums (not a veth's CHECKSUM_PARTIAL, which nobody would
    // verify), and with rx checksumming off the client and the pod verify
    // every TCP checksum kpx rewrote (XDP's incremental DNAT, tc's reverse
    // NAT). A wrong one is dropped and counted in TcpInCsumErrors.
    ASSERT_TRUE(client_->RunIn([&] { client_ready_ = SoftwareChecksums("c0"); }).ok());
    ASSERT_TRUE(client_ready_);
    bool pod_ready = false;
    ASSERT_TRUE(pod_->RunIn([&] { pod_ready = SoftwareChecksums("p0"); }).ok());
    ASSERT_TRUE(pod_ready);

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
    pin_dir_ = absl::StrCat("/sys/fs/bpf/kpx-e2e-xdp-", getpid(), "-t", seq.fetch_add(1));
    auto scope = node_->Enter();  // the dataplane runs in the node namespace
    ASSERT_TRUE(scope.ok()) << scope.status();
    scope_ = std::move(*scope);
  }

  void TearDown() override {
    dp_.reset();
    if (scope_ != nullptr) {
      absl::Status s = XdpDataplane::Cleanup(pin_dir_);
      EXPECT_TRUE(s.ok()) << s;
    }
    scope_.reset();
    server_.reset();
    pod_.reset();
    node_.reset();
    client_.reset();
  }

  // ethtool -K without ethtool (not installed everywhere).
  static bool SetFeature(const char* ifname, uint32_t cmd, bool on) {
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

  static bool SoftwareChecksums(const char* ifname) {
    return SetFeature(ifname, ETHTOOL_STXCSUM, false) && SetFeature(ifname, ETHTOOL_SRXCSUM, false);
  }

  static uint64_t CsumErrors(const NetNs& ns) {
    absl::StatusOr<std::string> out = ns.Exec("nstat -az TcpInCsumErrors | awk '/TcpInCsumErrors/ {print $2}'");
    uint64_t n = 0;
    return out.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*out), &n) ? n : ~0ull;
  }

  // A two-instruction XDP program (r0 = XDP_PASS; exit), attached natively;
  // it goes away with the namespace.
  static bool AttachXdpPass(const char* ifname) {
    bpf_insn insns[2] = {};
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[0].imm = XDP_PASS;
    insns[1].code = BPF_JMP | BPF_EXIT;
    int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "kpx_t_pass", "GPL", insns, 2, nullptr);
    if (fd < 0) return false;
    bool ok = bpf_xdp_attach(static_cast<int>(if_nametoindex(ifname)), fd, XDP_FLAGS_DRV_MODE, nullptr) == 0;
    close(fd);
    return ok;
  }

  XdpOptions Options() {
    XdpOptions o;
    o.pin_dir = pin_dir_;
    o.xdp_interfaces = std::vector<std::string>{"n0"};
    // XdpDataplane puts tc behind XDP on n0 itself (n0 is not in
    // redirect_interfaces): it sends the RSTs XDP hands it.
    o.tc_interfaces = {"n1"};
    o.cluster_cidr = *ParseIpv4Cidr("10.252.0.0/16");
    o.map_sizes = MapSizes{.frontends = 256, .backends = 1024, .services = 256, .conntrack = 4096, .affinity = 256};
    return o;
  }

  static ServiceTable Table(bool with_backend) {
    ServiceRule r;
    r.service.service = {"default", "echo"};
    r.frontend = FrontendKey{Ip("10.96.0.10"), 80};
    if (with_backend) {
      Backend b;
      b.ip = Ip("10.252.0.2");
      b.port = 8080;
      r.backends.push_back(b);
    }
    return ServiceTable{{r.frontend, r}};
  }

  // A socket in the client namespace connected (or not) to `to`.
  int ClientConnect(const sockaddr_in& to, int* err) {
    int fd = -1;
    EXPECT_TRUE(client_->RunIn([&] { fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }).ok());
    *err = fd < 0 ? errno : ConnectWithin(fd, to, kIoTimeout);
    return fd;
  }

  std::unique_ptr<NetNs> client_, node_, pod_;
  std::unique_ptr<NetNs::Scope> scope_;
  std::unique_ptr<EchoServer> server_;
  std::string pin_dir_;
  bool client_ready_ = false;
  std::unique_ptr<XdpDataplane> dp_;
};

TEST_F(XdpTrafficE2E, VipReachesPodAndSurvivesRestart) {
  // The lab routes: the pod answers on its own address without kpx.
  int err = 0;
  int direct = ClientConnect(Addr("10.252.0.2", 8080), &err);
  ASSERT_EQ(err, 0) << strerror(err);
  EXPECT_EQ(EchoRoundTrip(direct, "direct"), "direct");
  close(direct);

  absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(Options());
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  ServiceTable table = Table(true);
  ASSERT_TRUE(dp_->Apply(controller::Diff(table, {})).ok());

  int fd = ClientConnect(Addr("10.96.0.10", 80), &err);
  ASSERT_EQ(err, 0) << "connect to the VIP: " << strerror(err);
  EXPECT_EQ(EchoRoundTrip(fd, "through-xdp"), "through-xdp");
  auto verdicts = dp_->VerdictStats();
  ASSERT_TRUE(verdicts.ok());
  EXPECT_GE((*verdicts)[KPX_V_NEW_FLOW], 1u);
  EXPECT_GE((*verdicts)[KPX_V_REPLY], 1u);
  auto counters = dp_->Counters();
  ASSERT_TRUE(counters.ok());
  ASSERT_EQ(counters->size(), 1u);
  EXPECT_GE((*counters)[0].stats.new_flows, 1u);

  // Restart: the old process's objects go, a new one adopts. The open
  // connection keeps working throughout.
  dp_.reset();
  EXPECT_EQ(EchoRoundTrip(fd, "while-down"), "while-down");
  dp = XdpDataplane::Create(Options());
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  ASSERT_TRUE(dp_->Apply(controller::Diff(table, {})).ok());
  ASSERT_TRUE(dp_->Prune(table).ok());
  EXPECT_EQ(EchoRoundTrip(fd, "after-restart"), "after-restart");
  close(fd);
  int fd2 = ClientConnect(Addr("10.96.0.10", 80), &err);
  ASSERT_EQ(err, 0) << strerror(err);
  EXPECT_EQ(EchoRoundTrip(fd2, "new-after-restart"), "new-after-restart");
  close(fd2);
  EXPECT_EQ(CsumErrors(*client_), 0u);
  EXPECT_EQ(CsumErrors(*pod_), 0u);
}

// The reset for a frontend without backends must arrive at once (clients
// fail fast, never a black hole). Default: XDP may not XDP_TX into n0 (its
// peer could drop the frame) and hands the SYN to tc behind it.
TEST_F(XdpTrafficE2E, FrontendWithoutBackendsIsRefusedAtOnceByTc) {
  absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(Options());
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  EXPECT_TRUE(HasKpxTc(static_cast<int>(if_nametoindex("n0"))));
  ASSERT_TRUE(dp_->Apply(controller::Diff(Table(false), {})).ok());
  int err = 0;
  const absl::Time start = absl::Now();
  int fd = ClientConnect(Addr("10.96.0.10", 80), &err);
  EXPECT_EQ(err, ECONNREFUSED) << strerror(err);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));  // a reset, not a timeout
  close(fd);
  auto verdicts = dp_->VerdictStats();
  ASSERT_TRUE(verdicts.ok());
  EXPECT_GE((*verdicts)[KPX_V_NO_BACKEND], 1u);
  EXPECT_EQ(CsumErrors(*client_), 0u);
}

// With n0 listed as safe (kpx_tx_ports) the XDP program answers itself with
// XDP_TX. On a veth that is only safe when the peer runs XDP (veth schedules
// the peer for XDP_TX frames only then), so c0 gets an XDP_PASS program, and
// no tc sits on n0: the RST can only come from XDP.
TEST_F(XdpTrafficE2E, FrontendWithoutBackendsIsRefusedAtOnceByXdpWhereListed) {
  ASSERT_TRUE(client_->RunIn([&] { client_ready_ = AttachXdpPass("c0"); }).ok());
  ASSERT_TRUE(client_ready_);
  XdpOptions o = Options();
  o.redirect_interfaces = {"n0"};
  absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(o);
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  EXPECT_FALSE(HasKpxTc(static_cast<int>(if_nametoindex("n0"))));
  ASSERT_TRUE(dp_->Apply(controller::Diff(Table(false), {})).ok());
  int err = 0;
  const absl::Time start = absl::Now();
  int fd = ClientConnect(Addr("10.96.0.10", 80), &err);
  EXPECT_EQ(err, ECONNREFUSED) << strerror(err);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  close(fd);
  EXPECT_EQ(CsumErrors(*client_), 0u);
}

}  // namespace
}  // namespace kpx::xdp
