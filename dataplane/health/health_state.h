// The per-backend health state machine and the gap before its next probe.
// Pure: no clock, no I/O, no randomness of its own (jitter draws are passed
// in), so every transition is a unit test.
//
//   Unknown --ok--> Healthy            (new targets are assumed up: nothing is
//   Unknown/Healthy --fail--> Suspect   removed before failed probes say so)
//   Healthy --passive fail--> Suspect  (a fast probe follows at once)
//   Suspect --ok--> Healthy            (it was never removed)
//   Suspect --fail, fall reached--> Down     => on_change(down)
//   Down --ok, rise reached--> Healthy       => on_change(up)
//
// Probe gaps (measured from the start of the previous probe; a backend never
// has two probes in flight): Unknown/Healthy = interval +- jitter, Suspect =
// suspect_interval, Down = down_backoff doubling per failed probe up to
// down_backoff_max (+- jitter), and once a Down backend answers again,
// suspect_interval until rise is reached (backoff never slows a recovery).
#pragma once

#include <cstdint>

#include "absl/time/time.h"
#include "dataplane/health/health_spec.h"

namespace kpx::health {

enum class HealthState : uint8_t { kUnknown, kHealthy, kSuspect, kDown };
const char* HealthStateName(HealthState s);  // "unknown", "healthy", "suspect", "down"

class BackendHealth {
 public:
  HealthState state() const { return state_; }
  // Whether the backend should take traffic (everything but Down).
  bool up() const { return state_ != HealthState::kDown; }
  int consecutive_failures() const { return failures_; }
  int consecutive_successes() const { return successes_; }
  int backoff_level() const { return backoff_level_; }

  // An active probe's verdict. Returns true when up() changed.
  bool OnProbe(bool ok, const HealthSpec& spec);

  // A failed connect seen by the proxy. It counts toward fall but never
  // completes it: taking a backend out needs at least one failed probe, so a
  // problem on the proxy's side (or a single unlucky SYN) cannot remove it
  // alone. Returns true when a prompt probe should confirm (not Down).
  bool OnPassiveFailure(const HealthSpec& spec);

  // The gap between the start of the last probe and the next. `u` is a
  // uniform draw in [0, 1) for the jitter.
  absl::Duration NextGap(const HealthSpec& spec, double u) const;

 private:
  HealthState state_ = HealthState::kUnknown;
  int failures_ = 0;       // consecutive failed probes (+ passive) while up
  int successes_ = 0;      // consecutive successful probes while Down
  int backoff_level_ = 0;  // failed probes since Down: gap = down_backoff << level
};

// interval x (1 + jitter x (2u - 1)): within +-jitter of interval.
absl::Duration Jittered(absl::Duration d, double jitter, double u);

// When a new target is first probed: uniformly within one interval, so a
// batch of targets added together does not probe in lockstep.
absl::Duration FirstProbeDelay(const HealthSpec& spec, double u);

}  // namespace kpx::health
