// Connections kpx must refuse, through both programs: a SYN to a Service
// without backends and any packet of a flow whose backend was removed are
// answered with a well-formed TCP RST (never black-holed); a RST from the
// client towards a dead backend is dropped (no RST for a RST).
#include <bpf/bpf.h>

#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

class LbRejectTest : public LbTest {
 protected:
  void SetUp() override {
    LbTest::SetUp();
    if (IsSkipped() || hook() != Hook::kXdp) return;
    // XDP answers with XDP_TX only on ingress devices listed in kpx_tx_ports
    // (elsewhere it hands the packet to tc: see XdpWithoutTxPortHandsRstToTc).
    // BPF_PROG_TEST_RUN's XDP ingress device is the namespace's loopback.
    uint32_t lo = 1;
    ASSERT_EQ(bpf_map_update_elem(lb().tx_ports_fd(), &lo, &lo, BPF_ANY), 0) << strerror(errno);
  }
};

// The RST the kernel would send for `in`: addresses, ports and MACs swapped,
// IP options kept, TCP options and payload gone, RFC 793 seq/ack rules.
TcpSpec ExpectedRst(const TcpSpec& in) {
  TcpSpec r;
  r.saddr = in.daddr;
  r.daddr = in.saddr;
  r.sport = in.dport;
  r.dport = in.sport;
  r.smac = in.dmac;
  r.dmac = in.smac;
  r.vlan = in.vlan;
  r.ip_options = in.ip_options;
  r.tos = in.tos;
  r.ttl = 64;
  r.ip_id = 0;
  r.frag_off = 0;
  r.window = 0;
  if (in.flags & kAck) {
    r.flags = kRst;
    r.seq = in.ack;
    r.ack = 0;
  } else {
    r.flags = kRst | kAck;
    r.seq = 0;
    r.ack = in.seq + in.payload.size() + ((in.flags & kSyn) ? 1 : 0) + ((in.flags & kFin) ? 1 : 0);
  }
  return r;
}

void SetUpEmptyService(BpfLb& lb) {
  ASSERT_TRUE(lb.AddService(kVip, kVipPort, Svc(kSvcId, 0, 0)).ok());
}

TEST_P(LbRejectTest, SynToServiceWithoutBackendsGetsRst) {
  SetUpEmptyService(lb());
  TcpSpec syn = ToVip(40100, kSyn);
  syn.seq = 0xfffffff0;  // ack = seq + 1 wraps correctly
  syn.tcp_options = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};
  Bytes out = Step("syn", BuildTcp(syn),
                   {Action::kRst, BuildTcp(ExpectedRst(syn)), V{{KPX_V_NO_BACKEND, 1}}});
  TcpView v = ParseTcp(out);
  ASSERT_TRUE(v.ok);
  EXPECT_TRUE(v.ip_csum_ok);
  EXPECT_TRUE(v.tcp_csum_ok);
  EXPECT_EQ(v.flags, kRst | kAck);
  EXPECT_EQ(v.seq, 0u);
  EXPECT_EQ(v.ack, 0xfffffff1u);
  EXPECT_EQ(v.saddr, kVip);
  EXPECT_EQ(v.daddr, kClient);
  EXPECT_EQ(v.sport, kVipPort);
  EXPECT_EQ(v.dport, 40100);
  EXPECT_EQ(v.frame_len, 14u + 20 + 20);
  EXPECT_EQ(v.tot_len, 40);
  kpx_svc_stats st = lb().SvcStats(kSvcId);
  EXPECT_EQ(st.no_backend, 1u);
  EXPECT_EQ(st.new_flows, 0u);
}

TEST_P(LbRejectTest, SynWithDataAndIpOptionsGetsRstAcknowledgingAll) {
  SetUpEmptyService(lb());
  TcpSpec syn = ToVip(40101, kSyn);
  syn.payload.assign(37, 'f');  // TCP Fast Open style data
  syn.ip_options = {1, 1, 1, 0};
  syn.vlan = 7;
  Bytes out = Step("syn+data", BuildTcp(syn),
                   {Action::kRst, BuildTcp(ExpectedRst(syn)), V{{KPX_V_NO_BACKEND, 1}}});
  EXPECT_EQ(ParseTcp(out).ack, syn.seq + 38);
}

