// Masquerade (SNAT) through both programs: which flows are masqueraded
// (off-cluster clients of ClusterIPs and of external frontends, hairpin),
// the rewritten source and its collision-free port, the reply restoring both
// the frontend and the client, and XDP leaving masqueraded flows to tc when
// tc sits behind it. Output frames are compared byte for byte with frames
// built from scratch, so every checksum is verified by recomputation.
#include <bpf/bpf.h>

#include <set>

#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

const uint32_t kNode = Ip("192.168.50.1");  // the SNAT address
const uint32_t kPodClient = Ip("10.244.7.7");

kpx_config Config(uint32_t cluster_prefix, uint16_t port_min = 0, uint16_t port_max = 0) {
  kpx_config c{};
  c.abi_version = KPX_ABI_VERSION;
  c.snat_addr = kNode;
  if (cluster_prefix) {
    c.cluster_prefix = cluster_prefix;
    c.cluster_mask = htonl(~0u << (32 - cluster_prefix));
    c.cluster_cidr = Ip("10.244.0.0") & c.cluster_mask;
  }
  c.snat_port_min = port_min;
  c.snat_port_max = port_max;
  return c;
}

kpx_ct_key Key(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport) {
  kpx_ct_key k{};
  k.saddr = saddr;
  k.daddr = daddr;
  k.sport = htons(sport);
  k.dport = htons(dport);
  k.proto = 6;
  return k;
}

class LbSnatTest : public LbTest {
 protected:
  void SetUp() override {
    LbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    SetUpBasicWorld(lb());
    ASSERT_TRUE(lb().SetConfig(Config(16)).ok());
    // XDP does the masquerade itself only where no tc sits behind it (the
    // ingress device, lo under BPF_PROG_TEST_RUN, listed in kpx_tx_ports).
    if (hook() == Hook::kXdp) {
      ASSERT_TRUE(lb().AddTxPort(1).ok());
    }
  }

