// The worker event loop. Relay design: one recv (buffer selected by the
// kernel from this worker's ring) and one send in flight per direction, with
// up to kMaxQueued received buffers waiting, so reading runs ahead of a slow
// writer by a bounded amount and then stops (TCP back-pressure does the rest).
// A connection is recycled only when no request of it is in flight.
#include "dataplane/uring/worker.h"

#include <glog/logging.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kpx::uring {
namespace {

constexpr unsigned kRingEntries = 2048;
constexpr uint16_t kBufferGroup = 1;
constexpr absl::Duration kAcceptBackoff = absl::Milliseconds(50);

__kernel_timespec KernelTimespec(absl::Duration d) {
  __kernel_timespec ts{};
  int64_t ns = absl::ToInt64Nanoseconds(d);
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Closes with an RST instead of a FIN (once no request holds the socket).
void SetLingerZero(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

void SetTcpOption(int fd, int option, int value) {
  setsockopt(fd, IPPROTO_TCP, option, &value, sizeof(value));
}

// Bytes the client already sent (0 if none or unknown).
int BytesReadable(int fd) {
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

constexpr Op RecvOp(int f) { return f == 0 ? Op::kRecvClient : Op::kRecvBackend; }
constexpr Op SendOp(int f) { return f == 0 ? Op::kSendBackend : Op::kSendClient; }

}  // namespace

Worker::Worker(int index, WorkerContext* ctx)
    : index_(index),
      ctx_(ctx),
      rng_(ctx->options.rng_seed != 0
               ? ctx->options.rng_seed + static_cast<uint64_t>(index) * 0x9e3779b97f4a7c15ull
               : (static_cast<uint64_t>(MonotonicNs()) ^ (static_cast<uint64_t>(getpid()) << 32)) +
                     static_cast<uint64_t>(index)) {}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Start(int index, WorkerContext* ctx) {
  std::unique_ptr<Worker> w(new Worker(index, ctx));
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  w->started_.WaitForNotification();
  if (!w->start_status_.ok()) {
    w->thread_.join();
    w->stopped_ = true;
    return w->start_status_;
  }
  return w;
}

void Worker::SetSlice(absl::Duration slice) {
  // struct sched_attr (SCHED_ATTR_SIZE_VER1); <linux/sched/types.h> clashes
  // with glibc's <sched.h>, and glibc 2.36 has no wrapper.
  struct {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
  } attr{};
  attr.size = sizeof(attr);
  attr.sched_policy = SCHED_OTHER;
  // SCHED_OTHER takes its nice from the call: keep the thread's own.
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  if (errno == 0) attr.sched_nice = nice;
  attr.sched_runtime = static_cast<uint64_t>(absl::ToInt64Nanoseconds(slice));
  if (syscall(SYS_sched_setattr, gettid(), &attr, 0) != 0) {
    LOG_IF(WARNING, index_ == 0) << "worker slice " << slice << ": sched_setattr: "
                                 << std::strerror(errno) << " (kernel default slice kept)";
  }
}

Worker::~Worker() {
  Stop();
  if (event_fd_ >= 0) close(event_fd_);
}

void Worker::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    commands_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  // A full counter (impossible in practice) still leaves the read ready.
  ssize_t n = write(event_fd_, &one, sizeof(one));
  (void)n;
}

bool Worker::RunSync(std::function<void()> fn, absl::Duration timeout) {
  auto done = std::make_shared<absl::Notification>();
  Post([fn = std::move(fn), done] {
    fn();
    done->Notify();
  });
  return done->WaitForNotificationWithTimeout(timeout);
}

void Worker::Stop() {
  if (stopped_) return;
  stopped_ = true;
  Post([this] { stopping_ = true; });
  thread_.join();
}

absl::Status Worker::Setup() {
  const UringProxyOptions& o = ctx_->options;
  // Blocking on purpose: io_uring answers a read of an O_NONBLOCK file with
  // -EAGAIN instead of waiting for it. Sockets are left blocking for the same
  // reason; io_uring never blocks the thread on them.
  event_fd_ = eventfd(0, EFD_CLOEXEC);
  if (event_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  auto created = UringRing::Create(kRingEntries);
  if (!created.ok()) return created.status();
  ring_ = std::move(*created);
  auto bufs = BufferRing::Create(ring(), kBufferGroup, static_cast<unsigned>(o.buffers_per_worker),
                                 static_cast<unsigned>(o.buffer_size));
  if (!bufs.ok()) return bufs.status();
  bufs_ = std::move(*bufs);
  connect_ts_ = KernelTimespec(o.connect_timeout);
  backoff_ts_ = KernelTimespec(kAcceptBackoff);
  idle_ns_ = absl::ToInt64Nanoseconds(o.idle_timeout);
  // The tick sweeps idle connections (so it bounds how late they close) and
  // reaps drained VIPs; a quarter of the idle timeout, within [10ms, 1s].
  absl::Duration tick = absl::Seconds(1);
  if (o.idle_timeout > absl::ZeroDuration()) {
    tick = std::clamp(o.idle_timeout / 4, absl::Milliseconds(10), absl::Seconds(1));
  }
  tick_ts_ = KernelTimespec(tick);
  now_ns_ = MonotonicNs();
  if (index_ == 0) {
    const unsigned f = ring_->setup_flags();
    LOG(INFO) << "io_uring proxy: ring flags "
              << ((f & IORING_SETUP_DEFER_TASKRUN) ? "SINGLE_ISSUER|DEFER_TASKRUN"
                  : (f & IORING_SETUP_COOP_TASKRUN) ? "SINGLE_ISSUER|COOP_TASKRUN"
                                                    : "none (old kernel)")
              << ", " << o.buffers_per_worker << " x " << o.buffer_size << " B receive buffers";
  }
  ArmCommandRead();
  ArmTick();
  return absl::OkStatus();
}

void Worker::Run() {
  // splice() into a socket whose peer is gone raises SIGPIPE (it has no
  // MSG_NOSIGNAL); blocked on this thread it stays pending and harmless,
  // and the splice returns EPIPE.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  if (static_cast<size_t>(index_) < ctx_->worker_cpus.size()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(ctx_->worker_cpus[index_], &set);
    if (int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); err != 0) {
      LOG(WARNING) << "worker " << index_ << ": cannot pin to CPU " << ctx_->worker_cpus[index_]
                   << ": " << std::strerror(err);
    }
  }
  if (ctx_->options.worker_slice > absl::ZeroDuration()) SetSlice(ctx_->options.worker_slice);
  start_status_ = Setup();
  const bool ok = start_status_.ok();
  started_.Notify();  // `this` stays valid: Start() joins on failure
  if (!ok) return;
  while (!stopping_) {
    int ret = io_uring_submit_and_wait(ring(), 1);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
      LOG_EVERY_N(ERROR, 1000) << "worker " << index_ << ": io_uring_submit_and_wait: "
                               << std::strerror(-ret);
    }
    now_ns_ = MonotonicNs();
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(ring(), head, cqe) {
      HandleCqe(cqe);
      ++seen;
    }
    io_uring_cq_advance(ring(), seen);
    RearmStarved();
  }
  Teardown();
}

