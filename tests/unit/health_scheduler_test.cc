// HealthScheduler under a FakeClock and a FakeProber, run as a discrete-event
// simulation: detection bounds (fall), recovery (rise), flapping, jitter
// bounds and desynchronisation, passive acceleration, down backoff, the
// global token bucket, in-flight cap, SetTargets keeping and dropping state.
#include "dataplane/health/health_scheduler.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "dataplane/health/clock.h"
#include "dataplane/health/fake_prober.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::health {
namespace {

using controller::BackendAddr;
using Behaviour = FakeProber::Behaviour;

Ipv4 Ip(int i) { return Ipv4::FromHost(0x0af40000 + static_cast<uint32_t>(i)); }  // 10.244.x.y
BackendAddr Addr(int i) { return BackendAddr{Ip(i), 8080}; }

HealthTarget Target(int i, HealthSpec spec = HealthSpec{}) {
  return HealthTarget{Addr(i), std::move(spec), "default/web"};
}

std::vector<HealthTarget> Targets(int n, HealthSpec spec = HealthSpec{}) {
  std::vector<HealthTarget> out;
  for (int i = 0; i < n; ++i) out.push_back(Target(i, spec));
  return out;
}

struct Change {
  BackendAddr backend;
  bool up;
  absl::Time at;
};

SchedulerOptions Opts(uint64_t seed = 1) {
  SchedulerOptions o;
  o.seed = seed;
  return o;
}

class Sim {
 public:
  explicit Sim(SchedulerOptions options = Opts())
      : prober(&clock), sched(options, &prober, [this](BackendAddr b, bool up) {
          changes.push_back(Change{b, up, clock.Now()});
        }) {
    prober.SetCallback(
        [this](uint64_t id, const ProbeResult& r) { sched.OnProbeDone(id, r, clock.Now()); });
  }

  // Advances simulated time to `end`, delivering completions and starting
  // due probes in time order.
  void RunUntil(absl::Time end) {
    for (int i = 0; i < 20'000'000; ++i) {
      prober.Poll(absl::ZeroDuration());
      const absl::Time due = sched.RunDue(clock.Now());  // may start probes: before NextCompletion
      const absl::Time next = std::min(due, prober.NextCompletion());
      if (next > end) {
        clock.Set(end);
        prober.Poll(absl::ZeroDuration());
        sched.RunDue(end);
        return;
      }
      clock.Set(std::max(next, clock.Now()));
    }
    FAIL() << "simulation did not reach its end";
  }
  void RunFor(absl::Duration d) { RunUntil(clock.Now() + d); }
  absl::Time now() const { return clock.Now(); }

  // Probe start times per backend address (in order).
  std::map<std::pair<uint32_t, uint16_t>, std::vector<absl::Time>> Starts() const {
    std::map<std::pair<uint32_t, uint16_t>, std::vector<absl::Time>> out;
    for (const auto& s : prober.started()) out[{s.request.ip.host(), s.request.port}].push_back(s.at);
    return out;
  }
  std::vector<absl::Time> StartsOf(int i) const {
    std::vector<absl::Time> out;
    for (const auto& s : prober.started()) {
      if (s.request.ip == Ip(i)) out.push_back(s.at);
    }
    return out;
  }

  FakeClock clock;
  FakeProber prober;
  HealthScheduler sched;
  std::vector<Change> changes;
};

TEST(HealthSchedulerTest, NewTargetsAreAssumedUpAndProbedWithinOneInterval) {
  Sim sim;
  sim.prober.Set(Ip(1), 8080, Behaviour::kRefuse);
  const absl::Time t0 = sim.now();
  sim.sched.SetTargets(Targets(3), t0);
  EXPECT_EQ(sim.sched.StateOf(Addr(1)), HealthState::kUnknown);
  sim.RunFor(absl::Milliseconds(299));
  for (int i = 0; i < 3; ++i) {
    auto starts = sim.StartsOf(i);
    ASSERT_FALSE(starts.empty()) << i;
    EXPECT_LT(starts[0] - t0, absl::Milliseconds(300));
  }
  sim.RunFor(absl::Seconds(1));
  ASSERT_EQ(sim.changes.size(), 1u);
  EXPECT_EQ(sim.changes[0].backend, Addr(1));
  EXPECT_FALSE(sim.changes[0].up);
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kHealthy);
  EXPECT_EQ(sim.sched.StateOf(Addr(1)), HealthState::kDown);
  // Exactly fall (2) failed probes took it down.
  EXPECT_GE(sim.StartsOf(1).size(), 2u);
  HealthStats st = sim.sched.Stats();
  EXPECT_EQ(st.targets, 3u);
  EXPECT_EQ(st.down, 1u);
  EXPECT_EQ(st.went_down, 1u);
  ASSERT_EQ(st.backends.size(), 3u);
  EXPECT_EQ(st.backends[1].state, HealthState::kDown);
  EXPECT_EQ(st.backends[1].last_error, ECONNREFUSED);
  EXPECT_EQ(st.backends[0].last_latency, absl::Milliseconds(1));
  EXPECT_EQ(st.backends[0].last_error, 0);
}

