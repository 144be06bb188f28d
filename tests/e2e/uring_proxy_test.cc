// End-to-end tests of UringProxy in a network namespace the test creates:
// real backend servers on loopback addresses, the VIP on kpx0 (created by the
// proxy inside the namespace), real client connections through it.
#include "dataplane/uring/uring_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/netns.h"
#include "tests/e2e/uring_test_util.h"
#include "tests/testlib/testlib.h"

namespace kpx::uring {
namespace {

using e2e::Addr;
using e2e::BackendServer;
using e2e::Connect;
using e2e::EchoTransfer;
using e2e::Ip;
using e2e::ReadLine;
using e2e::ReadToEof;
using e2e::ResetWithin2s;
using e2e::SendAll;
using e2e::SetTimeouts;
using e2e::WaitFor;
using e2e::WhoAnswers;

using controller::Backend;
using controller::FrontendKey;
using controller::ServiceRule;
using controller::TableDiff;
using ::testing::HasSubstr;
using ::testing::Not;

class RecordingSink : public ProxyEventSink {
 public:
  void OnConnectFailed(Ipv4 ip, uint16_t, int err) override {
    absl::MutexLock lock(&mu_);
    failures_[ip.ToString()]++;
    last_error_ = err;
  }
  void OnConnectSucceeded(Ipv4 ip, uint16_t) override {
    absl::MutexLock lock(&mu_);
    successes_[ip.ToString()]++;
  }
  int failures(const std::string& ip) {
    absl::MutexLock lock(&mu_);
    return failures_[ip];
  }
  int successes(const std::string& ip) {
    absl::MutexLock lock(&mu_);
    return successes_[ip];
  }
  int last_error() {
    absl::MutexLock lock(&mu_);
    return last_error_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, int> failures_, successes_;
  int last_error_ = 0;
};

// The namespace helper the tests below stand on.
TEST(NetNsHelper, CreatesEntersRunsAndDeletes) {
  std::string reason = testing::MissingRootReason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  auto own_ns = [] {
    char buf[64] = {};
    ssize_t n = readlink("/proc/thread-self/ns/net", buf, sizeof(buf) - 1);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  };
  const std::string before = own_ns();
  std::string name;
  {
    absl::StatusOr<std::unique_ptr<testing::NetNs>> ns = testing::NetNs::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    name = (*ns)->name();
    EXPECT_THAT(name, ::testing::StartsWith(absl::StrCat("kpx-t-", getpid(), "-")));
    absl::StatusOr<std::string> lo = (*ns)->Exec("ip -o link show lo");
    ASSERT_TRUE(lo.ok()) << lo.status();
    EXPECT_THAT(*lo, HasSubstr("UP"));
    EXPECT_FALSE((*ns)->Exec("exit 3").ok());
    {
      auto scope = (*ns)->Enter();
      ASSERT_TRUE(scope.ok()) << scope.status();
      EXPECT_NE(own_ns(), before);
      // A fresh namespace has lo and nothing else (none of the host's links).
      absl::StatusOr<std::string> devs = testing::RunCommand({"cat", "/proc/thread-self/net/dev"});
      ASSERT_TRUE(devs.ok());
      int links = 0;
      for (char ch : *devs) links += ch == ':';
      EXPECT_EQ(links, 1) << *devs;
    }
    EXPECT_EQ(own_ns(), before);
    std::string inside;
    ASSERT_TRUE((*ns)->RunIn([&] { inside = own_ns(); }).ok());
    EXPECT_NE(inside, before);
  }
  EXPECT_EQ(access(("/run/netns/" + name).c_str(), F_OK), -1) << "deleted by the destructor";
}

constexpr char kVip[] = "10.96.0.10";
constexpr uint16_t kPort = 80;
constexpr uint16_t kBackendPort = 8080;

class UringProxyE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason = testing::MissingRootReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    absl::StatusOr<std::unique_ptr<testing::NetNs>> ns = testing::NetNs::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    auto scope = ns_->Enter();  // workers and servers started below inherit it
    ASSERT_TRUE(scope.ok()) << scope.status();
    scope_ = std::move(*scope);
  }
  void TearDown() override {
    proxy_.reset();
    servers_.clear();
    scope_.reset();
    ns_.reset();
  }

