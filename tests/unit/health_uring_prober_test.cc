// UringProber against real sockets on loopback (127.0.0.1 only, ephemeral
// ports): TCP up / refused / timeout (a listener whose accept queue is full
// drops SYNs), HTTP 2xx/3xx/5xx/garbage/split/silent, the request it sends,
// many probes in flight together on one thread, and Wake from another thread.
#include "dataplane/health/uring_prober.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::health {
namespace {

const Ipv4 kLoopback = *Ipv4::Parse("127.0.0.1");

// A listening socket on 127.0.0.1:<ephemeral>.
int Listen(int backlog, uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = kLoopback.be();
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, backlog) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// A port nothing listens on (bound, then closed).
uint16_t ClosedPort() {
  uint16_t port = 0;
  int fd = Listen(1, &port);
  close(fd);
  return port;
}

// One-thread HTTP-ish server: reads a request head, records it, then sends
// `chunks` (each after `gap`) and closes, or stays silent when `silent`.
// Every wait is bounded.
class TestServer {
 public:
  struct Reply {
    std::vector<std::string> chunks;
    absl::Duration gap = absl::ZeroDuration();
    bool silent = false;
  };
  explicit TestServer(Reply reply) : reply_(std::move(reply)) {
    fd_ = Listen(128, &port_);
    thread_ = std::thread([this] { Loop(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  uint16_t port() const { return port_; }
  std::vector<std::string> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  void Loop() {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!stop_ && absl::Now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{1, 0};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      std::string head;
      char buf[512];
      while (!absl::StrContains(head, "\r\n\r\n") && head.size() < 8192) {
        ssize_t n = recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        head.append(buf, n);
      }
      {
        absl::MutexLock lock(&mu_);
        requests_.push_back(head);
      }
      if (reply_.silent) {
        // Hold the connection open until the prober gives up (it resets).
        pollfd q{c, POLLIN, 0};
        poll(&q, 1, 2000);
      } else {
        for (const std::string& chunk : reply_.chunks) {
          if (reply_.gap > absl::ZeroDuration()) absl::SleepFor(reply_.gap);
          send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        }
      }
      close(c);
    }
  }

  Reply reply_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<std::string> requests_ ABSL_GUARDED_BY(mu_);
};

class UringProberTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = UringProber::Create();
    ASSERT_TRUE(p.ok()) << p.status();
    prober_ = std::move(*p);
    prober_->SetCallback([this](uint64_t id, const ProbeResult& r) { results_[id] = r; });
  }

  // Starts the probes and polls until all have reported (bounded).
  std::map<uint64_t, ProbeResult> RunAll(const std::vector<ProbeRequest>& reqs) {
    results_.clear();
    for (size_t i = 0; i < reqs.size(); ++i) prober_->Start(i + 1, reqs[i]);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (results_.size() < reqs.size() && absl::Now() < deadline) {
      prober_->Poll(absl::Milliseconds(50));
    }
    EXPECT_EQ(results_.size(), reqs.size());
    EXPECT_EQ(prober_->in_flight(), 0u);
    return results_;
  }
  ProbeResult Run(const ProbeRequest& req) {
    auto all = RunAll({req});
    return all.empty() ? ProbeResult{} : all.begin()->second;
  }

  static ProbeRequest Tcp(uint16_t port, absl::Duration timeout = absl::Milliseconds(200)) {
    ProbeRequest r;
    r.ip = kLoopback;
    r.port = port;
    r.type = CheckType::kTcp;
    r.timeout = timeout;
    return r;
  }
  static ProbeRequest Http(uint16_t port, std::string path = "/healthz",
                           absl::Duration timeout = absl::Milliseconds(300)) {
    ProbeRequest r = Tcp(port, timeout);
    r.type = CheckType::kHttp;
    r.path = std::move(path);
    return r;
  }

  std::unique_ptr<UringProber> prober_;
  std::map<uint64_t, ProbeResult> results_;
};

TEST_F(UringProberTest, TcpListenerUpIsHealthy) {
  uint16_t port;
  int fd = Listen(16, &port);
  ASSERT_GE(fd, 0);
  ProbeResult r = Run(Tcp(port));
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.err, 0);
  EXPECT_LT(r.latency, absl::Milliseconds(100));
  close(fd);
}

TEST_F(UringProberTest, ClosedPortFailsFast) {
  ProbeResult r = Run(Tcp(ClosedPort(), absl::Seconds(2)));
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.local_error);
  EXPECT_EQ(r.err, ECONNREFUSED);
  EXPECT_LT(r.latency, absl::Milliseconds(100)) << "refused, not timed out";
}

TEST_F(UringProberTest, FullAcceptQueueTimesOut) {
  // backlog 0 holds one connection; once it is queued (never accepted),
  // further SYNs are dropped: the probe's connect hangs until its timeout.
  uint16_t port;
  int fd = Listen(0, &port);
  ASSERT_GE(fd, 0);
  int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = kLoopback.be();
  ASSERT_EQ(connect(filler, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ProbeResult r = Run(Tcp(port, absl::Milliseconds(150)));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.err, ETIMEDOUT);
  EXPECT_GE(r.latency, absl::Milliseconds(140));
  EXPECT_LT(r.latency, absl::Milliseconds(600));
  close(filler);
  close(fd);
}

TEST_F(UringProberTest, HttpStatusDecides) {
  struct Case {
    std::string reply;
    bool ok;
    int status;
    int err;
  };
  const Case cases[] = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", true, 200, 0},
      {"HTTP/1.1 204 No Content\r\n\r\n", true, 204, 0},
      {"HTTP/1.0 301 Moved\r\nLocation: /x\r\n\r\n", true, 301, 0},
      {"HTTP/1.1 404 Not Found\r\n\r\n", false, 404, 0},
      {"HTTP/1.1 503 Service Unavailable\r\n\r\nunhealthy\n", false, 503, 0},
      {"SSH-2.0-OpenSSH_9.2\r\n", false, 0, EPROTO},
      {"", false, 0, EPROTO},  // closed without a reply
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.reply);
    TestServer server({{c.reply}});
    ProbeResult r = Run(Http(server.port()));
    EXPECT_EQ(r.ok, c.ok);
    EXPECT_EQ(r.http_status, c.status);
    EXPECT_EQ(r.err, c.err);
  }
}