TEST_P(LbRejectTest, MaglevTableOfRemovedBackendsRejects) {
  // backend_count says 3 but every slot the probe visits is removed.
  for (uint32_t id = 1; id <= 3; ++id) ASSERT_TRUE(lb().SetBackend(id, 0, 0).ok());
  ASSERT_TRUE(lb().SetMaglev(kSvcId, kTable).ok());
  ASSERT_TRUE(lb().AddService(kVip, kVipPort, Svc(kSvcId, 3, kTable.size())).ok());
  TcpSpec syn = ToVip(40102, kSyn);
  Step("syn", BuildTcp(syn), {Action::kRst, BuildTcp(ExpectedRst(syn)), V{{KPX_V_NO_BACKEND, 1}}});
}

TEST_P(LbRejectTest, RemovedSlotIsSkippedByProbingTheNextSlots) {
  SetUpBasicWorld(lb());
  uint32_t slot = RefHash(kClient, kVip, 40103, kVipPort) % kTable.size();
  uint32_t dead = kTable[slot];
  ASSERT_TRUE(lb().SetBackend(dead, 0, 0).ok());
  uint32_t want = 0;
  for (uint32_t i = 1; i < kTable.size() && want == 0; ++i)
    if (kTable[(slot + i) % kTable.size()] != dead) want = kTable[(slot + i) % kTable.size()];
  TcpSpec syn = ToVip(40103, kSyn);
  Step("syn", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, want)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbRejectTest, EstablishedFlowOnRemovedBackendGetsRst) {
  SetUpBasicWorld(lb());
  uint32_t be = Handshake(40104);
  ASSERT_TRUE(lb().SetBackend(be, 0, 0).ok());  // backend removed, table not yet rebuilt

  TcpSpec data = ToVip(40104, kAck | kPsh);
  data.ack = 0x12345678;
  data.payload.assign(200, 'd');
  Bytes out = Step("data", BuildTcp(data),
                   {Action::kRst, BuildTcp(ExpectedRst(data)), V{{KPX_V_DEAD_BACKEND, 1}}});
  TcpView v = ParseTcp(out);
  EXPECT_EQ(v.flags, kRst);
  EXPECT_EQ(v.seq, 0x12345678u);
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);

  // A retransmission is refused again (the entry is kept for that).
  Step("retransmission", BuildTcp(data),
       {Action::kRst, BuildTcp(ExpectedRst(data)), V{{KPX_V_DEAD_BACKEND, 1}}});
  // The client's own RST is dropped, not answered.
  TcpSpec rst = ToVip(40104, kRst | kAck);
  Step("client rst", BuildTcp(rst), {Action::kDrop, std::nullopt, V{{KPX_V_DEAD_BACKEND, 1}}});
  // Reusing the tuple for a new connection picks a live backend.
  TcpSpec syn = ToVip(40104, kSyn);
  Bytes syn_out =
      Step("new syn on the same tuple", BuildTcp(syn),
           {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpView sv = ParseTcp(syn_out);
  EXPECT_NE(sv.daddr, kBackendAddr[be]);
  EXPECT_TRUE(sv.daddr == kBackendAddr[1] || sv.daddr == kBackendAddr[2] ||
              sv.daddr == kBackendAddr[3]);
}

// Where XDP_TX is not known to be safe (a veth whose peer has no XDP program
// and GRO off drops XDP_TX frames), XDP passes the packet untouched and
// uncounted to the tc program on the same interface, which sends the RST.
TEST(LbRejectXdp, XdpWithoutTxPortHandsRstToTc) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto lb = BpfLb::Create();
  ASSERT_TRUE(lb.ok()) << lb.status();
  SetUpEmptyService(**lb);
  Bytes in = BuildTcp(ToVip(40100, kSyn));
  auto r = (*lb)->Run(Hook::kXdp, in);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->retval, RetvalFor(Hook::kXdp, Action::kPass));
  EXPECT_EQ(r->out, in);
  EXPECT_EQ((*lb)->SvcStats(kSvcId).no_backend, 0u);
  auto t = (*lb)->Run(Hook::kTc, in);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->retval, RetvalFor(Hook::kTc, Action::kRst));
  EXPECT_EQ((*lb)->SvcStats(kSvcId).no_backend, 1u);
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbRejectTest, ::testing::Values(Hook::kXdp, Hook::kTc),
                         HookParamName);

}  // namespace
}  // namespace kpx::bpftest
