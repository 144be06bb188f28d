// SlotPool: userspace allocator of the Maglev slot pool (abi.h, kpx_maglev):
// hands out ranges of consecutive slots inside one chunk for services'
// tables, first-fit over per-chunk free lists with coalescing, and holds freed
// ranges in a quarantine before they can be handed out again. Pure state: the
// caller creates the chunks in the kernel and writes the slots.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/time/time.h"

namespace kpx::xdp {

class SlotPool {
 public:
  // Global slot index = chunk index * chunk_slots + slot in chunk.
  SlotPool(uint32_t chunk_slots, uint32_t max_chunks);

  // A chunk that exists in the kernel: all its slots become free.
  // No-op for an index out of range or present already.
  void AddChunk(uint32_t index);
  bool HasChunk(uint32_t index) const { return index < chunks_.size() && chunks_[index].present; }
  // The `count` lowest chunk indexes not present yet (fewer near the limit).
  std::vector<uint32_t> MissingChunks(uint32_t count) const;

  // First fit over present chunks in index order; nullopt when no chunk has
  // `len` free consecutive slots (len 0 or > chunk_slots: nullopt).
  std::optional<uint32_t> Allocate(uint32_t len);
  // Adoption: marks [off, off + len) used. False, changing nothing, when the
  // range is empty, crosses a chunk boundary, lies in an absent chunk or
  // overlaps a used range.
  bool Reserve(uint32_t off, uint32_t len);
  // Back to the free list at once, merged with free neighbours (a range the
  // BPF programs never saw: a rolled-back allocation).
  void Free(uint32_t off, uint32_t len);
  // A range the BPF programs may still read: free only from `ready_at` on.
  void Quarantine(uint32_t off, uint32_t len, absl::Time ready_at);
  // Frees every quarantined range whose time has come; returns how many.
  size_t Reclaim(absl::Time now);

  uint32_t chunk_slots() const { return chunk_slots_; }
  uint32_t max_chunks() const { return static_cast<uint32_t>(chunks_.size()); }
  uint32_t chunk_count() const { return present_chunks_; }
  // Slots of present chunks; slots in allocated ranges (quarantined ones
  // included); slots in quarantine.
  uint64_t capacity_slots() const { return uint64_t{present_chunks_} * chunk_slots_; }
  uint64_t used_slots() const { return used_slots_; }
  uint64_t quarantined_slots() const { return quarantined_slots_; }
  // Free extents over all chunks (fragmentation), and the longest one.
  size_t free_extents() const;
  uint32_t largest_free() const;

 private:
  struct Chunk {
    bool present = false;
    absl::btree_map<uint32_t, uint32_t> free;  // start in chunk -> length
  };
  void FreeInChunk(uint32_t chunk, uint32_t start, uint32_t len);

  uint32_t chunk_slots_;
  std::vector<Chunk> chunks_;
  uint32_t present_chunks_ = 0;
  uint64_t used_slots_ = 0;
  uint64_t quarantined_slots_ = 0;
  struct Held {
    uint32_t off, len;
    absl::Time ready_at;
  };
  std::deque<Held> quarantine_;  // in ready_at order as long as the delay is constant
};

}  // namespace kpx::xdp
