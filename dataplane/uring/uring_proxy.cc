// UringProxy: control side. Owns the frontend table, the VIP device and the
// workers; turns each diff operation into listener sockets and per-worker
// commands, and waits until every worker has taken them.
#include "dataplane/uring/uring_proxy.h"

#include <arpa/inet.h>
#include <glog/logging.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "controller/base/status_macros.h"
#include "dataplane/uring/worker.h"

namespace kpx::uring {
namespace {

// How long Apply waits for a worker to take a command before reporting it.
constexpr absl::Duration kWorkerCommandTimeout = absl::Seconds(5);

absl::StatusOr<ino_t> CurrentNetnsInode() {
  struct stat st;
  if (stat("/proc/thread-self/ns/net", &st) != 0) {
    return absl::UnavailableError(absl::StrCat("stat /proc/thread-self/ns/net: ",
                                               std::strerror(errno)));
  }
  return st.st_ino;
}

void RaiseFileLimit() {
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  rlim_t old = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) == 0) {
    VLOG(1) << "RLIMIT_NOFILE raised from " << old << " to " << lim.rlim_max;
  } else {
    LOG(WARNING) << "could not raise RLIMIT_NOFILE to " << lim.rlim_max << ": "
                 << std::strerror(errno);
  }
}

int HalfFileLimit() {
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return 1 << 30;
  return static_cast<int>(std::min<rlim_t>(lim.rlim_cur / 2, 1 << 30));
}

// One SO_REUSEPORT listener for `key` (ip 0.0.0.0: every local address).
absl::StatusOr<int> OpenListener(const controller::FrontendKey& key) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::ResourceExhaustedError(absl::StrCat("socket for ", key.String(), ": ",
                                                     std::strerror(errno)));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  // Accepted sockets inherit it: no per-connection setsockopt.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(key.port);
  addr.sin_addr.s_addr = key.ip.be();
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat(
        "bind ", key.String(), ": ", std::strerror(err),
        err == EADDRNOTAVAIL ? " (the VIP is not a local address: is the VIP device managed?)"
        : err == EADDRINUSE  ? " (another process listens there)"
                             : ""));
  }
  if (listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("listen ", key.String(), ": ", std::strerror(err)));
  }
  return fd;
}

// The CPUs this process may run on, in order (sched_getaffinity).
std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UringProxy>> UringProxy::Create(UringProxyOptions options,
                                                               ProxyEventSink* sink) {
  const int buffers = options.buffers_per_worker;
  if (buffers <= 0 || (buffers & (buffers - 1)) != 0 || buffers > 32768) {
    return absl::InvalidArgumentError(absl::StrCat(
        "buffers_per_worker must be a power of two in [1, 32768], got ", buffers));
  }
  if (options.buffer_size < 4096 || options.buffer_size > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer_size must be in [4096, 1 MiB], got ", options.buffer_size));
  }
  if (options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("connect_timeout must be positive");
  }
  if (options.workers < 0 || options.max_connections <= 0) {
    return absl::InvalidArgumentError("workers must be >= 0 and max_connections > 0");
  }
  RaiseFileLimit();
  const int budget = options.listener_fd_budget > 0 ? options.listener_fd_budget : HalfFileLimit();

  std::unique_ptr<UringProxy> proxy(new UringProxy());
  KPX_ASSIGN_OR_RETURN(proxy->netns_ino_, CurrentNetnsInode());
  if (options.manage_device) {
    KPX_ASSIGN_OR_RETURN(proxy->device_, VipDevice::Open(options.bind_device, options.vip_local_routes));
  }
  int n = options.workers;
  if (n == 0) n = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  proxy->listener_fd_budget_ = budget;
  proxy->ctx_ = std::make_unique<WorkerContext>();
  proxy->ctx_->options = std::move(options);
  if (proxy->ctx_->options.pin_workers) {
    std::vector<int> cpus = AllowedCpus();
    if (static_cast<size_t>(n) <= cpus.size()) {
      cpus.resize(static_cast<size_t>(n));
      proxy->ctx_->worker_cpus = cpus;
      proxy->steering_ = std::make_unique<CpuSteering>(std::move(cpus));
      if (!proxy->steering_->shared_program()) {
        LOG(INFO) << "io_uring proxy: " << proxy->steering_->fallback_reason()
                  << "; steering with a classic BPF program per frontend";
      }
    }
  }
  proxy->ctx_->sink = sink;
  proxy->ctx_->device = proxy->device_.get();
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<std::unique_ptr<Worker>> w = Worker::Start(i, proxy->ctx_.get());
    if (!w.ok()) {
      proxy->Shutdown();
      return absl::Status(w.status().code(), absl::StrCat("starting worker ", i, ": ",
                                                          w.status().message()));
    }
    proxy->workers_.push_back(std::move(*w));
  }
  for (auto& w : proxy->workers_) proxy->ctx_->workers.push_back(w.get());
  return proxy;
}