  UringProxy* StartProxy(UringProxyOptions options = {}) {
    if (options.workers == 0) options.workers = 2;
    if (options.rng_seed == 0) options.rng_seed = 1234;
    absl::StatusOr<std::unique_ptr<UringProxy>> p = UringProxy::Create(options, &sink_);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    proxy_ = std::move(*p);
    return proxy_.get();
  }
  BackendServer* StartServer(const std::string& ip) {
    servers_.push_back(std::make_unique<BackendServer>(ip, kBackendPort));
    EXPECT_TRUE(servers_.back()->ok()) << ip;
    return servers_.back().get();
  }
  static ServiceRule Rule(const std::string& vip, uint16_t port, const std::vector<std::string>& ips,
                          uint32_t affinity_s = 0) {
    ServiceRule r;
    r.frontend = FrontendKey{Ip(vip), port};
    r.affinity_timeout_s = affinity_s;
    for (const std::string& ip : ips) {
      Backend b;
      b.ip = Ip(ip);
      b.port = kBackendPort;
      r.backends.push_back(b);
    }
    return r;
  }
  absl::Status Upsert(const ServiceRule& rule) {
    TableDiff d;
    d.upserts.push_back(rule);
    return proxy_->Apply(d);
  }
  absl::Status Remove(const std::string& vip, uint16_t port) {
    TableDiff d;
    d.removals.push_back(FrontendKey{Ip(vip), port});
    return proxy_->Apply(d);
  }
  std::string Kpx0Addresses() {
    absl::StatusOr<std::string> out = ns_->Exec("ip -4 addr show dev kpx0");
    return out.ok() ? *out : out.status().ToString();
  }
  dataplane::FrontendStats FrontendStatsFor(const std::string& vip, uint16_t port) {
    for (const auto& f : proxy_->Stats().frontends) {
      if (f.frontend == FrontendKey{Ip(vip), port}) return f;
    }
    return {};
  }
  dataplane::BackendStats BackendStatsFor(const std::string& vip, uint16_t port, const std::string& ip) {
    for (const auto& b : FrontendStatsFor(vip, port).backends) {
      if (b.ip == Ip(ip)) return b;
    }
    return {};
  }

  std::unique_ptr<testing::NetNs> ns_;
  std::unique_ptr<testing::NetNs::Scope> scope_;
  std::vector<std::unique_ptr<BackendServer>> servers_;
  RecordingSink sink_;
  std::unique_ptr<UringProxy> proxy_;
};

TEST_F(UringProxyE2e, TrafficThroughTheVipReachesEveryBackend) {
  UringProxyOptions o;
  o.algorithm = LbAlgorithm::kRoundRobin;
  ASSERT_NE(StartProxy(o), nullptr);
  const std::vector<std::string> ips = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
  for (const auto& ip : ips) StartServer(ip);
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, ips)).ok());
  EXPECT_THAT(Kpx0Addresses(), HasSubstr("10.96.0.10/32"));

  std::map<std::string, int> hits;
  for (int i = 0; i < 30; ++i) hits[WhoAnswers(kVip, kPort)]++;
  EXPECT_EQ(hits, (std::map<std::string, int>{{"127.0.0.2", 10}, {"127.0.0.3", 10}, {"127.0.0.4", 10}}));

  ASSERT_TRUE(proxy_->WaitIdle(absl::Seconds(5)));
  dataplane::FrontendStats f = FrontendStatsFor(kVip, kPort);
  EXPECT_EQ(f.total, 30u);
  EXPECT_EQ(f.active, 0u);
  EXPECT_EQ(f.rejected, 0u);
  ASSERT_EQ(f.backends.size(), 3u);
  for (const auto& b : f.backends) {
    EXPECT_EQ(b.total, 10u);
    EXPECT_EQ(b.active, 0u);
    // The greeting, and "eof 0" if it got out before the client's close.
    EXPECT_GE(b.bytes_to_client, 10u * (b.ip.ToString().size() + 1));
    EXPECT_EQ(sink_.successes(b.ip.ToString()), 10);
  }

  // A NodePort frontend listens on every local address.
  ASSERT_TRUE(Upsert(Rule("0.0.0.0", 30080, {"127.0.0.2"})).ok());
  EXPECT_EQ(WhoAnswers("127.0.0.1", 30080), "127.0.0.2");
  EXPECT_EQ(WhoAnswers(kVip, 30080), "127.0.0.2");

  // Shutdown removes the device the proxy created.
  proxy_->Shutdown();
  EXPECT_FALSE(ns_->Exec("ip link show kpx0").ok());
}

