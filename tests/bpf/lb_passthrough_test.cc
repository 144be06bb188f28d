// What kpx must leave alone, through both programs: traffic that is not for
// a frontend, other protocols, truncated or inconsistent headers and IP
// fragments all pass byte-for-byte unchanged, each counted under its verdict.
#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

struct PassCase {
  std::string name;
  Bytes in;
  uint32_t verdict;
  // BPF_PROG_TEST_RUN refuses (EINVAL) to build an skb from an IPv4 frame
  // without a whole IP header, so these reach only the XDP program here.
  bool xdp_only = false;
};

Bytes Cut(Bytes b, size_t n) {
  b.resize(n);
  return b;
}

std::vector<PassCase> Cases() {
  std::vector<PassCase> c;
  TcpSpec other = ToVip(43000, kSyn);
  other.daddr = Ip("10.96.0.11");  // not a frontend
  c.push_back({"tcp syn to a non-VIP", BuildTcp(other), KPX_V_PASS_NON_SERVICE});
  TcpSpec other_port = ToVip(43000, kSyn);
  other_port.dport = 81;  // the VIP, another port
  c.push_back({"tcp syn to the VIP on another port", BuildTcp(other_port), KPX_V_PASS_NON_SERVICE});
  c.push_back(
      {"udp to the VIP port", BuildUdp(kClient, kVip, 5353, kVipPort, 40), KPX_V_PASS_NON_SERVICE});
  c.push_back({"icmp echo to the VIP", BuildIcmpEcho(kClient, kVip), KPX_V_PASS_NON_SERVICE});
  c.push_back({"arp request for the VIP", BuildArpRequest(kClient, kVip), KPX_V_PASS_NON_SERVICE});
  c.push_back({"ipv6 tcp to port 80", BuildIpv6Tcp(kVipPort), KPX_V_PASS_NON_SERVICE});
  TcpSpec qinq = ToVip(43001, kSyn);
  qinq.vlan = 5;
  Bytes qinq_bytes = BuildTcp(qinq);
  qinq_bytes[16] = 0x81;  // inner EtherType 802.1Q: double tagging is not parsed
  qinq_bytes[17] = 0x00;
  c.push_back({"double-tagged frame", qinq_bytes, KPX_V_PASS_NON_SERVICE});

  Bytes syn = BuildTcp(ToVip(43002, kSyn));
  c.push_back({"ethernet header only", Cut(syn, 14), KPX_V_MALFORMED, true});
  c.push_back({"ip header cut", Cut(syn, 14 + 12), KPX_V_MALFORMED, true});
  c.push_back({"tcp header cut", Cut(syn, 14 + 20 + 12), KPX_V_MALFORMED});
  TcpSpec opts = ToVip(43003, kSyn);
  opts.ip_options = {1, 1, 1, 0, 1, 1, 1, 0};
  c.push_back({"ip options cut", Cut(BuildTcp(opts), 14 + 24), KPX_V_MALFORMED});
  TcpSpec topts = ToVip(43004, kSyn);
  topts.tcp_options = {2, 4, 5, 0xb4, 1, 1, 1, 0};
  Bytes short_total = BuildTcp(topts);
  c.push_back(
      {"datagram shorter than tot_len", Cut(short_total, short_total.size() - 4), KPX_V_MALFORMED});
  Bytes bad_ihl = syn;
  bad_ihl[14] = 0x44;  // ihl 4 < 5
  c.push_back({"ihl below 5", bad_ihl, KPX_V_MALFORMED});
  Bytes bad_version = syn;
  bad_version[14] = 0x65;
  c.push_back({"version 6 in an IPv4 frame", bad_version, KPX_V_MALFORMED});
  Bytes bad_doff = syn;
  bad_doff[14 + 20 + 12] = 0xf0;  // doff 60 bytes beyond the segment
  c.push_back({"tcp doff beyond the datagram", bad_doff, KPX_V_MALFORMED});

  TcpSpec mf = ToVip(43005, kSyn);
  mf.frag_off = 0x2000;  // MF, offset 0: first fragment
  mf.payload.assign(64, 'a');
  c.push_back({"first fragment to the VIP", BuildTcp(mf), KPX_V_FRAGMENT});
  TcpSpec later = ToVip(43006, kAck);
  later.frag_off = 0x0010;  // offset 128 bytes, last fragment
  c.push_back({"later fragment to the VIP", BuildTcp(later), KPX_V_FRAGMENT});
  return c;
}

class LbPassthroughTest : public LbTest {};

TEST_P(LbPassthroughTest, FramesPassUnchanged) {
  SetUpBasicWorld(lb());
  for (const PassCase& c : Cases()) {
    if (c.xdp_only && hook() != Hook::kXdp) continue;
    Step(c.name, c.in, {Action::kPass, c.in, {{c.verdict, 1}}});
  }
  // None of it was service traffic.
  kpx_svc_stats st = lb().SvcStats(kSvcId);
  EXPECT_EQ(st.packets, 0u);
}

TEST_P(LbPassthroughTest, NoServicesAtAllStillPasses) {
  Bytes syn = BuildTcp(ToVip(43100, kSyn));
  Step("syn with empty maps", syn, {Action::kPass, syn, {{KPX_V_PASS_NON_SERVICE, 1}}});
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbPassthroughTest, ::testing::Values(Hook::kXdp, Hook::kTc),
                         HookParamName);

}  // namespace
}  // namespace kpx::bpftest