UringProxy::~UringProxy() { Shutdown(); }

absl::Status UringProxy::CheckNetns() const {
  KPX_ASSIGN_OR_RETURN(ino_t ino, CurrentNetnsInode());
  if (ino != netns_ino_) {
    return absl::FailedPreconditionError(
        "UringProxy::Apply called from a thread in another network namespace than Create");
  }
  return absl::OkStatus();
}

absl::Status UringProxy::Apply(const controller::TableDiff& diff) {
  KPX_RETURN_IF_ERROR(CheckNetns());
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::FailedPreconditionError("UringProxy is shut down");
  absl::Status first;
  int failed = 0;
  auto note = [&](absl::Status s) {
    if (s.ok()) return;
    if (failed++ == 0) first = std::move(s);
  };
  std::vector<std::vector<std::function<void()>>> batch(workers_.size());
  batch_ = &batch;
  for (const controller::FrontendKey& key : diff.removals) note(RemoveLocked(key));
  for (const controller::ServiceRule& rule : diff.upserts) note(UpsertLocked(rule));
  batch_ = nullptr;
  // A worker runs its commands in the order given, so removals still come
  // before upserts of the same frontend.
  note(PostAndWait(std::move(batch), "apply"));
  if (failed > 1) {
    return absl::Status(first.code(), absl::StrCat(first.message(), " (and ", failed - 1,
                                                   " more failed operations)"));
  }
  return first;
}

absl::Status UringProxy::UpsertLocked(const controller::ServiceRule& rule) {
  const controller::FrontendKey& key = rule.frontend;
  const bool serve = rule.supported && key.protocol == controller::Protocol::kTCP;
  auto it = frontends_.find(key);
  if (!serve) {
    // Not ours to serve (any more): behave as if it were removed.
    return it == frontends_.end() ? absl::OkStatus() : RemoveLocked(key);
  }
  const LbAlgorithm algorithm = ctx_->options.algorithm;
  if (it != frontends_.end()) {
    Frontend& fe = it->second;
    fe.config = BuildFrontendConfig(rule, algorithm, fe.shared, fe.config.get());
    if (!fe.listening) return absl::OkStatus();
    return OnAllWorkers("update " + key.String(), [&](int i) {
      return [w = workers_[i].get(), config = fe.config] { w->UpdateFrontend(config); };
    });
  }
  Frontend fe;
  fe.shared = std::make_shared<FrontendShared>(key);
  fe.config = BuildFrontendConfig(rule, algorithm, fe.shared, nullptr);
  if (device_ != nullptr && !key.ip.IsUnspecified()) {
    // The address first: a listener cannot bind a VIP that is not local yet.
    KPX_RETURN_IF_ERROR(device_->Acquire(key.ip));
    fe.holds_vip = true;
  }
  if (accepting_) {
    absl::Status s = StartListeningLocked(fe);
    if (!s.ok() && !fe.listening) {
      ReleaseVipLocked(fe);
      return s;
    }
    frontends_.emplace(key, std::move(fe));
    return s;
  }
  frontends_.emplace(key, std::move(fe));
  return absl::OkStatus();
}

absl::Status UringProxy::RemoveLocked(const controller::FrontendKey& key) {
  auto it = frontends_.find(key);
  if (it == frontends_.end()) return absl::OkStatus();
  absl::Status s = StopListeningLocked(it->second);
  ReleaseVipLocked(it->second);
  frontends_.erase(it);
  return s;
}