TEST_F(UringProxyE2e, RemovedBackendGetsNoNewConnectionsButOpenOnesFinish) {
  UringProxyOptions o;
  o.algorithm = LbAlgorithm::kRoundRobin;
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  StartServer("127.0.0.3");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2", "127.0.0.3"})).ok());

  int held = -1;
  for (int i = 0; i < 4 && held < 0; ++i) {
    int fd = Connect(kVip, kPort);
    ASSERT_GE(fd, 0);
    if (ReadLine(fd) == "127.0.0.3") {
      held = fd;
    } else {
      close(fd);
    }
  }
  ASSERT_GE(held, 0) << "round-robin never reached 127.0.0.3";

  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  for (int i = 0; i < 20; ++i) EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2");

  ASSERT_TRUE(SendAll(held, "still-there"));
  char buf[64] = {};
  ASSERT_EQ(recv(held, buf, 11, MSG_WAITALL), 11);
  EXPECT_EQ(std::string(buf, 11), "still-there");
  shutdown(held, SHUT_WR);
  EXPECT_EQ(ReadToEof(held), "eof 11\n");
  close(held);
}

TEST_F(UringProxyE2e, RemovedFrontendRefusesQuicklyAndDrainsOpenConnections) {
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int held = Connect(kVip, kPort);
  ASSERT_GE(held, 0);
  ASSERT_EQ(ReadLine(held), "127.0.0.2");

  ASSERT_TRUE(Remove(kVip, kPort).ok());
  const absl::Time start = absl::Now();
  int fd = Connect(kVip, kPort, "", absl::Seconds(2));
  if (fd >= 0) {
    // Accepted by nobody can't happen; if the kernel raced, the read resets.
    EXPECT_EQ(ReadLine(fd), "");
    close(fd);
  } else {
    EXPECT_THAT(-fd, ::testing::AnyOf(ECONNREFUSED, ENETUNREACH, EHOSTUNREACH)) << strerror(-fd);
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));

  // The open connection still works, so the VIP stays until it is done.
  EXPECT_THAT(Kpx0Addresses(), HasSubstr("10.96.0.10/32"));
  ASSERT_TRUE(SendAll(held, "abc"));
  shutdown(held, SHUT_WR);
  EXPECT_EQ(ReadToEof(held), "abceof 3\n");
  close(held);
  EXPECT_TRUE(WaitFor([&] { return Kpx0Addresses().find("10.96.0.10") == std::string::npos; },
                      absl::Seconds(5)))
      << Kpx0Addresses();
}

TEST_F(UringProxyE2e, DeadBackendIsSkippedByRetry) {
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  // 127.0.0.8/9: nothing listens there, connects are refused.
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2", "127.0.0.8", "127.0.0.9"})).ok());
  int failed = 0;
  for (int i = 0; i < 200; ++i) {
    if (WhoAnswers(kVip, kPort) != "127.0.0.2") ++failed;
  }
  EXPECT_EQ(failed, 0);
  EXPECT_GT(BackendStatsFor(kVip, kPort, "127.0.0.8").failed_connects, 0u);
  EXPECT_GT(BackendStatsFor(kVip, kPort, "127.0.0.9").failed_connects, 0u);
  EXPECT_EQ(BackendStatsFor(kVip, kPort, "127.0.0.2").total, 200u);
  EXPECT_EQ(FrontendStatsFor(kVip, kPort).rejected, 0u);
  EXPECT_GT(sink_.failures("127.0.0.8"), 0);
  EXPECT_EQ(sink_.last_error(), ECONNREFUSED);
}

TEST_F(UringProxyE2e, UnansweredConnectTimesOutAndIsRetriedElsewhere) {
  // 10.99.0.1 sits behind a port-less bridge inside this namespace: its ARP
  // is never answered, so a connect to it hangs until our timeout fires.
  ASSERT_TRUE(ns_->Exec("ip link add kpx-t-br type bridge && ip addr add 10.99.0.2/24 dev kpx-t-br"
                        " && ip link set kpx-t-br up").ok());
  UringProxyOptions o;
  o.connect_timeout = absl::Milliseconds(150);
  o.algorithm = LbAlgorithm::kRoundRobin;
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"10.99.0.1", "127.0.0.2"})).ok());
  for (int i = 0; i < 6; ++i) {
    const absl::Time start = absl::Now();
    EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2");
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  }
  // Round-robin: each connection takes the silent backend first (even cursor
  // positions), and its retry takes the next position, the live one.
  EXPECT_EQ(BackendStatsFor(kVip, kPort, "10.99.0.1").failed_connects, 6u);
  EXPECT_EQ(sink_.failures("10.99.0.1"), 6);
  EXPECT_EQ(BackendStatsFor(kVip, kPort, "127.0.0.2").total, 6u);
  EXPECT_EQ(sink_.last_error(), ETIMEDOUT);
}

TEST_F(UringProxyE2e, ShutdownResetsOpenConnections) {
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int fd = Connect(kVip, kPort);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ReadLine(fd), "127.0.0.2");
  proxy_->Shutdown();
  EXPECT_EQ(proxy_->open_connections(), 0);
  char ch;
  EXPECT_EQ(recv(fd, &ch, 1, 0), -1);
  EXPECT_EQ(errno, ECONNRESET);
  close(fd);
  EXPECT_FALSE(proxy_->Apply(TableDiff{}).ok()) << "no Apply after Shutdown";
}

