// The real HealthChecker (io_uring prober) against kpx-podserver processes in
// a network namespace the test creates (servers on 127.0.0.2-4 inside it):
//  - SIGKILL a server: on_change(down) within fall x interval + timeout (+
//    slack), measured over repeated kills; restart: up again after rise
//    successful probes.
//  - HTTP check: /healthz answering 503 (fail file) takes the backend down
//    while its TCP port still answers; removing the file brings it back.
//  - A hung server (SIGSTOP) under an HTTP check times out and goes down.
// Processes are killed by PID and the namespace deleted even on failure.
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "dataplane/health/health_checker.h"
#include "gtest/gtest.h"
#include "tests/testlib/netns.h"
#include "tests/testlib/testlib.h"

namespace kpx::health {
namespace {

using controller::BackendAddr;
namespace fs = std::filesystem;

constexpr uint16_t kPort = 8080;
// Scheduling noise of a loaded CI machine on top of the settings' bound.
constexpr absl::Duration kSlack = absl::Milliseconds(250);

// A kpx-podserver in the namespace, killed by PID when it goes.
class Pod {
 public:
  Pod(const testing::NetNs& ns, std::string ip, std::string fail_file)
      : ns_path_(ns.path()), ip_(std::move(ip)), fail_file_(std::move(fail_file)) {}
  ~Pod() { Kill(); }

  void Start() {
    const std::string bin = testing::BinaryPath("tools/podserver/kpx-podserver");
    const std::string name = "--name=pod-" + ip_;
    const std::string listen = absl::StrCat("--listen=", ip_, ":", kPort);
    const std::string fail = "--health-fail-file=" + fail_file_;
    const int nsfd = open(ns_path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(nsfd, 0);
    pid_ = fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      if (setns(nsfd, CLONE_NEWNET) != 0) _exit(126);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      execl(bin.c_str(), bin.c_str(), name.c_str(), listen.c_str(), fail.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(nsfd);
    ASSERT_GT(pid_, 0);
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  void Signal(int sig) { kill(pid_, sig); }
  BackendAddr addr() const { return BackendAddr{*Ipv4::Parse(ip_), kPort}; }

 private:
  std::string ns_path_;
  std::string ip_;
  std::string fail_file_;
  pid_t pid_ = -1;
};

struct Change {
  BackendAddr backend;
  bool up;
  absl::Time at;
  uint64_t probes;  // probes started on that backend when it was reported
};

class HealthNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    auto ns = testing::NetNs::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    char tmpl[] = "/tmp/kpx-health-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (int i = 0; i < 3; ++i) {
      const std::string ip = absl::StrCat("127.0.0.", i + 2);
      pods_.push_back(std::make_unique<Pod>(*ns_, ip, absl::StrCat(dir_, "/fail-", i)));
      pods_.back()->Start();
    }
    // The checker's thread (and so every probe socket) lives in the namespace.
    auto scope = ns_->Enter();
    ASSERT_TRUE(scope.ok()) << scope.status();
    auto hc = HealthChecker::Create(HealthOptions{}, [this](BackendAddr b, bool up) {
      uint64_t probes = 0;
      for (const auto& s : checker_->Stats().backends) {
        if (s.backend == b) probes = s.probes;
      }
      absl::MutexLock lock(&mu_);
      changes_.push_back({b, up, absl::Now(), probes});
    });
    scope->reset();
    ASSERT_TRUE(hc.ok()) << hc.status();
    checker_ = std::move(*hc);
  }
  void TearDown() override {
    if (checker_ != nullptr) checker_->Stop();
    pods_.clear();
    ns_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void SetTargets(const HealthSpec& spec) {
    std::vector<HealthTarget> targets;
    for (const auto& p : pods_) targets.push_back({p->addr(), spec, "default/web"});
    checker_->SetTargets(targets);
  }
  bool WaitState(BackendAddr b, HealthState s, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (checker_->StateOf(b) != s) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }
  // The first change for `b` with direction `up` at or after `since`.
  std::optional<Change> WaitChange(BackendAddr b, bool up, absl::Time since,
                                   absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        for (const Change& c : changes_) {
          if (c.backend == b && c.up == up && c.at >= since) return c;
        }
      }
      if (absl::Now() > deadline) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(2));
    }
  }
  uint64_t Probes(BackendAddr b) {
    for (const auto& s : checker_->Stats().backends) {
      if (s.backend == b) return s.probes;
    }
    return 0;
  }
  bool TcpAnswers(BackendAddr b) {
    bool ok = false;
    absl::Status st = ns_->RunIn([&] {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      timeval tv{2, 0};
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(b.port);
      a.sin_addr.s_addr = b.ip.be();
      ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
      close(fd);
    });
    return st.ok() && ok;
  }

  std::unique_ptr<testing::NetNs> ns_;
  std::string dir_;
  std::vector<std::unique_ptr<Pod>> pods_;
  std::unique_ptr<HealthChecker> checker_;
  absl::Mutex mu_;
  std::vector<Change> changes_;
};