absl::Status UringProxy::StartListeningLocked(Frontend& fe) {
  const controller::FrontendKey key = fe.shared->key;
  const int n = static_cast<int>(workers_.size());
  // Past the budget, one socket for all workers: each worker's ring keeps a
  // multishot accept on it, and the kernel wakes one of them per connection.
  const bool shared = n > 1 && listener_fds_ + n > listener_fd_budget_;
  std::vector<std::shared_ptr<ListenerSocket>> socks;
  for (int i = 0; i < (shared ? 1 : n); ++i) {
    absl::StatusOr<int> fd = OpenListener(key);
    if (!fd.ok()) return fd.status();  // those already open close with `socks`
    socks.push_back(std::make_shared<ListenerSocket>(*fd, shared));
  }
  if (!shared && steering_ != nullptr) {
    if (absl::Status st = steering_->Attach(socks.back()->fd); !st.ok()) {
      LOG_FIRST_N(WARNING, 1) << st.message() << "; new connections are spread by hash instead";
    }
  }
  if (shared && shared_listeners_logged_++ == 0) {
    LOG(INFO) << "io_uring proxy: " << listener_fds_ << " listener descriptors open (budget "
              << listener_fd_budget_ << "); " << key.String()
              << " and later frontends get one listener shared by all workers";
  }
  fe.listening = true;
  fe.listener_fds = static_cast<int>(socks.size());
  listener_fds_ += fe.listener_fds;
  return OnAllWorkers("listen " + key.String(), [&](int i) {
    return [w = workers_[i].get(), config = fe.config, sock = socks[shared ? 0 : i]] {
      w->AddListener(config, sock);
    };
  });
}

absl::Status UringProxy::StopListeningLocked(Frontend& fe) {
  if (!fe.listening) return absl::OkStatus();
  fe.listening = false;
  listener_fds_ -= std::exchange(fe.listener_fds, 0);
  return OnAllWorkers("close " + fe.shared->key.String(), [&](int i) {
    return [w = workers_[i].get(), key = fe.shared->key] { w->RemoveListener(key); };
  });
}

void UringProxy::ReleaseVipLocked(Frontend& fe) {
  if (!fe.holds_vip) return;
  fe.holds_vip = false;
  // Connections accepted on the VIP keep it alive until they finish.
  device_->Release(fe.shared->key.ip, [shared = fe.shared] {
    return shared->active.load(std::memory_order_relaxed) > 0;
  });
}

absl::Status UringProxy::OnAllWorkers(const std::string& what,
                                      const std::function<std::function<void()>(int)>& make) {
  const bool batched = batch_ != nullptr;
  std::vector<std::vector<std::function<void()>>> now(batched ? 0 : workers_.size());
  auto& into = batched ? *batch_ : now;
  for (size_t i = 0; i < workers_.size(); ++i) into[i].push_back(make(static_cast<int>(i)));
  return batched ? absl::OkStatus() : PostAndWait(std::move(now), what);
}