TEST_F(UringProxyE2e, NoUsableBackendResetsTheClient) {
  ASSERT_NE(StartProxy(), nullptr);
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {})).ok());
  ASSERT_TRUE(Upsert(Rule(kVip, 81, {"127.0.0.9"})).ok());  // refuses every connect
  for (uint16_t port : {kPort, uint16_t{81}}) {
    EXPECT_EQ(ResetWithin2s(kVip, port), "") << port;
    EXPECT_TRUE(WaitFor([&] { return FrontendStatsFor(kVip, port).rejected == 1; }, absl::Seconds(2)));
  }
  EXPECT_EQ(BackendStatsFor(kVip, 81, "127.0.0.9").failed_connects, 1u);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(2)));
}

// The relay tests run with both relays: copying through the buffer ring, and
// splice(2) from the first received chunk on (splice_after_bytes = 0), so
// every direction that carries a byte is spliced.
class UringRelayE2e : public UringProxyE2e, public ::testing::WithParamInterface<RelayMode> {
 protected:
  static UringProxyOptions Relay(UringProxyOptions o = {}) {
    o.relay = GetParam();
    o.splice_after_bytes = 0;
    return o;
  }
  bool Spliced() const { return GetParam() == RelayMode::kSplice; }
};

INSTANTIATE_TEST_SUITE_P(Relays, UringRelayE2e,
                         ::testing::Values(RelayMode::kCopy, RelayMode::kSplice),
                         [](const ::testing::TestParamInfo<RelayMode>& info) {
                           return info.param == RelayMode::kCopy ? "Copy" : "Splice";
                         });

TEST_P(UringRelayE2e, HalfCloseLetsTheServerAnswerAfterEof) {
  ASSERT_NE(StartProxy(Relay()), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int fd = Connect(kVip, kPort);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ReadLine(fd), "127.0.0.2");
  ASSERT_TRUE(SendAll(fd, "hello"));
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  // The backend only writes "eof 5" after it saw our FIN through the proxy.
  EXPECT_EQ(ReadToEof(fd), "helloeof 5\n");
  close(fd);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
  // Both FINs crossed a spliced direction (splice() returning 0 -> shutdown).
  EXPECT_EQ(proxy_->spliced_flows(), Spliced() ? 2u : 0u);
}

TEST_P(UringRelayE2e, ResetIsPropagatedAsReset) {
  ASSERT_NE(StartProxy(Relay()), nullptr);
  BackendServer* server = StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int fd = Connect(kVip, kPort);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ReadLine(fd), "127.0.0.2");
  ASSERT_TRUE(SendAll(fd, "x"));  // echoed: both directions carry a byte
  char ch = 0;
  ASSERT_EQ(recv(fd, &ch, 1, 0), 1);
  EXPECT_TRUE(WaitFor([&] { return proxy_->spliced_flows() == (Spliced() ? 2u : 0u); },
                      absl::Seconds(3)));
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);  // RST to the proxy
  EXPECT_TRUE(WaitFor([&] { return server->resets() == 1; }, absl::Seconds(3)))
      << "the backend should see ECONNRESET, not a clean EOF";
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
}

