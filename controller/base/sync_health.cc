// SyncHealth: see sync_health.h.
#include "controller/base/sync_health.h"

#include <algorithm>

namespace kpx {

void SyncHealth::Queued(absl::Time at) {
  absl::MutexLock lock(&mu_);
  oldest_pending_ = std::min(oldest_pending_, at);
}

void SyncHealth::Synced(absl::Time at) {
  absl::MutexLock lock(&mu_);
  last_updated_ = at;
  oldest_pending_ = absl::InfiniteFuture();
}

SyncHealth::Verdict SyncHealth::Check(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  Verdict v;
  v.now = now;
  v.last_updated = last_updated_;
  v.oldest_pending = oldest_pending_;
  v.healthy = oldest_pending_ == absl::InfiniteFuture() || now - oldest_pending_ <= timeout_;
  return v;
}

}  // namespace kpx