void Worker::Teardown() {
  RemoveAllListeners();
  for (auto& chunk : pool_) {
    for (uint32_t i = 0; i < kPoolChunk; ++i) {
      Conn* c = &chunk[i];
      if (c->state != State::kFree) Abort(c, /*reset=*/true);
    }
  }
  // Let the cancellations complete so no request still points at a buffer or
  // a connection when the ring goes. Bounded: 200 rounds of at most 10ms.
  auto listening = [this] {
    for (const Listener& l : listeners_) {
      if (l.in_use) return true;
    }
    return false;
  };
  for (int round = 0; round < 200 && (live_conns_ > 0 || listening()); ++round) {
    __kernel_timespec ts = KernelTimespec(absl::Milliseconds(10));
    io_uring_cqe* cqe = nullptr;
    io_uring_submit_and_wait_timeout(ring(), &cqe, 1, &ts, nullptr);
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring(), head, cqe) {
      HandleCqe(cqe);
      ++seen;
    }
    io_uring_cq_advance(ring(), seen);
  }
  if (live_conns_ > 0) LOG(WARNING) << "worker " << index_ << ": " << live_conns_
                                    << " connections still had requests in flight at exit";
  bufs_->DetachFromRing();
  ring_.reset();  // cancels what is left (tick, command read)
  bufs_.reset();
}

