// FlowTrace: which backend the eBPF dataplane gives one TCP flow, and why,
// replayed in userspace from the maps (kpxctl trace). Mirrors lb4_decide /
// lb4_forward / lb4_pick in bpf/lib/lb.h step by step: frontend (then
// NodePort) lookup, conntrack, ClientIP affinity, Maglev slot. Read-only: it
// never creates the conntrack or affinity entries the program would.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/base/ipv4.h"
#include "kpx/abi.h"

namespace kpx::xdp {

struct FlowTuple {
  Ipv4 src;
  uint16_t sport = 0;  // 0 = unknown: conntrack and the Maglev slot need it
  Ipv4 dst;
  uint16_t dport = 0;
};

// lb4_hash() of the program for a TCP flow (ports in host order here).
uint32_t FlowHash(const FlowTuple& t);

// Point lookups on the maps; nullopt = no entry. Tests supply their own.
struct TraceLookups {
  std::function<std::optional<kpx_svc>(const kpx_svc_key&)> service;
  std::function<bool(Ipv4)> is_node_address;
  std::function<std::optional<kpx_backend>(uint32_t id)> backend;  // nullopt also for addr 0
  // Slot of the Maglev pool by global index (abi.h: chunk = index >> SHIFT).
  std::function<std::optional<uint32_t>(uint32_t pool_index)> maglev_slot;
  std::function<std::optional<kpx_ct_entry>(const kpx_ct_key&)> conntrack;           // kpx_ct
  std::function<std::optional<kpx_ct_entry>(const kpx_ct_key&)> conntrack_half_open;  // kpx_ct_syn
  std::function<std::optional<kpx_affinity_val>(const kpx_affinity_key&)> affinity;
};

// Lookups on the maps pinned under `pin_dir` (opened once, by path).
absl::StatusOr<TraceLookups> PinnedTraceLookups(const std::string& pin_dir);

// kpx_now_ns() of the programs (bpf_ktime_get_coarse_ns = CLOCK_MONOTONIC_COARSE),
// in ns: conntrack/affinity stamps are on this clock.
uint64_t MonotonicNowNs();

struct FlowTrace {
  enum class Decision {
    kNoFrontend,      // not for a frontend: passed untouched
    kConntrack,       // established flow: its conntrack entry decides
    kHalfOpen,        // handshake answered by a backend: the client's ACK goes there
    kDeadBackend,     // conntrack entry names a removed backend: RST
    kAffinity,        // ClientIP affinity pin still fresh
    kMaglev,          // Maglev slot of the 5-tuple hash
    kNoBackend,       // frontend without usable backends: RST
    kNeedSourcePort,  // Maglev hashes the source port: give SRC_IP:PORT
  };
  Decision decision = Decision::kNoFrontend;
  bool nodeport = false;  // matched *:port because dst is a node address
  kpx_svc svc{};
  std::optional<kpx_ct_entry> conntrack;
  // kpx_ct_syn: the forward entry of an answered handshake (kHalfOpen), or
  // the reverse entry a SYN left for the picked backend (SYN-ACK pending).
  std::optional<kpx_ct_entry> half_open;
  std::optional<kpx_affinity_val> affinity;
  bool affinity_fresh = false;
  uint64_t affinity_age_ns = 0;
  uint32_t hash = 0;
  uint32_t slot = 0;    // first Maglev slot looked at (hash % M)
  uint32_t probes = 0;  // slots looked at (more than 1: removed backends skipped)
  uint32_t backend_id = 0;
  std::optional<kpx_backend> backend;
  std::vector<std::string> steps;  // the reasoning, in the program's order
};
const char* DecisionName(FlowTrace::Decision d);  // "conntrack", "maglev", ...

// `now_ns` is MonotonicNowNs() outside tests.
FlowTrace TraceFlow(const TraceLookups& maps, const FlowTuple& t, uint64_t now_ns);

}  // namespace kpx::xdp
