// libFuzzer target: arbitrary frames through both load-balancer programs
// (kpx_xdp, kpx_tc) with BPF_PROG_TEST_RUN, over a small world (ClusterIP
// with three backends, a NodePort, a Service with no backends that rejects,
// a ClientIP-affinity Service; masquerade on for clients outside the pod
// CIDR), in a network namespace of its own. Checks, for every frame and hook:
//   - the return code is one the hook may give (XDP: DROP/PASS/TX/REDIRECT,
//     never ABORTED; tc: OK/SHOT/REDIRECT);
//   - a well-formed IPv4/TCP input (both checksums right, not a fragment)
//     that is not dropped comes out still IPv4/TCP with both checksums right
//     after whatever NAT, TTL or RST rewrite the program did.
// The programs run in the kernel, where libFuzzer sees no coverage, so each
// (hook, return code, rewritten?) outcome is an extra coverage counter: an
// input reaching a new outcome is kept in the corpus.
//
// Needs root and BPF (like the tests labelled bpf): without them it prints
// the reason and exits 0. KPX_BPF_FUZZ_WRITE_SEEDS=DIR writes the seed frames
// (tests/fuzz/corpus/bpf_lb) and exits.
#include <bpf/bpf.h>
#include <sched.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "tests/bpf/lb_fixture.h"
#include "tests/bpf/packet_builder.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/testlib/testlib.h"

using namespace kpx::bpftest;

// libFuzzer's extra coverage counters (one byte each, any non-zero value).
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t g_outcomes[2 * 8 * 2];

namespace {

std::unique_ptr<BpfLb> g_lb;
// For the summary at exit: how much the checksum check really covered.
uint64_t g_runs = 0, g_checked = 0, g_checked_rewritten = 0;

const uint32_t kVip = Ip("10.96.0.10");
const uint32_t kRejectVip = Ip("10.96.0.20");
const uint32_t kAffinityVip = Ip("10.96.0.30");
const uint32_t kNodeAddr = Ip("192.168.50.1");
const uint32_t kClient = Ip("192.168.50.7");
const uint32_t kBackends[] = {0, Ip("10.244.1.11"), Ip("10.244.2.12"), Ip("10.244.3.13")};
constexpr uint16_t kBackendPort = 8080;
constexpr uint16_t kNodePort = 30080;

kpx_svc Svc(uint32_t id, uint32_t backend_count, uint32_t maglev_m, uint32_t flags,
            uint32_t affinity_timeout_s = 0) {
  kpx_svc s{};
  s.id = id;
  s.flags = flags;
  s.affinity_timeout_s = affinity_timeout_s;
  s.backend_count = backend_count;
  s.maglev_m = maglev_m;
  s.maglev_off = TestMaglevOffset(id);  // where SetMaglev(id, ...) writes
  return s;
}

absl::Status SetUpWorld(BpfLb& lb) {
  const std::vector<uint32_t> table = {1, 2, 3, 1, 2, 3, 1};
  for (uint32_t id = 1; id <= 3; ++id) {
    if (auto s = lb.SetBackend(id, kBackends[id], kBackendPort); !s.ok()) return s;
  }
  for (uint32_t svc = 1; svc <= 4; ++svc) {
    if (auto s = lb.SetMaglev(svc, table); !s.ok()) return s;
  }
  if (auto s = lb.AddService(kVip, 80, Svc(1, 3, table.size(), 0)); !s.ok()) return s;
  if (auto s = lb.AddService(0, kNodePort,
                             Svc(2, 3, table.size(), KPX_SVC_F_NODEPORT | KPX_SVC_F_EXTERNAL));
      !s.ok())
    return s;
  if (auto s = lb.AddService(kRejectVip, 80, Svc(3, 0, 0, 0)); !s.ok()) return s;
  if (auto s = lb.AddService(kAffinityVip, 80, Svc(4, 3, table.size(), KPX_SVC_F_AFFINITY, 60));
      !s.ok())
    return s;
  if (auto s = lb.AddNodeAddr(kNodeAddr); !s.ok()) return s;
  // Masquerade on (node address, pod CIDR 10.244.0.0/16): clients outside
  // the CIDR are SNATed, so the SNAT port allocation and reply rewrite run.
  kpx_config c{};
  c.abi_version = KPX_ABI_VERSION;
  c.snat_addr = kNodeAddr;
  c.cluster_prefix = 16;
  c.cluster_mask = htonl(~0u << 16);
  c.cluster_cidr = Ip("10.244.0.0") & c.cluster_mask;
  if (auto s = lb.SetConfig(c); !s.ok()) return s;
  // XDP answers RSTs with XDP_TX only on listed devices; the test run's
  // ingress device is loopback.
  uint32_t lo = 1;
  if (bpf_map_update_elem(lb.tx_ports_fd(), &lo, &lo, BPF_ANY) != 0)
    return absl::InternalError(absl::StrCat("kpx_tx_ports: ", strerror(errno)));
  return absl::OkStatus();
}

// The maps stay alive through the programs' references: unpin them at once
// so a crashing run leaves nothing under /sys/fs/bpf.
void Unpin(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    for (const std::string& n : names) unlink((dir + "/" + n).c_str());
  }
  rmdir(dir.c_str());
}

