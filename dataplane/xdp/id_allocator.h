// IdAllocator: hands out the small integer ids that index kpx's BPF arrays
// (service ids, backend ids). A released id is quarantined before it is
// handed out again: conntrack and affinity entries still name it, and must
// not suddenly lead to an unrelated service or backend.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kpx::xdp {

class IdAllocator {
 public:
  // Ids 1..limit-1 (0 means "none" in the ABI). `what` names the map in
  // errors ("kpx_backends").
  IdAllocator(std::string what, uint32_t limit, absl::Duration quarantine);

  // Order of preference: an id returned by Unallocate, a never-used id, the
  // longest-quarantined id once its quarantine is over, and -- only when
  // nothing else is left -- the longest-quarantined id early (logged).
  // ResourceExhausted when every id is in use.
  absl::StatusOr<uint32_t> Allocate(absl::Time now);
  // Takes `id` if it is free (quarantined or never used): lets a backend
  // that comes back at the same address keep its old id. False otherwise.
  bool Take(uint32_t id);
  // Adoption: marks `id` in use. False when out of range or already in use.
  bool Reserve(uint32_t id);
  // After the Reserve()s of an adoption: every free id below the highest
  // reserved one may still be named by old conntrack entries, so quarantine
  // them all as of `now`.
  void FinishAdoption(absl::Time now);

  // The id is no longer referenced: quarantine it.
  void Release(uint32_t id, absl::Time now);
  // The id was allocated but never became visible to the BPF programs (a
  // rolled-back write): free at once.
  void Unallocate(uint32_t id);

  bool InUse(uint32_t id) const { return used_.contains(id); }
  uint32_t in_use() const { return static_cast<uint32_t>(used_.size()); }
  // How many Allocate() calls would succeed now.
  uint32_t available() const { return limit_ > 0 ? limit_ - 1 - in_use() : 0; }
  uint32_t limit() const { return limit_; }

 private:
  std::string what_;
  uint32_t limit_;
  absl::Duration quarantine_;
  uint32_t next_fresh_ = 1;  // ids >= next_fresh_ were never handed out
  absl::flat_hash_set<uint32_t> used_;
  std::vector<uint32_t> unallocated_;
  // Quarantined ids with their release time; the deque is in release order
  // and may hold stale entries (ids taken since), skipped lazily.
  absl::flat_hash_map<uint32_t, absl::Time> quarantined_;
  std::deque<std::pair<uint32_t, absl::Time>> quarantine_order_;
};

}  // namespace kpx::xdp