io_uring_sqe* Worker::Sqe() {
  // The submission queue is flushed when full; the kernel consumes it whole.
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (io_uring_sqe* sqe = io_uring_get_sqe(ring())) return sqe;
    io_uring_submit(ring());
  }
  LOG(FATAL) << "worker " << index_ << ": io_uring submission queue stuck full";
  return nullptr;
}

void Worker::ReserveSqes(unsigned n) {
  if (io_uring_sq_space_left(ring()) < n) io_uring_submit(ring());
}

void Worker::Submit(io_uring_sqe* sqe, Op op, uint32_t index, uint32_t gen) {
  io_uring_sqe_set_data64(sqe, UserData{op, index, gen}.Pack());
}

void Worker::HandleCqe(const io_uring_cqe* cqe) {
  const UserData ud = UserData::Unpack(cqe->user_data);
  switch (ud.op) {
    case Op::kCommand: OnCommand(); return;
    case Op::kTick: OnTick(); return;
    case Op::kAccept: OnAccept(ud.index, ud.generation, cqe); return;
    case Op::kAcceptRetry: OnAcceptRetry(ud.index); return;
    case Op::kCancel:
    case Op::kNone: return;
    default: break;
  }
  Conn* c = ConnAt(ud.index);
  if (c == nullptr || c->gen != (ud.generation & UserData::kGenerationMask) ||
      c->state == State::kFree) {
    // Cannot happen while connections are freed only with nothing in flight;
    // still, never leak a buffer the kernel handed over.
    if (cqe->flags & IORING_CQE_F_BUFFER) {
      bufs_->Consumed();
      bufs_->Return(static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
    }
    LOG_EVERY_N(WARNING, 1000) << "worker " << index_ << ": stale completion";
    return;
  }
  switch (ud.op) {
    case Op::kConnect: OnConnect(c, cqe->res); break;
    case Op::kConnectTimeout:
      --c->inflight;
      MaybeFree(c);
      break;
    case Op::kRecvClient: OnRecv(c, 0, cqe); break;
    case Op::kRecvBackend: OnRecv(c, 1, cqe); break;
    case Op::kSendBackend: OnSend(c, 0, cqe->res); break;
    case Op::kSendClient: OnSend(c, 1, cqe->res); break;
    case Op::kPollClientIn:
    case Op::kPollBackendOut: OnPoll(c, 0, cqe->res); break;
    case Op::kPollBackendIn:
    case Op::kPollClientOut: OnPoll(c, 1, cqe->res); break;
    default: break;
  }
}

// ---- commands and timers ----

void Worker::ArmCommandRead() {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_read(sqe, event_fd_, &event_value_, sizeof(event_value_), 0);
  Submit(sqe, Op::kCommand, 0, 0);
}

void Worker::OnCommand() {
  std::vector<std::function<void()>> commands;
  {
    absl::MutexLock lock(&mu_);
    commands.swap(commands_);
  }
  for (auto& fn : commands) fn();
  if (!stopping_) ArmCommandRead();
}

void Worker::ArmTick() {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_timeout(sqe, &tick_ts_, 0, 0);
  Submit(sqe, Op::kTick, 0, 0);
}

void Worker::OnTick() {
  if (idle_ns_ > 0) {
    for (auto& chunk : pool_) {
      for (uint32_t i = 0; i < kPoolChunk; ++i) {
        Conn* c = &chunk[i];
        if (c->state == State::kRelaying && now_ns_ - c->last_active_ns > idle_ns_) {
          Abort(c, /*reset=*/false);
        }
      }
    }
  }
  if (index_ == 0 && ctx_->device != nullptr && ctx_->device->draining()) ctx_->device->Reap();
  if (!stopping_) ArmTick();
}

// ---- listeners ----

ListenerSocket::~ListenerSocket() { close(fd); }

void Worker::AddListener(std::shared_ptr<const FrontendConfig> config,
                         std::shared_ptr<ListenerSocket> sock) {
  const controller::FrontendKey key = config->shared->key;
  if (auto it = listener_by_key_.find(key); it != listener_by_key_.end()) {
    // Already listening (a re-sent Apply): keep the old socket (the new one
    // closes when its last holder drops it).
    listeners_[it->second].config = std::move(config);
    return;
  }
  // A free slot in O(1): a scan for one made 10k frontends cost 50M steps.
  uint32_t slot;
  if (!free_listeners_.empty()) {
    slot = free_listeners_.back();
    free_listeners_.pop_back();
  } else {
    slot = static_cast<uint32_t>(listeners_.size());
    listeners_.emplace_back();
  }
  Listener& l = listeners_[slot];
  l.sock = std::move(sock);
  l.gen = (l.gen + 1) & UserData::kGenerationMask;
  l.in_use = true;
  l.armed = false;
  l.retry_pending = false;
  l.closing = false;
  l.config = std::move(config);
  listener_by_key_[key] = slot;
  ArmAccept(slot);
  // Submit now so the listener is live when the control thread's wait ends.
  io_uring_submit(ring());
}

void Worker::UpdateFrontend(std::shared_ptr<const FrontendConfig> config) {
  auto it = listener_by_key_.find(config->shared->key);
  if (it != listener_by_key_.end()) listeners_[it->second].config = std::move(config);
}

void Worker::RemoveListener(const controller::FrontendKey& key) {
  auto it = listener_by_key_.find(key);
  if (it == listener_by_key_.end()) return;
  uint32_t slot = it->second;
  listener_by_key_.erase(it);
  CloseListener(slot);
  io_uring_submit(ring());  // the cancel runs before the control thread resumes
}

void Worker::RemoveAllListeners() {
  std::vector<uint32_t> slots;
  for (const auto& [key, slot] : listener_by_key_) slots.push_back(slot);
  listener_by_key_.clear();
  for (uint32_t slot : slots) CloseListener(slot);
  io_uring_submit(ring());
}

void Worker::CloseListener(uint32_t slot) {
  Listener& l = listeners_[slot];
  l.closing = true;
  if (l.armed) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_cancel64(sqe, UserData{Op::kAccept, slot, l.gen}.Pack(), 0);
    Submit(sqe, Op::kCancel, 0, 0);
  }
  // The pending accept holds its own reference, so close() alone would leave
  // the socket listening until the cancel completes (later, with
  // DEFER_TASKRUN): a connect in that window would still be accepted.
  // shutdown() takes it out of LISTEN now. The descriptor closes with its
  // last holder (a shared listener: the last worker to let go), so no
  // worker's re-armed accept can name a reused number.
  l.sock->shut.store(true, std::memory_order_relaxed);
  shutdown(l.sock->fd, SHUT_RDWR);
  l.sock.reset();
  MaybeFreeListener(slot);
}

