// BackendHealth transitions and probe gaps (see health_state.h for the chart).
#include "dataplane/health/health_state.h"

#include <algorithm>

namespace kpx::health {

const char* HealthStateName(HealthState s) {
  switch (s) {
    case HealthState::kUnknown: return "unknown";
    case HealthState::kHealthy: return "healthy";
    case HealthState::kSuspect: return "suspect";
    case HealthState::kDown: return "down";
  }
  return "?";
}

bool BackendHealth::OnProbe(bool ok, const HealthSpec& spec) {
  if (state_ == HealthState::kDown) {
    if (!ok) {
      successes_ = 0;
      backoff_level_ = std::min(backoff_level_ + 1, 30);
      return false;
    }
    if (++successes_ < spec.rise) return false;
    state_ = HealthState::kHealthy;
    successes_ = 0;
    failures_ = 0;
    backoff_level_ = 0;
    return true;
  }
  if (ok) {
    state_ = HealthState::kHealthy;
    failures_ = 0;
    return false;
  }
  if (++failures_ < spec.fall) {
    state_ = HealthState::kSuspect;
    return false;
  }
  state_ = HealthState::kDown;
  failures_ = 0;
  successes_ = 0;
  backoff_level_ = 0;
  return true;
}

bool BackendHealth::OnPassiveFailure(const HealthSpec& spec) {
  if (state_ == HealthState::kDown) return false;
  failures_ = std::max(failures_, std::min(failures_ + 1, spec.fall - 1));
  state_ = HealthState::kSuspect;
  return true;
}

absl::Duration Jittered(absl::Duration d, double jitter, double u) {
  return d * (1.0 + jitter * (2.0 * u - 1.0));
}

absl::Duration FirstProbeDelay(const HealthSpec& spec, double u) { return spec.interval * u; }

absl::Duration BackendHealth::NextGap(const HealthSpec& spec, double u) const {
  switch (state_) {
    case HealthState::kUnknown:
    case HealthState::kHealthy:
      return Jittered(spec.interval, spec.jitter, u);
    case HealthState::kSuspect:
      return spec.suspect_interval;
    case HealthState::kDown: {
      if (successes_ > 0) return spec.suspect_interval;
      absl::Duration gap = spec.down_backoff;
      for (int i = 0; i < backoff_level_ && gap < spec.down_backoff_max; ++i) gap *= 2;
      gap = std::min(gap, spec.down_backoff_max);
      // A Down backend is never probed more often than a healthy one.
      gap = std::max(gap, spec.interval);
      return Jittered(gap, spec.jitter, u);
    }
  }
  return spec.interval;
}

}  // namespace kpx::health
