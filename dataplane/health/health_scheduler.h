// HealthScheduler: the single-threaded core of the checker. It owns the
// targets and their state machines, a min-heap of next-probe times, the global
// probe token bucket and the counters; it starts probes on a Prober and turns
// their results into transitions. Time comes in as arguments, so unit tests
// drive it with a FakeClock and a FakeProber; HealthChecker runs it on its
// thread.
//
// Cost per probe: one heap pop + push (O(log n)), one hash lookup, no
// allocation beyond the request's path copy (tests/bench/health_bench.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "controller/reconciler.h"
#include "controller/service_table.h"
#include "dataplane/health/health_spec.h"
#include "dataplane/health/health_state.h"
#include "dataplane/health/prober.h"
#include "dataplane/health/token_bucket.h"

namespace kpx::health {

struct SchedulerOptions {
  // Global cap on probes started per second (0 = none). The default leaves
  // room for 10k backends at the default 300 ms interval (~33k/s); beyond the
  // cap probes wait their turn in due order, stretching intervals rather than
  // flooding the network when a whole node's pods turn suspect at once.
  double max_probes_per_second = 50000;
  double burst = 0;             // tokens saved up; 0 = max(100, rate / 20)
  size_t max_in_flight = 8192;  // descriptors held by probes at once
  uint64_t seed = 0;            // jitter RNG seed; 0 = random
};

struct BackendHealthStats {
  controller::BackendAddr backend;
  std::string service;  // whose spec applies
  HealthSpec spec;
  HealthState state = HealthState::kUnknown;
  uint64_t probes = 0;            // started
  uint64_t failures = 0;          // failed probes (not local errors)
  uint64_t passive_failures = 0;  // counted from the proxy
  absl::Duration last_latency = absl::ZeroDuration();  // of the last finished probe
  int last_error = 0;                                  // errno of it, 0 if ok
  int last_http_status = 0;
  absl::Time last_change = absl::InfinitePast();  // last transition into/out of Down
};

struct HealthStats {
  uint64_t probes_sent = 0;
  uint64_t probe_failures = 0;
  uint64_t local_errors = 0;       // probes that could not run (not counted)
  uint64_t passive_failures = 0;   // proxy failures that counted toward fall
  uint64_t went_down = 0;
  uint64_t came_up = 0;
  uint64_t rate_limited = 0;       // probes that waited for a token
  size_t targets = 0;
  size_t down = 0;
  size_t in_flight = 0;
  std::vector<BackendHealthStats> backends;  // sorted by (ip, port)
};

class HealthScheduler {
 public:
  using ChangeCallback = std::function<void(controller::BackendAddr backend, bool healthy)>;

  // `prober` outlives the scheduler; its callback must lead to OnProbeDone.
  HealthScheduler(SchedulerOptions options, Prober* prober, ChangeCallback on_change);

  // Replaces the target set. Targets that remain keep their state (a spec
  // change applies from the next probe, sooner if the interval shrank); new
  // ones start Unknown (assumed up) with a first probe at a random point of
  // one interval; removed ones are forgotten, and a removed Down target
  // reports healthy=true so the overlay does not outlive the endpoint.
  void SetTargets(const std::vector<HealthTarget>& targets, absl::Time now);

  // A failed connect seen by the proxy (BackendHealth::OnPassiveFailure): the
  // backend turns Suspect and is probed at once, or suspect_interval after
  // its last probe started if that is later. Unknown backends are ignored.
  void OnPassiveFailure(controller::BackendAddr backend, absl::Time now);

  // Starts every probe that is due, as the token bucket and max_in_flight
  // allow. Probes due within `early` from now start now too: at tens of
  // thousands of probes per second this batches them into one wake-up and
  // one submission instead of one each (gaps then shrink by at most `early`).
  // Returns when it next has something to do (InfiniteFuture when only a
  // completion can change that).
  absl::Time RunDue(absl::Time now, absl::Duration early = absl::ZeroDuration());

  // A probe finished (the Prober callback). Stale ids (target removed since)
  // are ignored.
  void OnProbeDone(uint64_t probe_id, const ProbeResult& result, absl::Time now);

  HealthStats Stats(bool per_backend = true) const;
  std::optional<HealthState> StateOf(controller::BackendAddr backend) const;
  // Ready backends of `rule` that are Down (for a per-Service metric and the
  // fail-open log line; the dataplanes decide fail-open themselves).
  size_t CountDown(const controller::ServiceRule& rule) const;
  size_t targets() const { return index_.size(); }
  size_t in_flight() const { return in_flight_; }

 private:
  struct Slot {
    HealthTarget target;
    BackendHealth health;
    bool live = false;
    bool probing = false;
    bool rate_limited = false;  // waited for a token (counted once per probe)
    uint32_t sched_seq = 0;     // only the heap entry with this seq is current
    uint32_t probe_seq = 0;     // seq of the last probe started (kept across tenants)
    absl::Time last_start = absl::InfinitePast();
    absl::Time next_due = absl::InfiniteFuture();
    BackendHealthStats stats;
  };
  struct Due {
    absl::Time at;
    uint32_t slot;
    uint32_t seq;
  };

  void Schedule(uint32_t slot, absl::Time at);
  void StartProbe(uint32_t slot, absl::Time now);
  void Remove(uint32_t slot);
  double Draw();

  SchedulerOptions options_;
  Prober* prober_;
  ChangeCallback on_change_;
  TokenBucket bucket_;
  std::mt19937_64 rng_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  absl::flat_hash_map<controller::BackendAddr, uint32_t> index_;
  std::vector<Due> heap_;  // min-heap on (at, slot)
  size_t in_flight_ = 0;
  size_t down_ = 0;
  HealthStats totals_;  // the counters (backends left empty)
};

}  // namespace kpx::health