TEST_F(UringProberTest, HttpSendsAWellFormedRequest) {
  TestServer server({{"HTTP/1.1 200 OK\r\n\r\n"}});
  ASSERT_TRUE(Run(Http(server.port(), "/ready?x=1")).ok);
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(reqs[0], "GET /ready?x=1 HTTP/1.1\r\n")) << reqs[0];
  EXPECT_TRUE(absl::StrContains(reqs[0], "\r\nHost: 127.0.0.1:" + std::to_string(server.port()) + "\r\n"));
  EXPECT_TRUE(absl::StrContains(reqs[0], "\r\nConnection: close\r\n"));
  EXPECT_TRUE(absl::EndsWith(reqs[0], "\r\n\r\n"));
}

TEST_F(UringProberTest, HttpStatusLineInPieces) {
  TestServer server({{"HT", "TP/1.1 2", "00", " OK\r\n\r\n"}, absl::Milliseconds(10)});
  ProbeResult r = Run(Http(server.port()));
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.http_status, 200);
}

TEST_F(UringProberTest, HttpSilentServerTimesOut) {
  TestServer server({{}, absl::ZeroDuration(), /*silent=*/true});
  ProbeResult r = Run(Http(server.port(), "/", absl::Milliseconds(150)));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.err, ETIMEDOUT);
  EXPECT_GE(r.latency, absl::Milliseconds(140));
  EXPECT_LT(r.latency, absl::Milliseconds(600));
}

TEST_F(UringProberTest, HttpToAClosedPortIsRefused) {
  ProbeResult r = Run(Http(ClosedPort()));
  EXPECT_EQ(r.err, ECONNREFUSED);
}

// One thread, one ring: many probes overlap. 64 probes that each wait 200 ms
// for their timeout finish in about one timeout, not 64 of them.
TEST_F(UringProberTest, ProbesRunConcurrently) {
  uint16_t full_port;
  int full = Listen(0, &full_port);
  int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(full_port);
  a.sin_addr.s_addr = kLoopback.be();
  ASSERT_EQ(connect(filler, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  uint16_t up_port;
  int up = Listen(4096, &up_port);
  std::vector<ProbeRequest> reqs;
  for (int i = 0; i < 64; ++i) reqs.push_back(Tcp(full_port));
  for (int i = 0; i < 500; ++i) reqs.push_back(Tcp(up_port));
  const absl::Time start = absl::Now();
  auto results = RunAll(reqs);
  const absl::Duration took = absl::Now() - start;
  int timeouts = 0, oks = 0;
  for (const auto& [id, r] : results) {
    if (r.ok) ++oks;
    if (r.err == ETIMEDOUT) ++timeouts;
  }
  EXPECT_EQ(timeouts, 64);
  EXPECT_EQ(oks, 500);
  EXPECT_LT(took, absl::Seconds(2)) << "timeouts ran in parallel";
  close(filler);
  close(full);
  close(up);
}

TEST_F(UringProberTest, SlotsAreReused) {
  uint16_t port;
  int fd = Listen(1024, &port);
  for (int round = 0; round < 20; ++round) {
    std::vector<ProbeRequest> reqs(50, Tcp(port));
    auto results = RunAll(reqs);
    for (const auto& [id, r] : results) ASSERT_TRUE(r.ok) << round;
    // Drain the accept queue so the backlog never fills.
    fcntl(fd, F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 50; ++i) {
      int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c >= 0) close(c);
    }
  }
  close(fd);
}

TEST_F(UringProberTest, WakeEndsAWaitFromAnotherThread) {
  std::thread waker([this] {
    absl::SleepFor(absl::Milliseconds(50));
    prober_->Wake();
  });
  const absl::Time start = absl::Now();
  prober_->Poll(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  waker.join();
  // And it is re-armed: a second wake works as well.
  std::thread again([this] {
    absl::SleepFor(absl::Milliseconds(50));
    prober_->Wake();
  });
  const absl::Time start2 = absl::Now();
  prober_->Poll(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start2, absl::Seconds(5));
  again.join();
}

TEST(HttpStatusFromResponseTest, Table) {
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 200 OK\r\n", false), 200);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.0 302\r\n", false), 302);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 200", true), 200);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 200", false), kNeedMore);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 2", false), kNeedMore);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 2", true), kGarbage);
  EXPECT_EQ(HttpStatusFromResponse("", false), kNeedMore);
  EXPECT_EQ(HttpStatusFromResponse("", true), kGarbage);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/2 200 OK\r\n", false), kGarbage);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 20x OK", false), kGarbage);
  EXPECT_EQ(HttpStatusFromResponse("HTTP/1.1 2000 OK", false), kGarbage);
  EXPECT_EQ(HttpStatusFromResponse("<html>", false), kGarbage);
  EXPECT_EQ(HttpStatusFromResponse("H", false), kNeedMore);
}

}  // namespace
}  // namespace kpx::health
