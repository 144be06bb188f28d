// SyncHealth: kube-proxy's /healthz rule for kpxd. Healthy unless a change
// has been waiting longer than the timeout to reach the dataplane (the
// oldest pending change counts, so a stream of changes cannot hide a stuck
// sync). Thread-safe: the reconcile loop reports, HTTP threads ask.
#pragma once

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kpx {

class SyncHealth {
 public:
  explicit SyncHealth(absl::Duration timeout) : timeout_(timeout) {}

  // A change was observed at `at` and is not programmed yet.
  void Queued(absl::Time at);
  // Everything queued so far is programmed (as of `at`).
  void Synced(absl::Time at);

  struct Verdict {
    bool healthy = true;
    absl::Time last_updated = absl::InfinitePast();   // last Synced(); InfinitePast = never
    absl::Time oldest_pending = absl::InfiniteFuture();  // InfiniteFuture = nothing pending
    absl::Time now;
  };
  Verdict Check(absl::Time now) const;
  absl::Duration timeout() const { return timeout_; }

 private:
  const absl::Duration timeout_;
  mutable absl::Mutex mu_;
  absl::Time last_updated_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time oldest_pending_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

}  // namespace kpx
