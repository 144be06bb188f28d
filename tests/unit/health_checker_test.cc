// HealthChecker's thread and thread-safe surface, on a FakeProber with the
// real clock: transitions reach on_change on the checker thread, passive
// reports from other threads take a backend down long before its next probe,
// local errno values are ignored, Stats/StateOf/CountDown work concurrently,
// SetTargets keeps state, and Create/Stop behave.
#include "dataplane/health/health_checker.h"

#include <cerrno>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "dataplane/health/fake_prober.h"
#include "gtest/gtest.h"

namespace kpx::health {
namespace {

using controller::BackendAddr;
using Behaviour = FakeProber::Behaviour;

Ipv4 Ip(int i) { return Ipv4::FromHost(0x0af40100 + static_cast<uint32_t>(i)); }
BackendAddr Addr(int i) { return BackendAddr{Ip(i), 80}; }

HealthSpec FastSpec() {
  HealthSpec s;
  s.interval = absl::Milliseconds(20);
  s.suspect_interval = absl::Milliseconds(10);
  s.timeout = absl::Milliseconds(10);
  return s;
}

// Waits for `cond` (bounded); polls every 2 ms.
bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

class HealthCheckerTest : public ::testing::Test {
 protected:
  void Start(HealthOptions options = {}) {
    options.scheduler.seed = 7;
    options.make_prober = [this]() -> absl::StatusOr<std::unique_ptr<Prober>> {
      auto p = std::make_unique<FakeProber>(MonotonicClock::Get());
      prober_ = p.get();
      return p;
    };
    auto hc = HealthChecker::Create(std::move(options), [this](BackendAddr b, bool up) {
      absl::MutexLock lock(&mu_);
      changes_.push_back({b, up});
      threads_.push_back(std::this_thread::get_id());
      // The callback may read the checker (no deadlock).
      (void)checker_->Stats(false);
    });
    ASSERT_TRUE(hc.ok()) << hc.status();
    checker_ = std::move(*hc);
  }
  size_t Changes() {
    absl::MutexLock lock(&mu_);
    return changes_.size();
  }

  FakeProber* prober_ = nullptr;
  std::unique_ptr<HealthChecker> checker_;
  absl::Mutex mu_;
  std::vector<std::pair<BackendAddr, bool>> changes_;
  std::vector<std::thread::id> threads_;
};

TEST_F(HealthCheckerTest, TransitionsArriveOnTheCheckerThread) {
  Start();
  prober_->Set(Ip(1), 80, Behaviour::kRefuse);
  std::vector<HealthTarget> targets;
  for (int i = 0; i < 3; ++i) targets.push_back({Addr(i), FastSpec(), "default/web"});
  checker_->SetTargets(targets);
  ASSERT_TRUE(WaitFor([&] { return Changes() >= 1; }));
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(changes_[0].first, Addr(1));
    EXPECT_FALSE(changes_[0].second);
    EXPECT_NE(threads_[0], std::this_thread::get_id());
  }
  EXPECT_EQ(checker_->StateOf(Addr(1)), HealthState::kDown);
  ASSERT_TRUE(WaitFor([&] { return checker_->StateOf(Addr(0)) == HealthState::kHealthy; }));

  controller::ServiceRule rule;
  for (int i = 0; i < 3; ++i) rule.backends.push_back({.ip = Ip(i), .port = 80});
  EXPECT_EQ(checker_->CountDown(rule), 1u);