void Worker::MaybeFreeListener(uint32_t slot) {
  Listener& l = listeners_[slot];
  if (!l.in_use || !l.closing || l.armed || l.retry_pending) return;
  l.in_use = false;
  l.config.reset();
  free_listeners_.push_back(slot);
}

void Worker::ArmAccept(uint32_t slot) {
  Listener& l = listeners_[slot];
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_multishot_accept(sqe, l.sock->fd, nullptr, nullptr, SOCK_CLOEXEC);
  Submit(sqe, Op::kAccept, slot, l.gen);
  l.armed = true;
}

void Worker::OnAccept(uint32_t slot, uint32_t gen, const io_uring_cqe* cqe) {
  if (slot >= listeners_.size() || listeners_[slot].gen != gen) {
    if (cqe->res >= 0) close(cqe->res);  // cannot happen: slots are reused only when idle
    return;
  }
  Listener& l = listeners_[slot];
  if (!(cqe->flags & IORING_CQE_F_MORE)) l.armed = false;
  const int res = cqe->res;
  if (res >= 0) {
    if (l.closing) {
      SetLingerZero(res);
      close(res);
    } else {
      accepted_.fetch_add(1, std::memory_order_relaxed);
      // A shared listener wakes the same ring for every connection (the
      // kernel's exclusive wake-up takes the first waiter), so its
      // connections are always balanced by hand-over.
      if (!MaybeHandOff(l.config, res, l.sock->shared)) {
        OnNewClient(l.config, res, /*counted=*/false);
      }
    }
  } else if (!l.closing && l.sock->shut.load(std::memory_order_relaxed)) {
    // Another worker removed this shared listener; our RemoveListener is
    // on its way. Not re-armed: an accept on it would fail at once.
    return;
  } else if (res != -ECANCELED && !l.closing) {
    // EMFILE/ENFILE/ENOMEM and the like: retrying at once would spin on the
    // same error, so back off and let connections close meanwhile.
    LOG_EVERY_N(WARNING, 100) << "worker " << index_ << ": accept on "
                              << l.config->shared->key.String() << ": " << std::strerror(-res)
                              << "; retrying in " << kAcceptBackoff;
    if (!l.armed && !l.retry_pending) {
      io_uring_sqe* sqe = Sqe();
      io_uring_prep_timeout(sqe, &backoff_ts_, 0, 0);
      Submit(sqe, Op::kAcceptRetry, slot, l.gen);
      l.retry_pending = true;
    }
    return;
  }
  // The multishot accept ended (kernel resources, or it was cancelled).
  if (!l.armed && !l.retry_pending) {
    if (l.closing) {
      MaybeFreeListener(slot);
    } else {
      ArmAccept(slot);
    }
  }
}

