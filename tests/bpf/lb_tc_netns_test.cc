// kpx_tc attached for real (clsact ingress) on a node namespace between a
// client and a backend namespace, with real TCP sockets. The node's veths
// have TX checksum offload off, so the kernel finishes every
// CHECKSUM_PARTIAL packet in software and the receiver verifies it: this is
// the state BPF_PROG_TEST_RUN cannot produce, and where a wrong pseudo-header
// update (DNAT, SNAT) or RST checksum would show up as a hung connect.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "tests/bpf/lb_test_util.h"
#include "tests/testlib/netns.h"

namespace kpx::bpftest {
namespace {

using kpx::testing::NetNs;

const uint32_t kBackend = Ip("10.0.2.2");
constexpr uint16_t kServerPort = 8080;
constexpr int kTimeoutMs = 5000;

// Clears TX checksum offload on `ifname` in the caller's namespace.
bool TxChecksumOff(const char* ifname) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ethtool_value ev{};
  ev.cmd = ETHTOOL_STXCSUM;
  ev.data = 0;
  ifreq ifr{};
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  ifr.ifr_data = reinterpret_cast<char*>(&ev);
  bool ok = ioctl(fd, SIOCETHTOOL, &ifr) == 0;
  close(fd);
  return ok;
}

// Connects (non-blocking, bounded by kTimeoutMs) from the caller's namespace;
// 0 or the errno the connect ended with (ETIMEDOUT for no answer).
int ConnectTo(uint32_t addr, uint16_t port, int* out_fd) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = addr;
  sa.sin_port = htons(port);
  int err = 0;
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    if (errno != EINPROGRESS) {
      err = errno;
    } else {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, kTimeoutMs) != 1) {
        err = ETIMEDOUT;
      } else {
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
  }
  if (err != 0 || out_fd == nullptr) {
    close(fd);
    return err;
  }
  *out_fd = fd;
  return 0;
}

class LbTcNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    auto lb = BpfLb::Create();
    ASSERT_TRUE(lb.ok()) << lb.status();
    lb_ = std::move(*lb);
    for (auto* ns : {&client_, &node_, &backend_}) {
      auto created = NetNs::Create();
      ASSERT_TRUE(created.ok()) << created.status();
      *ns = std::move(*created);
    }
    auto out = node_->Exec(
        "set -e;"
        "ip link add kpxnc type veth peer name kpxc0 netns " +
        client_->name() +
        ";"
        "ip link add kpxnb type veth peer name kpxb0 netns " +
        backend_->name() +
        ";"
        "ip addr add 10.0.1.1/24 dev kpxnc; ip addr add 10.0.2.1/24 dev kpxnb;"
        "ip link set kpxnc up; ip link set kpxnb up;"
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0"
        " net.ipv4.conf.kpxnc.rp_filter=0 net.ipv4.conf.kpxnb.rp_filter=0");
    ASSERT_TRUE(out.ok()) << out.status();
    out = client_->Exec(
        "set -e; ip addr add 10.0.1.2/24 dev kpxc0; ip link set kpxc0 up;"
        "ip route add default via 10.0.1.1");
    ASSERT_TRUE(out.ok()) << out.status();
    out = backend_->Exec(
        "set -e; ip addr add 10.0.2.2/24 dev kpxb0; ip link set kpxb0 up;"
        "ip route add default via 10.0.2.1");
    ASSERT_TRUE(out.ok()) << out.status();

    auto scope = node_->Enter();
    ASSERT_TRUE(scope.ok()) << scope.status();
    for (const char* dev : {"kpxnc", "kpxnb"}) {
      ASSERT_TRUE(TxChecksumOff(dev)) << dev << ": " << strerror(errno);
      LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = int(if_nametoindex(dev)),
                  .attach_point = BPF_TC_INGRESS);
      int err = bpf_tc_hook_create(&hook);
      ASSERT_TRUE(err == 0 || err == -EEXIST) << dev << ": " << strerror(-err);
      LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = lb_->prog_fd(Hook::kTc));
      ASSERT_EQ(bpf_tc_attach(&hook, &opts), 0) << dev;
    }
  }

  void TearDown() override {
    if (server_.joinable()) server_.join();
    if (listen_fd_ >= 0) close(listen_fd_);
    // Deleting the namespaces removes the veths and their tc filters.
    client_.reset();
    node_.reset();
    backend_.reset();
    lb_.reset();
  }

  // An echo server in the backend namespace that serves one connection and
  // records the peer address it saw.
  void StartEchoServer() {
    auto scope = backend_->Enter();
    ASSERT_TRUE(scope.ok()) << scope.status();
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listen_fd_, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = kBackend;
    sa.sin_port = htons(kServerPort);
    ASSERT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << strerror(errno);
    ASSERT_EQ(listen(listen_fd_, 4), 0);
    server_ = std::thread([this] {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, kTimeoutMs) != 1) return;
      sockaddr_in peer{};
      socklen_t len = sizeof(peer);
      int c = accept(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len);
      if (c < 0) return;
      peer_addr_ = peer.sin_addr.s_addr;
      char buf[256];
      pollfd cp{c, POLLIN, 0};
      if (poll(&cp, 1, kTimeoutMs) == 1) {
        ssize_t n = read(c, buf, sizeof(buf));
        if (n > 0 && write(c, buf, n) != n) peer_addr_ = 0;
      }
      close(c);
    });
  }

  std::unique_ptr<BpfLb> lb_;
  std::unique_ptr<NetNs> client_, node_, backend_;
  int listen_fd_ = -1;
  std::thread server_;
  uint32_t peer_addr_ = 0;
};

