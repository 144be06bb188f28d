// Service traffic through both programs (XDP and tc): new flows DNATed to the
// Maglev-chosen backend, conntrack keeping flows on their backend across
// table changes, replies reverse-NATed, NodePorts, IP options and VLANs.
// Every output frame is compared byte for byte with one built from scratch,
// so checksums are verified by full recomputation.
#include <bpf/bpf.h>

#include <set>

#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

class LbForwardTest : public LbTest {};

TEST_P(LbForwardTest, SynIsDnatedToMaglevBackendWithValidChecksums) {
  SetUpBasicWorld(lb());
  TcpSpec syn = ToVip(40000, kSyn);
  syn.tcp_options = {2, 4, 0x05, 0xb4, 1, 1, 4, 2};  // MSS, NOP, NOP, SACK-permitted
  syn.payload = {'h', 'i', '!'};
  uint32_t be = MaglevPick(kTable, kClient, kVip, 40000, kVipPort);
  Bytes in = BuildTcp(syn);
  Bytes out =
      Step("syn", in,
           {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpView v = ParseTcp(out);
  ASSERT_TRUE(v.ok);
  EXPECT_TRUE(v.ip_csum_ok);
  EXPECT_TRUE(v.tcp_csum_ok);
  EXPECT_EQ(v.daddr, kBackendAddr[be]) << IpText(v.daddr);

  // The half-open reverse entry points at that backend (lb_half_open_test
  // follows the rest of the handshake).
  kpx_ct_key rk = CtKeyOf(kBackendAddr[be], kClient, kBackendPort, 40000);
  kpx_ct_entry re{};
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_syn_fd(), &rk, &re), 0);
  EXPECT_EQ(re.flags, KPX_CT_F_REPLY);
  EXPECT_EQ(re.backend_id, be);
  EXPECT_EQ(re.svc_id, kSvcId);
  EXPECT_EQ(re.vip, kVip);
  EXPECT_EQ(re.vport, htons(kVipPort));

  kpx_svc_stats st = lb().SvcStats(kSvcId);
  EXPECT_EQ(st.packets, 1u);
  EXPECT_EQ(st.new_flows, 1u);
  EXPECT_EQ(st.bytes, in.size());
  EXPECT_EQ(st.no_backend, 0u);
}