void Worker::OnAcceptRetry(uint32_t slot) {
  if (slot >= listeners_.size()) return;
  Listener& l = listeners_[slot];
  l.retry_pending = false;
  if (l.closing) {
    MaybeFreeListener(slot);
  } else if (!l.armed && !l.sock->shut.load(std::memory_order_relaxed)) {
    ArmAccept(slot);
  }
}

bool Worker::MaybeHandOff(const std::shared_ptr<const FrontendConfig>& config, int fd,
                          bool shared_listener) {
  if ((ctx_->worker_cpus.empty() && !shared_listener) || ctx_->workers.size() < 2) return false;
  Worker* target = nullptr;
  int least = INT32_MAX;
  for (Worker* w : ctx_->workers) {
    if (w != this && w->load() < least) {
      least = w->load();
      target = w;
    }
  }
  // Hysteresis: small imbalances are normal and not worth a cross-CPU wakeup.
  if (target == nullptr || load() < least + 4 + least / 4) return false;
  target->load_.fetch_add(1, std::memory_order_relaxed);
  // The descriptor is closed if the target stops before adopting it.
  struct Client {
    explicit Client(int f) : fd(f) {}
    ~Client() {
      if (fd >= 0) close(fd);
    }
    int fd;
  };
  target->Post([target, config, client = std::make_shared<Client>(fd)] {
    const int adopted = std::exchange(client->fd, -1);
    target->OnNewClient(config, adopted, /*counted=*/true);
  });
  return true;
}

void Worker::OnNewClient(std::shared_ptr<const FrontendConfig> config, int fd, bool counted) {
  if (!counted) load_.fetch_add(1, std::memory_order_relaxed);
  FrontendShared& shared = *config->shared;
  shared.total.fetch_add(1, std::memory_order_relaxed);
  const int64_t open = ctx_->connections.fetch_add(1, std::memory_order_relaxed);
  if (open >= ctx_->options.max_connections) {
    load_.fetch_sub(1, std::memory_order_relaxed);
    ctx_->connections.fetch_sub(1, std::memory_order_relaxed);
    shared.rejected.fetch_add(1, std::memory_order_relaxed);
    SetLingerZero(fd);
    close(fd);
    return;
  }
  shared.active.fetch_add(1, std::memory_order_relaxed);
  Conn* c = AllocConn();
  c->state = State::kConnecting;
  c->client_fd = fd;
  c->config = std::move(config);
  c->last_active_ns = now_ns_;
  if (c->config->affinity_timeout > absl::ZeroDuration()) {
    sockaddr_in peer{};
    socklen_t len = sizeof(peer);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 &&
        peer.sin_family == AF_INET) {
      c->client_ip = Ipv4::FromBe(peer.sin_addr.s_addr);
    }
  }
  // TCP_NODELAY is inherited from the listener. When the client has already
  // sent bytes, read them while the backend connect is in flight: they are
  // then ready to go (and carry the handshake's ACK, see StartConnect) the
  // moment it completes, and the recv completes at once. Otherwise the recv
  // waits for the connect, as arming a poll now would only cost a wakeup.
  c->client_data_ready = BytesReadable(fd) > 0;
  if (c->client_data_ready) ArmRecv(c, 0);
  StartConnect(c);
}

// ---- connections ----