// The headline bound: a backend that dies at any moment is Down within
// (1 + jitter) x interval + (fall - 1) x max(suspect, timeout) + timeout, which
// for the defaults is within fall x interval + timeout (800 ms).
TEST(HealthSchedulerTest, DeathIsDetectedWithinTheDocumentedBound) {
  const HealthSpec spec;
  const absl::Duration issue_bound = spec.fall * spec.interval + spec.timeout;
  for (Behaviour death : {Behaviour::kRefuse, Behaviour::kSilent}) {
    const absl::Duration bound =
        death == Behaviour::kRefuse
            ? spec.interval * (1 + spec.jitter) + spec.suspect_interval + absl::Milliseconds(1)
            : spec.interval * (1 + spec.jitter) + std::max(spec.suspect_interval, spec.timeout) +
                  spec.timeout;
    absl::Duration worst;
    for (int trial = 0; trial < 200; ++trial) {
      Sim sim(Opts(trial + 1));
      sim.sched.SetTargets({Target(7)}, sim.now());
      // Die at a different phase of the probe cycle each time.
      sim.RunFor(absl::Seconds(2) + absl::Microseconds(trial * 1777));
      sim.prober.Set(Ip(7), 8080, death);
      const absl::Time died = sim.now();
      sim.RunFor(absl::Seconds(2));
      ASSERT_EQ(sim.changes.size(), 1u);
      const absl::Duration took = sim.changes[0].at - died;
      worst = std::max(worst, took);
      EXPECT_LE(took, bound) << "trial " << trial;
    }
    EXPECT_LE(worst, issue_bound);
    // The bound is tight enough to mean something: some trial comes close.
    EXPECT_GT(worst, bound * 0.8);
  }
}

TEST(HealthSchedulerTest, ComesBackAfterRiseProbes) {
  Sim sim;
  sim.prober.Set(Ip(0), 8080, Behaviour::kRefuse);
  sim.sched.SetTargets({Target(0)}, sim.now());
  sim.RunFor(absl::Seconds(3));
  ASSERT_EQ(sim.changes.size(), 1u);
  sim.prober.Set(Ip(0), 8080, Behaviour::kUp);
  const absl::Time restarted = sim.now();
  const size_t probes_before = sim.StartsOf(0).size();
  sim.RunFor(absl::Seconds(10));
  ASSERT_EQ(sim.changes.size(), 2u);
  EXPECT_TRUE(sim.changes[1].up);
  // Probes from the restart to the up transition: exactly rise successes.
  size_t probes_to_up = 0;
  for (absl::Time t : sim.StartsOf(0)) {
    if (t >= restarted && t < sim.changes[1].at) ++probes_to_up;
  }
  EXPECT_EQ(probes_to_up, 2u);
  EXPECT_GT(sim.StartsOf(0).size(), probes_before);
  // Within one backoff step (<= 4 s at this point, +20 %) plus a fast confirmation.
  EXPECT_LE(sim.changes[1].at - restarted, absl::Seconds(4) * 1.2 + absl::Milliseconds(102));
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kHealthy);
}

TEST(HealthSchedulerTest, OneFailedProbeIsOnlySuspect) {
  Sim sim;
  int calls = 0;
  sim.prober.SetResponder([&](const ProbeRequest&) {
    ProbeResult r;
    r.latency = absl::Milliseconds(1);
    r.ok = ++calls != 3;  // the third probe fails, all others succeed
    if (!r.ok) r.err = ECONNREFUSED;
    return r;
  });
  sim.sched.SetTargets({Target(0)}, sim.now());
  sim.RunFor(absl::Seconds(5));
  EXPECT_TRUE(sim.changes.empty());
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kHealthy);
  EXPECT_EQ(sim.sched.Stats().probe_failures, 1u);
  // The probe after the failure came at the suspect interval, not 300 ms.
  auto starts = sim.StartsOf(0);
  ASSERT_GT(starts.size(), 4u);
  EXPECT_EQ(starts[3] - starts[2], HealthSpec{}.suspect_interval);
}