TEST_F(LbTcNetnsTest, ConnectionThroughVipWithSoftwareChecksums) {
  ASSERT_TRUE(lb_->SetBackend(1, kBackend, kServerPort).ok());
  ASSERT_TRUE(lb_->SetMaglev(kSvcId, {1}).ok());
  ASSERT_TRUE(lb_->AddService(kVip, kVipPort, Svc(kSvcId, 1, 1)).ok());
  StartEchoServer();
  ASSERT_FALSE(HasFatalFailure());

  auto scope = client_->Enter();
  ASSERT_TRUE(scope.ok()) << scope.status();
  int fd = -1;
  ASSERT_EQ(ConnectTo(kVip, kVipPort, &fd), 0) << "connect to the VIP failed";
  const char msg[] = "ping through kpx_tc";
  ASSERT_EQ(write(fd, msg, sizeof(msg)), ssize_t(sizeof(msg)));
  char buf[64] = {};
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, kTimeoutMs), 1) << "no echo";
  EXPECT_EQ(read(fd, buf, sizeof(buf)), ssize_t(sizeof(msg)));
  EXPECT_STREQ(buf, msg);
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  getpeername(fd, reinterpret_cast<sockaddr*>(&local), &len);
  EXPECT_EQ(local.sin_addr.s_addr, kVip) << "the client must only ever see the VIP";
  close(fd);
  scope->reset();
  server_.join();
  EXPECT_EQ(peer_addr_, Ip("10.0.1.2")) << "the backend sees the real client address";
  EXPECT_GE(lb_->Verdict(KPX_V_NEW_FLOW), 1u);
  EXPECT_GE(lb_->Verdict(KPX_V_CT_HIT), 1u);
  EXPECT_GE(lb_->Verdict(KPX_V_REPLY), 1u);
}

TEST_F(LbTcNetnsTest, ServiceWithoutBackendsRefusesAtOnce) {
  ASSERT_TRUE(lb_->AddService(kVip, kVipPort, Svc(kSvcId, 0, 0)).ok());
  auto scope = client_->Enter();
  ASSERT_TRUE(scope.ok()) << scope.status();
  // A RST with a bad checksum would be dropped: the connect would time out
  // (ETIMEDOUT) instead of being refused.
  EXPECT_EQ(ConnectTo(kVip, kVipPort, nullptr), ECONNREFUSED);
  EXPECT_EQ(lb_->Verdict(KPX_V_NO_BACKEND), 1u);
}

}  // namespace
}  // namespace kpx::bpftest
