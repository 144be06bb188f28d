// TraceFlow: the userspace replay of lb4_decide (bpf/lib/lb.h) over in-memory
// maps: frontend then NodePort lookup, conntrack, affinity, Maglev slot with
// removed backends skipped. The kpxd_xdp e2e test checks it against real flows.
#include "dataplane/xdp/flow_trace.h"

#include <arpa/inet.h>

#include <map>

#include "absl/container/flat_hash_map.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::xdp {
namespace {

using ::testing::HasSubstr;

Ipv4 Ip(const char* s) { return *Ipv4::Parse(s); }

struct Maps {
  std::map<std::tuple<uint32_t, uint16_t>, kpx_svc> services;  // (be addr, be port)
  std::vector<Ipv4> node_addrs;
  std::map<uint32_t, kpx_backend> backends;
  std::map<uint32_t, uint32_t> pool;  // Maglev pool: global slot index -> backend id
  std::map<std::tuple<uint32_t, uint32_t, uint16_t, uint16_t>, kpx_ct_entry> ct;
  std::map<std::tuple<uint32_t, uint32_t, uint16_t, uint16_t>, kpx_ct_entry> ct_syn;  // half-open
  std::map<std::pair<uint32_t, uint32_t>, kpx_affinity_val> affinity;

  TraceLookups Lookups() {
    TraceLookups l;
    l.service = [this](const kpx_svc_key& k) -> std::optional<kpx_svc> {
      auto it = services.find({k.addr, k.port});
      if (it == services.end() || k.proto != IPPROTO_TCP) return std::nullopt;
      return it->second;
    };
    l.is_node_address = [this](Ipv4 a) {
      return std::find(node_addrs.begin(), node_addrs.end(), a) != node_addrs.end();
    };
    l.backend = [this](uint32_t id) -> std::optional<kpx_backend> {
      auto it = backends.find(id);
      if (it == backends.end() || it->second.addr == 0) return std::nullopt;
      return it->second;
    };
    l.maglev_slot = [this](uint32_t index) -> std::optional<uint32_t> {
      auto it = pool.find(index);
      if (it == pool.end()) return std::nullopt;
      return it->second;
    };
    l.conntrack = [this](const kpx_ct_key& k) -> std::optional<kpx_ct_entry> {
      auto it = ct.find({k.saddr, k.daddr, k.sport, k.dport});
      if (it == ct.end()) return std::nullopt;
      return it->second;
    };
    l.conntrack_half_open = [this](const kpx_ct_key& k) -> std::optional<kpx_ct_entry> {
      auto it = ct_syn.find({k.saddr, k.daddr, k.sport, k.dport});
      if (it == ct_syn.end()) return std::nullopt;
      return it->second;
    };
    l.affinity = [this](const kpx_affinity_key& k) -> std::optional<kpx_affinity_val> {
      auto it = affinity.find({k.client, k.svc_id});
      if (it == affinity.end()) return std::nullopt;
      return it->second;
    };
    return l;
  }
};

kpx_backend Be(const char* ip, uint16_t port) {
  kpx_backend b{};
  b.addr = Ip(ip).be();
  b.port = htons(port);
  return b;
}

class FlowTraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kpx_svc s{};
    s.id = 7;
    s.backend_count = 3;
    s.maglev_m = 13;
    s.maglev_off = 1000;
    maps_.services[{Ip("10.96.0.10").be(), htons(80)}] = s;
    kpx_svc np = s;
    np.id = 8;
    np.maglev_off = KPX_MAGLEV_CHUNK_SLOTS + 13;  // in the second chunk
    maps_.services[{0, htons(30080)}] = np;
    maps_.node_addrs = {Ip("192.168.1.5")};
    maps_.backends[1] = Be("10.244.1.2", 8080);
    maps_.backends[2] = Be("10.244.2.2", 8080);
    maps_.backends[3] = Be("10.244.3.2", 8080);
    // Slot i holds backend (i % 3) + 1.
    for (uint32_t off : {1000u, KPX_MAGLEV_CHUNK_SLOTS + 13}) {
      for (uint32_t i = 0; i < 13; ++i) maps_.pool[off + i] = i % 3 + 1;
    }
  }
  FlowTrace Trace(const char* src, uint16_t sport, const char* dst, uint16_t dport,
                  uint64_t now = 1000 * 1000000000ull) {
    return TraceFlow(maps_.Lookups(), {Ip(src), sport, Ip(dst), dport}, now);
  }
  Maps maps_;
};