TEST_F(HealthNetnsTest, KilledServerIsDownWithinTheBoundAndBackAfterRise) {
  const HealthSpec spec;  // the defaults
  const absl::Duration bound = spec.fall * spec.interval + spec.timeout;
  SetTargets(spec);
  for (const auto& p : pods_) ASSERT_TRUE(WaitState(p->addr(), HealthState::kHealthy, absl::Seconds(5)));

  std::mt19937 rng(12345);
  std::vector<absl::Duration> detect, recover;
  constexpr int kKills = 6;
  for (int k = 0; k < kKills; ++k) {
    Pod& pod = *pods_[k % pods_.size()];
    // Vary the phase of the kill against the probe cycle (not a wait for
    // anything: any moment must do).
    absl::SleepFor(absl::Milliseconds(rng() % 300));
    const absl::Time killed = absl::Now();
    pod.Kill();
    auto down = WaitChange(pod.addr(), false, killed, absl::Seconds(5));
    ASSERT_TRUE(down.has_value()) << "kill " << k << ": never reported down";
    detect.push_back(down->at - killed);
    EXPECT_LE(down->at - killed, bound + kSlack) << "kill " << k;
    // The others were not disturbed.
    for (const auto& p : pods_) {
      if (p.get() != &pod) {
        EXPECT_NE(checker_->StateOf(p->addr()), HealthState::kDown);
      }
    }

    const uint64_t probes_at_restart = Probes(pod.addr());
    const absl::Time restarted = absl::Now();
    pod.Start();
    // Down probes back off from 1 s, doubling: when the kill-to-restart gap
    // (slow under load) let a second down probe fail, the next one comes
    // within 2 x 1.2 s, then rise - 1 more at the suspect interval.
    auto up = WaitChange(pod.addr(), true, restarted, absl::Seconds(10));
    ASSERT_TRUE(up.has_value()) << "kill " << k << ": never came back";
    recover.push_back(up->at - restarted);
    EXPECT_GE(up->probes - probes_at_restart, static_cast<uint64_t>(spec.rise))
        << "up only after rise successful probes";
    EXPECT_LE(up->at - restarted,
              2 * spec.down_backoff * (1 + spec.jitter) + (spec.rise - 1) * spec.suspect_interval +
                  absl::Milliseconds(200) + kSlack);
    ASSERT_TRUE(WaitState(pod.addr(), HealthState::kHealthy, absl::Seconds(2)));
  }
  std::sort(detect.begin(), detect.end());
  std::sort(recover.begin(), recover.end());
  printf("kill -> down over %d kills: min %s  median %s  max %s  (bound %s + slack %s)\n", kKills,
         absl::FormatDuration(detect.front()).c_str(),
         absl::FormatDuration(detect[detect.size() / 2]).c_str(),
         absl::FormatDuration(detect.back()).c_str(), absl::FormatDuration(bound).c_str(),
         absl::FormatDuration(kSlack).c_str());
  printf("restart -> up: min %s  median %s  max %s\n", absl::FormatDuration(recover.front()).c_str(),
         absl::FormatDuration(recover[recover.size() / 2]).c_str(),
         absl::FormatDuration(recover.back()).c_str());
  RecordProperty("detect_max_ms", static_cast<int>(absl::ToInt64Milliseconds(detect.back())));
}

TEST_F(HealthNetnsTest, HttpCheckFailsWhileTheTcpPortStillAnswers) {
  HealthSpec spec;
  spec.type = CheckType::kHttp;
  spec.path = "/healthz";
  const absl::Duration bound = spec.fall * spec.interval + spec.timeout;
  SetTargets(spec);
  for (const auto& p : pods_) ASSERT_TRUE(WaitState(p->addr(), HealthState::kHealthy, absl::Seconds(5)));

  const BackendAddr sick = pods_[1]->addr();
  const std::string fail_file = dir_ + "/fail-1";
  const absl::Time t0 = absl::Now();
  FILE* f = fopen(fail_file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  auto down = WaitChange(sick, false, t0, absl::Seconds(5));
  ASSERT_TRUE(down.has_value());
  EXPECT_LE(down->at - t0, bound + kSlack);
  EXPECT_TRUE(TcpAnswers(sick)) << "the port answers; only the HTTP check fails";
  EXPECT_EQ(checker_->StateOf(pods_[0]->addr()), HealthState::kHealthy);
  HealthStats st = checker_->Stats();
  EXPECT_EQ(st.backends[1].last_http_status, 503);

  const absl::Time t1 = absl::Now();
  fs::remove(fail_file);
  auto up = WaitChange(sick, true, t1, absl::Seconds(10));
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(checker_->Stats().backends[1].last_http_status, 200);
}

TEST_F(HealthNetnsTest, HungServerTimesOutUnderHttpCheck) {
  HealthSpec spec;
  spec.type = CheckType::kHttp;
  spec.path = "/healthz";
  SetTargets(spec);
  for (const auto& p : pods_) ASSERT_TRUE(WaitState(p->addr(), HealthState::kHealthy, absl::Seconds(5)));
  // Worst case with every probe running into its timeout (health_spec.h).
  const absl::Duration bound = spec.interval * (1 + spec.jitter) +
                               (spec.fall - 1) * std::max(spec.suspect_interval, spec.timeout) +
                               spec.timeout;
  Pod& pod = *pods_[2];
  const absl::Time t0 = absl::Now();
  pod.Signal(SIGSTOP);  // the kernel still accepts; nobody answers
  auto down = WaitChange(pod.addr(), false, t0, absl::Seconds(5));
  const int last_error = checker_->Stats().backends[2].last_error;  // before it answers again
  pod.Signal(SIGCONT);
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(last_error, ETIMEDOUT);
  EXPECT_LE(down->at - t0, bound + kSlack);
  EXPECT_GE(down->at - t0, spec.fall * spec.timeout - absl::Milliseconds(20))
      << "it took fall timeouts";
  auto up = WaitChange(pod.addr(), true, t0, absl::Seconds(10));
  EXPECT_TRUE(up.has_value());
}

}  // namespace
}  // namespace kpx::health
