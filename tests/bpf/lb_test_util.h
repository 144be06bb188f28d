// Shared by the load-balancer fixture tests: a parameterised GTest base that
// loads both programs (one run per hook), the reference Maglev hash, and a
// step checker (verdict, exact output frame, counter deltas), Katran style.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/bpf/lb_fixture.h"
#include "tests/bpf/packet_builder.h"
#include "tests/testlib/testlib.h"

namespace kpx::bpftest {

inline const char* VerdictName(uint32_t v) {
  static const char* const kNames[] = {"PASS_NON_SERVICE", "CT_HIT",       "NEW_FLOW", "REPLY",
                                       "NO_BACKEND",       "DEAD_BACKEND", "REDIRECT", "PASS_STACK",
                                       "MALFORMED",        "FRAGMENT",     "SNAT_NO_PORT", "HANDSHAKE"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == KPX_V_MAX);
  return v < KPX_V_MAX ? kNames[v] : "?";
}

// The program's lb4_hash() (bpf/lib/lb.h), recomputed: the tests assert the
// exact backend Maglev picks, not just "some backend".
inline uint32_t RefHash(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport) {
  uint64_t h = (uint64_t{saddr} << 32) | daddr;
  uint64_t ports = (uint64_t{htons(sport)} << 16) | htons(dport) | (uint64_t{6} << 32);
  h ^= ports * 0x9e3779b97f4a7c15ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return static_cast<uint32_t>(h);
}

inline std::string Hex(const Bytes& b) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < b.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", b[i]);
    s += buf;
    s += (i % 16 == 15) ? "\n" : " ";
  }
  return s;
}

// What one packet must produce.
struct Expect {
  Action action = Action::kPass;
  std::optional<Bytes> out;               // exact frame; nullopt = not compared
  using Verdicts = std::map<uint32_t, uint64_t>;
  Verdicts verdicts;  // counter deltas; unlisted ones must not move
};
inline Expect::Verdicts Plus(Expect::Verdicts v, uint32_t verdict) {
  v[verdict] += 1;
  return v;
}

// While alive, the calling thread is in a fresh, empty network namespace:
// BPF_PROG_TEST_RUN's bpf_fib_lookup then sees no routes (not the host's),
// so every fixture's outcome is the same on every machine.
class PrivateNetns {
 public:
  PrivateNetns() : original_(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
    if (original_ >= 0 && unshare(CLONE_NEWNET) != 0) error_ = strerror(errno);
  }
  ~PrivateNetns() {
    if (original_ < 0) return;
    if (error_.empty() && setns(original_, CLONE_NEWNET) != 0) std::abort();
    close(original_);
  }
  std::string error() const { return original_ < 0 ? "open own netns failed" : error_; }

 private:
  int original_;
  std::string error_;
};

class LbTest : public ::testing::TestWithParam<Hook> {
 protected:
  void SetUp() override {
    if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    netns_ = std::make_unique<PrivateNetns>();
    ASSERT_EQ(netns_->error(), "") << "unshare(CLONE_NEWNET)";
    auto lb = BpfLb::Create();
    ASSERT_TRUE(lb.ok()) << lb.status();
    lb_ = std::move(*lb);
  }

  Hook hook() const { return GetParam(); }
  BpfLb& lb() { return *lb_; }

  // Runs `in` through the program under test and checks `e`; returns the
  // output frame.
  Bytes Step(const std::string& name, const Bytes& in, const Expect& e) {
    SCOPED_TRACE(name + " (" + HookName(hook()) + ")");
    std::vector<uint64_t> before = lb_->Verdicts();
    auto r = lb_->Run(hook(), in);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    EXPECT_EQ(r->retval, RetvalFor(hook(), e.action));
    if (e.out) {
      EXPECT_EQ(r->out, *e.out) << "got:\n" << Hex(r->out) << "\nwant:\n" << Hex(*e.out);
    }
    std::vector<uint64_t> after = lb_->Verdicts();
    for (uint32_t v = 0; v < KPX_V_MAX; ++v) {
      auto it = e.verdicts.find(v);
      uint64_t want = it == e.verdicts.end() ? 0 : it->second;
      EXPECT_EQ(after[v] - before[v], want) << "verdict counter " << VerdictName(v);
    }
    return r->out;
  }

  // The three-way handshake of kClient:sport with the basic world's VIP (no
  // masquerade) whose Maglev table is kTable: SYN (new flow, half-open),
  // the backend's SYN-ACK (reverse NAT), the client's ACK (the flow moves to
  // kpx_ct). Checks every frame and verdict; returns the backend id.
  uint32_t Handshake(uint16_t sport);

  std::unique_ptr<PrivateNetns> netns_;  // destroyed after lb_ and derived members
  std::unique_ptr<BpfLb> lb_;
};

inline std::string HookParamName(const ::testing::TestParamInfo<Hook>& info) {
  return HookName(info.param);
}

}  // namespace kpx::bpftest