  // Sends a SYN and checks it was DNATed to backend `be` and masqueraded;
  // returns the SNAT port (host order).
  uint16_t MasqueradedSyn(const TcpSpec& syn, uint32_t be) {
    Bytes out = Step("syn", BuildTcp(syn), {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
    TcpView v = ParseTcp(out);
    EXPECT_TRUE(v.ok);
    EXPECT_EQ(IpText(v.saddr), IpText(kNode));
    EXPECT_GE(v.sport, KPX_SNAT_PORT_MIN_DEFAULT);
    EXPECT_LE(v.sport, KPX_SNAT_PORT_MAX_DEFAULT);
    TcpSpec want = Dnat(syn, be);
    want.saddr = kNode;
    want.sport = v.sport;
    EXPECT_EQ(out, BuildTcp(want)) << "got:\n" << Hex(out);  // checksums recomputed from scratch
    return v.sport;
  }

  static TcpSpec Reply(uint32_t be, uint32_t to, uint16_t to_port, uint8_t flags) {
    TcpSpec r;
    r.saddr = kBackendAddr[be];
    r.daddr = to;
    r.sport = kBackendPort;
    r.dport = to_port;
    r.flags = flags;
    r.seq = 5555;
    r.ack = 7001;
    r.smac = kNodeMac;
    r.dmac = kClientMac;
    return r;
  }
};

TEST_P(LbSnatTest, OffClusterClientOfClusterIpIsMasqueradedAndTheReplyRestoresBoth) {
  TcpSpec syn = ToVip(40000, kSyn);
  syn.tcp_options = {2, 4, 0x05, 0xb4};
  const uint32_t be = MaglevPick(kTable, kClient, kVip, 40000, kVipPort);
  const uint16_t port = MasqueradedSyn(syn, be);

  // Half-open: both entries in kpx_ct_syn (the reverse one reserves the port).
  kpx_ct_entry fe{}, re{};
  kpx_ct_key fk = Key(kClient, kVip, 40000, kVipPort);
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_syn_fd(), &fk, &fe), 0);
  EXPECT_EQ(fe.flags, KPX_CT_F_SNAT);
  EXPECT_EQ(fe.snat_addr, kNode);
  EXPECT_EQ(ntohs(fe.snat_port), port);
  EXPECT_EQ(fe.client_addr, kClient);
  EXPECT_EQ(ntohs(fe.client_port), 40000);
  kpx_ct_key rk = Key(kBackendAddr[be], kNode, kBackendPort, port);
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_syn_fd(), &rk, &re), 0) << "the reverse entry is keyed by the SNAT address:port";
  EXPECT_EQ(re.flags, KPX_CT_F_SNAT | KPX_CT_F_REPLY);
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fe), -ENOENT) << "nothing in kpx_ct before the handshake";

  // A retransmitted SYN keeps its port.
  TcpSpec want_syn = Dnat(syn, be);
  want_syn.saddr = kNode;
  want_syn.sport = port;
  Step("syn again", BuildTcp(syn), {Action::kPass, BuildTcp(want_syn), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});

  // The backend answers the node; the reply goes back as VIP -> client.
  TcpSpec synack = Reply(be, kNode, port, kSyn | kAck);
  synack.tcp_options = {2, 4, 0x05, 0xb4};
  TcpSpec want = synack;
  want.saddr = kVip;
  want.sport = kVipPort;
  want.daddr = kClient;
  want.dport = 40000;
  Bytes out = Step("syn-ack", BuildTcp(synack),
                   {Action::kPass, BuildTcp(want), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpView v = ParseTcp(out);
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);

  // The client's ACK moves the flow to kpx_ct; the rest of the flow keeps
  // its backend and its port.
  TcpSpec hs = ToVip(40000, kAck);
  TcpSpec want_hs = Dnat(hs, be);
  want_hs.saddr = kNode;
  want_hs.sport = port;
  Step("ack", BuildTcp(hs), {Action::kPass, BuildTcp(want_hs), V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fe), 0);
  EXPECT_EQ(fe.flags, KPX_CT_F_SNAT | KPX_CT_F_SEEN_REPLY);
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &rk, &re), 0);
  EXPECT_EQ(ntohs(re.snat_port), port);
  EXPECT_EQ(CountEntries(lb().ct_syn_fd()), 0u) << "a masqueraded flow's half-open entries (its port reservation) go";
  TcpSpec ack = ToVip(40000, kAck | kPsh);
  ack.payload.assign(200, 'd');
  TcpSpec want_ack = Dnat(ack, be);
  want_ack.saddr = kNode;
  want_ack.sport = port;
  Step("data", BuildTcp(ack), {Action::kPass, BuildTcp(want_ack), V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  TcpSpec data = Reply(be, kNode, port, kAck | kPsh);
  data.payload.assign(99, 'r');
  TcpSpec want_data = data;
  want_data.saddr = kVip;
  want_data.sport = kVipPort;
  want_data.daddr = kClient;
  want_data.dport = 40000;
  Step("reply data", BuildTcp(data), {Action::kPass, BuildTcp(want_data), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbSnatTest, ClientsInsideTheClusterCidrKeepTheirAddress) {
  TcpSpec syn = ToVip(40001, kSyn);
  syn.saddr = kPodClient;
  const uint32_t be = MaglevPick(kTable, kPodClient, kVip, 40001, kVipPort);
  Step("pod syn", BuildTcp(syn),
       {Action::kPass, BuildTcp(Dnat(syn, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  // Without a cluster CIDR, ClusterIP traffic is never masqueraded.
  ASSERT_TRUE(lb().SetConfig(Config(0)).ok());
  TcpSpec off = ToVip(40002, kSyn);
  const uint32_t be2 = MaglevPick(kTable, kClient, kVip, 40002, kVipPort);
  Step("off-cluster syn, no cidr", BuildTcp(off),
       {Action::kPass, BuildTcp(Dnat(off, be2)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  // snat_addr 0: never.
  kpx_config none = Config(16);
  none.snat_addr = 0;
  ASSERT_TRUE(lb().SetConfig(none).ok());
  TcpSpec off2 = ToVip(40003, kSyn);
  const uint32_t be3 = MaglevPick(kTable, kClient, kVip, 40003, kVipPort);
  Step("snat off", BuildTcp(off2),
       {Action::kPass, BuildTcp(Dnat(off2, be3)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbSnatTest, ExternalFrontendsMasqueradeUnlessTrafficPolicyIsLocal) {
  const uint32_t lb_ip = Ip("192.168.60.10");
  ASSERT_TRUE(lb().SetConfig(Config(0)).ok());  // no CIDR: every client is external
  ASSERT_TRUE(lb().AddService(lb_ip, 80, Svc(kSvcId, 3, kTable.size(), KPX_SVC_F_EXTERNAL)).ok());
  TcpSpec syn = ToVip(40004, kSyn);
  syn.daddr = lb_ip;
  MasqueradedSyn(syn, MaglevPick(kTable, kClient, lb_ip, 40004, 80));

  ASSERT_TRUE(lb().AddService(lb_ip, 80, Svc(kSvcId, 3, kTable.size(), KPX_SVC_F_EXTERNAL | KPX_SVC_F_LOCAL)).ok());
  TcpSpec local = ToVip(40005, kSyn);
  local.daddr = lb_ip;
  const uint32_t be = MaglevPick(kTable, kClient, lb_ip, 40005, 80);
  Step("policy Local keeps the client address", BuildTcp(local),
       {Action::kPass, BuildTcp(Dnat(local, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbSnatTest, HairpinIsMasqueradedEvenInsideTheCluster) {
  // A pod (backend 1) reaching the frontend of its own service, picked itself.
  ASSERT_TRUE(lb().SetMaglev(kSvcId, std::vector<uint32_t>(kTable.size(), 1)).ok());
  TcpSpec syn = ToVip(40006, kSyn);
  syn.saddr = kBackendAddr[1];
  const uint16_t port = MasqueradedSyn(syn, 1);
  TcpSpec reply = Reply(1, kNode, port, kSyn | kAck);
  TcpSpec want = reply;
  want.saddr = kVip;
  want.sport = kVipPort;
  want.daddr = kBackendAddr[1];
  want.dport = 40006;
  Step("hairpin reply", BuildTcp(reply),
       {Action::kPass, BuildTcp(want), V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbSnatTest, SnatPortsNeverCollideAndExhaustionIsRefused) {
  // One backend, two SNAT ports: two flows get distinct ports, a third is
  // refused with a RST at once, and a port whose flow closed and expired is
  // handed out again.
  ASSERT_TRUE(lb().SetMaglev(kSvcId, std::vector<uint32_t>(kTable.size(), 2)).ok());
  ASSERT_TRUE(lb().SetConfig(Config(16, 62000, 62001)).ok());
  std::set<uint16_t> ports;
  for (uint16_t sport : {40010, 40011}) ports.insert(MasqueradedSyn(ToVip(sport, kSyn), 2));
  EXPECT_EQ(ports, (std::set<uint16_t>{62000, 62001}));

  // Held by the two handshakes (kpx_ct_syn)...
  TcpSpec third = ToVip(40012, kSyn);
  Step("no port left", BuildTcp(third), {Action::kRst, std::nullopt, V{{KPX_V_SNAT_NO_PORT, 1}}});
  EXPECT_EQ(lb().SvcStats(kSvcId).no_backend, 0u);
  // ... and by the two established flows (kpx_ct) once they complete.
  kpx_ct_entry he{};
  for (uint16_t sport : {40010, 40011}) {
    kpx_ct_key hk = Key(kClient, kVip, sport, kVipPort);
    ASSERT_EQ(bpf_map_lookup_elem(lb().ct_syn_fd(), &hk, &he), 0);
    Step("syn-ack", BuildTcp(Reply(2, kNode, ntohs(he.snat_port), kSyn | kAck)),
         {Action::kPass, std::nullopt, V{{KPX_V_REPLY, 1}, {KPX_V_PASS_STACK, 1}}});
    Step("ack", BuildTcp(ToVip(sport, kAck)), {Action::kPass, std::nullopt, V{{KPX_V_HANDSHAKE, 1}, {KPX_V_PASS_STACK, 1}}});
  }
  Step("no port left after the handshakes", BuildTcp(third), {Action::kRst, std::nullopt, V{{KPX_V_SNAT_NO_PORT, 1}}});

  // The first flow is reset by the client; once its closing lifetime has
  // passed (aged here by hand) its port is free again.
  Step("rst", BuildTcp(ToVip(40010, kRst | kAck)), {Action::kPass, std::nullopt, V{{KPX_V_CT_HIT, 1}, {KPX_V_PASS_STACK, 1}}});
  kpx_ct_key fk = Key(kClient, kVip, 40010, kVipPort);
  kpx_ct_entry fe{};
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fe), 0);
  EXPECT_TRUE(fe.flags & KPX_CT_F_RST);
  kpx_ct_key rk = Key(kBackendAddr[2], kNode, kBackendPort, ntohs(fe.snat_port));
  kpx_ct_entry re{};
  ASSERT_EQ(bpf_map_lookup_elem(lb().ct_fd(), &rk, &re), 0);
  EXPECT_TRUE(re.flags & KPX_CT_F_RST) << "the close is recorded on both entries";
  re.last_seen_ns = MonotonicNs() - KPX_CT_CLOSING_NS - 1000000000ull;
  ASSERT_EQ(bpf_map_update_elem(lb().ct_fd(), &rk, &re, BPF_EXIST), 0);
  EXPECT_EQ(MasqueradedSyn(third, 2), ntohs(fe.snat_port));
}

// With tc behind it (ingress not in kpx_tx_ports), XDP must not masquerade:
// after an XDP_PASS the stack would drop a packet from its own address. It
// leaves the packet untouched and uncounted, writing no state, for tc.
TEST_P(LbSnatTest, XdpWithTcBehindLeavesMasqueradedFlowsToTc) {
  if (hook() == Hook::kTc) GTEST_SKIP() << "XDP only";
  uint32_t lo = 1;
  ASSERT_EQ(bpf_map_delete_elem(lb().tx_ports_fd(), &lo), 0);
  TcpSpec syn = ToVip(40020, kSyn);
  Bytes in = BuildTcp(syn);
  Step("deferred", in, {Action::kPass, in, V{}});
  kpx_ct_key fk = Key(kClient, kVip, 40020, kVipPort);
  kpx_ct_entry fe{};
  EXPECT_NE(bpf_map_lookup_elem(lb().ct_fd(), &fk, &fe), 0) << "no conntrack written";
  // tc then does it all (one new flow, counted once).
  auto r = lb().Run(Hook::kTc, in);
  ASSERT_TRUE(r.ok());
  TcpView v = ParseTcp(r->out);
  EXPECT_EQ(IpText(v.saddr), IpText(kNode));
  EXPECT_TRUE(v.ip_csum_ok && v.tcp_csum_ok);
  EXPECT_EQ(lb().Verdict(KPX_V_NEW_FLOW), 1u);
  // Established packets and replies of that flow are left to tc too.
  Bytes ack = BuildTcp(ToVip(40020, kAck));
  Step("deferred ack", ack, {Action::kPass, ack, V{}});
  const uint32_t be = MaglevPick(kTable, kClient, kVip, 40020, kVipPort);
  Bytes reply = BuildTcp(Reply(be, kNode, v.sport, kSyn | kAck));
  Step("deferred reply", reply, {Action::kPass, reply, V{}});
  // A flow that is not masqueraded stays on XDP.
  TcpSpec pod = ToVip(40021, kSyn);
  pod.saddr = kPodClient;
  Step("in-cluster client", BuildTcp(pod),
       {Action::kPass, BuildTcp(Dnat(pod, MaglevPick(kTable, kPodClient, kVip, 40021, kVipPort))),
        V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbSnatTest, ::testing::Values(Hook::kXdp, Hook::kTc), HookParamName);

}  // namespace
}  // namespace kpx::bpftest