TcpSpec To(uint32_t daddr, uint16_t dport, uint8_t flags) {
  TcpSpec s;
  s.saddr = kClient;
  s.daddr = daddr;
  s.sport = 40000;
  s.dport = dport;
  s.flags = flags;
  return s;
}

void WriteSeeds(const std::string& dir) {
  std::vector<std::pair<std::string, Bytes>> seeds;
  seeds.push_back({"vip_syn", BuildTcp(To(kVip, 80, kSyn))});
  seeds.push_back({"vip_ack_data", [] {
                     TcpSpec s = To(kVip, 80, kAck | kPsh);
                     s.payload = Bytes(32, 'x');
                     return BuildTcp(s);
                   }()});
  seeds.push_back({"vip_fin", BuildTcp(To(kVip, 80, kFin | kAck))});
  seeds.push_back({"nodeport_syn", BuildTcp(To(kNodeAddr, kNodePort, kSyn))});
  seeds.push_back({"reject_syn", BuildTcp(To(kRejectVip, 80, kSyn))});
  seeds.push_back({"affinity_syn", BuildTcp(To(kAffinityVip, 80, kSyn))});
  seeds.push_back({"vlan_syn", [] {
                     TcpSpec s = To(kVip, 80, kSyn);
                     s.vlan = 100;
                     return BuildTcp(s);
                   }()});
  seeds.push_back({"options_syn", [] {
                     TcpSpec s = To(kVip, 80, kSyn);
                     s.ip_options = {0x01, 0x01, 0x01, 0x00};
                     s.tcp_options = {0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07};
                     return BuildTcp(s);
                   }()});
  seeds.push_back({"fragment", [] {
                     TcpSpec s = To(kVip, 80, kSyn);
                     s.frag_off = 0x2000;  // MF
                     return BuildTcp(s);
                   }()});
  seeds.push_back({"backend_reply", [] {
                     TcpSpec s;
                     s.saddr = kBackends[1];
                     s.daddr = kClient;
                     s.sport = kBackendPort;
                     s.dport = 40000;
                     s.flags = kSyn | kAck;
                     return BuildTcp(s);
                   }()});
  seeds.push_back({"udp", BuildUdp(kClient, kVip, 40000, 80, 16)});
  seeds.push_back({"icmp", BuildIcmpEcho(kClient, kVip)});
  seeds.push_back({"arp", BuildArpRequest(kClient, kVip)});
  seeds.push_back({"ipv6_tcp", BuildIpv6Tcp(80)});
  for (const auto& [name, frame] : seeds) {
    std::ofstream(dir + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(frame.data()), frame.size());
  }
}

bool WellFormedTcp(const Bytes& b) {
  const TcpView v = ParseTcp(b);
  return v.ok && v.ip_csum_ok && v.tcp_csum_ok && (v.frag_off & 0x3fff) == 0 && v.thl >= 20 &&
         v.l4 + v.thl <= v.l3 + v.tot_len;
}

