// SlotPool: free lists are btree maps of start -> length per chunk, so
// first-fit, split and coalesce are a few map operations; Maglev table sizes
// come from a short prime list (maglev.h), so first-fit fragments little.
#include "dataplane/xdp/slot_pool.h"

#include <algorithm>

#include "glog/logging.h"

namespace kpx::xdp {

SlotPool::SlotPool(uint32_t chunk_slots, uint32_t max_chunks) : chunk_slots_(chunk_slots), chunks_(max_chunks) {}

void SlotPool::AddChunk(uint32_t index) {
  if (index >= chunks_.size() || chunks_[index].present || chunk_slots_ == 0) return;
  chunks_[index].present = true;
  chunks_[index].free = {{0, chunk_slots_}};
  ++present_chunks_;
}

std::vector<uint32_t> SlotPool::MissingChunks(uint32_t count) const {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < chunks_.size() && out.size() < count; ++i) {
    if (!chunks_[i].present) out.push_back(i);
  }
  return out;
}

std::optional<uint32_t> SlotPool::Allocate(uint32_t len) {
  if (len == 0 || len > chunk_slots_) return std::nullopt;
  for (uint32_t c = 0; c < chunks_.size(); ++c) {
    Chunk& chunk = chunks_[c];
    if (!chunk.present) continue;
    for (auto it = chunk.free.begin(); it != chunk.free.end(); ++it) {
      if (it->second < len) continue;
      const uint32_t start = it->first;
      const uint32_t rest = it->second - len;
      chunk.free.erase(it);
      if (rest > 0) chunk.free.emplace(start + len, rest);
      used_slots_ += len;
      return c * chunk_slots_ + start;
    }
  }
  return std::nullopt;
}

bool SlotPool::Reserve(uint32_t off, uint32_t len) {
  if (len == 0 || chunk_slots_ == 0) return false;
  const uint32_t c = off / chunk_slots_;
  const uint32_t start = off % chunk_slots_;
  if (!HasChunk(c) || len > chunk_slots_ - start) return false;
  Chunk& chunk = chunks_[c];
  // The free extent that would contain the range: the last one starting at
  // or before `start`.
  auto it = chunk.free.upper_bound(start);
  if (it == chunk.free.begin()) return false;
  --it;
  const uint32_t fs = it->first, fl = it->second;
  if (start + len > fs + fl) return false;  // overlaps a used range
  chunk.free.erase(it);
  if (start > fs) chunk.free.emplace(fs, start - fs);
  if (fs + fl > start + len) chunk.free.emplace(start + len, fs + fl - start - len);
  used_slots_ += len;
  return true;
}

void SlotPool::FreeInChunk(uint32_t c, uint32_t start, uint32_t len) {
  Chunk& chunk = chunks_[c];
  auto next = chunk.free.lower_bound(start);
  if (next != chunk.free.end() && next->first == start + len) {  // merge with the extent after
    len += next->second;
    next = chunk.free.erase(next);
  }
  if (next != chunk.free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {  // merge with the extent before
      prev->second += len;
      return;
    }
  }
  chunk.free.emplace(start, len);
}

void SlotPool::Free(uint32_t off, uint32_t len) {
  if (len == 0 || chunk_slots_ == 0) return;
  const uint32_t c = off / chunk_slots_;
  const uint32_t start = off % chunk_slots_;
  if (!HasChunk(c) || len > chunk_slots_ - start) {
    LOG(DFATAL) << "SlotPool::Free of a range outside the pool: " << off << "+" << len;
    return;
  }
  FreeInChunk(c, start, len);
  used_slots_ -= std::min<uint64_t>(used_slots_, len);
}

void SlotPool::Quarantine(uint32_t off, uint32_t len, absl::Time ready_at) {
  if (len == 0) return;
  quarantine_.push_back({off, len, ready_at});
  quarantined_slots_ += len;
}

size_t SlotPool::Reclaim(absl::Time now) {
  size_t n = 0;
  while (!quarantine_.empty() && quarantine_.front().ready_at <= now) {
    const Held h = quarantine_.front();
    quarantine_.pop_front();
    quarantined_slots_ -= h.len;
    Free(h.off, h.len);
    ++n;
  }
  return n;
}

size_t SlotPool::free_extents() const {
  size_t n = 0;
  for (const Chunk& c : chunks_) n += c.free.size();
  return n;
}

uint32_t SlotPool::largest_free() const {
  uint32_t best = 0;
  for (const Chunk& c : chunks_) {
    for (const auto& [start, len] : c.free) best = std::max(best, len);
  }
  return best;
}

}  // namespace kpx::xdp