// Whatever the probe results, transitions never come faster than rise/fall
// allow: replays the results in order and checks each transition had its
// run of rise successes / fall failures, and that alternating results never
// move a healthy backend at all.
TEST(HealthSchedulerTest, FlappingNeverOscillatesFasterThanRiseAndFall) {
  HealthSpec spec;
  spec.rise = 3;
  spec.fall = 3;
  spec.down_backoff = spec.down_backoff_max = spec.interval;  // keep probing at pace
  for (int pattern = 0; pattern < 2; ++pattern) {
    Sim sim;
    std::mt19937 rng(42);
    std::vector<bool> results;
    sim.prober.SetResponder([&](const ProbeRequest&) {
      ProbeResult r;
      r.latency = absl::Milliseconds(1);
      r.ok = pattern == 0 ? results.size() % 2 == 0 : rng() % 2 == 0;
      if (!r.ok) r.err = ECONNREFUSED;
      results.push_back(r.ok);
      return r;
    });
    sim.sched.SetTargets({Target(0, spec)}, sim.now());
    sim.RunFor(absl::Seconds(120));
    ASSERT_GT(results.size(), 100u);
    if (pattern == 0) {
      EXPECT_TRUE(sim.changes.empty()) << "alternating ok/fail must not flap";
      continue;
    }
    // Replay: transitions happen exactly when the run lengths say so.
    bool up = true;
    int run = 0;
    size_t expected_changes = 0;
    for (bool ok : results) {
      if (up) {
        run = ok ? 0 : run + 1;
        if (run == spec.fall) up = false, run = 0, ++expected_changes;
      } else {
        run = ok ? run + 1 : 0;
        if (run == spec.rise) up = true, run = 0, ++expected_changes;
      }
    }
    // The last probe may still be in flight when the simulation stops.
    EXPECT_GE(sim.changes.size() + 1, expected_changes);
    EXPECT_LE(sim.changes.size(), expected_changes);
    EXPECT_LE(sim.changes.size(), results.size() / std::min(spec.rise, spec.fall));
    for (size_t i = 1; i < sim.changes.size(); ++i) {
      EXPECT_NE(sim.changes[i].up, sim.changes[i - 1].up) << "transitions alternate";
    }
  }
}

TEST(HealthSchedulerTest, JitterKeepsGapsInBoundsAndTargetsApart) {
  constexpr int kTargets = 300;
  Sim sim;
  const absl::Time t0 = sim.now();
  sim.sched.SetTargets(Targets(kTargets), t0);  // all at once: the worst case
  sim.RunFor(absl::Seconds(30));
  const HealthSpec spec;
  double sum = 0, sum_sq = 0;
  int gaps = 0;
  for (const auto& [addr, starts] : sim.Starts()) {
    ASSERT_GT(starts.size(), 80u);
    EXPECT_LT(starts[0] - t0, spec.interval);
    for (size_t i = 1; i < starts.size(); ++i) {
      const absl::Duration gap = starts[i] - starts[i - 1];
      EXPECT_GE(gap, spec.interval * 0.8);
      EXPECT_LE(gap, spec.interval * 1.2);
      const double ms = absl::ToDoubleMilliseconds(gap);
      sum += ms;
      sum_sq += ms * ms;
      ++gaps;
    }
  }
  const double mean = sum / gaps;
  const double stddev = std::sqrt(sum_sq / gaps - mean * mean);
  EXPECT_NEAR(mean, 300, 3);
  // Uniform on [240, 360] has a standard deviation of 34.6 ms.
  EXPECT_GT(stddev, 30);
  // Desynchronised: probes spread evenly over time. 300 targets / 300 ms =
  // 10 probes per 10 ms bin on average; lockstep would put 300 in one bin.
  std::map<int64_t, int> bins;
  for (const auto& s : sim.prober.started()) {
    if (s.at - t0 < absl::Seconds(5)) continue;
    bins[absl::ToInt64Milliseconds(s.at - t0) / 10]++;
  }
  int max_bin = 0;
  for (const auto& [bin, n] : bins) max_bin = std::max(max_bin, n);
  EXPECT_GE(bins.size(), 2490u);  // (almost) no empty 10 ms bin in 25 s
  EXPECT_LE(max_bin, 30);
}

