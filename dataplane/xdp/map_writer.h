// MapWriter: turns ServiceRule upserts/removals into writes of the eBPF
// dataplane's maps through the BpfMaps seam. It owns the id spaces (service
// id per frontend, backend id per ip:port, refcounted across services),
// builds each service's Maglev table into a range of the slot pool (abi.h,
// SlotPool), orders writes so the BPF programs never see a service pointing
// at a missing table or backend, batches the syscalls of big diffs (cold
// start), and adopts what a previous kpxd left in pinned maps so a restart
// changes nothing on the wire.
// Not thread-safe: XdpDataplane serialises calls.
#pragma once

#include <atomic>
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
#include "absl/types/span.h"
#include "controller/diff.h"
#include "controller/service_table.h"
#include "dataplane/xdp/bpf_maps.h"
#include "dataplane/xdp/id_allocator.h"
#include "dataplane/xdp/slot_pool.h"

namespace kpx::xdp {

struct MapWriterOptions {
  // Upper bound of a service's Maglev table size (--maglev-table-size).
  uint32_t maglev_max_m = KPX_MAGLEV_M_DEFAULT;
  // How long a released service/backend id stays unused (conntrack and
  // affinity entries may still name it).
  absl::Duration id_quarantine = absl::Minutes(10);
  // How long a Maglev slot range stays unused after kpx_services stopped
  // pointing at it (resize or removal): a program run that read the old
  // (offset, m) just before the switch may still read its slots. Runs last
  // microseconds; the margin covers a preempted tc program on a loaded host.
  // Reusing the range earlier could send that one SYN to another service's
  // backend.
  absl::Duration slot_quarantine = absl::Seconds(2);
  // Apply() batches the map writes of new frontends (BPF_MAP_UPDATE_BATCH)
  // once a diff adds at least this many.
  size_t batch_min = 16;
  // Threads that build a batch's Maglev tables (pure computation, most of
  // a cold start's Apply) while this one grows the slot pool; 0 = one per
  // CPU. Used once a batch has at least parallel_min frontends.
  unsigned build_threads = 0;
  size_t parallel_min = 256;
  // The maps were created empty by this process (BpfPrograms::created_maps):
  // Create skips reading them back (reading kpx_backends alone copies every
  // slot of the array: ~30 ms of a start at the default sizes).
  bool maps_are_new = false;
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// What Create() found in the maps.
struct AdoptionSummary {
  size_t frontends = 0;
  size_t backends = 0;
  size_t tables = 0;
  size_t chunks = 0;        // Maglev pool chunks found
  size_t inconsistent = 0;  // entries kept aside for Prune (duplicate ids, unknown protocol,
                            // Maglev ranges overlapping or outside the pool)
};

// The Maglev slot pool's occupancy (metrics, errors).
struct SlotPoolUsage {
  uint64_t used_slots = 0;         // in tables (quarantined included)
  uint64_t quarantined_slots = 0;  // of replaced/removed tables, reusable soon
  uint64_t capacity_slots = 0;     // of the chunks created so far
  uint32_t chunks = 0;
  uint32_t max_chunks = 0;         // --bpf-maglev-chunks
  uint32_t chunk_slots = KPX_MAGLEV_CHUNK_SLOTS;
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
  // With at least batch_min new frontends, their backend slots, counters and
  // kpx_services entries are written with one batch each (cold start), after
  // every table of the batch is in the pool; pool chunks the diff needs are
  // created with one outer-map update.
  absl::Status Apply(const controller::TableDiff& diff);

  // Work the next Apply would do for `rules`, done ahead of it, for the
  // frontends not installed yet: the Maglev pool grown to fit their tables,
  // then the tables built one by one until `stop` is set. kpxd runs it on
  // the CPU the reconciler's bookkeeping leaves idle at a big sync (a cold
  // start). A batch uses a prepared table when the rule still selects the
  // same backends and size; anything not prepared is done as before. The
  // next Apply drops what it did not use.
  void Prepare(absl::Span<const controller::ServiceRule* const> rules, const std::atomic<bool>& stop);
  // Tables Prepare built that no Apply has consumed yet, and how many
  // prepared tables batches have used (tests, logs).
  size_t prepared_tables() const { return prepared_.size(); }
  uint64_t prepared_tables_used() const { return prepared_used_.load(std::memory_order_relaxed); }

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
  // The named frontends only (unknown ones left out): O(frontends asked).
  std::vector<FrontendInfo> FrontendsOf(absl::Span<const controller::FrontendKey> frontends) const;
  std::optional<uint32_t> ServiceId(const controller::FrontendKey& frontend) const;
  std::optional<uint32_t> BackendId(Ipv4 ip, uint16_t port) const;
  // ip:port of a live backend id.
  std::optional<std::pair<Ipv4, uint16_t>> BackendAddress(uint32_t id) const;
  const AdoptionSummary& adoption() const { return adoption_; }
  SlotPoolUsage pool_usage() const;
  // Global slot offset of a frontend's table (nullopt: none).
  std::optional<uint32_t> MaglevOffset(const controller::FrontendKey& frontend) const;