// 64 MiB each way through the proxy, compared by checksum.
TEST_P(UringRelayE2e, LargeTransferIsIntactBothWays) {
  ASSERT_NE(StartProxy(Relay()), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int fd = Connect(kVip, kPort);
  ASSERT_GE(fd, 0);
  constexpr uint64_t kTotal = 64ull << 20;
  EXPECT_EQ(EchoTransfer(fd, "127.0.0.2", kTotal), "");
  close(fd);
  ASSERT_TRUE(proxy_->WaitIdle(absl::Seconds(5)));
  dataplane::BackendStats b = BackendStatsFor(kVip, kPort, "127.0.0.2");
  EXPECT_EQ(b.bytes_to_backend, kTotal);
  EXPECT_EQ(b.bytes_to_client, 10 + kTotal + std::string("eof 67108864\n").size());
  EXPECT_EQ(proxy_->spliced_flows(), Spliced() ? 2u : 0u);
}

TEST_P(UringRelayE2e, IdleTimeoutClosesIdleConnectionsOnly) {
  UringProxyOptions o;
  // 1 s: a loaded 2-core machine can starve the client thread for a few
  // hundred ms between rounds (300 ms made both relays flaky at load 18).
  o.idle_timeout = absl::Seconds(1);
  ASSERT_NE(StartProxy(Relay(o)), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());

  // Busy for 2.5 s (2.5x the timeout): stays open.
  int busy = Connect(kVip, kPort);
  ASSERT_GE(busy, 0);
  ASSERT_EQ(ReadLine(busy), "127.0.0.2");
  for (int i = 0; i < 25; ++i) {
    ASSERT_TRUE(SendAll(busy, "x"));
    char ch = 0;
    ASSERT_EQ(recv(busy, &ch, 1, 0), 1) << "closed while active, round " << i;
    absl::SleepFor(absl::Milliseconds(100));  // pacing the traffic, not synchronisation
  }
  close(busy);

  int idle = Connect(kVip, kPort);
  ASSERT_GE(idle, 0);
  ASSERT_EQ(ReadLine(idle), "127.0.0.2");
  // The sweep closes it after 1 s plus at most one 250 ms tick. The bound is
  // the socket's receive timeout, 15 s: a worker pinned to a CPU that a
  // loaded machine (load 15-18, I/O pressure) takes away can be seconds late,
  // and late is not lost. A lost close fails the same way as before, and the
  // message then says which one it was: whether the proxy still counts the
  // connection (never swept) and whether its workers still serve a new one.
  SetTimeouts(idle, absl::Seconds(15));
  const absl::Time start = absl::Now();
  char ch;
  const ssize_t n = recv(idle, &ch, 1, 0);
  const int err = errno;
  const absl::Duration took = absl::Now() - start;
  if (n != 0) {
    ADD_FAILURE() << "no EOF from the idle timeout after " << took << " (recv " << n << ": "
                  << strerror(err) << "); the proxy counts "
                  << FrontendStatsFor(kVip, kPort).active
                  << " active connection(s); a new connection is answered by \""
                  << WhoAnswers(kVip, kPort) << "\"";
  }
  EXPECT_GE(took, absl::Milliseconds(900));
  EXPECT_LT(took, absl::Seconds(15));
  close(idle);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
  // The busy connection's directions and the idle one's greeting.
  EXPECT_EQ(proxy_->spliced_flows(), Spliced() ? 3u : 0u);
}

// Sockets in LISTEN on `port` in this thread's network namespace.
int ListeningSockets(uint16_t port) {
  absl::StatusOr<std::string> tcp = testing::RunCommand({"cat", "/proc/thread-self/net/tcp"});
  if (!tcp.ok()) return -1;
  const std::string local = absl::AsciiStrToUpper(absl::StrCat(":", absl::Hex(port, absl::kZeroPad4)));
  int n = 0;
  for (absl::string_view line : absl::StrSplit(*tcp, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() > 3 && absl::EndsWith(f[1], local) && f[3] == "0A") ++n;
  }
  return n;
}

// Past the listener descriptor budget (10k Services under this sandbox's
// 20000-descriptor limit) a frontend gets ONE socket that every worker's ring
// accepts on: it serves, both workers take connections from it, and removing
// it closes it (the port can be listened on again).
TEST_F(UringProxyE2e, SharedListenerPastTheDescriptorBudget) {
  UringProxyOptions o;
  o.workers = 2;
  o.pin_workers = false;     // no CPU steering: the shared socket's own spread
  o.listener_fd_budget = 2;  // the first frontend's two listeners use it up
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  ASSERT_TRUE(Upsert(Rule(kVip, 81, {"127.0.0.2"})).ok());
  EXPECT_EQ(proxy_->shared_listeners(), 1);
  EXPECT_EQ(ListeningSockets(kPort), 2);
  EXPECT_EQ(ListeningSockets(81), 1);
  // Connections arrive one at a time from several threads, like clients
  // would; each is held open so that it stays on the worker that took it.
  constexpr int kThreads = 4, kPerThread = 25;
  std::vector<std::vector<int>> held(kThreads);
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {  // threads start in this thread's netns
      for (int i = 0; i < kPerThread; ++i) {
        int fd = Connect(kVip, 81);
        if (fd < 0) return;
        held[t].push_back(fd);
        if (ReadLine(fd) != "127.0.0.2") return;
      }
    });
  }
  for (auto& c : clients) c.join();
  int total = 0;
  for (auto& h : held) total += static_cast<int>(h.size());
  EXPECT_EQ(total, kThreads * kPerThread);
  // The kernel wakes the same ring for (nearly) every connection: its
  // exclusive wake-up takes the first waiter. The load is balanced by the
  // workers' hand-over instead.
  const std::vector<uint64_t> accepts = proxy_->worker_accepts();
  ASSERT_EQ(accepts.size(), 2u);
  EXPECT_EQ(accepts[0] + accepts[1], static_cast<uint64_t>(total));
  std::vector<int> loads = proxy_->worker_loads();
  std::printf("shared listener: accepted per worker %lu / %lu, held per worker %d / %d\n",
              accepts[0], accepts[1], loads[0], loads[1]);
  ASSERT_EQ(loads.size(), 2u);
  EXPECT_EQ(loads[0] + loads[1], total);
  EXPECT_LE(std::abs(loads[0] - loads[1]), 4 + total / 8) << loads[0] << " vs " << loads[1];
  for (auto& h : held) {
    for (int fd : h) close(fd);
  }
  ASSERT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
  // Removed: nothing listens on it any more, the other frontend still serves.
  ASSERT_TRUE(Remove(kVip, 81).ok());
  EXPECT_EQ(ListeningSockets(81), 0);
  EXPECT_LT(Connect(kVip, 81), 0);
  EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2");
  EXPECT_EQ(proxy_->shared_listeners(), 0);
  // And back: the port was released, and the budget has room again.
  ASSERT_TRUE(Upsert(Rule(kVip, 81, {"127.0.0.2"})).ok());
  EXPECT_EQ(WhoAnswers(kVip, 81), "127.0.0.2");
}