TEST(HealthSchedulerTest, EarlyWindowBatchesProbesAndBoundsTheDrift) {
  Sim sim;
  const absl::Time t0 = sim.now();
  sim.sched.SetTargets(Targets(100), t0);
  // Everything due in the first 300 ms starts at once with a 300 ms window.
  sim.sched.RunDue(t0, absl::Milliseconds(300));
  EXPECT_EQ(sim.prober.started_count(), 100u);
  sim.prober.ClearStarted();
  // With a 1 ms window, gaps shrink by at most 1 ms.
  for (int i = 0; i < 20000; ++i) {
    sim.clock.Advance(absl::Microseconds(500));
    sim.prober.Poll(absl::ZeroDuration());
    sim.sched.RunDue(sim.now(), absl::Milliseconds(1));
  }
  for (const auto& [addr, starts] : sim.Starts()) {
    ASSERT_GT(starts.size(), 20u);
    for (size_t i = 1; i < starts.size(); ++i) {
      EXPECT_GE(starts[i] - starts[i - 1], HealthSpec{}.interval * 0.8 - absl::Milliseconds(1));
      EXPECT_LE(starts[i] - starts[i - 1], HealthSpec{}.interval * 1.2 + absl::Microseconds(500));
    }
  }
}

TEST(HealthSchedulerTest, PassiveFailureAcceleratesDetection) {
  HealthSpec spec;
  spec.interval = absl::Seconds(10);  // so only the passive path can be fast
  Sim sim;
  sim.sched.SetTargets({Target(0, spec)}, sim.now());
  sim.RunFor(absl::Seconds(12));  // probed once or twice, healthy
  ASSERT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kHealthy);
  const size_t probes = sim.StartsOf(0).size();
  sim.prober.Set(Ip(0), 8080, Behaviour::kRefuse);
  const absl::Time died = sim.now();
  sim.sched.OnPassiveFailure(Addr(0), died);
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kSuspect);
  // Many failures from many connections: still one prompt probe.
  for (int i = 0; i < 100; ++i) sim.sched.OnPassiveFailure(Addr(0), died);
  sim.RunFor(absl::Milliseconds(150));
  ASSERT_EQ(sim.changes.size(), 1u);
  EXPECT_FALSE(sim.changes[0].up);
  EXPECT_LE(sim.changes[0].at - died, spec.suspect_interval + absl::Milliseconds(1));
  EXPECT_EQ(sim.StartsOf(0).size(), probes + 1) << "passive + one failed probe = fall 2";
  EXPECT_GE(sim.sched.Stats().passive_failures, 1u);
}

