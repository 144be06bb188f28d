// Half-open flows (kpx_ct_syn) through both programs: a SYN leaves one entry
// there and none in kpx_ct; the backend's SYN-ACK is reverse-NATed by it;
// the client's ACK moves the flow to kpx_ct; later packets use kpx_ct; a RST
// from either side ends a half-open flow; and a SYN flood many times the
// size of kpx_ct_syn (answered and reset, as in the e2e test) leaves every
// established flow's kpx_ct entries as they were.
#include <bpf/bpf.h>

#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

class LbHalfOpenTest : public LbTest {
 protected:
  void SetUp() override {
    LbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    SetUpBasicWorld(lb());
  }
  std::optional<kpx_ct_entry> Ct(const kpx_ct_key& k) { return Lookup(lb().ct_fd(), k); }
  std::optional<kpx_ct_entry> Syn(const kpx_ct_key& k) { return Lookup(lb().ct_syn_fd(), k); }
  static std::optional<kpx_ct_entry> Lookup(int fd, const kpx_ct_key& k) {
    kpx_ct_entry e{};
    if (bpf_map_lookup_elem(fd, &k, &e) != 0) return std::nullopt;
    return e;
  }
};

TEST_P(LbHalfOpenTest, SynCreatesOnlyAHalfOpenReverseEntry) {
  uint32_t be = MaglevPick(kTable, kClient, kVip, 42000, kVipPort);
  TcpSpec syn = ToVip(42000, kSyn);
  Step("syn", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_EQ(CountEntries(lb().ct_fd()), 0u) << "a SYN must not touch kpx_ct";
  EXPECT_EQ(CountEntries(lb().ct_syn_fd()), 1u);
  std::optional<kpx_ct_entry> r = Syn(CtKeyOf(kBackendAddr[be], kClient, kBackendPort, 42000));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->flags, KPX_CT_F_REPLY);
  EXPECT_EQ(r->backend_id, be);
  EXPECT_EQ(r->svc_id, kSvcId);
  EXPECT_EQ(r->vip, kVip);
  EXPECT_EQ(r->vport, htons(kVipPort));
  EXPECT_EQ(r->client_addr, kClient);
  EXPECT_EQ(r->client_port, htons(42000));
  EXPECT_EQ(lb().SvcStats(kSvcId).new_flows, 1u);

  // A retransmitted SYN is a new flow again (same backend), still half-open.
  Step("syn again", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_EQ(CountEntries(lb().ct_fd()), 0u);
  EXPECT_EQ(CountEntries(lb().ct_syn_fd()), 1u);
}

TEST_P(LbHalfOpenTest, SynAckIsReverseNatedAndTheClientsAckMovesTheFlowToKpxCt) {
  uint32_t be = MaglevPick(kTable, kClient, kVip, 42001, kVipPort);
  Step("syn", BuildTcp(ToVip(42001, kSyn)), {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpSpec synack = FromBackend(be, 42001, kSyn | kAck);
  Bytes out = Step("syn-ack", BuildTcp(synack),
                   {Action::kPass, BuildTcp(ReverseNat(synack)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpView v = ParseTcp(out);
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);
  // Still half-open: the answer added the forward entry the ACK looks for.
  EXPECT_EQ(CountEntries(lb().ct_fd()), 0u);
  kpx_ct_key fk = CtKeyOf(kClient, kVip, 42001, kVipPort);
  kpx_ct_key rk = CtKeyOf(kBackendAddr[be], kClient, kBackendPort, 42001);
  std::optional<kpx_ct_entry> hf = Syn(fk);
  ASSERT_TRUE(hf.has_value());
  EXPECT_EQ(hf->flags, KPX_CT_F_SEEN_REPLY);
  EXPECT_EQ(hf->backend_id, be);
  ASSERT_TRUE(Syn(rk).has_value());
  EXPECT_EQ(Syn(rk)->flags, KPX_CT_F_REPLY | KPX_CT_F_SEEN_REPLY);

  // The Maglev table changes before the client's ACK: the handshake still
  // completes with the backend that answered it.
  std::vector<uint32_t> only4(kTable.size(), 4);
  ASSERT_TRUE(lb().SetMaglev(kSvcId, only4).ok());
  TcpSpec ack = ToVip(42001, kAck);
  Step("ack", BuildTcp(ack),
       {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  // Not masqueraded: the copies in kpx_ct_syn are left to its LRU.
  EXPECT_EQ(CountEntries(lb().ct_syn_fd()), 2u);
  std::optional<kpx_ct_entry> fe = Ct(fk), re = Ct(rk);
  ASSERT_TRUE(fe.has_value());
  ASSERT_TRUE(re.has_value());
  EXPECT_EQ(fe->flags, KPX_CT_F_SEEN_REPLY);
  EXPECT_EQ(re->flags, KPX_CT_F_REPLY | KPX_CT_F_SEEN_REPLY);
  EXPECT_EQ(fe->backend_id, be);
  EXPECT_EQ(re->backend_id, be);
  EXPECT_EQ(lb().SvcStats(kSvcId).new_flows, 1u);
}

TEST_P(LbHalfOpenTest, PacketsAfterThePromotionUseKpxCt) {
  uint32_t be = Handshake(42002);
  // Only kpx_ct decides now, even when kpx_ct_syn's copies say otherwise
  // (they are stale: left to the LRU) and the table changed.
  kpx_ct_key fk = CtKeyOf(kClient, kVip, 42002, kVipPort);
  kpx_ct_key rk = CtKeyOf(kBackendAddr[be], kClient, kBackendPort, 42002);
  for (const kpx_ct_key& k : {fk, rk}) {
    std::optional<kpx_ct_entry> stale = Syn(k);
    ASSERT_TRUE(stale.has_value());
    stale->vip = Ip("10.96.9.9");
    stale->backend_id = 5;
    ASSERT_EQ(bpf_map_update_elem(lb().ct_syn_fd(), &k, &*stale, BPF_EXIST), 0);
  }
  std::vector<uint32_t> only4(kTable.size(), 4);
  ASSERT_TRUE(lb().SetMaglev(kSvcId, only4).ok());
  TcpSpec data = ToVip(42002, kAck | kPsh);
  data.payload.assign(64, 'd');
  Step("data", BuildTcp(data),
       {Action::kPass, BuildTcp(Dnat(data, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpSpec reply = FromBackend(be, 42002, kAck | kPsh);
  reply.payload.assign(32, 'r');
  Step("reply", BuildTcp(reply),
       {Action::kPass, BuildTcp(ReverseNat(reply)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  // A RST from the backend ends the established flow in kpx_ct, reverse-NATed
  // by kpx_ct's entry, not the stale one.
  TcpSpec rst = FromBackend(be, 42002, kRst | kAck);
  Step("backend rst", BuildTcp(rst),
       {Action::kPass, BuildTcp(ReverseNat(rst)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_TRUE(Ct(fk)->flags & KPX_CT_F_RST);
  EXPECT_EQ(CountEntries(lb().ct_fd()), 2u);
}

TEST_P(LbHalfOpenTest, ClientRstEndsAHalfOpenFlow) {
  uint32_t be = MaglevPick(kTable, kClient, kVip, 42003, kVipPort);
  Step("syn", BuildTcp(ToVip(42003, kSyn)), {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  Step("syn-ack", BuildTcp(FromBackend(be, 42003, kSyn | kAck)),
       {Action::kPass, std::nullopt, V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  // The client has no socket for it (a raw-socket flood) and resets: the
  // RST reaches the backend, which frees its SYN_RECV state.
  TcpSpec rst = ToVip(42003, kRst);
  Step("rst", BuildTcp(rst),
       {Action::kPass, BuildTcp(Dnat(rst, be)), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_EQ(CountEntries(lb().ct_syn_fd()), 0u);
  EXPECT_EQ(CountEntries(lb().ct_fd()), 0u);
}

TEST_P(LbHalfOpenTest, BackendRstEndsAHalfOpenFlow) {
  uint32_t be = MaglevPick(kTable, kClient, kVip, 42004, kVipPort);
  Step("syn", BuildTcp(ToVip(42004, kSyn)), {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  // Nothing listens on the backend port: the RST goes back to the client
  // from the VIP.
  TcpSpec rst = FromBackend(be, 42004, kRst | kAck);
  Step("backend rst", BuildTcp(rst),
       {Action::kPass, BuildTcp(ReverseNat(rst)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  EXPECT_EQ(CountEntries(lb().ct_syn_fd()), 0u);
  EXPECT_EQ(CountEntries(lb().ct_fd()), 0u);
}

// A closed flow's reverse entry can outlive its forward one (evicted, or
// deleted first by userspace's walk); a new SYN on the tuple then does not
// see it, and the new handshake's SYN-ACK must still find kpx_ct_syn's entry.
TEST_P(LbHalfOpenTest, SynAckOfAReusedTupleIsNotShadowedByAClosedFlow) {
  uint32_t be = Handshake(42005);
  TcpSpec rst = FromBackend(be, 42005, kRst | kAck);
  Step("backend rst", BuildTcp(rst), {Action::kPass, std::nullopt, V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  kpx_ct_key fk = CtKeyOf(kClient, kVip, 42005, kVipPort);
  kpx_ct_key rk = CtKeyOf(kBackendAddr[be], kClient, kBackendPort, 42005);
  std::optional<kpx_ct_entry> old = Ct(rk);
  ASSERT_TRUE(old.has_value());
  ASSERT_TRUE(old->flags & KPX_CT_F_RST);
  old->last_seen_ns = MonotonicNs() - KPX_CT_CLOSING_NS - 1000000000ull;  // expired
  ASSERT_EQ(bpf_map_update_elem(lb().ct_fd(), &rk, &*old, BPF_EXIST), 0);
  ASSERT_EQ(bpf_map_delete_elem(lb().ct_fd(), &fk), 0);

  TcpSpec syn = ToVip(42005, kSyn);
  Step("syn on the reused tuple", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpSpec synack = FromBackend(be, 42005, kSyn | kAck);
  Step("syn-ack", BuildTcp(synack),
       {Action::kPass, BuildTcp(ReverseNat(synack)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpSpec ack = ToVip(42005, kAck);
  Step("ack", BuildTcp(ack), {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  std::optional<kpx_ct_entry> fresh = Ct(rk);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_FALSE(fresh->flags & KPX_CT_F_RST) << "the new flow's reverse entry replaced the closed one";
}

// kpx_ct holds 4096 entries here and kpx_ct_syn 1024 (lb_fixture.h). 4096
// answered-and-reset handshakes would have evicted most of the established
// flows when SYNs went to kpx_ct (8192 inserts); now they only churn
// kpx_ct_syn, four times over.
TEST_P(LbHalfOpenTest, SynFloodLeavesEstablishedFlowsIntact) {
  constexpr int kFlows = 8;
  constexpr int kFlood = 4096;
  std::vector<uint32_t> backends;
  for (int i = 0; i < kFlows; ++i) backends.push_back(Handshake(static_cast<uint16_t>(43000 + i)));
  ASSERT_EQ(CountEntries(lb().ct_fd()), 2u * kFlows);

  const uint32_t flooder = Ip("192.168.50.99");
  for (int i = 0; i < kFlood; ++i) {
    uint16_t sport = static_cast<uint16_t>(10000 + i);
    TcpSpec syn = ToVip(sport, kSyn);
    syn.saddr = flooder;
    auto r = lb().Run(hook(), BuildTcp(syn));
    ASSERT_TRUE(r.ok()) << r.status();
    TcpView v = ParseTcp(r->out);
    ASSERT_TRUE(v.ok);
    if (i % 2 == 0) continue;  // half never answered (spoofed sources), half answered and reset
    TcpSpec synack;
    synack.saddr = v.daddr;
    synack.daddr = flooder;
    synack.sport = kBackendPort;
    synack.dport = sport;
    synack.flags = kSyn | kAck;
    ASSERT_TRUE(lb().Run(hook(), BuildTcp(synack)).ok());
    TcpSpec rst = syn;
    rst.flags = kRst;
    ASSERT_TRUE(lb().Run(hook(), BuildTcp(rst)).ok());
  }
  EXPECT_EQ(CountEntries(lb().ct_fd()), 2u * kFlows) << "the flood reached kpx_ct";
  EXPECT_LE(CountEntries(lb().ct_syn_fd()), 1024u);
  for (int i = 0; i < kFlows; ++i) {
    uint16_t sport = static_cast<uint16_t>(43000 + i);
    std::optional<kpx_ct_entry> fe = Ct(CtKeyOf(kClient, kVip, sport, kVipPort));
    ASSERT_TRUE(fe.has_value()) << "flow " << i << " lost its forward entry";
    EXPECT_EQ(fe->backend_id, backends[i]);
    ASSERT_TRUE(Ct(CtKeyOf(kBackendAddr[backends[i]], kClient, kBackendPort, sport)).has_value())
        << "flow " << i << " lost its reverse entry";
    TcpSpec data = ToVip(sport, kAck | kPsh);
    Step("established data", BuildTcp(data),
         {Action::kPass, BuildTcp(Dnat(data, backends[i])), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
    TcpSpec reply = FromBackend(backends[i], sport, kAck);
    Step("established reply", BuildTcp(reply),
         {Action::kPass, BuildTcp(ReverseNat(reply)), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  }
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbHalfOpenTest, ::testing::Values(Hook::kXdp, Hook::kTc), HookParamName);

}  // namespace
}  // namespace kpx::bpftest
