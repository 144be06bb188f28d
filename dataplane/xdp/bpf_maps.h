// BpfMaps: the seam between the eBPF dataplane's logic and the kernel. Every
// read and write of the pinned maps named in bpf/include/kpx/abi.h goes
// through it: LibbpfMaps does the syscalls, FakeBpfMaps keeps the maps in
// memory for unit tests (Katran's BpfAdapter idea, kept thin).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "controller/base/ipv4.h"
#include "kpx/abi.h"

namespace kpx::xdp {

// max_entries of the maps as loaded. Ids index arrays, and id 0 means
// "none", so a map of N entries holds ids 1..N-1.
struct MapCapacities {
  uint32_t services = KPX_MAX_FRONTENDS;  // kpx_services entries (frontends)
  uint32_t service_ids = KPX_MAX_SERVICES;  // kpx_maglev / kpx_svc_stats slots
  uint32_t backends = KPX_MAX_BACKENDS;     // kpx_backends slots
};

struct ServiceEntry {
  kpx_svc_key key{};
  kpx_svc value{};
};

struct BackendEntry {
  uint32_t id = 0;
  kpx_backend value{};
};

using VerdictCounters = std::array<uint64_t, KPX_V_MAX>;

class BpfMaps {
 public:
  virtual ~BpfMaps() = default;

  virtual MapCapacities capacities() const = 0;

  // kpx_services. A full map is ResourceExhausted naming map and capacity.
  // Deleting an absent key is OK (idempotent removal).
  virtual absl::Status UpdateService(const kpx_svc_key& key, const kpx_svc& value) = 0;
  virtual absl::Status DeleteService(const kpx_svc_key& key) = 0;
  virtual absl::StatusOr<std::vector<ServiceEntry>> ListServices() const = 0;

  // kpx_backends. ListBackends returns the slots whose addr is not 0.
  virtual absl::Status UpdateBackend(uint32_t id, const kpx_backend& value) = 0;
  virtual absl::StatusOr<std::vector<BackendEntry>> ListBackends() const = 0;

  // kpx_maglev. Replace creates a new inner map of table.size() slots, fills
  // it, then swaps it in with one update of the outer map: the BPF program
  // sees the old table or the new one, never a mix. Delete of an absent
  // table is OK. Read returns an empty table when there is none.
  virtual absl::Status ReplaceMaglevTable(uint32_t svc_id, absl::Span<const uint32_t> table) = 0;
  virtual absl::Status DeleteMaglevTable(uint32_t svc_id) = 0;
  virtual absl::StatusOr<std::vector<uint32_t>> ReadMaglevTable(uint32_t svc_id) const = 0;
  // Service ids that have a table (scans the outer map: for Prune, not hot).
  virtual absl::StatusOr<std::vector<uint32_t>> ListMaglevIds() const = 0;

  // kpx_node_addrs: this node's addresses, where NodePorts answer.
  virtual absl::Status UpdateNodeAddress(Ipv4 addr) = 0;
  virtual absl::Status DeleteNodeAddress(Ipv4 addr) = 0;
  virtual absl::StatusOr<std::vector<Ipv4>> ListNodeAddresses() const = 0;

  // kpx_tx_ports: interfaces the programs may XDP_REDIRECT into.
  virtual absl::Status UpdateTxPort(int ifindex) = 0;
  virtual absl::Status DeleteTxPort(int ifindex) = 0;
  virtual absl::StatusOr<std::vector<int>> ListTxPorts() const = 0;

  // kpx_config (key 0).
  virtual absl::Status WriteConfig(const kpx_config& config) = 0;
  virtual absl::StatusOr<kpx_config> ReadConfig() const = 0;

  // kpx_svc_stats (summed over CPUs; Clear zeroes every CPU's copy, for a
  // service id that is handed out again) and kpx_verdict_stats.
  virtual absl::StatusOr<kpx_svc_stats> ReadServiceStats(uint32_t svc_id) const = 0;
  virtual absl::Status ClearServiceStats(uint32_t svc_id) = 0;
  virtual absl::StatusOr<VerdictCounters> ReadVerdictStats() const = 0;

  // kpx_ct: calls fn for each entry until it returns false. A snapshot taken
  // while the programs run: LRU evictions and new flows may race with it.
  virtual absl::Status ForEachConntrack(
      absl::FunctionRef<bool(const kpx_ct_key&, const kpx_ct_entry&)> fn) const = 0;
  // Deleting an absent entry is OK (the LRU or the programs may beat us).
  virtual absl::Status DeleteConntrack(const kpx_ct_key& key) = 0;
};

// Field-wise comparison of ABI structs (they have explicit padding and kpx
// zero-initialises every value it writes, so bytes compare meaningfully).
template <typename T>
bool SameBytes(const T& a, const T& b) {
  return __builtin_memcmp(&a, &b, sizeof(T)) == 0;
}

}  // namespace kpx::xdp
