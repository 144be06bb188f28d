// Id allocation with quarantine; see id_allocator.h for the why.
#include "dataplane/xdp/id_allocator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace kpx::xdp {

IdAllocator::IdAllocator(std::string what, uint32_t limit, absl::Duration quarantine)
    : what_(std::move(what)), limit_(limit), quarantine_(quarantine) {}

absl::StatusOr<uint32_t> IdAllocator::Allocate(absl::Time now) {
  while (!unallocated_.empty()) {
    uint32_t id = unallocated_.back();
    unallocated_.pop_back();
    if (!used_.contains(id) && !quarantined_.contains(id)) {
      used_.insert(id);
      return id;
    }
  }
  // Skip ids that adoption found in use above the fresh mark.
  while (next_fresh_ < limit_ && (used_.contains(next_fresh_) || quarantined_.contains(next_fresh_))) {
    ++next_fresh_;
  }
  if (next_fresh_ < limit_) {
    uint32_t id = next_fresh_++;
    used_.insert(id);
    return id;
  }
  while (!quarantine_order_.empty()) {
    auto [id, released] = quarantine_order_.front();
    auto it = quarantined_.find(id);
    if (it == quarantined_.end() || it->second != released) {
      quarantine_order_.pop_front();  // stale: taken or re-released since
      continue;
    }
    if (now - released < quarantine_) {
      LOG(WARNING) << what_ << ": every id is in use or quarantined; reusing id " << id
                   << " after " << absl::FormatDuration(now - released) << " of "
                   << absl::FormatDuration(quarantine_)
                   << " quarantine (old conntrack entries may still name it)";
    }
    quarantine_order_.pop_front();
    quarantined_.erase(it);
    used_.insert(id);
    return id;
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      what_, " is full: all ", limit_ > 0 ? limit_ - 1 : 0, " ids are in use (map capacity ", limit_,
      " entries; id 0 is reserved)"));
}

bool IdAllocator::Take(uint32_t id) {
  if (id == 0 || id >= limit_ || used_.contains(id)) return false;
  quarantined_.erase(id);  // its deque entry becomes stale
  used_.insert(id);
  return true;
}

bool IdAllocator::Reserve(uint32_t id) { return Take(id); }

void IdAllocator::FinishAdoption(absl::Time now) {
  uint32_t high = 0;
  for (uint32_t id : used_) high = std::max(high, id);
  for (uint32_t id = std::max(next_fresh_, 1u); id <= high; ++id) {
    if (!used_.contains(id) && !quarantined_.contains(id)) {
      quarantined_[id] = now;
      quarantine_order_.emplace_back(id, now);
    }
  }
  next_fresh_ = std::max(next_fresh_, high + 1);
}

void IdAllocator::Release(uint32_t id, absl::Time now) {
  if (used_.erase(id) == 0) return;
  quarantined_[id] = now;
  quarantine_order_.emplace_back(id, now);
}

void IdAllocator::Unallocate(uint32_t id) {
  if (used_.erase(id) == 0) return;
  unallocated_.push_back(id);
}

}  // namespace kpx::xdp
