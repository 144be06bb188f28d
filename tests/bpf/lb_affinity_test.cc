// sessionAffinity: ClientIP through both programs: a client stays on one
// backend across source ports while its entry is fresh, is re-balanced after
// affinity_timeout_s, and moves when its pinned backend is removed.
#include <bpf/bpf.h>

#include <set>

#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

class LbAffinityTest : public LbTest {
 protected:
  static constexpr uint32_t kTimeoutS = 300;

  // Backend the program sent a SYN from `sport` to.
  uint32_t SynBackend(uint16_t sport) {
    Bytes out = Step("syn " + std::to_string(sport), BuildTcp(ToVip(sport, kSyn)),
                     {Action::kPass, std::nullopt, V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
    uint32_t daddr = ParseTcp(out).daddr;
    for (uint32_t id = 1; id <= 5; ++id)
      if (kBackendAddr[id] == daddr) return id;
    ADD_FAILURE() << "SYN went to " << IpText(daddr);
    return 0;
  }

  void Pin(uint32_t backend, uint64_t last_seen_ns) {
    kpx_affinity_key k{};
    k.client = kClient;
    k.svc_id = kSvcId;
    kpx_affinity_val v{};
    v.backend_id = backend;
    v.last_seen_ns = last_seen_ns;
    ASSERT_EQ(bpf_map_update_elem(lb().affinity_fd(), &k, &v, BPF_ANY), 0);
  }

  kpx_affinity_val Pinned() {
    kpx_affinity_key k{};
    k.client = kClient;
    k.svc_id = kSvcId;
    kpx_affinity_val v{};
    EXPECT_EQ(bpf_map_lookup_elem(lb().affinity_fd(), &k, &v), 0);
    return v;
  }
};

TEST_P(LbAffinityTest, WithoutAffinityPortsSpreadOverBackends) {
  // The control for the next test: the same 16 ports reach several backends.
  SetUpBasicWorld(lb());
  std::set<uint32_t> seen;
  for (uint16_t sport = 42000; sport < 42016; ++sport) seen.insert(SynBackend(sport));
  EXPECT_GT(seen.size(), 1u);
}

TEST_P(LbAffinityTest, ClientIsPinnedAcrossSourcePorts) {
  SetUpBasicWorld(lb(), KPX_SVC_F_AFFINITY, kTimeoutS);
  uint32_t first = SynBackend(42000);
  EXPECT_EQ(first, MaglevPick(kTable, kClient, kVip, 42000, kVipPort));
  for (uint16_t sport = 42001; sport < 42016; ++sport) EXPECT_EQ(SynBackend(sport), first);
  EXPECT_EQ(Pinned().backend_id, first);
  // Another client is balanced on its own.
  TcpSpec other = ToVip(42000, kSyn);
  other.saddr = Ip("192.168.50.8");
  uint32_t be = MaglevPick(kTable, other.saddr, kVip, 42000, kVipPort);
  Step("other client", BuildTcp(other),
       {Action::kPass, BuildTcp(Dnat(other, be)), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
}

TEST_P(LbAffinityTest, FreshEntryWinsOverMaglevEvenOutsideTheTable) {
  SetUpBasicWorld(lb(), KPX_SVC_F_AFFINITY, kTimeoutS);
  Pin(5, MonotonicNs());  // backend 5 is alive but not in this table
  EXPECT_EQ(SynBackend(42100), 5u);
  EXPECT_EQ(SynBackend(42101), 5u);
}

TEST_P(LbAffinityTest, ExpiredEntryIsRebalanced) {
  // A 1 s timeout, so "expired" needs no large clock value (uptime).
  SetUpBasicWorld(lb(), KPX_SVC_F_AFFINITY, 1);
  uint64_t now = MonotonicNs();
  Pin(5, now - 3 * 1000000000ull);
  uint32_t be = SynBackend(42200);
  EXPECT_EQ(be, MaglevPick(kTable, kClient, kVip, 42200, kVipPort));
  kpx_affinity_val v = Pinned();
  EXPECT_EQ(v.backend_id, be);
  // Re-stamped with the programs' tick-resolution clock (kpx_now_ns), which
  // may read up to one tick (<= 10 ms at HZ=100) behind clock_gettime.
  EXPECT_GE(v.last_seen_ns + 10'000'000ull, now);
}

TEST_P(LbAffinityTest, RemovedPinnedBackendIsReplaced) {
  SetUpBasicWorld(lb(), KPX_SVC_F_AFFINITY, kTimeoutS);
  Pin(5, MonotonicNs());
  ASSERT_TRUE(lb().SetBackend(5, 0, 0).ok());
  uint32_t be = SynBackend(42300);
  EXPECT_EQ(be, MaglevPick(kTable, kClient, kVip, 42300, kVipPort));
  EXPECT_EQ(Pinned().backend_id, be);
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbAffinityTest, ::testing::Values(Hook::kXdp, Hook::kTc),
                         HookParamName);

}  // namespace
}  // namespace kpx::bpftest
