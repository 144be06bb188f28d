// The time seam of the health checker: probe scheduling reads a Clock, so the
// state machine and scheduler run under a FakeClock in unit tests.
#pragma once

#include <time.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kpx::health {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// CLOCK_MONOTONIC as an absl::Time (epoch + uptime): probe gaps must not jump
// when NTP steps the wall clock. Only differences are meaningful.
class MonotonicClock final : public Clock {
 public:
  absl::Time Now() const override {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return absl::UnixEpoch() + absl::DurationFromTimespec(ts);
  }
  static MonotonicClock* Get() {
    static MonotonicClock* clock = new MonotonicClock();
    return clock;
  }
};

// Time that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch() + absl::Hours(1)) : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kpx::health
