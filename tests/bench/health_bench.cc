// Health checker cost (docs: dataplane/health/README.md):
//  - BM_SchedulerPerProbe: state machine + scheduler per probe at n backends
//    (simulated time, a prober that answers at once): the checker's own CPU.
//  - BM_UringProberTcp: the real io_uring prober, TCP connect probes to a
//    loopback listener, k in flight: probes per second of one thread,
//    including the kernel's handshake work on both ends.
//  - BM_CheckerAt10k: the whole HealthChecker thread with 10k backends at the
//    default 300 ms interval for a few seconds against loopback: CPU share of
//    one core actually used.
// Loopback only (127.0.0.1); every loop is bounded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "dataplane/health/clock.h"
#include "dataplane/health/health_checker.h"
#include "dataplane/health/health_scheduler.h"
#include "dataplane/health/uring_prober.h"

namespace kpx::health {
namespace {

// Answers every probe ok, at once, when the bench says so.
class InstantProber final : public Prober {
 public:
  void SetCallback(Callback cb) override { cb_ = std::move(cb); }
  void Start(uint64_t id, const ProbeRequest&) override { started_.push_back(id); }
  void Poll(absl::Duration) override {
    pending_.swap(started_);
    ProbeResult r;
    r.ok = true;
    r.latency = absl::Microseconds(50);
    for (uint64_t id : pending_) cb_(id, r);
    pending_.clear();
  }
  void Wake() override {}
  size_t in_flight() const override { return started_.size(); }

 private:
  Callback cb_;
  std::vector<uint64_t> started_, pending_;
};

void BM_SchedulerPerProbe(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  FakeClock clock;
  InstantProber prober;
  SchedulerOptions o;
  o.seed = 1;
  o.max_probes_per_second = 0;
  o.max_in_flight = 1 << 20;
  HealthScheduler sched(o, &prober, [](controller::BackendAddr, bool) {});
  prober.SetCallback([&](uint64_t id, const ProbeResult& r) { sched.OnProbeDone(id, r, clock.Now()); });
  std::vector<HealthTarget> targets;
  for (int i = 0; i < n; ++i) {
    targets.push_back({{Ipv4::FromHost(0x0a000000 + i), 8080}, HealthSpec{}, "default/web"});
  }
  sched.SetTargets(targets, clock.Now());
  // Warm up one simulated second: every backend on its steady cadence.
  for (int tick = 0; tick < 1000; ++tick) {
    clock.Advance(absl::Milliseconds(1));
    sched.RunDue(clock.Now());
    prober.Poll(absl::ZeroDuration());
  }
  uint64_t probes_before = sched.Stats(false).probes_sent;
  for (auto _ : state) {
    // One simulated second per iteration, in 1 ms ticks (as the real loop
    // would wake about that often at this load): the time per iteration is
    // the share of one core that n backends need.
    for (int tick = 0; tick < 1000; ++tick) {
      clock.Advance(absl::Milliseconds(1));
      sched.RunDue(clock.Now());
      prober.Poll(absl::ZeroDuration());
    }
  }
  const uint64_t probes = sched.Stats(false).probes_sent - probes_before;
  state.SetItemsProcessed(static_cast<int64_t>(probes));
  state.counters["probes_per_sim_s"] =
      benchmark::Counter(static_cast<double>(probes) / state.iterations());
}
BENCHMARK(BM_SchedulerPerProbe)->Arg(1000)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);

int ListenLoopback(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, 4096) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// Accepts and closes, so the listener's queue never fills ("the pods").
class Acceptor {
 public:
  explicit Acceptor(int fd) : fd_(fd), thread_([this] { Run(); }) {}
  ~Acceptor() {
    stop_ = true;
    thread_.join();
  }
  double cpu_seconds() const { return cpu_.load(); }