  // Recovery.
  prober_->Set(Ip(1), 80, Behaviour::kUp);
  ASSERT_TRUE(WaitFor([&] { return Changes() >= 2; }, absl::Seconds(10)));
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(changes_[1].second);
}

TEST_F(HealthCheckerTest, PassiveReportBeatsTheNextProbe) {
  Start();
  HealthSpec slow;
  slow.interval = absl::Seconds(60);  // the first probe may be a minute away
  checker_->SetTargets({{Addr(0), slow, "default/web"}, {Addr(1), slow, "default/web"}});
  prober_->Set(Ip(0), 80, Behaviour::kRefuse);
  const absl::Time t0 = absl::Now();
  // From "proxy worker" threads.
  std::thread w1([&] { checker_->OnConnectFailed(Ip(0), 80, ECONNREFUSED); });
  std::thread w2([&] { checker_->OnConnectSucceeded(Ip(1), 80); });
  w1.join();
  w2.join();
  ASSERT_TRUE(WaitFor([&] { return Changes() >= 1; }, absl::Seconds(5)));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(changes_[0].first, Addr(0));
  EXPECT_FALSE(changes_[0].second);
}

TEST_F(HealthCheckerTest, LocalErrnoIsNotHeldAgainstTheBackend) {
  Start();
  HealthSpec slow;
  slow.interval = absl::Seconds(60);
  checker_->SetTargets({{Addr(0), slow, "default/web"}, {Addr(1), slow, "default/web"}});
  for (int err : {EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS}) checker_->OnConnectFailed(Ip(0), 80, err);
  // A real failure on another backend, reported after: once it is counted,
  // the earlier reports would have been too.
  checker_->OnConnectFailed(Ip(1), 80, ETIMEDOUT);
  ASSERT_TRUE(WaitFor([&] { return checker_->Stats().passive_failures >= 1; }));
  HealthStats st = checker_->Stats();
  EXPECT_EQ(st.passive_failures, 1u);
  ASSERT_EQ(st.backends.size(), 2u);
  EXPECT_EQ(st.backends[0].passive_failures, 0u);
  EXPECT_EQ(st.backends[1].passive_failures, 1u);
}

TEST_F(HealthCheckerTest, SetTargetsKeepsStateAcrossUpdates) {
  Start();
  prober_->Set(Ip(0), 80, Behaviour::kRefuse);
  checker_->SetTargets({{Addr(0), FastSpec(), "default/web"}});
  ASSERT_TRUE(WaitFor([&] { return Changes() >= 1; }));
  // Same backend plus a new one: no spurious "up" for the kept Down backend.
  checker_->SetTargets({{Addr(0), FastSpec(), "default/web"}, {Addr(5), FastSpec(), "default/web"}});
  ASSERT_TRUE(WaitFor([&] { return checker_->StateOf(Addr(5)) == HealthState::kHealthy; }));
  EXPECT_EQ(Changes(), 1u);
  EXPECT_EQ(checker_->StateOf(Addr(0)), HealthState::kDown);
  // Dropping the Down backend clears its overlay.
  checker_->SetTargets({{Addr(5), FastSpec(), "default/web"}});
  ASSERT_TRUE(WaitFor([&] { return Changes() >= 2; }));
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(changes_[1].first, Addr(0));
  EXPECT_TRUE(changes_[1].second);
}

TEST_F(HealthCheckerTest, StatsCountProbes) {
  Start();
  checker_->SetTargets({{Addr(0), FastSpec(), "default/web"}});
  ASSERT_TRUE(WaitFor([&] { return checker_->Stats().probes_sent >= 5; }));
  HealthStats st = checker_->Stats();
  EXPECT_EQ(st.targets, 1u);
  ASSERT_EQ(st.backends.size(), 1u);
  EXPECT_EQ(st.backends[0].service, "default/web");
  EXPECT_EQ(st.backends[0].state, HealthState::kHealthy);
  EXPECT_EQ(st.backends[0].last_latency, absl::Milliseconds(1));
  EXPECT_TRUE(checker_->Stats(false).backends.empty());
}

TEST_F(HealthCheckerTest, StopIsIdempotentAndLateCallsAreHarmless) {
  Start();
  checker_->SetTargets({{Addr(0), FastSpec(), "default/web"}});
  checker_->Stop();
  checker_->Stop();
  checker_->SetTargets({});
  checker_->OnConnectFailed(Ip(0), 80, ECONNREFUSED);
  (void)checker_->Stats();
  checker_.reset();
}

TEST(HealthCheckerCreateTest, ProberErrorIsReturned) {
  HealthOptions o;
  o.make_prober = []() -> absl::StatusOr<std::unique_ptr<Prober>> {
    return absl::UnavailableError("io_uring disabled");
  };
  auto hc = HealthChecker::Create(std::move(o), [](BackendAddr, bool) {});
  ASSERT_FALSE(hc.ok());
  EXPECT_EQ(hc.status().message(), "io_uring disabled");
}

TEST(HealthCheckerCreateTest, DefaultProberIsIoUring) {
  auto hc = HealthChecker::Create(HealthOptions{}, [](BackendAddr, bool) {});
  ASSERT_TRUE(hc.ok()) << hc.status();
  // A closed loopback port: the real prober finds it refused.
  HealthSpec spec = FastSpec();
  spec.fall = 1;
  (*hc)->SetTargets({{BackendAddr{*Ipv4::Parse("127.0.0.1"), 1}, spec, "default/x"}});
  ASSERT_TRUE(WaitFor([&] { return (*hc)->Stats().went_down == 1; }));
  EXPECT_EQ((*hc)->Stats().backends[0].last_error, ECONNREFUSED);
}

}  // namespace
}  // namespace kpx::health