Worker::Conn* Worker::AllocConn() {
  if (free_head_ == UINT32_MAX) {
    const uint32_t base = static_cast<uint32_t>(pool_.size()) * kPoolChunk;
    pool_.push_back(std::make_unique<Conn[]>(kPoolChunk));
    Conn* chunk = pool_.back().get();
    for (uint32_t i = kPoolChunk; i-- > 0;) {
      chunk[i].index = base + i;
      chunk[i].next_free = free_head_;
      free_head_ = base + i;
    }
  }
  Conn* c = ConnAt(free_head_);
  free_head_ = c->next_free;
  ++live_conns_;
  const uint32_t gen = (c->gen + 1) & UserData::kGenerationMask;
  const uint32_t index = c->index;
  *c = Conn{};
  c->index = index;
  c->gen = gen;
  return c;
}

Worker::Conn* Worker::ConnAt(uint32_t index) {
  const uint32_t chunk = index / kPoolChunk;
  if (chunk >= pool_.size()) return nullptr;
  return &pool_[chunk][index % kPoolChunk];
}

void Worker::StartConnect(Conn* c) {
  BackendEntry* b = PickBackend(*c->config, c->client_ip, absl::Now(),
                                absl::MakeConstSpan(c->tried.data(), c->attempts), rng_);
  if (b == nullptr) {
    Reject(c);
    return;
  }
  c->tried[c->attempts++] = b;
  c->backend = b;
  b->active.fetch_add(1, std::memory_order_relaxed);
  c->backend_counted = true;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    // Out of descriptors here is no fault of the backend: reset the client.
    LOG_EVERY_N(WARNING, 100) << "worker " << index_ << ": socket: " << std::strerror(errno);
    Reject(c);
    return;
  }
  SetTcpOption(fd, TCP_NODELAY, 1);
  if (c->client_data_ready || c->flow[0].size > 0) {
    // We have bytes for the backend as soon as it answers: TCP_DEFER_ACCEPT
    // on a connecting socket makes the kernel hold back the bare ACK of the
    // handshake so that it rides on our first data segment (one packet less
    // per connection). Never without data in hand: a server-speaks-first
    // protocol would see its connection only when the delayed ACK fires.
    SetTcpOption(fd, TCP_DEFER_ACCEPT, 1);
  }
  c->backend_fd = fd;
  ReserveSqes(2);  // a link must not be split by a flush in between
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&b->addr), sizeof(b->addr));
  sqe->flags |= IOSQE_IO_LINK;
  Submit(sqe, Op::kConnect, c->index, c->gen);
  sqe = Sqe();
  io_uring_prep_link_timeout(sqe, &connect_ts_, 0);
  Submit(sqe, Op::kConnectTimeout, c->index, c->gen);
  c->inflight += 2;
  c->connect_armed = true;
}

void Worker::OnConnect(Conn* c, int res) {
  --c->inflight;
  c->connect_armed = false;
  if (c->state != State::kConnecting) {
    MaybeFree(c);
    return;
  }
  BackendEntry* b = c->backend;
  if (res == 0) {
    b->total.fetch_add(1, std::memory_order_relaxed);
    if (ctx_->sink != nullptr) ctx_->sink->OnConnectSucceeded(b->ip, b->port);
    c->state = State::kRelaying;
    c->last_active_ns = now_ns_;
    ArmSend(c, 0);  // what the client sent while we were connecting
    ArmRecv(c, 0);
    ArmRecv(c, 1);
    MaybeForwardFin(c, 0);
    return;
  }
  // -ECANCELED: the linked timeout fired first.
  const int err = res == -ECANCELED ? ETIMEDOUT : -res;
  b->failed_connects.fetch_add(1, std::memory_order_relaxed);
  b->active.fetch_sub(1, std::memory_order_relaxed);
  c->backend_counted = false;
  if (ctx_->sink != nullptr) ctx_->sink->OnConnectFailed(b->ip, b->port, err);
  close(c->backend_fd);
  c->backend_fd = -1;
  if (c->attempts < kMaxAttempts) {
    StartConnect(c);  // nothing was sent to the client yet: try elsewhere
  } else {
    Reject(c);
  }
}

