// MapWriter: turns ServiceRule upserts/removals into writes of the eBPF
// dataplane's maps through the BpfMaps seam. It owns the id spaces (service
// id per frontend, backend id per ip:port, refcounted across services),
// builds each service's Maglev table, orders writes so the BPF programs never
// see a service pointing at a missing table or backend, and adopts what a
// previous kpxd left in pinned maps so a restart changes nothing on the wire.
// Not thread-safe: XdpDataplane serialises calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/diff.h"
#include "controller/service_table.h"
#include "dataplane/xdp/bpf_maps.h"
#include "dataplane/xdp/id_allocator.h"

namespace kpx::xdp {

struct MapWriterOptions {
  // Upper bound of a service's Maglev table size (--maglev-table-size).
  uint32_t maglev_max_m = KPX_MAGLEV_M_DEFAULT;
  // How long a released service/backend id stays unused (conntrack and
  // affinity entries may still name it).
  absl::Duration id_quarantine = absl::Minutes(10);
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// What Create() found in the maps.
struct AdoptionSummary {
  size_t frontends = 0;
  size_t backends = 0;
  size_t tables = 0;
  size_t inconsistent = 0;  // entries kept aside for Prune (duplicate ids, unknown protocol)
};

class MapWriter {
 public:
  // Reads the maps back: every service in kpx_services keeps its id, every
  // live slot of kpx_backends keeps its id for its ip:port. Nothing is
  // written. `maps` must outlive the writer.
  static absl::StatusOr<std::unique_ptr<MapWriter>> Create(BpfMaps* maps, MapWriterOptions options);

  // Upserts first (so a backend moving between frontends never drops to zero
  // references), then removals, then upserts that failed for lack of room
  // once more. Continues past a failing operation and returns the first
  // error; each operation is idempotent, so the reconciler may resend all.
  absl::Status Apply(const controller::TableDiff& diff);

  // One frontend. A frontend kpx does not serve in BPF (supported=false,
  // not TCP) is ignored, and removed if it was installed. On error nothing
  // of this frontend changed, except where the returned message says which
  // later step to retry.
  absl::Status Upsert(const controller::ServiceRule& rule);
  // Removing an unknown frontend is a no-op.
  absl::Status Remove(const controller::FrontendKey& frontend);
  // Deletes adopted state not in `desired`: frontends, backend slots no
  // frontend uses, tables of no service, entries Create() found inconsistent.
  absl::Status Prune(const controller::ServiceTable& desired);

  struct FrontendInfo {
    controller::FrontendKey frontend;
    kpx_svc value{};
    std::vector<uint32_t> backend_ids;  // every backend of the rule (kept alive)
    bool adopted = false;               // from a previous process, not upserted since
  };
  std::vector<FrontendInfo> Frontends() const;
  std::optional<uint32_t> ServiceId(const controller::FrontendKey& frontend) const;
  std::optional<uint32_t> BackendId(Ipv4 ip, uint16_t port) const;
  // ip:port of a live backend id.
  std::optional<std::pair<Ipv4, uint16_t>> BackendAddress(uint32_t id) const;
  const AdoptionSummary& adoption() const { return adoption_; }

  // True when the BPF dataplane serves this rule.
  static bool Serves(const controller::ServiceRule& rule);

 private:
  struct FrontendState {
    kpx_svc_key key{};
    kpx_svc value{};
    uint32_t maglev_m = 0;    // slots of the installed table (0: none)
    uint64_t table_hash = 0;  // fingerprint of the installed table
    std::vector<uint32_t> backend_ids;  // sorted, unique; each holds one reference
    bool adopted = false;
  };
  struct BackendState {
    uint32_t id = 0;
    int refs = 0;
  };
  // Rollback record of one Upsert.
  struct Txn {
    uint32_t new_svc_id = 0;
    std::vector<std::pair<uint64_t, bool>> new_backends;  // addr key, id came from quarantine
  };

  MapWriter(BpfMaps* maps, MapWriterOptions options);
  absl::Status Adopt();
  void Rollback(const Txn& txn);
  // Drops one reference; on the last, zeroes the slot (conntrack hits on it
  // become resets) and quarantines the id.
  absl::Status Unref(uint32_t id);
  absl::Status ReleaseBackend(uint64_t addr);

  BpfMaps* maps_;
  MapWriterOptions options_;
  MapCapacities caps_;
  IdAllocator svc_ids_;
  IdAllocator backend_ids_;
  absl::btree_map<controller::FrontendKey, FrontendState> frontends_;
  absl::flat_hash_map<uint64_t, BackendState> backends_;  // by AddrKey
  absl::flat_hash_map<uint32_t, uint64_t> backend_addr_;  // id -> AddrKey
  // Quarantined backend ids by their last address: a backend that comes
  // back keeps its id (its old conntrack entries lead to it again).
  absl::flat_hash_map<uint64_t, uint32_t> quarantined_by_addr_;
  // Adopted entries that could not be taken over; Prune deletes them.
  std::vector<kpx_svc_key> stale_services_;
  std::vector<uint32_t> stale_backend_ids_;
  AdoptionSummary adoption_;
};

}  // namespace kpx::xdp
