// Fault injection: `kill -9` of kpxd under load (issue #9). On the eBPF path
// the pinned programs and maps keep forwarding, so long-lived flows carrying
// data and a new-connection loop lose nothing across the kill and restart; on
// the io_uring path the proxy dies with the process and the test measures how
// soon after the restart the Service answers again. Labs kpxfx- / kpxfu-.
#include "tests/e2e/fault_load.h"

namespace kpx::e2e {
namespace {

// DataplaneArgs() also runs in the forked kpxd child, where getpid() differs:
// the fixture computes the pin directory once, in the test process.
std::string PinDir() { return absl::StrFormat("/sys/fs/bpf/kpxf-kill-%d", getpid()); }

class FaultKillXdpTest : public KpxdLabFixture {
 protected:
  static void SetUpTestSuite() { LabUp("kpxfx-"); }
  static void TearDownTestSuite() { LabDown("kpxfx-"); }
  std::string Prefix() const override { return "kpxfx-"; }
  std::vector<std::string> DataplaneArgs() const override {
    return {"--dataplane=xdp", "--bpf-pin-dir=" + pin_dir_, "--cluster-cidr=10.244.0.0/16"};
  }
  void TearDown() override {
    StopKpxd(SIGKILL);
    Sh(kpx::testing::BinaryPath("tools/kpxd") + " --netns=" + Prefix() +
       "node --cleanup --bpf-pin-dir=" + pin_dir_ + " >/dev/null 2>&1");
    KpxdLabFixture::TearDown();
  }
  const std::string pin_dir_ = PinDir();
};

TEST_F(FaultKillXdpTest, Kill9UnderLoadLosesNoConnection) {
  CopyExample("flask.yaml");
  WriteManifest("tcp.yaml", EchoServiceManifest(kAllPodIps));
  StartKpxd();
  EchoFlows flows(Prefix() + "client", kEchoVip, 5001, 16);
  ASSERT_EQ(flows.opened(), 16);
  RequestLoop load(Prefix() + "client", kVip, 5000);
  ASSERT_TRUE(load.WaitMoreOk(50)) << load.Summary();
  ASSERT_TRUE(flows.WaitMoreRoundTrips(100));

  long dead_ms = 0;
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(StopKpxd(SIGKILL), -1);  // killed: no cleanup, no drain
    auto killed = Clock::now();
    // While dead (a few hundred ms): data keeps flowing on every flow, new
    // connections keep being made.
    EXPECT_TRUE(load.WaitMoreOk(3000)) << "round " << round << ": " << load.Summary();
    EXPECT_TRUE(flows.WaitMoreRoundTrips(16 * 30));
    dead_ms += MsBetween(killed, Clock::now());
    StartKpxd();  // adopts the pinned maps and links
    EXPECT_TRUE(load.WaitMoreOk(50)) << load.Summary();
    EXPECT_TRUE(flows.WaitMoreRoundTrips(100));
  }
  load.Stop();
  flows.Stop();
  std::cerr << "xdp kill -9 x3 (dead " << dead_ms << " ms in all): " << load.Summary() << "; echo flows: " << flows.opened()
            << " open, " << flows.broken() << " broken, " << flows.round_trips()
            << " round trips\n";
  EXPECT_EQ(flows.broken(), 0) << "established flows broke across kill -9 / restart";
  EXPECT_EQ(load.failed(), 0) << load.Summary();
  EXPECT_LT(load.LongestGapMs(), 1000) << load.Summary();
  EXPECT_THAT(Log(), HasSubstr("adopted 2 frontends"));
}

class FaultKillUringTest : public KpxdLabFixture {
 protected:
  static void SetUpTestSuite() { LabUp("kpxfu-"); }
  static void TearDownTestSuite() { LabDown("kpxfu-"); }
  std::string Prefix() const override { return "kpxfu-"; }
  std::vector<std::string> DataplaneArgs() const override { return {"--dataplane=uring"}; }
  void TearDown() override {
    StopKpxd(SIGKILL);
    Sh(kpx::testing::BinaryPath("tools/kpxd") + " --netns=" + Prefix() +
       "node --dataplane=uring --cleanup --bpf-pin-dir=" + PinDir() + "-uring >/dev/null 2>&1");
    KpxdLabFixture::TearDown();
  }
};

// The io_uring proxy's sockets die with the process: requests fail while
// kpxd is down. Goal: service resumes within 1 s of the restart (measured
// from the fork of the new kpxd to the end of the first request that
// succeeded after it).
TEST_F(FaultKillUringTest, ServiceResumesWithinOneSecondOfRestart) {
  CopyExample("flask.yaml");
  StartKpxd();
  RequestLoop load(Prefix() + "client", kVip, 5000);
  ASSERT_TRUE(load.WaitMoreOk(50)) << load.Summary();
  std::vector<long> resume_ms, ready_ms;
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(StopKpxd(SIGKILL), -1);
    auto killed = Clock::now();
    // Wait until the loop notices (a request fails), so the measurement
    // covers a real outage.
    auto deadline = killed + std::chrono::seconds(5);
    while (load.FailedBetween(killed, Clock::now()) == 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(Ms(2));
    }
    ASSERT_GT(load.FailedBetween(killed, Clock::now()), 0) << "no failure while kpxd was dead?";
    auto restart = Clock::now();
    StartKpxd();
    ready_ms.push_back(MsBetween(restart, Clock::now()));
    ASSERT_TRUE(load.WaitMoreOk(20)) << Log();
    auto first = load.FirstOkStartedAfter(restart);
    ASSERT_TRUE(first.has_value());
    resume_ms.push_back(MsBetween(restart, *first));
  }
  load.Stop();
  std::cerr << "uring kill -9 x3: restart -> first success " << resume_ms[0] << ", "
            << resume_ms[1] << ", " << resume_ms[2] << " ms (status in_sync after "
            << ready_ms[0] << ", " << ready_ms[1] << ", " << ready_ms[2] << " ms); "
            << load.Summary() << "\n";
  for (long ms : resume_ms) EXPECT_LT(ms, 1000) << "service resumed too late after restart";
}

}  // namespace
}  // namespace kpx::e2e
