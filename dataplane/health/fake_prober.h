// FakeProber: a Prober for tests that answers each probe from a per-address
// script (up, refused, silent until the timeout, or any ProbeResult) after a
// latency measured on a Clock, and records every probe it was asked for.
// Under a FakeClock it never blocks; under a real clock Poll waits (bounded
// by max_wait) like the real prober, so the threaded checker can run on it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/health/clock.h"
#include "dataplane/health/prober.h"

namespace kpx::health {

class FakeProber final : public Prober {
 public:
  enum class Behaviour : uint8_t {
    kUp,       // ok after the latency
    kRefuse,   // ECONNREFUSED after the latency
    kSilent,   // ETIMEDOUT after request.timeout
    kLocalErr, // EMFILE (local_error) after the latency
  };
  struct Started {
    uint64_t id;
    ProbeRequest request;
    absl::Time at;
  };

  explicit FakeProber(Clock* clock) : clock_(clock) {}

  // Thread-safe script edits. Addresses without a script are kUp.
  void Set(Ipv4 ip, uint16_t port, Behaviour b, absl::Duration latency = absl::Milliseconds(1));
  // Overrides the scripts entirely (result.latency is how long it takes).
  void SetResponder(std::function<ProbeResult(const ProbeRequest&)> responder);

  void SetCallback(Callback callback) override { callback_ = std::move(callback); }
  void Start(uint64_t probe_id, const ProbeRequest& request) override;
  // Delivers every probe whose latency has passed on the clock. With a real
  // clock and max_wait > 0, first waits until one is due, a Wake, or max_wait.
  void Poll(absl::Duration max_wait) override;
  void Wake() override;
  size_t in_flight() const override;

  // When the earliest pending probe completes (InfiniteFuture if none).
  absl::Time NextCompletion() const;
  std::vector<Started> started() const;
  size_t started_count() const;
  void ClearStarted();

 private:
  struct Pending {
    uint64_t id;
    absl::Time due;
    ProbeResult result;
  };
  struct Script {
    Behaviour behaviour;
    absl::Duration latency;
  };

  Clock* clock_;
  Callback callback_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::pair<uint32_t, uint16_t>, Script> scripts_ ABSL_GUARDED_BY(mu_);
  std::function<ProbeResult(const ProbeRequest&)> responder_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<Started> started_ ABSL_GUARDED_BY(mu_);
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kpx::health
