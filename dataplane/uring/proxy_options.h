// Options and the passive-health callback of the io_uring proxy (UringProxy).
// Kept apart from uring_proxy.h so the worker can see them without the class.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "controller/base/ipv4.h"
#include "dataplane/uring/lb_algorithm.h"
#include "dataplane/xdp/interfaces.h"

namespace kpx::uring {

// How bytes get from one socket to the other.
enum class RelayMode : uint8_t {
  kCopy,    // recv into a provided buffer, send from it (two copies per byte)
  kSplice,  // as kCopy, but a direction that has carried splice_after_bytes
            // moves to splice(2) through a pipe: socket pages are passed on
            // by reference, no copy through user space (bulk flows)
};

struct UringProxyOptions {
  std::string bind_device = "kpx0";  // holds the VIP /32s; created if absent
  bool manage_device = true;         // false: VIPs are already local (tests on loopback)
  // VIPs inside these prefixes are made local by one `local` route each on
  // bind_device instead of one /32 address per VIP (kpxd --vip-local-routes).
  std::vector<xdp::Ipv4Cidr> vip_local_routes;
  int workers = 0;                   // 0 = number of online CPUs
  LbAlgorithm algorithm = LbAlgorithm::kRandom;
  absl::Duration connect_timeout = absl::Seconds(1);
  absl::Duration idle_timeout = absl::Hours(1);  // zero = none
  int max_connections = 65536;  // per proxy; accepts beyond it are reset
  uint64_t rng_seed = 0;        // 0 = seeded from the system
  // Receive buffers per worker (a power of two) and their size. Each
  // direction of a connection holds at most 4 of them while its peer is slow.
  // 64 KiB (one GSO super-packet) halves the recv/send operations of bulk
  // flows against 32 KiB; same 32 MiB per worker (docs/BENCHMARKS.md).
  int buffers_per_worker = 512;
  int buffer_size = 64 * 1024;
  // Pin worker i to the i-th CPU this process may run on and steer each new
  // connection (SO_REUSEPORT + a classic BPF program) to the worker of the
  // CPU whose softirq took its SYN: the connection's wakeups then stay on
  // one CPU (about a quarter less CPU per new connection on the 2-core lab,
  // docs/BENCHMARKS.md). A worker holding clearly more connections than
  // another hands new ones over. Used only with at most one worker per CPU.
  bool pin_workers = true;
  // EEVDF time slice requested for the worker threads (sched_setattr's
  // sched_runtime; nice unchanged). Longer than the kernel's default
  // (1.4 ms here): a worker that wakes the server or client it relays to
  // (veth and loopback run the receiver's TCP inline) is less often
  // preempted by it in the middle of its batch, so the rest of the batch's
  // connections do not wait behind it. In two same-run A/Bs on the loaded
  // lab, 3 ms vs the default: new-conn p99 0.66x/0.63x vs 0.79x/1.24x
  // HAProxy's, keep-alive p99 0.92x/1.02x vs 1.83x/1.34x, rates unchanged
  // (docs/BENCHMARKS.md). Zero: the kernel default.
  absl::Duration worker_slice = absl::Milliseconds(3);
  // kSplice: one direction of a connection switches to splice(2) once it has
  // carried this many bytes in reads of at least a quarter buffer (16 KiB),
  // i.e. while the sender was ahead of us: short request/response exchanges
  // never pay for the pipe, however long the connection lives. 0: every
  // direction from its first byte. The proxy's CPU per relayed MB roughly
  // halved in the peers lab (docs/BENCHMARKS.md). pipe_size: that direction's pipe; 1 MiB
  // beat 256 KiB in the same A/B (fewer splice and poll rounds per MB).
  // Listener descriptors (one per worker per frontend) allowed before new
  // frontends get a single listener that every worker's ring accepts on
  // (multishot accept on the same socket; no CPU steering for those).
  // 0: half of RLIMIT_NOFILE (20000 here, unprivileged: 10k Services on 2
  // workers then take 5000 x 2 + 5000 descriptors, not 20000).
  int listener_fd_budget = 0;
  RelayMode relay = RelayMode::kSplice;
  int64_t splice_after_bytes = 1 << 20;
  int pipe_size = 1 << 20;
};

// Passive health signals, called from worker threads on every backend connect
// outcome: implementations must be cheap and thread-safe (e.g. bump an atomic
// or push to a lock-free queue), never block.
class ProxyEventSink {
 public:
  virtual ~ProxyEventSink() = default;
  // `err` is a positive errno: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...
  virtual void OnConnectFailed(Ipv4 ip, uint16_t port, int err) = 0;
  virtual void OnConnectSucceeded(Ipv4 ip, uint16_t port) = 0;
};

}  // namespace kpx::uring