// Threads of this process whose EEVDF slice (/proc/self/task/*/sched) is `ns`.
int ThreadsWithSlice(uint64_t ns) {
  int n = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream in(task.path() / "sched");
    std::stringstream sched;
    sched << in.rdbuf();
    for (absl::string_view line : absl::StrSplit(sched.str(), '\n')) {
      std::vector<absl::string_view> f = absl::StrSplit(line, ':', absl::SkipWhitespace());
      if (f.size() == 2 && absl::StripAsciiWhitespace(f[0]) == "se.slice" &&
          absl::StripAsciiWhitespace(f[1]) == absl::StrCat(ns)) {
        ++n;
      }
    }
  }
  return n;
}

// worker_slice is requested from the scheduler for every worker thread (and
// only for them), and the proxy still relays with it.
TEST_F(UringProxyE2e, WorkerThreadsGetTheRequestedSlice) {
  constexpr uint64_t kSliceNs = 3'000'000;
  ASSERT_EQ(ThreadsWithSlice(kSliceNs), 0) << "no thread of the test has it before";
  UringProxyOptions o;
  o.workers = 2;
  o.worker_slice = absl::Nanoseconds(kSliceNs);
  ASSERT_NE(StartProxy(o), nullptr);
  EXPECT_EQ(ThreadsWithSlice(kSliceNs), 2);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2");
}

// --relay=splice switches a direction only after splice_after_bytes of
// reads that found a backlog: a long keep-alive exchange of small messages
// (more bytes in total than the threshold) stays on the buffer ring, where a
// message costs one recv and one send instead of a poll and three splices,
// while a bulk transfer on the same proxy is spliced both ways.
TEST_F(UringProxyE2e, SmallMessagesStayOnBuffersBulkIsSpliced) {
  UringProxyOptions o;
  o.relay = RelayMode::kSplice;
  o.splice_after_bytes = 64 * 1024;
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int fd = Connect(kVip, kPort);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ReadLine(fd), "127.0.0.2");
  // 1500 request/response rounds of 100 bytes: 150 kB each way, over 2x the
  // threshold, one message in flight at a time (as wrk's keep-alive test).
  const std::string msg(100, 'r');
  for (int i = 0; i < 1500; ++i) {
    ASSERT_TRUE(SendAll(fd, msg)) << "round " << i;
    size_t got = 0;
    char buf[128];
    while (got < msg.size()) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      ASSERT_GT(n, 0) << "round " << i;
      got += static_cast<size_t>(n);
    }
  }
  EXPECT_EQ(proxy_->spliced_flows(), 0u);
  EXPECT_TRUE(WaitFor(
      [&] { return BackendStatsFor(kVip, kPort, "127.0.0.2").bytes_to_backend == 1500u * msg.size(); },
      absl::Seconds(3)));
  close(fd);
  // A bulk transfer: both directions read full buffers and move to pipes.
  fd = Connect(kVip, kPort);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(EchoTransfer(fd, "127.0.0.2", 16ull << 20), "");
  close(fd);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(5)));
  EXPECT_EQ(proxy_->spliced_flows(), 2u);
}