TEST(HealthSchedulerTest, PassiveFailuresAloneNeverRemoveAHealthyBackend) {
  Sim sim;
  sim.sched.SetTargets({Target(0)}, sim.now());
  sim.RunFor(absl::Seconds(1));
  for (int i = 0; i < 200; ++i) {
    sim.sched.OnPassiveFailure(Addr(0), sim.now());
    sim.RunFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(sim.changes.empty());
  // Confirmation probes are spaced by at least the suspect interval.
  auto starts = sim.StartsOf(0);
  for (size_t i = 1; i < starts.size(); ++i) {
    EXPECT_GE(starts[i] - starts[i - 1], HealthSpec{}.suspect_interval);
  }
  // Unknown backends and Down ones ignore passive reports.
  sim.sched.OnPassiveFailure(Addr(99), sim.now());
  EXPECT_FALSE(sim.sched.StateOf(Addr(99)).has_value());
}

TEST(HealthSchedulerTest, DownBacksOffThenRecoversQuickly) {
  Sim sim;
  sim.prober.Set(Ip(0), 8080, Behaviour::kRefuse);
  sim.sched.SetTargets({Target(0)}, sim.now());
  sim.RunFor(absl::Seconds(100));
  ASSERT_EQ(sim.changes.size(), 1u);
  auto starts = sim.StartsOf(0);
  size_t first_down = 0;
  while (first_down < starts.size() && starts[first_down] < sim.changes[0].at) ++first_down;
  // Gaps after the probe that took it down: 0.5, 1, 2, 4, 5, 5 s (+-20 %).
  const int want_ms[] = {500, 1000, 2000, 4000, 5000, 5000};
  ASSERT_GE(starts.size(), first_down + 6);
  for (int i = 0; i < 6; ++i) {
    const absl::Duration gap = starts[first_down + i] - starts[first_down + i - 1];
    EXPECT_GE(gap, absl::Milliseconds(want_ms[i]) * 0.8) << i;
    EXPECT_LE(gap, absl::Milliseconds(want_ms[i]) * 1.2) << i;
  }
  // 7.5 s of doubling, then at most one probe per 4 s (5 s - 20 %) for the rest of 100 s.
  EXPECT_LE(starts.size(), first_down + 4u + 24u) << "no more than the backoff allows";
  EXPECT_GE(starts.size(), first_down + 4u + 16u) << "the cap keeps probing a dead pod";
}

TEST(HealthSchedulerTest, TokenBucketCapsProbesPerSecond) {
  SchedulerOptions o = Opts();
  o.max_probes_per_second = 1000;
  o.burst = 10;
  Sim sim(o);
  HealthSpec spec;
  spec.interval = absl::Milliseconds(100);  // 500 targets want 5000 probes/s
  const absl::Time t0 = sim.now();
  sim.sched.SetTargets(Targets(500, spec), t0);
  sim.RunFor(absl::Seconds(5));
  int in_window = 0;
  for (const auto& s : sim.prober.started()) {
    if (s.at >= t0 + absl::Seconds(1)) ++in_window;
  }
  EXPECT_LE(in_window, 4000 + 10 + 1);
  EXPECT_GE(in_window, 3900) << "the cap is used, not undershot";
  // Any one-second window holds at most rate + burst probes.
  auto all = sim.prober.started();
  for (size_t i = 0, j = 0; i < all.size(); ++i) {
    while (all[j].at + absl::Seconds(1) <= all[i].at) ++j;
    ASSERT_LE(i - j + 1, 1000u + 10u + 1u);
  }
  EXPECT_GT(sim.sched.Stats().rate_limited, 0u);
  // Starved of probes, nothing is marked down.
  EXPECT_TRUE(sim.changes.empty());
}

TEST(HealthSchedulerTest, MaxInFlightIsHonoured) {
  SchedulerOptions o = Opts();
  o.max_in_flight = 5;
  Sim sim(o);
  for (int i = 0; i < 20; ++i) sim.prober.Set(Ip(i), 8080, Behaviour::kSilent);
  sim.sched.SetTargets(Targets(20), sim.now());
  for (int step = 0; step < 300; ++step) {
    sim.RunFor(absl::Milliseconds(10));
    ASSERT_LE(sim.sched.in_flight(), 5u);
    ASSERT_LE(sim.prober.in_flight(), 5u);
  }
  EXPECT_GT(sim.prober.started_count(), 20u);
}

TEST(HealthSchedulerTest, LocalErrorsAreNotHeldAgainstTheBackend) {
  Sim sim;
  sim.prober.Set(Ip(0), 8080, Behaviour::kLocalErr);
  sim.sched.SetTargets({Target(0)}, sim.now());
  sim.RunFor(absl::Seconds(5));
  EXPECT_TRUE(sim.changes.empty());
  HealthStats st = sim.sched.Stats();
  EXPECT_GT(st.local_errors, 10u);
  EXPECT_EQ(st.probe_failures, 0u);
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kUnknown);
}

