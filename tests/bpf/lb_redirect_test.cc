// After NAT, both programs redirect directly only to devices listed in
// kpx_tx_ports, with MACs from bpf_fib_lookup and the TTL decremented; any
// other outcome passes the rewritten packet to the kernel. Runs in a network
// namespace the test creates (a veth pair with a permanent neighbour), so the
// FIB answer does not depend on the host.
#include <bpf/bpf.h>
#include <net/if.h>

#include "tests/bpf/lb_test_util.h"
#include "tests/testlib/netns.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

constexpr Mac kEgressMac = {0x02, 0xaa, 0, 0, 0, 0x01};
constexpr Mac kBackendMac = {0x02, 0xbe, 0, 0, 0, 0x02};
const uint32_t kLocalBackend = Ip("10.244.9.2");

class LbRedirectTest : public LbTest {
 protected:
  void SetUp() override {
    LbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto ns = kpx::testing::NetNs::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    auto out = ns_->Exec(
        "set -e; ip link add kpxa address 02:aa:00:00:00:01 type veth peer name kpxb;"
        "ip addr add 10.244.9.1/24 dev kpxa; ip link set kpxa up; ip link set kpxb up;"
        "ip neigh replace 10.244.9.2 lladdr 02:be:00:00:00:02 dev kpxa nud permanent;"
        "sysctl -qw net.ipv4.ip_forward=1");
    ASSERT_TRUE(out.ok()) << out.status();
    auto scope = ns_->Enter();
    ASSERT_TRUE(scope.ok()) << scope.status();
    scope_ = std::move(*scope);
    egress_ifindex_ = if_nametoindex("kpxa");
    ASSERT_NE(egress_ifindex_, 0u);

    ASSERT_TRUE(lb().SetBackend(1, kLocalBackend, kBackendPort).ok());
    ASSERT_TRUE(lb().SetMaglev(kSvcId, {1}).ok());
    ASSERT_TRUE(lb().AddService(kVip, kVipPort, Svc(kSvcId, 1, 1)).ok());
  }

  void TearDown() override {
    scope_.reset();  // back to the original namespace before deleting this one
    ns_.reset();
  }

  void ListEgress() {
    // Devmap entries are resolved in the caller's namespace: we are in ns_.
    ASSERT_EQ(bpf_map_update_elem(lb().tx_ports_fd(), &egress_ifindex_, &egress_ifindex_, BPF_ANY),
              0)
        << strerror(errno);
  }

  std::unique_ptr<kpx::testing::NetNs> ns_;
  std::unique_ptr<kpx::testing::NetNs::Scope> scope_;
  uint32_t egress_ifindex_ = 0;
};

TEST_P(LbRedirectTest, ListedEgressDeviceGetsDirectRedirect) {
  ListEgress();
  TcpSpec syn = ToVip(44000, kSyn);
  syn.ttl = 17;
  TcpSpec want = syn;
  want.daddr = kLocalBackend;
  want.dport = kBackendPort;
  want.ttl = 16;
  want.smac = kEgressMac;
  want.dmac = kBackendMac;
  Bytes out =
      Step("syn", BuildTcp(syn),
           {Action::kRedirect, BuildTcp(want), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_REDIRECT, 1}}});
  TcpView v = ParseTcp(out);
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);
}

TEST_P(LbRedirectTest, UnlistedEgressDevicePassesToTheStack) {
  TcpSpec syn = ToVip(44001, kSyn);
  TcpSpec want = syn;
  want.daddr = kLocalBackend;
  want.dport = kBackendPort;
  Step("syn", BuildTcp(syn),
       {Action::kPass, BuildTcp(want), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbRedirectTest, ExpiringTtlAndVlanGoToTheStack) {
  ListEgress();
  TcpSpec syn = ToVip(44002, kSyn);
  syn.ttl = 1;  // the kernel sends ICMP time exceeded
  TcpSpec want = syn;
  want.daddr = kLocalBackend;
  want.dport = kBackendPort;
  Step("ttl 1", BuildTcp(syn),
       {Action::kPass, BuildTcp(want), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpSpec tagged = ToVip(44003, kSyn);
  tagged.vlan = 9;
  TcpSpec want_tagged = tagged;
  want_tagged.daddr = kLocalBackend;
  want_tagged.dport = kBackendPort;
  Step("vlan", BuildTcp(tagged),
       {Action::kPass, BuildTcp(want_tagged), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbRedirectTest, NoRouteGoesToTheStack) {
  ListEgress();
  ASSERT_TRUE(lb().SetBackend(1, Ip("10.250.0.1"), kBackendPort).ok());  // no route in ns_
  TcpSpec syn = ToVip(44004, kSyn);
  TcpSpec want = syn;
  want.daddr = Ip("10.250.0.1");
  want.dport = kBackendPort;
  Step("syn", BuildTcp(syn),
       {Action::kPass, BuildTcp(want), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbRedirectTest, ::testing::Values(Hook::kXdp, Hook::kTc),
                         HookParamName);

}  // namespace
}  // namespace kpx::bpftest