// With far fewer receive buffers than the connections want, receives find
// the ring empty (-ENOBUFS), wait for buffers to come back, and no byte is
// lost or reordered.
TEST_F(UringProxyE2e, BufferExhaustionIsBackPressureNotLoss) {
  UringProxyOptions o;
  o.workers = 1;
  o.buffers_per_worker = 8;
  o.buffer_size = 4096;
  o.relay = RelayMode::kCopy;  // the buffer ring throughout (no splice after 1 MiB)
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  constexpr int kConns = 6;
  std::vector<std::string> results(kConns);
  std::vector<std::thread> clients;
  for (int i = 0; i < kConns; ++i) {
    clients.emplace_back([&, i] {
      int fd = Connect(kVip, kPort);
      if (fd < 0) {
        results[i] = "connect failed";
        return;
      }
      results[i] = EchoTransfer(fd, "127.0.0.2", 4ull << 20);
      close(fd);
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < kConns; ++i) EXPECT_EQ(results[i], "") << "connection " << i;
  EXPECT_GT(proxy_->buffer_starvations(), 0u) << "the test did not exhaust the buffers";
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(5)));
}

TEST_F(UringProxyE2e, AffinityPinsEachClientIp) {
  ASSERT_NE(StartProxy(), nullptr);  // random: without affinity, 8 picks would differ
  const std::vector<std::string> ips = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
  for (const auto& ip : ips) StartServer(ip);
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, ips, /*affinity_s=*/60)).ok());
  std::set<std::string> used;
  for (const std::string client : {"127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24",
                                   "127.0.0.25", "127.0.0.26"}) {
    std::set<std::string> seen;
    for (int i = 0; i < 8; ++i) seen.insert(WhoAnswers(kVip, kPort, client));
    EXPECT_EQ(seen.size(), 1u) << client;
    used.insert(*seen.begin());
  }
  EXPECT_GT(used.size(), 1u) << "six clients all pinned to one backend";
  EXPECT_THAT(used, Not(::testing::Contains("")));
}

TEST_F(UringProxyE2e, StopAcceptingThenWaitIdle) {
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int held = Connect(kVip, kPort);
  ASSERT_GE(held, 0);
  ASSERT_EQ(ReadLine(held), "127.0.0.2");

  proxy_->StopAccepting();
  EXPECT_EQ(Connect(kVip, kPort, "", absl::Seconds(2)), -ECONNREFUSED);
  EXPECT_FALSE(proxy_->WaitIdle(absl::Milliseconds(100)));
  ASSERT_TRUE(SendAll(held, "z"));
  shutdown(held, SHUT_WR);
  EXPECT_EQ(ReadToEof(held), "zeof 1\n");
  close(held);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(5)));
}

TEST_F(UringProxyE2e, MaxConnectionsResetsTheExcess) {
  UringProxyOptions o;
  o.max_connections = 2;
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int a = Connect(kVip, kPort), b = Connect(kVip, kPort);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_EQ(ReadLine(a), "127.0.0.2");
  ASSERT_EQ(ReadLine(b), "127.0.0.2");
  EXPECT_EQ(ResetWithin2s(kVip, kPort), "");
  EXPECT_EQ(FrontendStatsFor(kVip, kPort).rejected, 1u);
  close(a);
  close(b);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
  EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2") << "room again after the others closed";
}

TEST_F(UringProxyE2e, AdoptsAnExistingDeviceAndPrunesStaleVips) {
  // What a kpxd that crashed leaves behind: kpx0 with a VIP nobody serves.
  ASSERT_TRUE(ns_->Exec("ip link add kpx0 type bridge && ip addr add 10.96.0.77/32 dev kpx0"
                        " && ip addr add 192.0.2.1/24 dev kpx0").ok());
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  ServiceRule rule = Rule(kVip, kPort, {"127.0.0.2"});
  ASSERT_TRUE(Upsert(rule).ok());
  controller::ServiceTable desired;
  desired[rule.frontend] = rule;
  ASSERT_TRUE(proxy_->Prune(desired).ok());
  std::string addrs = Kpx0Addresses();
  EXPECT_THAT(addrs, Not(HasSubstr("10.96.0.77")));
  EXPECT_THAT(addrs, HasSubstr("10.96.0.10/32"));
  EXPECT_THAT(addrs, HasSubstr("192.0.2.1/24")) << "only /32s are VIPs";
  EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2");

  // Not created by this proxy: Shutdown takes its VIPs, leaves the link.
  proxy_->Shutdown();
  addrs = Kpx0Addresses();
  EXPECT_THAT(addrs, Not(HasSubstr("10.96.0.10")));
  EXPECT_THAT(addrs, HasSubstr("192.0.2.1/24"));
}