namespace kpx::bpftest {

// The small world most fixtures use: ClusterIP 10.96.0.10:80 (service id 1)
// over three backends on :8080, Maglev table of 7 slots.
inline const uint32_t kVip = Ip("10.96.0.10");
inline constexpr uint16_t kVipPort = 80;
inline constexpr uint32_t kSvcId = 1;
inline const uint32_t kClient = Ip("192.168.50.7");
inline const uint32_t kBackendAddr[] = {0,
                                        Ip("10.244.1.11"),
                                        Ip("10.244.2.12"),
                                        Ip("10.244.3.13"),
                                        Ip("10.244.4.14"),
                                        Ip("10.244.5.15")};
inline constexpr uint16_t kBackendPort = 8080;
inline const std::vector<uint32_t> kTable = {1, 2, 3, 1, 2, 3, 1};

inline kpx_svc Svc(uint32_t id, uint32_t backend_count, uint32_t maglev_m, uint32_t flags = 0,
                   uint32_t affinity_timeout_s = 0) {
  kpx_svc s{};
  s.id = id;
  s.flags = flags;
  s.affinity_timeout_s = affinity_timeout_s;
  s.backend_count = backend_count;
  s.maglev_m = maglev_m;
  s.maglev_off = TestMaglevOffset(id);
  return s;
}

// Backends 1..5 exist; service 1 uses 1..3 through kTable.
inline void SetUpBasicWorld(BpfLb& lb, uint32_t svc_flags = 0, uint32_t timeout_s = 0) {
  for (uint32_t id = 1; id <= 5; ++id)
    ASSERT_TRUE(lb.SetBackend(id, kBackendAddr[id], kBackendPort).ok());
  ASSERT_TRUE(lb.SetMaglev(kSvcId, kTable).ok());
  ASSERT_TRUE(
      lb.AddService(kVip, kVipPort, Svc(kSvcId, 3, kTable.size(), svc_flags, timeout_s)).ok());
}

inline uint32_t MaglevPick(const std::vector<uint32_t>& table, uint32_t saddr, uint32_t daddr,
                           uint16_t sport, uint16_t dport) {
  return table[RefHash(saddr, daddr, sport, dport) % table.size()];
}

// A client packet to the VIP.
inline TcpSpec ToVip(uint16_t sport, uint8_t flags) {
  TcpSpec s;
  s.saddr = kClient;
  s.daddr = kVip;
  s.sport = sport;
  s.dport = kVipPort;
  s.flags = flags;
  s.seq = 7000 + sport;
  s.ack = (flags & kAck) ? 99000 : 0;
  return s;
}

// The same packet after DNAT to backend `id`.
inline TcpSpec Dnat(TcpSpec s, uint32_t id) {
  s.daddr = kBackendAddr[id];
  s.dport = kBackendPort;
  return s;
}

// Backend `id`'s packet to the client's port `sport`, and what it must look
// like after reverse NAT.
inline TcpSpec FromBackend(uint32_t id, uint16_t sport, uint8_t flags) {
  TcpSpec s;
  s.saddr = kBackendAddr[id];
  s.daddr = kClient;
  s.sport = kBackendPort;
  s.dport = sport;
  s.flags = flags;
  s.seq = 123456;
  s.ack = 7000 + sport + 1;
  return s;
}
inline TcpSpec ReverseNat(TcpSpec s) {
  s.saddr = kVip;
  s.sport = kVipPort;
  return s;
}

inline kpx_ct_key CtKeyOf(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport) {
  kpx_ct_key k{};
  k.saddr = saddr;
  k.daddr = daddr;
  k.sport = htons(sport);
  k.dport = htons(dport);
  k.proto = 6;
  return k;
}

// Entries of a conntrack map (kpx_ct or kpx_ct_syn).
inline size_t CountEntries(int fd) {
  kpx_ct_key key{}, next{};
  size_t n = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++n;
    key = next;
    prev = &key;
  }
  return n;
}

inline uint32_t LbTest::Handshake(uint16_t sport) {
  uint32_t be = MaglevPick(kTable, kClient, kVip, sport, kVipPort);
  const Expect::Verdicts stack = {{KPX_V_PASS_STACK, 1}};
  TcpSpec syn = ToVip(sport, kSyn);
  Step("handshake syn", BuildTcp(syn), {Action::kPass, BuildTcp(Dnat(syn, be)), Plus(stack, KPX_V_NEW_FLOW)});
  TcpSpec synack = FromBackend(be, sport, kSyn | kAck);
  Step("handshake syn-ack", BuildTcp(synack),
       {Action::kPass, BuildTcp(ReverseNat(synack)), Plus(stack, KPX_V_REPLY)});
  TcpSpec ack = ToVip(sport, kAck);
  Step("handshake ack", BuildTcp(ack), {Action::kPass, BuildTcp(Dnat(ack, be)), Plus(stack, KPX_V_HANDSHAKE)});
  return be;
}

}  // namespace kpx::bpftest