TEST(HealthSchedulerTest, SetTargetsKeepsRemainingStateAndDropsRemoved) {
  Sim sim;
  sim.prober.Set(Ip(0), 8080, Behaviour::kRefuse);
  sim.sched.SetTargets({Target(0), Target(1)}, sim.now());
  sim.RunFor(absl::Seconds(2));
  ASSERT_EQ(sim.changes.size(), 1u);
  ASSERT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kDown);
  ASSERT_EQ(sim.sched.StateOf(Addr(1)), HealthState::kHealthy);

  // 0 stays (still Down, no callback), 1 goes (was up: no callback), 2 is new.
  sim.sched.SetTargets({Target(0), Target(2)}, sim.now());
  EXPECT_EQ(sim.changes.size(), 1u);
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kDown);
  EXPECT_FALSE(sim.sched.StateOf(Addr(1)).has_value());
  EXPECT_EQ(sim.sched.StateOf(Addr(2)), HealthState::kUnknown);
  sim.prober.ClearStarted();
  sim.RunFor(absl::Seconds(2));
  EXPECT_TRUE(sim.StartsOf(1).empty()) << "a removed target is not probed";
  EXPECT_FALSE(sim.StartsOf(2).empty());

  // Removing a Down target clears its overlay.
  sim.sched.SetTargets({Target(2)}, sim.now());
  ASSERT_EQ(sim.changes.size(), 2u);
  EXPECT_EQ(sim.changes[1].backend, Addr(0));
  EXPECT_TRUE(sim.changes[1].up);
  EXPECT_EQ(sim.sched.Stats().down, 0u);
  // Re-added later: starts over, assumed up.
  sim.sched.SetTargets({Target(0), Target(2)}, sim.now());
  EXPECT_EQ(sim.sched.StateOf(Addr(0)), HealthState::kUnknown);
}

TEST(HealthSchedulerTest, CompletionOfARemovedTargetIsIgnored) {
  Sim sim;
  sim.prober.Set(Ip(0), 8080, Behaviour::kSilent);  // probes stay in flight 200 ms
  sim.sched.SetTargets({Target(0)}, sim.now());
  for (int i = 0; i < 400 && sim.prober.in_flight() == 0; ++i) sim.RunFor(absl::Milliseconds(1));
  ASSERT_EQ(sim.prober.in_flight(), 1u);
  ASSERT_EQ(sim.sched.Stats().probe_failures, 0u);
  sim.sched.SetTargets({}, sim.now());
  sim.sched.SetTargets({Target(5)}, sim.now());  // reuses the slot
  sim.RunFor(absl::Seconds(1));
  EXPECT_TRUE(sim.changes.empty());
  EXPECT_EQ(sim.sched.in_flight(), sim.prober.in_flight());
  EXPECT_EQ(sim.sched.Stats().probe_failures, 0u) << "the stale timeout was not counted";
}

TEST(HealthSchedulerTest, ShorterIntervalAppliesAtOnce) {
  Sim sim;
  HealthSpec slow;
  slow.interval = absl::Seconds(30);
  sim.sched.SetTargets({Target(0, slow)}, sim.now());
  sim.RunFor(absl::Seconds(31));
  const size_t before = sim.StartsOf(0).size();
  sim.sched.SetTargets({Target(0)}, sim.now());  // back to 300 ms
  sim.RunFor(absl::Seconds(3));
  EXPECT_GE(sim.StartsOf(0).size(), before + 8);
}

TEST(HealthSchedulerTest, ProbeRequestsFollowTheSpec) {
  Sim sim;
  HealthSpec spec;
  spec.type = CheckType::kHttp;
  spec.path = "/healthz";
  spec.port = 9000;
  spec.timeout = absl::Milliseconds(50);
  sim.sched.SetTargets({Target(0, spec)}, sim.now());
  sim.RunFor(absl::Milliseconds(400));
  auto started = sim.prober.started();
  ASSERT_FALSE(started.empty());
  EXPECT_EQ(started[0].request.ip, Ip(0));
  EXPECT_EQ(started[0].request.port, 9000);
  EXPECT_EQ(started[0].request.type, CheckType::kHttp);
  EXPECT_EQ(started[0].request.path, "/healthz");
  EXPECT_EQ(started[0].request.timeout, absl::Milliseconds(50));
}

TEST(HealthSchedulerTest, CountDownCountsReadyDownBackendsOfARule) {
  Sim sim;
  sim.prober.Set(Ip(0), 8080, Behaviour::kRefuse);
  sim.prober.Set(Ip(1), 8080, Behaviour::kRefuse);
  sim.sched.SetTargets(Targets(3), sim.now());
  sim.RunFor(absl::Seconds(2));
  controller::ServiceRule rule;
  for (int i = 0; i < 4; ++i) {
    controller::Backend b;
    b.ip = Ip(i);
    b.port = 8080;
    rule.backends.push_back(b);
  }
  EXPECT_EQ(sim.sched.CountDown(rule), 2u);
  rule.backends[0].ready = false;
  EXPECT_EQ(sim.sched.CountDown(rule), 1u);
}

}  // namespace
}  // namespace kpx::health