TEST_F(UringProxyE2e, ApplyIsIdempotentAndIgnoresUnsupportedRules) {
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  ServiceRule rule = Rule(kVip, kPort, {"127.0.0.2"});
  ASSERT_TRUE(Upsert(rule).ok());
  ASSERT_TRUE(Upsert(rule).ok());  // re-sent: no second listener, no error
  EXPECT_TRUE(Remove("10.96.0.99", 1).ok());  // unknown removal: no-op
  ServiceRule udp = Rule("10.96.0.11", 53, {"127.0.0.2"});
  udp.frontend.protocol = controller::Protocol::kUDP;
  ServiceRule unsupported = Rule("10.96.0.12", 80, {"127.0.0.2"});
  unsupported.supported = false;
  TableDiff d;
  d.upserts = {udp, unsupported};
  ASSERT_TRUE(proxy_->Apply(d).ok());
  EXPECT_EQ(proxy_->Stats().frontends.size(), 1u);
  EXPECT_THAT(Kpx0Addresses(), Not(HasSubstr("10.96.0.12")));
  EXPECT_EQ(WhoAnswers(kVip, kPort), "127.0.0.2");
  // StatsOf: the served frontend asked for is there with its connection
  // counted; the ignored ones are not.
  dataplane::DataplaneStats of = proxy_->StatsOf({rule.frontend, udp.frontend, unsupported.frontend});
  ASSERT_EQ(of.frontends.size(), 1u);
  EXPECT_EQ(of.frontends[0].frontend, rule.frontend);
  EXPECT_GE(of.frontends[0].total, 1u);
  ASSERT_EQ(of.frontends[0].backends.size(), 1u);
}

// The backend connect holds back its handshake ACK (TCP_DEFER_ACCEPT on the
// connecting socket) only when the client's bytes are already in hand, so
// that they carry it. A wrong guess would cost a 200 ms delayed-ACK stall
// before the backend even accepts: check both orders of speaking.
TEST_F(UringProxyE2e, NeitherClientFirstNorServerFirstStallsTheBackendHandshake) {
  ASSERT_NE(StartProxy(), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  constexpr int kConns = 20;
  const absl::Duration kStall = absl::Milliseconds(190);
  int slow_client_first = 0;
  int slow_server_first = 0;
  for (int i = 0; i < kConns; ++i) {
    absl::Time start = absl::Now();
    int fd = Connect(kVip, kPort);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "hi"));  // before the proxy has even accepted
    ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
    EXPECT_EQ(ReadToEof(fd), "127.0.0.2\nhieof 2\n");
    close(fd);
    slow_client_first += absl::Now() - start >= kStall;

    start = absl::Now();
    fd = Connect(kVip, kPort);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(ReadLine(fd), "127.0.0.2");  // the backend speaks first
    close(fd);
    slow_server_first += absl::Now() - start >= kStall;
  }
  // A systematic stall hits every connection; allow a few for a busy host.
  EXPECT_LT(slow_client_first, 5);
  EXPECT_LT(slow_server_first, 5);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
}

// With pinned workers, new connections go to the worker of the CPU that took
// their SYN. A burst from a client stuck on one CPU would then all land on
// one worker; the hand-over keeps the workers within a few connections.
TEST_F(UringProxyE2e, BurstFromOneCpuIsSpreadOverPinnedWorkers) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  if (CPU_COUNT(&allowed) < 2) GTEST_SKIP() << "needs 2 CPUs for 2 pinned workers";
  UringProxyOptions o;
  o.pin_workers = true;
  ASSERT_NE(StartProxy(o), nullptr);
  StartServer("127.0.0.2");
  ASSERT_TRUE(Upsert(Rule(kVip, kPort, {"127.0.0.2"})).ok());
  int first_cpu = 0;
  while (!CPU_ISSET(first_cpu, &allowed)) ++first_cpu;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first_cpu, &one);
  ASSERT_EQ(pthread_setaffinity_np(pthread_self(), sizeof(one), &one), 0);
  constexpr int kConns = 32;
  std::vector<int> fds;
  for (int i = 0; i < kConns; ++i) {
    int fd = Connect(kVip, kPort);  // the SYN is processed on first_cpu
    if (fd < 0) break;
    fds.push_back(fd);
  }
  pthread_setaffinity_np(pthread_self(), sizeof(allowed), &allowed);
  ASSERT_EQ(fds.size(), static_cast<size_t>(kConns));
  for (int fd : fds) EXPECT_EQ(ReadLine(fd), "127.0.0.2");
  std::vector<int> loads;
  EXPECT_TRUE(WaitFor([&] {
    loads = proxy_->worker_loads();
    return loads.size() == 2 && loads[0] + loads[1] == kConns;
  }, absl::Seconds(3)));
  ASSERT_EQ(loads.size(), 2u);
  EXPECT_LE(std::abs(loads[0] - loads[1]), 10) << loads[0] << " vs " << loads[1];
  for (int fd : fds) close(fd);
  EXPECT_TRUE(proxy_->WaitIdle(absl::Seconds(3)));
}

}  // namespace
}  // namespace kpx::uring
