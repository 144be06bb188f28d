// Conntrack TCP state through both programs: a RST or FINs from both sides
// mark the flow closing on both entries; a SYN on a closing flow's 5-tuple
// picks a backend afresh; after KPX_CT_CLOSING_NS (aged here by rewriting
// last_seen) the flow is forgotten; one FIN alone (half close) changes
// nothing.
#include <bpf/bpf.h>

#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

class LbConntrackStateTest : public LbTest {
 protected:
  void SetUp() override {
    LbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    SetUpBasicWorld(lb());
  }

  kpx_ct_entry Entry(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport) {
    kpx_ct_key k{};
    k.saddr = saddr;
    k.daddr = daddr;
    k.sport = htons(sport);
    k.dport = htons(dport);
    k.proto = 6;
    kpx_ct_entry e{};
    EXPECT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &k, &e), 0) << "no conntrack entry";
    return e;
  }

  void Age(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport) {
    kpx_ct_key k{};
    k.saddr = saddr;
    k.daddr = daddr;
    k.sport = htons(sport);
    k.dport = htons(dport);
    k.proto = 6;
    kpx_ct_entry e{};
    ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &k, &e), 0);
    e.last_seen_ns = MonotonicNs() - KPX_CT_CLOSING_NS - 1000000000ull;
    ASSERT_EQ(bpf_map_update_elem(lb().ct_fd(), &k, &e, BPF_EXIST), 0);
  }

  static TcpSpec FromBackend(uint32_t be, uint16_t client_port, uint8_t flags) {
    TcpSpec r;
    r.saddr = kBackendAddr[be];
    r.daddr = kClient;
    r.sport = kBackendPort;
    r.dport = client_port;
    r.flags = flags;
    r.seq = 9000;
    r.ack = 7001;
    return r;
  }

  static TcpSpec Unnat(TcpSpec s) {
    s.saddr = kVip;
    s.sport = kVipPort;
    return s;
  }
};

TEST_P(LbConntrackStateTest, FinsFromBothSidesCloseTheFlowAndASynOnItsTupleRePicks) {
  const uint16_t cp = 40100;
  const uint32_t be = Handshake(cp);
  // The table moves everything to backend 4: only a fresh pick can go there.
  ASSERT_TRUE(lb().SetMaglev(kSvcId, std::vector<uint32_t>(kTable.size(), 4)).ok());

  TcpSpec fin = ToVip(cp, kFin | kAck);
  Step("client fin", BuildTcp(fin), {Action::kPass, BuildTcp(Dnat(fin, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_EQ(Entry(kClient, kVip, cp, kVipPort).flags & KPX_CT_F_FIN_FWD, KPX_CT_F_FIN_FWD);
  // Half closed: a retransmitted SYN still finds the old backend.
  TcpSpec syn = ToVip(cp, kSyn);
  Step("syn while half closed", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});

  TcpSpec bfin = FromBackend(be, cp, kFin | kAck);
  Step("backend fin", BuildTcp(bfin), {Action::kPass, BuildTcp(Unnat(bfin)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  const uint8_t both = KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY;
  EXPECT_EQ(Entry(kClient, kVip, cp, kVipPort).flags & both, both);
  EXPECT_EQ(Entry(kBackendAddr[be], kClient, kBackendPort, cp).flags & both, both);
  // The last ACK of the close still goes through.
  TcpSpec last = ToVip(cp, kAck);
  Step("last ack", BuildTcp(last), {Action::kPass, BuildTcp(Dnat(last, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});

  // The 5-tuple is reused for a new connection: picked afresh.
  Step("syn after close", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, 4)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  // The new handshake is half-open; the closed flow's entries are gone (its
  // forward one would otherwise catch the new flow's ACK).
  kpx_ct_key fk{};
  fk.saddr = kClient;
  fk.daddr = kVip;
  fk.sport = htons(cp);
  fk.dport = htons(kVipPort);
  fk.proto = 6;
  kpx_ct_entry fresh{};
  EXPECT_NE(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fresh), 0) << "the closed flow's forward entry is deleted";
  kpx_ct_key hk = fk;
  hk.saddr = kBackendAddr[4];
  hk.sport = htons(kBackendPort);
  hk.daddr = kClient;
  hk.dport = htons(cp);
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_syn_fd(), &hk, &fresh), 0);
  EXPECT_EQ(fresh.backend_id, 4u);
  EXPECT_EQ(fresh.flags, KPX_CT_F_REPLY) << "a fresh entry, not the closing one";
  if (be != 4) {
    kpx_ct_key old{};
    old.saddr = kBackendAddr[be];
    old.daddr = kClient;
    old.sport = htons(kBackendPort);
    old.dport = htons(cp);
    old.proto = 6;
    kpx_ct_entry gone{};
    EXPECT_NE(bpf_map_lookup_elem(lb().ct_fd(), &old, &gone), 0) << "the old reverse entry is deleted";
  }
}

TEST_P(LbConntrackStateTest, RstClosesAtOnceAndTheFlowIsForgottenAfterTheClosingLifetime) {
  const uint16_t cp = 40101;
  const uint32_t be = Handshake(cp);
  TcpSpec rst = FromBackend(be, cp, kRst | kAck);
  Step("backend rst", BuildTcp(rst), {Action::kPass, BuildTcp(Unnat(rst)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_TRUE(Entry(kClient, kVip, cp, kVipPort).flags & KPX_CT_F_RST);
  EXPECT_TRUE(Entry(kBackendAddr[be], kClient, kBackendPort, cp).flags & KPX_CT_F_RST);

  // Within the closing lifetime, stragglers are still translated.
  TcpSpec late = ToVip(cp, kAck);
  Step("straggler", BuildTcp(late), {Action::kPass, BuildTcp(Dnat(late, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});

  Age(kClient, kVip, cp, kVipPort);
  Age(kBackendAddr[be], kClient, kBackendPort, cp);
  Bytes ack = BuildTcp(ToVip(cp, kAck));
  Step("after expiry: not ours", ack, {Action::kPass, ack, V{{KPX_V_PASS_NON_SERVICE, 1}}});
  Bytes reply = BuildTcp(FromBackend(be, cp, kAck));
  Step("reply after expiry: not ours", reply, {Action::kPass, reply, V{{KPX_V_PASS_NON_SERVICE, 1}}});
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbConntrackStateTest, ::testing::Values(Hook::kXdp, Hook::kTc),
                         HookParamName);

}  // namespace
}  // namespace kpx::bpftest
