// BpfMaps: the seam between the eBPF dataplane's logic and the kernel. Every
// read and write of the pinned maps named in bpf/include/kpx/abi.h goes
// through it: LibbpfMaps does the syscalls, FakeBpfMaps keeps the maps in
// memory for unit tests (Katran's BpfAdapter idea, kept thin).
#pragma once

#include <array>
#include <cstddef>
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
  uint32_t service_ids = KPX_MAX_SERVICES;  // kpx_svc_stats slots
  uint32_t backends = KPX_MAX_BACKENDS;     // kpx_backends slots
  uint32_t maglev_chunks = KPX_MAGLEV_CHUNKS;  // kpx_maglev entries: the slot pool's chunk limit
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
  // Many at once (BPF_MAP_UPDATE_BATCH where the kernel has it). Entries
  // before *written are in the map when it returns, even on error; none
  // after it.
  virtual absl::Status UpdateServices(absl::Span<const ServiceEntry> entries, size_t* written);

  // kpx_backends. ListBackends returns the slots whose addr is not 0.
  virtual absl::Status UpdateBackend(uint32_t id, const kpx_backend& value) = 0;
  virtual absl::StatusOr<std::vector<BackendEntry>> ListBackends() const = 0;
  // Many at once; on error some may have been written.
  virtual absl::Status UpdateBackends(absl::Span<const BackendEntry> entries);

  // kpx_maglev, the Maglev slot pool (abi.h): chunks of
  // KPX_MAGLEV_CHUNK_SLOTS slots addressed by a global slot index.
  // Chunk indexes present in the outer map (adoption).
  virtual absl::StatusOr<std::vector<uint32_t>> ListMaglevChunks() const = 0;
  // Creates one zeroed chunk per index and installs all of them in the outer
  // map with one batched update: the kernel waits for one RCU grace period
  // per outer-map update call, not per chunk.
  virtual absl::Status AddMaglevChunks(absl::Span<const uint32_t> indexes) = 0;
  // Stores `table` at slots offset.. (inside one present chunk), touching only
  // slots whose value differs; returns how many changed. Each slot is one
  // aligned 4-byte store: a program reading concurrently sees the old or the
  // new backend id of a slot, never a torn one.
  virtual absl::StatusOr<uint32_t> WriteMaglevSlots(uint32_t offset, absl::Span<const uint32_t> table) = 0;
  virtual absl::StatusOr<std::vector<uint32_t>> ReadMaglevSlots(uint32_t offset, uint32_t count) const = 0;

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
  // Many at once; on error some may have been cleared.
  virtual absl::Status ClearServiceStats(absl::Span<const uint32_t> svc_ids);
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
