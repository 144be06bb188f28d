// Fault injection: file descriptor exhaustion on the io_uring path (issue #9),
// lab kpxfd-. kpxd's RLIMIT_NOFILE is lowered (prlimit on its PID) and idle
// client connections use up the rest: accept must back off (kpxd's CPU stays
// low: no retry spin on EMFILE) and the Service must come back as soon as
// descriptors are free again.
#include "tests/e2e/fault_load.h"

namespace kpx::e2e {
namespace {

class FaultFdTest : public KpxdLabFixture {
 protected:
  static void SetUpTestSuite() { LabUp("kpxfd-"); }
  static void TearDownTestSuite() { LabDown("kpxfd-"); }
  std::string Prefix() const override { return "kpxfd-"; }
  // No health checks: a probe's socket open while the baseline below is
  // taken is room for a relayed connection once it closes.
  std::vector<std::string> DataplaneArgs() const override { return {"--dataplane=uring", "--health_checks=false"}; }
  void TearDown() override {
    for (int fd : idle_) close(fd);
    KpxdLabFixture::TearDown();
  }
  int OpenFds() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd")) ++n;
    return n;
  }
  std::vector<int> idle_;
};

TEST_F(FaultFdTest, AcceptBacksOffWhenOutOfDescriptorsAndRecovers) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Requests(10).failed, 0);
  // The baseline once those requests' relayed sockets are closed: counted
  // while some were still open, it left kpxd room for another connection
  // after the idle ones took theirs, and 1 run in 4 then served every
  // "knock" (106k requests ok, 2 failed) instead of running out.
  int base = OpenFds();
  {
    int steady = 0;
    const auto until = Clock::now() + std::chrono::seconds(3);
    while (steady < 5 && Clock::now() < until) {
      std::this_thread::sleep_for(Ms(50));
      const int n = OpenFds();
      steady = n < base ? 0 : steady + (n == base);
      base = std::min(base, n);
    }
  }
  const int limit = base + 40;  // room for ~20 relayed connections (2 fds each)
  ASSERT_EQ(Sh(absl::StrFormat("prlimit --pid %d --nofile=%d:%d", pid_, limit, limit)), 0);

  // Idle keep-alive connections until kpxd has no descriptor left; the
  // surplus waits in the listen backlog (connect succeeds, nothing answers).
  // A connect that times out on a loaded machine is retried (bounded): what
  // matters is that 40 connections are held, not that each made it first time.
  InNetns(Prefix() + "client", [&] {
    for (int attempt = 0; attempt < 80 && idle_.size() < 40; ++attempt) {
      int fd = ConnectTimeout(kVip, 5000, 2000);
      if (fd >= 0) idle_.push_back(fd);
    }
  });
  ASSERT_EQ(idle_.size(), 40u);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (OpenFds() < limit - 1 && Clock::now() < deadline) std::this_thread::sleep_for(Ms(10));
  ASSERT_GE(OpenFds(), limit - 2) << "kpxd did not run out of descriptors";
  // Out of descriptors means requests are no longer served. Some runs (2-3
  // in 12 one afternoon on the shared machine, none in 40 later; the cause
  // is not found) had room for relayed pairs again once the loop below
  // started and served all of it. That is the test's premise lost, not the
  // back-off failing: hold 2 more idle connections until a request is
  // refused, knock, and if the knocks were served, top up and knock again
  // (at most 3 rounds; the checks below apply to the last one).
  int topped_up = 0, rounds = 0, failed = 0, ok = 0;
  long wall = 0, cpu = 0;
  auto top_up = [&] {
    InNetns(Prefix() + "client", [&] {
      for (int i = 0; i < 2; ++i) {
        int fd = ConnectTimeout(kVip, 5000, 2000);
        if (fd >= 0) idle_.push_back(fd);
      }
    });
    std::this_thread::sleep_for(Ms(50));
    ++topped_up;
  };
  for (; rounds < 3; ++rounds) {
    if (rounds > 0) top_up();
    while (topped_up < 20 && Requests(1).failed == 0) top_up();
    // New clients are accepted and reset at once (no backend socket to be
    // had) or wait in the backlog; either way kpxd must not spin on
    // EMFILE. Its CPU is measured while a request loop keeps knocking for
    // a while (at least 100 failed requests).
    long cpu0 = ProcessCpuMs(pid_);
    auto t0 = Clock::now();
    {
      RequestLoop knock(Prefix() + "client", kVip, 5000);
      auto until = Clock::now() + std::chrono::seconds(5);
      while (knock.failed() < 100 && Clock::now() < until) std::this_thread::sleep_for(Ms(10));
      knock.Stop();
      failed = knock.failed();
      ok = knock.ok();
    }
    wall = MsBetween(t0, Clock::now());
    cpu = ProcessCpuMs(pid_) - cpu0;
    std::cerr << "fd exhaustion, round " << rounds + 1 << ": kpxd used " << cpu << " ms CPU in " << wall
              << " ms; meanwhile " << failed << " requests failed, " << ok << " succeeded ("
              << idle_.size() << " idle connections held, " << topped_up << " top-ups of 2)\n";
    if (failed >= ok) break;
  }
  EXPECT_GE(failed, 100);
  EXPECT_LT(cpu, wall / 4) << "kpxd busy-loops while out of descriptors";
  EXPECT_THAT(Log(), HasSubstr("Too many open files"));

  // Descriptors free up: service resumes within the accept back-off.
  for (int fd : idle_) close(fd);
  idle_.clear();
  auto freed = Clock::now();
  RequestLoop load(Prefix() + "client", kVip, 5000);
  ASSERT_TRUE(load.WaitMoreOk(50, Ms(10000))) << load.Summary() << Log();
  auto first = load.FirstOkStartedAfter(freed);
  ASSERT_TRUE(first.has_value());
  long resume = MsBetween(freed, *first);
  load.Stop();
  // Requests that raced the release (kpxd still closing the idle pairs, so
  // still out of descriptors) may be reset; once one succeeded, none may fail.
  const int failed_after_resume = load.FailedBetween(*first, Clock::now());
  std::cerr << "fd exhaustion: descriptors freed -> first success " << resume << " ms; after: "
            << load.Summary() << "; failed after the first success: " << failed_after_resume << "\n";
  EXPECT_LT(resume, 1000);
  EXPECT_EQ(failed_after_resume, 0) << load.Summary();
  EXPECT_LE(load.failed(), 2) << "more than the release race explains: " << load.Summary();
}

}  // namespace
}  // namespace kpx::e2e