void Worker::ArmRecv(Conn* c, int f) {
  Flow& flow = c->flow[f];
  if (!CanRecv(c, f) || flow.recv_armed || flow.eof || flow.starved || flow.to_splice ||
      flow.size >= kMaxQueued) {
    return;
  }
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_recv(sqe, f == 0 ? c->client_fd : c->backend_fd, nullptr, bufs_->buffer_size(), 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = bufs_->group();
  Submit(sqe, RecvOp(f), c->index, c->gen);
  ++c->inflight;
  flow.recv_armed = true;
}

void Worker::OnRecv(Conn* c, int f, const io_uring_cqe* cqe) {
  Flow& flow = c->flow[f];
  --c->inflight;
  flow.recv_armed = false;
  const int res = cqe->res;
  const bool has_buffer = cqe->flags & IORING_CQE_F_BUFFER;
  const auto bid = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
  if (has_buffer) bufs_->Consumed();
  const bool live = CanRecv(c, f);
  if (!live || res <= 0) {
    if (has_buffer) bufs_->Return(bid);
  }
  if (!live) {
    MaybeFree(c);
    return;
  }
  if (res > 0) {
    flow.q[(flow.head + flow.size) % kMaxQueued] = Chunk{bid, static_cast<uint32_t>(res), 0};
    ++flow.size;
    c->last_active_ns = now_ns_;
    NoteReceived(c, f, res);
    ArmSend(c, f);
    ArmRecv(c, f);
  } else if (res == 0) {
    flow.eof = true;
    MaybeForwardFin(c, f);
  } else if (res == -ENOBUFS) {
    // Every buffer of this worker is queued somewhere: wait for one back.
    flow.starved = true;
    ctx_->buffer_starvations.fetch_add(1, std::memory_order_relaxed);
    starved_.push_back({c->index, c->gen, static_cast<uint8_t>(f)});
  } else if (res == -EINTR || res == -EAGAIN) {
    ArmRecv(c, f);
  } else {
    // ECONNRESET (or a timeout / unreachable error on an established
    // socket): the peer is gone; propagate it as an RST.
    Abort(c, /*reset=*/true);
  }
}

void Worker::ArmSend(Conn* c, int f) {
  Flow& flow = c->flow[f];
  if (c->state != State::kRelaying || flow.send_armed || flow.size == 0) return;
  const Chunk& chunk = flow.q[flow.head];
  io_uring_sqe* sqe = Sqe();
  // MSG_WAITALL: the kernel keeps sending until the chunk is gone, so a
  // short send only happens on error. MSG_NOSIGNAL: EPIPE, never SIGPIPE.
  io_uring_prep_send(sqe, f == 0 ? c->backend_fd : c->client_fd,
                     bufs_->Buffer(chunk.bid) + chunk.off, chunk.len - chunk.off,
                     MSG_NOSIGNAL | MSG_WAITALL);
  Submit(sqe, SendOp(f), c->index, c->gen);
  ++c->inflight;
  flow.send_armed = true;
}

void Worker::OnSend(Conn* c, int f, int res) {
  Flow& flow = c->flow[f];
  --c->inflight;
  flow.send_armed = false;
  if (c->state != State::kRelaying) {
    MaybeFree(c);
    return;
  }
  if (res == -EINTR || res == -EAGAIN) {
    ArmSend(c, f);
    return;
  }
  if (res <= 0) {
    Abort(c, /*reset=*/true);  // EPIPE / ECONNRESET: the receiver is gone
    return;
  }
  (f == 0 ? c->backend->bytes_to_backend : c->backend->bytes_to_client)
      .fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
  Chunk& chunk = flow.q[flow.head];
  chunk.off += static_cast<uint32_t>(res);
  if (chunk.off >= chunk.len) {
    bufs_->Return(chunk.bid);
    flow.head = static_cast<uint8_t>((flow.head + 1) % kMaxQueued);
    --flow.size;
  }
  c->last_active_ns = now_ns_;
  ArmSend(c, f);
  if (flow.to_splice && !flow.spliced && flow.size == 0 && !flow.send_armed) {
    StartSplice(c, f);  // the buffered bytes are out: the pipe takes over
    return;
  }
  ArmRecv(c, f);
  MaybeForwardFin(c, f);
}

void Worker::MaybeForwardFin(Conn* c, int f) {
  Flow& flow = c->flow[f];
  if (c->state != State::kRelaying || !flow.eof || flow.done || flow.size > 0 || flow.send_armed ||
      flow.pipe_bytes > 0) {
    return;
  }
  // Half-close: the source is done sending; pass its FIN on and keep the
  // other direction open until its source is done too.
  shutdown(f == 0 ? c->backend_fd : c->client_fd, SHUT_WR);
  flow.done = true;
  if (c->flow[0].done && c->flow[1].done) CloseGracefully(c);
}

// io_uring resolves a request's descriptor when the request is submitted,
// not when it is prepared: a recv or poll prepared in this batch for a socket
// we are about to close must reach the kernel first, or another thread's
// accept/socket could reuse the number and the request would run on a
// different connection's socket.
void Worker::SubmitBeforeClose() {
  if (io_uring_sq_ready(ring()) > 0) io_uring_submit(ring());
}

void Worker::Reject(Conn* c) {
  c->config->shared->rejected.fetch_add(1, std::memory_order_relaxed);
  c->state = State::kClosing;
  SetLingerZero(c->client_fd);  // the client sees a reset at once, not a hang
  SubmitBeforeClose();
  close(c->client_fd);
  c->client_fd = -1;
  if (c->backend_fd >= 0) close(c->backend_fd);
  c->backend_fd = -1;
  ReleaseCounters(c);
  MaybeFree(c);
}

void Worker::Abort(Conn* c, bool reset) {
  if (c->state == State::kClosing || c->state == State::kFree) return;
  c->state = State::kClosing;
  if (reset) {
    SetLingerZero(c->client_fd);
    SetLingerZero(c->backend_fd);
  }
  auto cancel = [&](Op op) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_cancel64(sqe, UserData{op, c->index, c->gen}.Pack(), 0);
    Submit(sqe, Op::kCancel, 0, 0);
  };
  if (c->connect_armed) cancel(Op::kConnect);
  for (int f = 0; f < 2; ++f) {
    if (c->flow[f].recv_armed) cancel(RecvOp(f));
    if (c->flow[f].send_armed) cancel(SendOp(f));
    if (c->flow[f].poll_armed) cancel(PollOp(f, c->flow[f].poll_out));
  }
  // Requests hold their own file references: the FIN or RST goes out when
  // the last of them is cancelled.
  SubmitBeforeClose();
  if (c->client_fd >= 0) close(c->client_fd);
  if (c->backend_fd >= 0) close(c->backend_fd);
  c->client_fd = c->backend_fd = -1;
  ReleaseCounters(c);
  MaybeFree(c);
}