absl::Status UringProxy::PostAndWait(std::vector<std::vector<std::function<void()>>> batch,
                                     absl::string_view what) {
  struct Pending {
    size_t worker;
    size_t commands;
    std::shared_ptr<absl::Notification> done;
  };
  std::vector<Pending> pending;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].empty()) continue;
    auto done = std::make_shared<absl::Notification>();
    pending.push_back({i, batch[i].size(), done});
    workers_[i]->Post([cmds = std::move(batch[i]), done] {
      for (const std::function<void()>& fn : cmds) fn();
      done->Notify();
    });
  }
  const absl::Time deadline = absl::Now() + kWorkerCommandTimeout;
  for (const Pending& p : pending) {
    if (!p.done->WaitForNotificationWithDeadline(deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          what, p.commands == 1 ? "" : absl::StrCat(" (", p.commands, " commands)"), ": worker ",
          p.worker, " did not respond within ", absl::FormatDuration(kWorkerCommandTimeout),
          " (it will still apply the change when it does)"));
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<const FrontendConfig> UringProxy::FrontendSnapshot(
    const controller::FrontendKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = frontends_.find(key);
  return it == frontends_.end() ? nullptr : it->second.config;
}

namespace {

// One frontend's counters (the workers' atomics, read relaxed).
template <typename Frontend>
dataplane::FrontendStats ReadFrontendStats(const controller::FrontendKey& key, const Frontend& fe) {
  dataplane::FrontendStats f;
  f.frontend = key;
  f.active = fe.shared->active.load(std::memory_order_relaxed);
  f.total = fe.shared->total.load(std::memory_order_relaxed);
  f.rejected = fe.shared->rejected.load(std::memory_order_relaxed);
  for (const auto& b : fe.config->backends) {
    dataplane::BackendStats bs;
    bs.ip = b->ip;
    bs.port = b->port;
    bs.active = b->active.load(std::memory_order_relaxed);
    bs.total = b->total.load(std::memory_order_relaxed);
    bs.failed_connects = b->failed_connects.load(std::memory_order_relaxed);
    bs.bytes_to_backend = b->bytes_to_backend.load(std::memory_order_relaxed);
    bs.bytes_to_client = b->bytes_to_client.load(std::memory_order_relaxed);
    f.backends.push_back(bs);
  }
  return f;
}

}  // namespace

dataplane::DataplaneStats UringProxy::Stats() const {
  dataplane::DataplaneStats stats;
  absl::MutexLock lock(&mu_);
  for (const auto& [key, fe] : frontends_) stats.frontends.push_back(ReadFrontendStats(key, fe));
  return stats;
}

// The admin API's answer about one Service: its frontends only, not a copy of
// every frontend's counters (10k Services x 10 backends) per call.
dataplane::DataplaneStats UringProxy::StatsOf(absl::Span<const controller::FrontendKey> frontends) const {
  dataplane::DataplaneStats stats;
  absl::MutexLock lock(&mu_);
  for (const controller::FrontendKey& key : frontends) {
    auto it = frontends_.find(key);
    if (it != frontends_.end()) stats.frontends.push_back(ReadFrontendStats(key, it->second));
  }
  return stats;
}

absl::Status UringProxy::Prune(const controller::ServiceTable& desired) {
  if (device_ == nullptr) return absl::OkStatus();
  KPX_RETURN_IF_ERROR(CheckNetns());
  absl::flat_hash_set<Ipv4> keep;
  for (const auto& [key, rule] : desired) {
    if (!key.ip.IsUnspecified()) keep.insert(key.ip);
  }
  return device_->Prune(keep);
}

void UringProxy::StopAccepting() {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || !accepting_) return;
  accepting_ = false;
  for (auto& [key, fe] : frontends_) {
    fe.listening = false;
    fe.listener_fds = 0;
  }
  listener_fds_ = 0;
  absl::Status s = OnAllWorkers("stop accepting", [&](int i) {
    return [w = workers_[i].get()] { w->RemoveAllListeners(); };
  });
  if (!s.ok()) LOG(WARNING) << s;
}

std::vector<int> UringProxy::worker_loads() const {
  std::vector<int> loads;
  for (const auto& w : workers_) loads.push_back(w->load());
  return loads;
}

std::vector<uint64_t> UringProxy::worker_accepts() const {
  std::vector<uint64_t> accepts;
  for (const auto& w : workers_) accepts.push_back(w->accepted());
  return accepts;
}

int64_t UringProxy::open_connections() const {
  return ctx_ == nullptr ? 0 : ctx_->connections.load(std::memory_order_relaxed);
}

uint64_t UringProxy::spliced_flows() const {
  return ctx_ == nullptr ? 0 : ctx_->spliced_flows.load(std::memory_order_relaxed);
}

int UringProxy::shared_listeners() const {
  absl::MutexLock lock(&mu_);
  int shared = 0;
  for (const auto& [key, fe] : frontends_) {
    shared += fe.listening && fe.listener_fds == 1 && workers_.size() > 1;
  }
  return shared;
}

uint64_t UringProxy::buffer_starvations() const {
  return ctx_ == nullptr ? 0 : ctx_->buffer_starvations.load(std::memory_order_relaxed);
}

bool UringProxy::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  // Bounded poll: connections close on worker threads that should not pay
  // for waking a waiter; 2ms granularity is plenty for a drain.
  while (open_connections() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

void UringProxy::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  for (auto& w : workers_) w->Stop();
  frontends_.clear();
  if (device_ != nullptr) device_->Close();
}

}  // namespace kpx::uring