 private:
  void Run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      for (int i = 0; i < 1024; ++i) {
        int c = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        close(c);
      }
      rusage ru;
      getrusage(RUSAGE_THREAD, &ru);
      cpu_ = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
             (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
  }
  int fd_;
  std::atomic<bool> stop_{false};
  std::atomic<double> cpu_{0};
  std::thread thread_;
};

void BM_UringProberTcp(benchmark::State& state) {
  const int in_flight = static_cast<int>(state.range(0));
  uint16_t port;
  int lfd = ListenLoopback(&port);
  if (lfd < 0) {
    state.SkipWithError("cannot listen on 127.0.0.1");
    return;
  }
  Acceptor acceptor(lfd);
  auto p = UringProber::Create(1024);
  if (!p.ok()) {
    state.SkipWithError(std::string(p.status().message()).c_str());
    close(lfd);
    return;
  }
  UringProber& prober = **p;
  int64_t done = 0, failed = 0;
  prober.SetCallback([&](uint64_t, const ProbeResult& r) {
    ++done;
    if (!r.ok) ++failed;
  });
  ProbeRequest req;
  req.ip = Ipv4::FromHost(0x7f000001);
  req.port = port;
  req.timeout = absl::Seconds(1);
  uint64_t id = 0;
  for (auto _ : state) {
    // 2000 probes, `in_flight` at a time.
    const int64_t target = done + 2000;
    int started = 0;
    while (done < target) {
      while (started < 2000 && static_cast<int>(prober.in_flight()) < in_flight) {
        prober.Start(++id, req);
        ++started;
      }
      prober.Poll(absl::Milliseconds(10));
    }
  }
  state.SetItemsProcessed(done);
  state.counters["failed"] = static_cast<double>(failed);
  close(lfd);
}
BENCHMARK(BM_UringProberTcp)->Arg(1)->Arg(64)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();

double ProcessCpuSeconds(double* user = nullptr) {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  if (user != nullptr) *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// 10k distinct backends (127.0.0.1:1..10000 as the overlay names them), all
// probed through kpx.io/health-port on one loopback listener, at the default
// 300 ms interval: ~33k probes/s from one checker thread.
void BM_CheckerAt10k(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  uint16_t port;
  int lfd = ListenLoopback(&port);
  if (lfd < 0) {
    state.SkipWithError("cannot listen on 127.0.0.1");
    return;
  }
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  Acceptor acceptor(lfd);
  std::atomic<int> downs{0};
  HealthOptions o;
  o.scheduler.seed = 1;
  o.batch_window = absl::Microseconds(state.range(1));
  auto hc = HealthChecker::Create(o, [&](controller::BackendAddr, bool up) {
    if (!up) ++downs;
  });
  if (!hc.ok()) {
    state.SkipWithError(std::string(hc.status().message()).c_str());
    close(lfd);
    return;
  }
  std::vector<HealthTarget> targets;
  HealthSpec spec;
  spec.port = port;
  for (int i = 0; i < n; ++i) {
    targets.push_back({{Ipv4::FromHost(0x7f000001), static_cast<uint16_t>(i + 1)}, spec, "bench/x"});
  }
  (*hc)->SetTargets(targets);
  absl::SleepFor(absl::Seconds(1));  // ramp: every target past its first probe
  for (auto _ : state) {
    const uint64_t probes0 = (*hc)->Stats(false).probes_sent;
    double user0, user1;
    const double cpu0 = ProcessCpuSeconds(&user0) - acceptor.cpu_seconds();
    const absl::Time t0 = absl::Now();
    absl::SleepFor(absl::Seconds(5));
    const double wall = absl::ToDoubleSeconds(absl::Now() - t0);
    const double cpu = ProcessCpuSeconds(&user1) - acceptor.cpu_seconds() - cpu0;
    const uint64_t probes = (*hc)->Stats(false).probes_sent - probes0;
    state.counters["probes_per_s"] = probes / wall;
    state.counters["checker_cpu_share"] = cpu / wall;  // of one core, incl. loopback kernel work
    state.counters["us_cpu_per_probe"] = cpu * 1e6 / probes;
    state.counters["user_share"] = (user1 - user0) / wall;  // userspace part (acceptor's too)
  }
  HealthStats st = (*hc)->Stats(false);
  state.counters["downs"] = downs.load();
  state.counters["failures"] = static_cast<double>(st.probe_failures);
  state.counters["local_errors"] = static_cast<double>(st.local_errors);
  state.counters["in_flight_at_end"] = static_cast<double>(st.in_flight);
  state.counters["rate_limited"] = static_cast<double>(st.rate_limited);
  (*hc)->Stop();
  close(lfd);
}
// Args: backends, batch window (us; 1000 is the default, 0 = one wake-up per probe).
BENCHMARK(BM_CheckerAt10k)->Args({10000, 0})->Args({10000, 1000})->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace
}  // namespace kpx::health

BENCHMARK_MAIN();