void Worker::CloseGracefully(Conn* c) {
  c->state = State::kClosing;
  SubmitBeforeClose();
  close(c->client_fd);
  close(c->backend_fd);
  c->client_fd = c->backend_fd = -1;
  ReleaseCounters(c);
  MaybeFree(c);
}

void Worker::ReleaseCounters(Conn* c) {
  if (c->released) return;
  c->released = true;
  c->config->shared->active.fetch_sub(1, std::memory_order_relaxed);
  ctx_->connections.fetch_sub(1, std::memory_order_relaxed);
  if (c->backend_counted) {
    c->backend->active.fetch_sub(1, std::memory_order_relaxed);
    c->backend_counted = false;
  }
}

void Worker::MaybeFree(Conn* c) {
  if (c->state != State::kClosing || c->inflight > 0) return;
  for (Flow& flow : c->flow) {
    for (uint8_t i = 0; i < flow.size; ++i) bufs_->Return(flow.q[(flow.head + i) % kMaxQueued].bid);
    flow.size = 0;
  }
  ClosePipes(c);
  c->config.reset();
  c->state = State::kFree;
  c->next_free = free_head_;
  free_head_ = c->index;
  --live_conns_;
  load_.fetch_sub(1, std::memory_order_relaxed);
}

void Worker::RearmStarved() {
  // One re-armed recv per buffer back in the ring; the rest wait their turn.
  for (unsigned budget = bufs_->available(); budget > 0 && !starved_.empty(); --budget) {
    Starved s = starved_.front();
    starved_.pop_front();
    Conn* c = ConnAt(s.index);
    if (c == nullptr || c->gen != s.gen || !CanRecv(c, s.flow)) continue;
    c->flow[s.flow].starved = false;
    ArmRecv(c, s.flow);
  }
}

}  // namespace kpx::uring
