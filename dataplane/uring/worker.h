// One io_uring event loop on its own thread: SO_REUSEPORT listeners with
// multishot accept, backend connects with linked timeouts, and the
// bidirectional relay over provided receive buffers. Workers share nothing
// mutable with each other except atomic counters and the affinity table; the
// control thread talks to a worker only through its command queue.
#pragma once

#include <linux/time_types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "dataplane/uring/backend_picker.h"
#include "dataplane/uring/proxy_options.h"
#include "dataplane/uring/uring_ring.h"
#include "dataplane/uring/user_data.h"
#include "dataplane/uring/vip_device.h"

namespace kpx::uring {

// Proxy-wide state every worker sees. Outlives the workers.
class Worker;

struct WorkerContext {
  UringProxyOptions options;
  ProxyEventSink* sink = nullptr;
  std::atomic<int64_t> connections{0};  // client connections open, all workers
  VipDevice* device = nullptr;          // reaped by worker 0's tick; may be null
  std::atomic<uint64_t> buffer_starvations{0};  // recvs that found no free buffer
  std::atomic<uint64_t> spliced_flows{0};  // directions moved to splice(2) (RelayMode::kSplice)
  std::vector<int> worker_cpus;  // worker i runs on worker_cpus[i]; empty: not pinned
  // Every worker, set once all have started (before any listener exists).
  std::vector<Worker*> workers;
};

// A listening socket, closed when the last worker accepting on it lets go:
// one worker for a per-worker SO_REUSEPORT listener, every worker for a
// shared one (UringProxyOptions::listener_fd_budget).
struct ListenerSocket {
  ListenerSocket(int f, bool all_workers) : fd(f), shared(all_workers) {}
  ~ListenerSocket();
  ListenerSocket(const ListenerSocket&) = delete;
  ListenerSocket& operator=(const ListenerSocket&) = delete;
  const int fd;
  const bool shared;  // every worker accepts on it
  // Taken out of LISTEN by the first worker that removed it: the others'
  // accepts then fail, which is not an error to retry.
  std::atomic<bool> shut{false};
};

class Worker {
 public:
  // Starts the thread and waits until its ring is set up (or failed).
  static absl::StatusOr<std::unique_ptr<Worker>> Start(int index, WorkerContext* ctx);
  ~Worker();  // Stop()
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs `fn` on the worker thread, soon. `fn` must own what it captures.
  void Post(std::function<void()> fn);
  // Post + wait. False on timeout (then `fn` still runs later).
  bool RunSync(std::function<void()> fn, absl::Duration timeout);
  // Closes every connection and listener, stops and joins the thread.
  void Stop();

  // Connections this worker holds, plus those handed to it and not yet
  // adopted. Read by the other workers to balance (relaxed).
  int load() const { return load_.load(std::memory_order_relaxed); }
  // Connections this worker's listeners accepted (before any hand-over).
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }

  // Worker-thread-only operations, for Post/RunSync closures.
  // Starts accepting on `sock` (bound and listening) for `config`'s frontend.
  void AddListener(std::shared_ptr<const FrontendConfig> config,
                   std::shared_ptr<ListenerSocket> sock);
  // New snapshot for a frontend this worker listens for (no-op otherwise).
  void UpdateFrontend(std::shared_ptr<const FrontendConfig> config);
  // Closes the frontend's listener; its connections carry on.
  void RemoveListener(const controller::FrontendKey& key);
  void RemoveAllListeners();

 private:
  static constexpr int kMaxQueued = 4;    // received buffers waiting per direction
  static constexpr int kMaxAttempts = 3;  // backend connects per client connection
  static constexpr uint32_t kPoolChunk = 1024;

  struct Chunk {
    uint16_t bid;
    uint32_t len;
    uint32_t off;
  };
  // One direction of a connection. Flow 0: client -> backend; 1: backend -> client.
  struct Flow {
    std::array<Chunk, kMaxQueued> q;
    uint8_t head = 0;
    uint8_t size = 0;
    bool recv_armed = false;
    bool send_armed = false;
    bool starved = false;  // recv got -ENOBUFS: waits for buffers to come back
    bool eof = false;      // the source sent FIN
    bool done = false;     // FIN forwarded (shutdown(SHUT_WR) on the sink)
    // Splice relay (worker_splice.cc). `to_splice`: no more recvs; switch
    // once the queued buffers are sent. `spliced`: the pipe carries the flow.
    bool to_splice = false;
    bool spliced = false;
    bool poll_armed = false;  // one readiness poll: in on the source, or out on the sink
    bool poll_out = false;    // which of the two
    uint32_t pipe_bytes = 0;  // bytes sitting in the pipe
    int pipe_rd = -1;
    int pipe_wr = -1;
    uint64_t received = 0;  // bytes read from the source through buffers
  };
  enum class State : uint8_t { kFree, kConnecting, kRelaying, kClosing };
  struct Conn {
    uint32_t index = 0;
    uint32_t gen = 0;
    State state = State::kFree;
    bool connect_armed = false;
    bool backend_counted = false;  // holds one of backend->active
    bool client_data_ready = false;  // the client had sent bytes when accepted
    bool released = false;         // frontend/proxy counters already given back
    uint8_t attempts = 0;
    int client_fd = -1;
    int backend_fd = -1;
    int inflight = 0;  // submitted requests whose completion is still due
    Flow flow[2];
    std::shared_ptr<const FrontendConfig> config;  // the snapshot it was accepted under
    BackendEntry* backend = nullptr;
    std::array<BackendEntry*, kMaxAttempts> tried{};
    Ipv4 client_ip;
    int64_t last_active_ns = 0;
    uint32_t next_free = 0;
  };
  struct Listener {
    std::shared_ptr<ListenerSocket> sock;  // null once closing
    uint32_t gen = 0;
    bool in_use = false;
    bool armed = false;
    bool retry_pending = false;
    bool closing = false;
    std::shared_ptr<const FrontendConfig> config;
  };
  struct Starved {
    uint32_t index;
    uint32_t gen;
    uint8_t flow;
  };