TEST_F(FlowTraceTest, HashMatchesTheProgramsFormula) {
  // lb4_hash on the packet's raw (network-order) fields, computed by hand
  // for one tuple so a change in either copy shows.
  FlowTuple t{Ip("10.0.0.1"), 40000, Ip("10.96.0.10"), 80};
  uint64_t h = (uint64_t{Ip("10.0.0.1").be()} << 32) | Ip("10.96.0.10").be();
  h ^= ((uint64_t{htons(40000)} << 16) | htons(80) | (uint64_t{6} << 32)) * 0x9e3779b97f4a7c15ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  EXPECT_EQ(FlowHash(t), static_cast<uint32_t>(h));
  EXPECT_NE(FlowHash(t), FlowHash({Ip("10.0.0.1"), 40001, Ip("10.96.0.10"), 80}));
}

TEST_F(FlowTraceTest, NewFlowTakesTheMaglevSlotOfItsHash) {
  FlowTrace tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  ASSERT_EQ(tr.decision, FlowTrace::Decision::kMaglev);
  uint32_t hash = FlowHash({Ip("10.0.0.1"), 40000, Ip("10.96.0.10"), 80});
  EXPECT_EQ(tr.hash, hash);
  EXPECT_EQ(tr.slot, hash % 13);
  EXPECT_EQ(tr.backend_id, tr.slot % 3 + 1);
  EXPECT_EQ(tr.probes, 1u);
  EXPECT_FALSE(tr.nodeport);
  EXPECT_THAT(tr.steps.back(), HasSubstr("Maglev"));
}

TEST_F(FlowTraceTest, RemovedBackendsInTheSlotAreSkippedLikeTheProgram) {
  FlowTrace first = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  maps_.backends[first.backend_id].addr = 0;  // removed: next slot
  FlowTrace tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  ASSERT_EQ(tr.decision, FlowTrace::Decision::kMaglev);
  EXPECT_EQ(tr.probes, 2u);
  EXPECT_EQ(tr.backend_id, (first.slot + 1) % 13 % 3 + 1);
}

TEST_F(FlowTraceTest, ConntrackWinsAndADeadBackendFallsThrough) {
  kpx_ct_entry e{};
  e.backend_id = 3;
  e.svc_id = 7;
  maps_.ct[{Ip("10.0.0.1").be(), Ip("10.96.0.10").be(), htons(40000), htons(80)}] = e;
  FlowTrace tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kConntrack);
  EXPECT_EQ(tr.backend_id, 3u);
  ASSERT_TRUE(tr.backend.has_value());
  EXPECT_EQ(tr.backend->addr, Ip("10.244.3.2").be());

  maps_.backends[3].addr = 0;
  tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_NE(tr.decision, FlowTrace::Decision::kConntrack);
  EXPECT_TRUE(tr.conntrack.has_value());
  EXPECT_THAT(tr.steps[1], HasSubstr("removed"));
}

// kpx_ct_syn: a SYN's reverse entry shows as a pending handshake next to
// the Maglev pick; once the backend answered, the forward entry decides
// (lb4_handshake), whatever the table says by then.
TEST_F(FlowTraceTest, HalfOpenHandshakesAreShown) {
  FlowTrace pick = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  ASSERT_EQ(pick.decision, FlowTrace::Decision::kMaglev);
  EXPECT_FALSE(pick.half_open.has_value());
  kpx_ct_entry r{};
  r.backend_id = pick.backend_id;
  r.svc_id = 7;
  r.vip = Ip("10.96.0.10").be();
  r.vport = htons(80);
  r.flags = KPX_CT_F_REPLY;
  maps_.ct_syn[{pick.backend->addr, Ip("10.0.0.1").be(), pick.backend->port, htons(40000)}] = r;
  FlowTrace tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kMaglev);
  ASSERT_TRUE(tr.half_open.has_value());
  EXPECT_THAT(tr.steps.back(), HasSubstr("no SYN-ACK yet"));

  const uint32_t other = pick.backend_id % 3 + 1;
  kpx_ct_entry f = r;
  f.backend_id = other;
  f.flags = KPX_CT_F_SEEN_REPLY;
  maps_.ct_syn[{Ip("10.0.0.1").be(), Ip("10.96.0.10").be(), htons(40000), htons(80)}] = f;
  tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kHalfOpen);
  EXPECT_EQ(tr.backend_id, other);
  EXPECT_STREQ(DecisionName(tr.decision), "half_open");
  EXPECT_THAT(tr.steps[1], HasSubstr("handshake in progress"));

  // Established (kpx_ct) wins over a stale half-open entry.
  kpx_ct_entry e{};
  e.backend_id = pick.backend_id;
  e.svc_id = 7;
  maps_.ct[{Ip("10.0.0.1").be(), Ip("10.96.0.10").be(), htons(40000), htons(80)}] = e;
  EXPECT_EQ(Trace("10.0.0.1", 40000, "10.96.0.10", 80).decision, FlowTrace::Decision::kConntrack);
}