// Random mutations almost always break a checksum, which makes the programs'
// NAT path rare: every input also runs with both checksums recomputed.
bool RepairChecksums(Bytes& b) {
  const TcpView v = ParseTcp(b);
  if (!v.ok) return false;
  Put16(b, v.l3 + 10, 0);
  Put16(b, v.l3 + 10, Fold(SumWords(&b[v.l3], v.ihl)));
  const size_t l4_len = v.tot_len - v.ihl;
  Put16(b, v.l4 + 16, 0);
  Put16(b, v.l4 + 16, L4Checksum(b, v.l3, v.l4, l4_len, 6));
  return true;
}

void RunBoth(const Bytes& in) {
  const bool well_formed = WellFormedTcp(in);
  for (Hook hook : {Hook::kXdp, Hook::kTc}) {
    absl::StatusOr<RunResult> r = g_lb->Run(hook, in);
    // The kernel refuses to build an skb from some frames (an IPv4 ethertype
    // with less than an IP header behind it): the stack would never hand
    // those to tc either.
    if (!r.ok() && hook == Hook::kTc && absl::StrContains(r.status().message(), strerror(EINVAL)))
      continue;
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
      KPX_FUZZ_CHECK(false, "BPF_PROG_TEST_RUN failed");
    }
    const uint32_t rc = r->retval;
    bool allowed, dropped;
    if (hook == Hook::kXdp) {
      allowed = rc == 1 || rc == 2 || rc == 3 || rc == 4;  // DROP PASS TX REDIRECT
      dropped = rc == 1;
    } else {
      allowed = rc == 0 || rc == 2 || rc == 7;  // OK SHOT REDIRECT
      dropped = rc == 2;
    }
    if (!allowed) {
      std::fprintf(stderr, "%s returned %u\n", HookName(hook), rc);
      KPX_FUZZ_CHECK(false, "verdict outside the hook's allowed set");
    }
    ++g_runs;
    const bool rewritten = r->out != in;
    g_outcomes[(hook == Hook::kXdp ? 0 : 16) + (rc & 7) * 2 + (rewritten ? 1 : 0)] = 1;
    if (well_formed && !dropped && !WellFormedTcp(r->out)) {
      const TcpView v = ParseTcp(r->out);
      std::fprintf(stderr, "%s rc %u: output parsed=%d ip_csum_ok=%d tcp_csum_ok=%d\n",
                   HookName(hook), rc, v.ok, v.ip_csum_ok, v.tcp_csum_ok);
      KPX_FUZZ_CHECK(false, "a well-formed TCP packet came out malformed or with a bad checksum");
    }
    if (well_formed && !dropped) {
      ++g_checked;
      g_checked_rewritten += rewritten;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kpx::fuzz::QuietLogs();
  if (const char* dir = getenv("KPX_BPF_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) {
    std::fprintf(stderr, "bpf_lb_fuzz: skipped: %s\n", why.c_str());
    std::exit(0);
  }
  // A fresh network namespace, as the bpf tests use: bpf_fib_lookup then
  // sees no routes but its own, so outcomes do not depend on the host.
  if (unshare(CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "bpf_lb_fuzz: unshare(CLONE_NEWNET): %s\n", strerror(errno));
    std::exit(1);
  }
  auto lb = BpfLb::Create();
  if (!lb.ok()) {
    std::fprintf(stderr, "bpf_lb_fuzz: %s\n", std::string(lb.status().message()).c_str());
    std::exit(1);
  }
  g_lb = std::move(*lb);
  std::atexit([] {
    std::fprintf(stderr,
                 "bpf_lb_fuzz: %llu program runs; %llu well-formed TCP frames checked, "
                 "%llu of them rewritten (NAT/RST) with valid checksums\n",
                 (unsigned long long)g_runs, (unsigned long long)g_checked,
                 (unsigned long long)g_checked_rewritten);
  });
  Unpin(g_lb->pin_dir());
  if (absl::Status s = SetUpWorld(*g_lb); !s.ok()) {
    std::fprintf(stderr, "bpf_lb_fuzz: %s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Below an Ethernet header the kernel refuses the test run; above a page
  // XDP does.
  if (size < 14 || size > 1514) return 0;
  Bytes in(data, data + size);
  RunBoth(in);
  if (RepairChecksums(in)) RunBoth(in);
  return 0;
}