  Worker(int index, WorkerContext* ctx);
  void Run();
  void SetSlice(absl::Duration slice);  // on the worker thread, before Setup
  absl::Status Setup();
  void Teardown();
  void HandleCqe(const io_uring_cqe* cqe);
  io_uring_sqe* Sqe();
  void ReserveSqes(unsigned n);
  void Submit(io_uring_sqe* sqe, Op op, uint32_t index, uint32_t gen);

  // Commands and timers.
  void ArmCommandRead();
  void OnCommand();
  void ArmTick();
  void OnTick();

  // Listeners.
  void ArmAccept(uint32_t slot);
  void OnAccept(uint32_t slot, uint32_t gen, const io_uring_cqe* cqe);
  void OnAcceptRetry(uint32_t slot);
  void CloseListener(uint32_t slot);
  void MaybeFreeListener(uint32_t slot);
  // With CPU steering a burst of connections from one CPU (a client's
  // threads that happened to share it) would all land on one worker; a
  // worker that holds clearly more than another hands the new client over.
  // Connections of a shared listener are balanced this way too.
  bool MaybeHandOff(const std::shared_ptr<const FrontendConfig>& config, int fd,
                    bool shared_listener);
  // `counted`: load_ already includes this client (handed over).
  void OnNewClient(std::shared_ptr<const FrontendConfig> config, int fd, bool counted);

  // Connections.
  Conn* AllocConn();
  Conn* ConnAt(uint32_t index);
  void StartConnect(Conn* c);
  void OnConnect(Conn* c, int res);
  // The client is read from accept on (its bytes queue while we connect);
  // the backend once connected.
  static bool CanRecv(const Conn* c, int f) {
    return c->state == State::kRelaying || (f == 0 && c->state == State::kConnecting);
  }
  void ArmRecv(Conn* c, int f);
  void OnRecv(Conn* c, int f, const io_uring_cqe* cqe);
  void ArmSend(Conn* c, int f);
  void OnSend(Conn* c, int f, int res);
  void MaybeForwardFin(Conn* c, int f);
  // Splice relay (worker_splice.cc).
  bool SpliceEnabled() const { return ctx_->options.relay == RelayMode::kSplice; }
  void NoteReceived(Conn* c, int f, int bytes);
  void StartSplice(Conn* c, int f);
  void Pump(Conn* c, int f);
  void OnPoll(Conn* c, int f, int res);
  void ClosePipes(Conn* c);

  void Reject(Conn* c);
  void Abort(Conn* c, bool reset);
  void CloseGracefully(Conn* c);
  void ReleaseCounters(Conn* c);
  void MaybeFree(Conn* c);
  void RearmStarved();

  const int index_;
  WorkerContext* const ctx_;
  std::thread thread_;
  absl::Notification started_;
  absl::Status start_status_;

  absl::Mutex mu_;
  std::vector<std::function<void()>> commands_ ABSL_GUARDED_BY(mu_);
  int event_fd_ = -1;
  uint64_t event_value_ = 0;  // target of the eventfd read
  bool stopping_ = false;
  bool stopped_ = false;  // Stop() ran (control thread only)

  std::unique_ptr<UringRing> ring_;
  std::unique_ptr<BufferRing> bufs_;
  io_uring* ring() { return ring_->get(); }
  void SubmitBeforeClose();  // before close() of a socket this batch may name

  __kernel_timespec connect_ts_{};
  __kernel_timespec tick_ts_{};
  __kernel_timespec backoff_ts_{};
  int64_t idle_ns_ = 0;
  int64_t now_ns_ = 0;  // CLOCK_MONOTONIC_COARSE, refreshed per loop
  Rng rng_;

  std::vector<std::unique_ptr<Conn[]>> pool_;
  uint32_t free_head_ = UINT32_MAX;
  uint32_t live_conns_ = 0;
  std::atomic<int> load_{0};
  std::atomic<uint64_t> accepted_{0};
  std::deque<Starved> starved_;

  std::vector<Listener> listeners_;
  std::vector<uint32_t> free_listeners_;  // slots of listeners_ not in use
  absl::flat_hash_map<controller::FrontendKey, uint32_t> listener_by_key_;
};

}  // namespace kpx::uring