  // True when the BPF dataplane serves this rule.
  static bool Serves(const controller::ServiceRule& rule);

 private:
  struct FrontendState {
    kpx_svc_key key{};
    kpx_svc value{};
    uint32_t maglev_m = 0;    // slots of the installed table (0: none)
    uint32_t maglev_off = 0;  // its first slot in the pool
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
  // Writes of new frontends held back by Apply to be issued as batches.
  struct Prebuilt;
  // A new frontend's prebuilt table, written (and hashed) on worker threads
  // once the batch's serial pass has allocated its range and backend ids.
  struct TableWrite {
    controller::FrontendKey fk;
    uint32_t off = 0;
    const Prebuilt* pre = nullptr;
    std::vector<uint32_t> ids;  // backend id of each of pre->usable
    uint64_t hash = 0;
    absl::Status status;
  };
  struct Staged {
    std::vector<TableWrite> tables;
    std::vector<BackendEntry> backends;
    std::vector<uint32_t> stats;
    std::vector<ServiceEntry> services;
    std::vector<controller::FrontendKey> frontends;  // parallel to services
  };

  // A new frontend's backend choice and Maglev table, computed ahead (in
  // parallel) by ApplyBatch: `slots` holds indexes into `usable`, which
  // Upsert turns into backend ids once it has allocated them.
  struct Prebuilt {
    std::vector<uint64_t> keep, usable;
    uint32_t m = 0;
    std::vector<uint32_t> slots;
  };
  // keep, usable and m of a new frontend's rule (slots are left to the caller).
  void SelectFor(const controller::ServiceRule& rule, Prebuilt* b) const;

  MapWriter(BpfMaps* maps, MapWriterOptions options);
  absl::Status Adopt();
  void Rollback(const Txn& txn);
  // Drops one reference; on the last, zeroes the slot (conntrack hits on it
  // become resets) and quarantines the id.
  absl::Status Unref(uint32_t id);
  absl::Status ReleaseBackend(uint64_t addr);
  // A range of m slots: first fit in the pool, else new chunks (`extra`
  // more than needed, to batch growth), else ResourceExhausted naming the flag.
  absl::StatusOr<uint32_t> AllocateRange(uint32_t m, const controller::FrontendKey& fk);
  absl::Status GrowPool(uint32_t chunks);
  // Grows the pool (after reclaiming quarantined ranges) so that `want` more
  // slots fit.
  absl::Status GrowPoolFor(uint64_t want);
  // Apply's batch of new frontends: upserts with staged writes, then flush.
  absl::Status ApplyBatch(const std::vector<const controller::ServiceRule*>& rules,
                          std::vector<const controller::ServiceRule*>* retry);
  absl::Status FlushStaged(Staged& staged);
  // The staged table writes, in parallel; a frontend whose write failed is
  // undone and left out of the flush.
  absl::Status WriteStagedTables(Staged& staged);
  // A staged frontend whose writes were not issued: forget it, nothing of it
  // was visible to the programs.
  void UndoStaged(const controller::FrontendKey& fk);

  BpfMaps* maps_;
  MapWriterOptions options_;
  MapCapacities caps_;
  IdAllocator svc_ids_;
  IdAllocator backend_ids_;
  SlotPool pool_;
  Staged* staged_ = nullptr;  // set during ApplyBatch
  // Set during ApplyBatch: the batch's prebuilt tables by rule.
  const absl::flat_hash_map<const controller::ServiceRule*, Prebuilt>* prebuilt_ = nullptr;
  absl::flat_hash_map<controller::FrontendKey, Prebuilt> prepared_;  // by Prepare, for the next batch
  std::atomic<uint64_t> prepared_used_{0};
  // Ranges of services Adopt() kept aside: in use until Prune deletes them.
  std::vector<std::pair<uint32_t, uint32_t>> stale_ranges_;
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
