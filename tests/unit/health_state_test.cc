// BackendHealth: every transition of the per-backend state machine, passive
// failures that count toward fall but never complete it, and probe gaps
// (jitter bounds, suspect fast path, down backoff doubling to the cap).
#include "dataplane/health/health_state.h"

#include "gtest/gtest.h"

namespace kpx::health {
namespace {

TEST(BackendHealthTest, StartsUnknownAndUp) {
  BackendHealth h;
  EXPECT_EQ(h.state(), HealthState::kUnknown);
  EXPECT_TRUE(h.up());
  EXPECT_STREQ(HealthStateName(h.state()), "unknown");
}

TEST(BackendHealthTest, FallThenRise) {
  HealthSpec spec;  // rise 2, fall 2
  BackendHealth h;
  EXPECT_FALSE(h.OnProbe(true, spec));
  EXPECT_EQ(h.state(), HealthState::kHealthy);
  EXPECT_FALSE(h.OnProbe(false, spec));
  EXPECT_EQ(h.state(), HealthState::kSuspect);
  EXPECT_TRUE(h.up());
  EXPECT_TRUE(h.OnProbe(false, spec));  // fall reached
  EXPECT_EQ(h.state(), HealthState::kDown);
  EXPECT_FALSE(h.up());
  EXPECT_FALSE(h.OnProbe(false, spec));
  EXPECT_FALSE(h.OnProbe(true, spec));  // 1 of rise 2
  EXPECT_EQ(h.state(), HealthState::kDown);
  EXPECT_TRUE(h.OnProbe(true, spec));
  EXPECT_EQ(h.state(), HealthState::kHealthy);
  EXPECT_TRUE(h.up());
}

TEST(BackendHealthTest, UnknownFailsStraightTowardDown) {
  HealthSpec spec;
  spec.fall = 3;
  BackendHealth h;
  EXPECT_FALSE(h.OnProbe(false, spec));
  EXPECT_FALSE(h.OnProbe(false, spec));
  EXPECT_TRUE(h.up());
  EXPECT_TRUE(h.OnProbe(false, spec));
  EXPECT_FALSE(h.up());
}

TEST(BackendHealthTest, FallOneAndRiseOne) {
  HealthSpec spec;
  spec.fall = 1;
  spec.rise = 1;
  BackendHealth h;
  EXPECT_TRUE(h.OnProbe(false, spec));
  EXPECT_FALSE(h.up());
  EXPECT_TRUE(h.OnProbe(true, spec));
  EXPECT_TRUE(h.up());
}

TEST(BackendHealthTest, SuccessResetsTheFailureCount) {
  HealthSpec spec;
  spec.fall = 3;
  BackendHealth h;
  for (int i = 0; i < 50; ++i) {
    EXPECT_FALSE(h.OnProbe(false, spec));
    EXPECT_FALSE(h.OnProbe(false, spec));
    EXPECT_FALSE(h.OnProbe(true, spec));
  }
  EXPECT_TRUE(h.up());
}

TEST(BackendHealthTest, FailureWhileRisingRestartsRise) {
  HealthSpec spec;
  spec.rise = 3;
  BackendHealth h;
  h.OnProbe(false, spec);
  ASSERT_TRUE(h.OnProbe(false, spec));
  h.OnProbe(true, spec);
  h.OnProbe(true, spec);
  h.OnProbe(false, spec);  // back to zero
  EXPECT_FALSE(h.OnProbe(true, spec));
  EXPECT_FALSE(h.OnProbe(true, spec));
  EXPECT_TRUE(h.OnProbe(true, spec));
}

TEST(BackendHealthTest, PassiveFailureCountsButNeverCompletesFall) {
  HealthSpec spec;  // fall 2
  BackendHealth h;
  h.OnProbe(true, spec);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(h.OnPassiveFailure(spec));
  EXPECT_EQ(h.state(), HealthState::kSuspect);
  EXPECT_TRUE(h.up());
  EXPECT_EQ(h.consecutive_failures(), 1);
  EXPECT_TRUE(h.OnProbe(false, spec));  // one failed probe confirms
  EXPECT_FALSE(h.up());
  EXPECT_FALSE(h.OnPassiveFailure(spec));  // already down: nothing to do

  spec.fall = 4;
  BackendHealth g;
  for (int i = 0; i < 10; ++i) g.OnPassiveFailure(spec);
  EXPECT_EQ(g.consecutive_failures(), 3);
  EXPECT_TRUE(g.OnProbe(false, spec));

  // fall 1: passive cannot count at all, but still asks for a probe.
  spec.fall = 1;
  BackendHealth f;
  EXPECT_TRUE(f.OnPassiveFailure(spec));
  EXPECT_TRUE(f.up());
  EXPECT_EQ(f.consecutive_failures(), 0);
}

TEST(BackendHealthTest, PassiveThenSuccessIsHealthyAgain) {
  HealthSpec spec;
  BackendHealth h;
  h.OnPassiveFailure(spec);
  EXPECT_FALSE(h.OnProbe(true, spec));
  EXPECT_EQ(h.state(), HealthState::kHealthy);
  EXPECT_EQ(h.consecutive_failures(), 0);
}

TEST(ProbeGapTest, JitterStaysWithinBounds) {
  HealthSpec spec;
  BackendHealth h;
  h.OnProbe(true, spec);
  EXPECT_EQ(h.NextGap(spec, 0.0), absl::Milliseconds(240));
  EXPECT_EQ(h.NextGap(spec, 0.5), absl::Milliseconds(300));
  EXPECT_LT(h.NextGap(spec, 0.999999), absl::Milliseconds(360));
  for (double u = 0; u < 1; u += 0.01) {
    EXPECT_GE(h.NextGap(spec, u), absl::Milliseconds(240));
    EXPECT_LE(h.NextGap(spec, u), absl::Milliseconds(360));
  }
  EXPECT_EQ(FirstProbeDelay(spec, 0.0), absl::ZeroDuration());
  EXPECT_LT(FirstProbeDelay(spec, 0.999), spec.interval);
}

TEST(ProbeGapTest, SuspectProbesFast) {
  HealthSpec spec;
  BackendHealth h;
  h.OnProbe(false, spec);
  EXPECT_EQ(h.NextGap(spec, 0.9), spec.suspect_interval);
}

TEST(ProbeGapTest, DownBacksOffDoublingToTheCap) {
  HealthSpec spec;  // 500 ms doubling to 5 s
  BackendHealth h;
  h.OnProbe(false, spec);
  h.OnProbe(false, spec);
  ASSERT_FALSE(h.up());
  const int want_ms[] = {500, 1000, 2000, 4000, 5000, 5000, 5000};
  for (int ms : want_ms) {
    const absl::Duration want = absl::Milliseconds(ms);
    EXPECT_EQ(h.NextGap(spec, 0.5), want) << "level " << h.backoff_level();
    EXPECT_GE(h.NextGap(spec, 0.0), want * 0.8);
    EXPECT_LE(h.NextGap(spec, 0.9999), want * 1.2);
    h.OnProbe(false, spec);
  }
  // First success while Down: confirm rise fast, not at the backoff.
  h.OnProbe(true, spec);
  EXPECT_EQ(h.NextGap(spec, 0.5), spec.suspect_interval);
  // Back up: the backoff starts over next time.
  EXPECT_TRUE(h.OnProbe(true, spec));
  h.OnProbe(false, spec);
  h.OnProbe(false, spec);
  EXPECT_EQ(h.NextGap(spec, 0.5), spec.down_backoff);
}

TEST(ProbeGapTest, DownIsNeverProbedMoreOftenThanHealthy) {
  HealthSpec spec;
  spec.interval = absl::Seconds(5);
  BackendHealth h;
  h.OnProbe(false, spec);
  h.OnProbe(false, spec);
  EXPECT_EQ(h.NextGap(spec, 0.5), absl::Seconds(5));
}

}  // namespace
}  // namespace kpx::health