TEST_F(FlowTraceTest, AClosedFlowsEntryDoesNotDecideANewSyn) {
  kpx_ct_entry e{};
  e.backend_id = 3;
  e.svc_id = 7;
  e.flags = KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY;
  maps_.ct[{Ip("10.0.0.1").be(), Ip("10.96.0.10").be(), htons(40000), htons(80)}] = e;
  FlowTrace tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kMaglev);
  EXPECT_THAT(tr.steps[1], HasSubstr("closed"));
  e.flags = KPX_CT_F_RST;
  maps_.ct[{Ip("10.0.0.1").be(), Ip("10.96.0.10").be(), htons(40000), htons(80)}] = e;
  EXPECT_EQ(Trace("10.0.0.1", 40000, "10.96.0.10", 80).decision, FlowTrace::Decision::kMaglev);
  e.flags = KPX_CT_F_FIN_FWD | KPX_CT_F_SNAT;  // half-closed: still established
  e.snat_addr = Ip("192.168.1.5").be();
  e.snat_port = htons(61000);
  maps_.ct[{Ip("10.0.0.1").be(), Ip("10.96.0.10").be(), htons(40000), htons(80)}] = e;
  tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kConntrack);
  EXPECT_THAT(tr.steps[1], HasSubstr("masqueraded as 192.168.1.5:61000"));
}

TEST_F(FlowTraceTest, FreshAffinityPinWinsExpiredOneIsRepicked) {
  maps_.services[{Ip("10.96.0.10").be(), htons(80)}].flags = KPX_SVC_F_AFFINITY;
  maps_.services[{Ip("10.96.0.10").be(), htons(80)}].affinity_timeout_s = 10;
  kpx_affinity_val v{};
  v.backend_id = 2;
  v.last_seen_ns = 995 * 1000000000ull;  // 5 s before "now"
  maps_.affinity[{Ip("10.0.0.1").be(), 7}] = v;
  FlowTrace tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kAffinity);
  EXPECT_EQ(tr.backend_id, 2u);
  // Affinity needs no source port.
  EXPECT_EQ(Trace("10.0.0.1", 0, "10.96.0.10", 80).decision, FlowTrace::Decision::kAffinity);

  tr = Trace("10.0.0.1", 40000, "10.96.0.10", 80, 1006 * 1000000000ull);  // 11 s: expired
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kMaglev);
  EXPECT_FALSE(tr.affinity_fresh);
}

TEST_F(FlowTraceTest, NodePortOnlyOnNodeAddresses) {
  FlowTrace tr = Trace("10.0.0.1", 40000, "192.168.1.5", 30080);
  EXPECT_TRUE(tr.nodeport);
  EXPECT_EQ(tr.svc.id, 8u);
  EXPECT_EQ(tr.decision, FlowTrace::Decision::kMaglev);
  EXPECT_EQ(Trace("10.0.0.1", 40000, "192.168.1.6", 30080).decision,
            FlowTrace::Decision::kNoFrontend);
}

TEST_F(FlowTraceTest, NoSourcePortNoBackendsNoFrontend) {
  EXPECT_EQ(Trace("10.0.0.1", 0, "10.96.0.10", 80).decision, FlowTrace::Decision::kNeedSourcePort);
  EXPECT_EQ(Trace("10.0.0.1", 1, "10.96.0.11", 80).decision, FlowTrace::Decision::kNoFrontend);
  maps_.services[{Ip("10.96.0.10").be(), htons(80)}].backend_count = 0;
  EXPECT_EQ(Trace("10.0.0.1", 1, "10.96.0.10", 80).decision, FlowTrace::Decision::kNoBackend);
}

}  // namespace
}  // namespace kpx::xdp
