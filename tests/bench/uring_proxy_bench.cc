// io_uring proxy micro-benchmarks on loopback (no namespace, no kpx0):
// connection setup cost and bulk relay throughput, each next to the same
// operation done directly against the backend. Run: build/tests/bench/uring_proxy_bench
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"
#include "dataplane/uring/uring_proxy.h"

namespace kpx::uring {
namespace {

constexpr uint16_t kBackendPort = 18080;
constexpr uint16_t kProxyPort = 18081;

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Echo server: one byte greeting, then echo until EOF. Thread per connection.
class EchoServer {
 public:
  explicit EchoServer(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a = Loopback(port);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd_, 4096) != 0) {
      perror("echo server bind/listen");
      abort();
    }
    thread_ = std::thread([this] {
      for (;;) {
        int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;
        }
        std::thread([c] {
          int one = 1;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          std::vector<char> buf(256 * 1024);
          bool ok = send(c, "!", 1, MSG_NOSIGNAL) == 1;
          while (ok) {
            ssize_t n = recv(c, buf.data(), buf.size(), 0);
            if (n <= 0) break;
            for (ssize_t off = 0; off < n;) {
              ssize_t w = send(c, buf.data() + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
              if (w <= 0) {
                ok = false;
                break;
              }
              off += w;
            }
          }
          close(c);
        }).detach();  // bench process: connections end with their clients
      }
    });
  }
  ~EchoServer() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }

 private:
  int fd_ = -1;
  std::thread thread_;
};

struct Fixture {
  Fixture() : server(kBackendPort) {
    UringProxyOptions o;
    o.manage_device = false;  // 127.0.0.1 is local already
    o.workers = 1;
    auto p = UringProxy::Create(o);
    if (!p.ok()) {
      fprintf(stderr, "UringProxy::Create: %s\n", p.status().ToString().c_str());
      abort();
    }
    proxy = std::move(*p);
    controller::ServiceRule rule;
    rule.frontend = controller::FrontendKey{*Ipv4::Parse("127.0.0.1"), kProxyPort};
    controller::Backend b;
    b.ip = *Ipv4::Parse("127.0.0.1");
    b.port = kBackendPort;
    rule.backends.push_back(b);
    controller::TableDiff d;
    d.upserts.push_back(rule);
    absl::Status s = proxy->Apply(d);
    if (!s.ok()) {
      fprintf(stderr, "Apply: %s\n", s.ToString().c_str());
      abort();
    }
  }
  EchoServer server;
  std::unique_ptr<UringProxy> proxy;
};

Fixture& Get() {
  static Fixture* f = new Fixture();
  return *f;
}

int Dial(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = Loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// Connect, read the greeting, close: the per-connection cost.
void BM_ConnectGreetClose(benchmark::State& state) {
  Get();
  const uint16_t port = state.range(0) ? kProxyPort : kBackendPort;
  for (auto _ : state) {
    int fd = Dial(port);
    char ch;
    if (fd < 0 || recv(fd, &ch, 1, MSG_WAITALL) != 1) {
      state.SkipWithError("connection failed");
      if (fd >= 0) close(fd);
      break;
    }
    close(fd);
  }
  state.SetLabel(state.range(0) ? "via proxy" : "direct");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ConnectGreetClose)->Arg(0)->Arg(1)->UseRealTime();

// Echo `range(1)` bytes per iteration on one connection (both directions).
void BM_EchoThroughput(benchmark::State& state) {
  Get();
  const uint16_t port = state.range(0) ? kProxyPort : kBackendPort;
  const size_t chunk = static_cast<size_t>(state.range(1));
  int fd = Dial(port);
  char ch;
  if (fd < 0 || recv(fd, &ch, 1, MSG_WAITALL) != 1) {
    state.SkipWithError("connection failed");
    return;
  }
  std::vector<char> out(chunk, 'x'), in(chunk);
  for (auto _ : state) {
    // Writer thread so neither side's buffers fill up and deadlock.
    std::thread writer([&] {
      for (size_t off = 0; off < chunk;) {
        ssize_t w = send(fd, out.data() + off, chunk - off, MSG_NOSIGNAL);
        if (w <= 0) return;
        off += static_cast<size_t>(w);
      }
    });
    size_t got = 0;
    while (got < chunk) {
      ssize_t n = recv(fd, in.data() + got, chunk - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    writer.join();
    if (got != chunk) {
      state.SkipWithError("short echo");
      break;
    }
  }
  close(fd);
  state.SetLabel(state.range(0) ? "via proxy" : "direct");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(1) * 2);
}
BENCHMARK(BM_EchoThroughput)->Args({0, 16 << 20})->Args({1, 16 << 20})->UseRealTime();

}  // namespace
}  // namespace kpx::uring

BENCHMARK_MAIN();
