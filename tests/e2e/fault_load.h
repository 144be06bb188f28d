// Load of the fault-injection e2e tests (tests/e2e/fault_*_test.cc): a bounded
// request loop and long-lived echo flows, each on its own thread inside the
// client namespace, recording what failed and when, so a test can say what a
// fault cost (failed requests, broken flows, outage length).
#pragma once

#include <atomic>
#include <mutex>

#include "absl/strings/str_join.h"

#include "tests/e2e/kpxd_lab_fixture.h"

namespace kpx::e2e {

using Ms = std::chrono::milliseconds;

inline long MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<Ms>(b - a).count();
}

// Enters the named netns on the calling thread (for threads that stay there).
inline bool EnterNetns(const std::string& ns) {
  int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  bool ok = fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

// HttpGet (kpxd_lab_fixture.h) that says why it failed: "" on success, else
// "connect: <errno text>", "send", or "response: <first bytes>".
inline std::string HttpGetError(const char* ip, int port) {
  int fd = ConnectTimeout(ip, port, 2000);
  if (fd < 0) return std::string("connect: ") + strerror(-fd);
  std::string req = "GET / HTTP/1.1\r\nHost: kpx\r\nConnection: close\r\n\r\n";
  std::string err;
  if (!SendAll(fd, req.data(), req.size())) {
    err = std::string("send: ") + strerror(errno);
  } else {
    // ReadToEof, but an EINTR (a signal to this test process) is retried:
    // it is no failure of the proxy.
    std::string resp;
    char buf[4096];
    errno = 0;
    for (int i = 0; i < 10000; ++i) {
      ssize_t r = recv(fd, buf, sizeof(buf), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      resp.append(buf, r);
    }
    size_t pos = resp.find("\r\n\r\n");
    if (resp.rfind("HTTP/1.1 200", 0) != 0 || pos == std::string::npos || pos + 4 >= resp.size()) {
      err = absl::StrFormat("response (%d bytes, errno %s): %s", resp.size(), strerror(errno),
                            resp.substr(0, 40));
    }
  }
  close(fd);
  return err;
}

// HTTP GETs to ip:port from `ns`, one at a time (new connection each), until
// Stop(), `max_requests` or `max_time`. A failure is followed by a 5 ms pause
// so a refusing VIP does not turn the loop into a spin.
class RequestLoop {
 public:
  struct Result {
    Clock::time_point start, end;
    bool ok;
  };

  RequestLoop(std::string ns, std::string ip, int port, int max_requests = 500000,
              std::chrono::seconds max_time = std::chrono::seconds(60))
      : thread_([=, this] { Run(ns, ip, port, max_requests, max_time); }) {}
  ~RequestLoop() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int ok() const { return ok_; }
  int failed() const { return failed_; }
  bool entered() const { return entered_; }

  // Waits (bounded) for `n` more successful requests than now.
  bool WaitMoreOk(int n, Ms limit = Ms(5000)) const {
    int target = ok_ + n;
    auto deadline = Clock::now() + limit;
    while (ok_ < target && Clock::now() < deadline) std::this_thread::sleep_for(Ms(2));
    return ok_ >= target;
  }
  // The first successful request that started at or after `t`.
  std::optional<Clock::time_point> FirstOkStartedAfter(Clock::time_point t) const {
    std::lock_guard<std::mutex> l(mu_);
    for (const Result& r : results_) {
      if (r.ok && r.start >= t) return r.end;
    }
    return std::nullopt;
  }
  // Failed requests that started in [from, to).
  int FailedBetween(Clock::time_point from, Clock::time_point to) const {
    std::lock_guard<std::mutex> l(mu_);
    int n = 0;
    for (const Result& r : results_) n += !r.ok && r.start >= from && r.start < to;
    return n;
  }
  // Longest time between the ends of two consecutive successful requests.
  long LongestGapMs() const {
    std::lock_guard<std::mutex> l(mu_);
    long worst = 0;
    std::optional<Clock::time_point> last;
    for (const Result& r : results_) {
      if (!r.ok) continue;
      if (last) worst = std::max(worst, MsBetween(*last, r.end));
      last = r.end;
    }
    return worst;
  }
  std::string Summary() const {
    std::string s = absl::StrFormat("%d requests, %d failed, longest gap between successes %d ms",
                                    ok_ + failed_, failed_, LongestGapMs());
    std::lock_guard<std::mutex> l(mu_);
    if (!errors_.empty()) s += " (first failures: " + absl::StrJoin(errors_, "; ") + ")";
    return s;
  }

 private:
  void Run(const std::string& ns, const std::string& ip, int port, int max_requests,
           std::chrono::seconds max_time) {
    if (!EnterNetns(ns)) return;
    entered_ = true;
    auto deadline = Clock::now() + max_time;
    for (int i = 0; i < max_requests && !stop_ && Clock::now() < deadline; ++i) {
      Result r;
      r.start = Clock::now();
      std::string err = HttpGetError(ip.c_str(), port);
      r.ok = err.empty();
      r.end = Clock::now();
      {
        std::lock_guard<std::mutex> l(mu_);
        results_.push_back(r);
        if (!r.ok && errors_.size() < 5) errors_.push_back(err);
      }
      if (r.ok) {
        ++ok_;
      } else {
        ++failed_;
        std::this_thread::sleep_for(Ms(5));
      }
    }
  }

  mutable std::mutex mu_;
  std::vector<Result> results_;
  std::vector<std::string> errors_;
  std::atomic<int> ok_{0}, failed_{0};
  std::atomic<bool> stop_{false}, entered_{false};
  std::thread thread_;
};

// `n` long-lived connections to an echo port, opened from `ns`; a thread
// round-robins a numbered message over them every `period` and checks the
// echo. A connection whose echo fails (reset, EOF, no answer within
// kEchoTimeoutSeconds) or differs counts as broken and is closed. Bounded by Stop()
// and `max_time`.
class EchoFlows {
 public:
  EchoFlows(std::string ns, std::string ip, int port, int n, Ms period = Ms(5),
            std::chrono::seconds max_time = std::chrono::seconds(90))
      : thread_([=, this] { Run(ns, ip, port, n, period, max_time); }) {
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!started_ && Clock::now() < deadline) std::this_thread::sleep_for(Ms(2));
  }
  ~EchoFlows() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int opened() const { return opened_; }
  int broken() const { return broken_; }
  long round_trips() const { return round_trips_; }
  std::string first_error() const {
    std::lock_guard<std::mutex> l(mu_);
    return errors_;
  }
  bool WaitMoreRoundTrips(long n, Ms limit = Ms(5000)) const {
    long target = round_trips_ + n;
    auto deadline = Clock::now() + limit;
    while (round_trips_ < target && Clock::now() < deadline) std::this_thread::sleep_for(Ms(2));
    return round_trips_ >= target;
  }

 private:
  void Run(const std::string& ns, const std::string& ip, int port, int n, Ms period,
           std::chrono::seconds max_time) {
    std::vector<int> fds;
    if (EnterNetns(ns)) {
      for (int i = 0; i < n; ++i) {
        int fd = ConnectTimeout(ip.c_str(), port, 2000);
        if (fd < 0) continue;
        // Late is not lost: TCP recovers a flow across a multi-second stall
        // of the loaded 2-core machine (seen once: 8 s with every process
        // in the lab stalled), and the stall is not what these tests judge.
        timeval tv{kEchoTimeoutSeconds, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        fds.push_back(fd);
      }
    }
    opened_ = static_cast<int>(fds.size());
    started_ = true;
    auto deadline = Clock::now() + max_time;
    for (long seq = 0; !stop_ && Clock::now() < deadline; ++seq) {
      for (int& fd : fds) {
        if (fd < 0) continue;
        std::string msg = absl::StrFormat("%d:%d\n", fd, seq);
        std::string got;
        char buf[256];
        bool ok = SendAll(fd, msg.data(), msg.size());
        std::string why = ok ? "" : std::string("send: ") + strerror(errno);
        while (ok && got.size() < msg.size()) {
          ssize_t r = recv(fd, buf, std::min(sizeof(buf), msg.size() - got.size()), 0);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) {
            ok = false;
            why = r == 0 ? "recv: EOF" : std::string("recv: ") + strerror(errno);
          }
          if (r > 0) got.append(buf, r);
        }
        if (ok && got == msg) {
          ++round_trips_;
        } else {
          if (why.empty()) why = "echo differs";
          {
            std::lock_guard<std::mutex> l(mu_);
            if (errors_.empty()) errors_ = why;
          }
          ++broken_;
          close(fd);
          fd = -1;
        }
      }
      std::this_thread::sleep_for(period);
    }
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
  }

  static constexpr int kEchoTimeoutSeconds = 15;
  mutable std::mutex mu_;
  std::string errors_;  // why the first flow broke
  std::atomic<int> opened_{0}, broken_{0};
  std::atomic<long> round_trips_{0};
  std::atomic<bool> stop_{false}, started_{false};
  std::thread thread_;
};

// CPU time (user + system, ms) a process has used, from /proc/PID/stat.
inline long ProcessCpuMs(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close_paren + 2));
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stol(f);
    if (i == 15) stime = std::stol(f);
  }
  return (utime + stime) * 1000 / sysconf(_SC_CLK_TCK);
}

// PID recorded by tools/lab.sh for pod I's server ("PID STARTTIME").
inline pid_t PodServerPid(const std::string& prefix, int pod) {
  std::ifstream in("/run/" + prefix + "lab/pod" + std::to_string(pod) + ".pid");
  pid_t pid = -1;
  in >> pid;
  return pid;
}

}  // namespace kpx::e2e