TEST_P(LbForwardTest, MaglevSpreadsFlowsExactlyAsTheTableSays) {
  SetUpBasicWorld(lb());
  std::set<uint32_t> used;
  for (uint16_t sport = 41000; sport < 41032; ++sport) {
    TcpSpec syn = ToVip(sport, kSyn);
    uint32_t be = MaglevPick(kTable, kClient, kVip, sport, kVipPort);
    used.insert(be);
    Step("syn " + std::to_string(sport), BuildTcp(syn),
         {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  }
  EXPECT_EQ(used.size(), 3u) << "32 flows should reach all three backends";
}

TEST_P(LbForwardTest, ConntrackKeepsFlowOnItsBackendAfterTableChange) {
  SetUpBasicWorld(lb());
  uint32_t be = Handshake(40001);
  TcpSpec syn = ToVip(40001, kSyn);

  // The service now has a single, different backend (id 4).
  std::vector<uint32_t> only4(kTable.size(), 4);
  ASSERT_TRUE(lb().SetMaglev(kSvcId, only4).ok());

  for (uint8_t flags : {uint8_t(kAck), uint8_t(kAck | kPsh), uint8_t(kAck | kFin)}) {
    TcpSpec pkt = ToVip(40001, flags);
    pkt.payload.assign(100, 'x');
    Step("established", BuildTcp(pkt),
         {Action::kPass, BuildTcp(Dnat(pkt, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  }
  // A SYN retransmission also stays.
  Step("syn again", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  // A new flow follows the new table.
  TcpSpec other = ToVip(40002, kSyn);
  Step("new flow", BuildTcp(other),
       {Action::kPass, BuildTcp(Dnat(other, 4)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbForwardTest, ReplyFromBackendIsReverseNatedToVip) {
  SetUpBasicWorld(lb());
  uint32_t be = MaglevPick(kTable, kClient, kVip, 40003, kVipPort);
  Step("syn", BuildTcp(ToVip(40003, kSyn)),
       {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});

  TcpSpec synack;
  synack.saddr = kBackendAddr[be];
  synack.daddr = kClient;
  synack.sport = kBackendPort;
  synack.dport = 40003;
  synack.flags = kSyn | kAck;
  synack.seq = 123456;
  synack.ack = 7000 + 40003 + 1;
  synack.tcp_options = {2, 4, 0x05, 0xb4};
  synack.smac = kNodeMac;
  synack.dmac = kClientMac;
  TcpSpec want = synack;
  want.saddr = kVip;
  want.sport = kVipPort;
  Bytes out = Step("syn-ack", BuildTcp(synack),
                   {Action::kPass, BuildTcp(want), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpView v = ParseTcp(out);
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);

  // The first reply marks the flow as answered (the forward entry it adds
  // to kpx_ct_syn carries the mark to kpx_ct with the client's ACK).
  kpx_ct_key fk = CtKeyOf(kClient, kVip, 40003, kVipPort);
  kpx_ct_entry fe{};
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_syn_fd(), &fk, &fe), 0);
  EXPECT_EQ(fe.flags & KPX_CT_F_SEEN_REPLY, KPX_CT_F_SEEN_REPLY);
  TcpSpec ack = ToVip(40003, kAck);
  Step("ack", BuildTcp(ack),
       {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fe), 0);
  EXPECT_EQ(fe.flags & KPX_CT_F_SEEN_REPLY, KPX_CT_F_SEEN_REPLY);

  TcpSpec data = synack;
  data.flags = kAck | kPsh;
  data.tcp_options.clear();
  data.payload.assign(333, 'r');
  TcpSpec want_data = data;
  want_data.saddr = kVip;
  want_data.sport = kVipPort;
  Step("data", BuildTcp(data),
       {Action::kPass, BuildTcp(want_data), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});

  // Same backend to a client port with no flow: not a reply, untouched.
  TcpSpec stray = data;
  stray.dport = 40999;
  Bytes stray_in = BuildTcp(stray);
  Step("stray", stray_in, {Action::kPass, stray_in, V{{KPX_V_PASS_NON_SERVICE, 1}}});
  EXPECT_EQ(lb().SvcStats(kSvcId).packets, 4u);
}

// The LRU may evict a live flow's entries (a SYN flood churns kpx_ct): a
// mid-flow packet without one is re-picked (Maglev: the same backend while
// the set is unchanged) and both entries are re-created, so replies are
// reverse-NATed again. A RST of an untracked flow is left alone.
TEST_P(LbForwardTest, MidFlowPacketWithoutConntrackIsRepickedAndTracked) {
  SetUpBasicWorld(lb());
  uint32_t be = MaglevPick(kTable, kClient, kVip, 40004, kVipPort);
  TcpSpec ack = ToVip(40004, kAck | kPsh);
  ack.payload.assign(50, 'a');
  Step("ack", BuildTcp(ack),
       {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  kpx_ct_key fk = CtKeyOf(kClient, kVip, 40004, kVipPort);
  kpx_ct_entry fe{};
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fe), 0);
  EXPECT_EQ(fe.backend_id, be);
  kpx_ct_key rk = CtKeyOf(kBackendAddr[be], kClient, kBackendPort, 40004);
  kpx_ct_entry re{};
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &rk, &re), 0);
  EXPECT_EQ(re.flags & KPX_CT_F_REPLY, KPX_CT_F_REPLY);

  // Only the reverse entry evicted: the next forward packet restores it.
  ASSERT_EQ(bpf_map_delete_elem(lb().ct_fd(), &rk), 0);
  Step("ack again", BuildTcp(ack),
       {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &rk, &re), 0);
  EXPECT_EQ(re.flags & KPX_CT_F_REPLY, KPX_CT_F_REPLY);
  EXPECT_EQ(re.vip, kVip);

  Bytes rst = BuildTcp(ToVip(40099, kRst | kAck));
  Step("rst", rst, {Action::kPass, rst, V{{KPX_V_PASS_NON_SERVICE, 1}}});
}

TEST_P(LbForwardTest, NodePortMatchesOnlyNodeAddresses) {
  SetUpBasicWorld(lb());
  ASSERT_TRUE(lb().AddService(0, 30080, Svc(kSvcId, 3, kTable.size(), KPX_SVC_F_NODEPORT)).ok());
  uint32_t node = Ip("192.168.50.1");
  TcpSpec syn = ToVip(40005, kSyn);
  syn.daddr = node;
  syn.dport = 30080;
  Bytes in = BuildTcp(syn);
  Step("not yet a node address", in, {Action::kPass, in, V{{KPX_V_PASS_NON_SERVICE, 1}}});

  ASSERT_TRUE(lb().AddNodeAddr(node).ok());
  uint32_t be = MaglevPick(kTable, kClient, node, 40005, 30080);
  Step("node address", in,
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});

  TcpSpec other = syn;
  other.daddr = Ip("192.168.50.99");
  Bytes other_in = BuildTcp(other);
  Step("other address", other_in, {Action::kPass, other_in, V{{KPX_V_PASS_NON_SERVICE, 1}}});

  // Replies restore the node address and NodePort. The stack would drop a
  // packet from its own address as a martian, so such replies must be
  // redirected: XDP (tc behind it here) leaves them to tc, untouched and
  // uncounted; tc rewrites them (no route in this test's netns: passed).
  TcpSpec reply;
  reply.saddr = kBackendAddr[be];
  reply.daddr = kClient;
  reply.sport = kBackendPort;
  reply.dport = 40005;
  reply.flags = kSyn | kAck;
  TcpSpec want = reply;
  want.saddr = node;
  want.sport = 30080;
  Bytes reply_in = BuildTcp(reply);
  if (hook() == Hook::kXdp) {
    Step("reply left to tc", reply_in, {Action::kPass, reply_in, V{}});
    auto r = lb().Run(Hook::kTc, reply_in);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->out, BuildTcp(want));
  } else {
    Step("reply", reply_in,
         {Action::kPass, BuildTcp(want), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  }
}

TEST_P(LbForwardTest, IpOptionsArePreservedAndChecksummed) {
  SetUpBasicWorld(lb());
  TcpSpec syn = ToVip(40006, kSyn);
  // Record Route (7 slots would not fit; 2 slots) + NOP padding: 12 bytes.
  syn.ip_options = {7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  syn.tcp_options = {2, 4, 0x05, 0xb4};
  uint32_t be = MaglevPick(kTable, kClient, kVip, 40006, kVipPort);
  Bytes out =
      Step("syn with ip options", BuildTcp(syn),
           {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpView v = ParseTcp(out);
  EXPECT_EQ(v.ihl, 32u);
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);

  TcpSpec reply;
  reply.saddr = kBackendAddr[be];
  reply.daddr = kClient;
  reply.sport = kBackendPort;
  reply.dport = 40006;
  reply.flags = kSyn | kAck;
  reply.ip_options = {1, 1, 1, 0};  // NOP NOP NOP EOL
  TcpSpec want = reply;
  want.saddr = kVip;
  want.sport = kVipPort;
  Step("reply with ip options", BuildTcp(reply),
       {Action::kPass, BuildTcp(want), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbForwardTest, VlanTaggedFrameIsRewrittenAndKeepsItsTag) {
  SetUpBasicWorld(lb());
  TcpSpec syn = ToVip(40007, kSyn);
  syn.vlan = 100;
  uint32_t be = MaglevPick(kTable, kClient, kVip, 40007, kVipPort);
  Step("vlan syn", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbForwardTest, CounterSumsMatchTrafficAcrossHooks) {
  // The other program shares the maps: a flow opened through one hook is
  // continued through the other.
  SetUpBasicWorld(lb());
  Hook other = hook() == Hook::kXdp ? Hook::kTc : Hook::kXdp;
  uint32_t be = MaglevPick(kTable, kClient, kVip, 40008, kVipPort);
  auto r = lb().Run(other, BuildTcp(ToVip(40008, kSyn)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ParseTcp(r->out).daddr, kBackendAddr[be]);
  r = lb().Run(other, BuildTcp(FromBackend(be, 40008, kSyn | kAck)));
  ASSERT_TRUE(r.ok()) << r.status();
  TcpSpec ack = ToVip(40008, kAck);
  Step("ack via the other hook's half-open flow", BuildTcp(ack),
       {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  Step("ack via the other hook's flow", BuildTcp(ack),
       {Action::kPass, BuildTcp(Dnat(ack, be)), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  kpx_svc_stats st = lb().SvcStats(kSvcId);
  EXPECT_EQ(st.packets, 4u);
  EXPECT_EQ(st.new_flows, 1u);
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbForwardTest, ::testing::Values(Hook::kXdp, Hook::kTc),
                         HookParamName);

}  // namespace
}  // namespace kpx::bpftest
