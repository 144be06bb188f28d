// UringProxy: kpx's userspace TCP dataplane. Each frontend VIP:port is bound
// (the VIP as a /32 on kpx0) by one SO_REUSEPORT listener per worker (or one
// listener all workers accept on, past the descriptor budget); each
// worker runs its own io_uring loop that accepts, picks a backend, connects
// with a timeout and retries, and relays bytes both ways with half-close and
// reset propagation. See worker.h for the relay, backend_picker.h for choice.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dataplane/dataplane.h"
#include "dataplane/uring/backend_picker.h"
#include "dataplane/uring/cpu_steering.h"
#include "dataplane/uring/lb_algorithm.h"
#include "dataplane/uring/proxy_options.h"
#include "dataplane/uring/vip_device.h"

namespace kpx::uring {

class Worker;
struct WorkerContext;

class UringProxy final : public dataplane::Dataplane {
 public:
  // Raises RLIMIT_NOFILE to its hard limit, opens (or creates) the VIP device
  // when options.manage_device, starts the workers. Sockets and the device
  // live in the network namespace of the calling thread; Apply must be called
  // from a thread in that same namespace.
  static absl::StatusOr<std::unique_ptr<UringProxy>> Create(UringProxyOptions options,
                                                            ProxyEventSink* sink = nullptr);
  ~UringProxy() override;  // Shutdown()

  std::string_view Name() const override { return "uring"; }
  // Thread-safe and idempotent per operation. Returns once every worker runs
  // the new rules: a connection accepted after it returns sees them.
  // Frontends with supported=false or a protocol other than TCP are ignored.
  absl::Status Apply(const controller::TableDiff& diff) override;
  dataplane::DataplaneStats Stats() const override;
  dataplane::DataplaneStats StatsOf(absl::Span<const controller::FrontendKey> frontends) const override;
  // After the first full sync: removes /32s on the VIP device that no rule of
  // `desired` uses (left by a kpxd that died without cleaning up). Listeners
  // never outlive the process, so there is nothing else to adopt or prune.
  absl::Status Prune(const controller::ServiceTable& desired) override;

  // SIGTERM step 1: close every listener (new connections are refused);
  // established ones carry on. Later Applies update rules but open nothing.
  void StopAccepting();
  // True once no client connection is open (false on timeout).
  bool WaitIdle(absl::Duration timeout);
  // Stops the workers (open connections are reset), removes the VIPs (and the
  // device if this proxy created it). Idempotent; the destructor calls it.
  void Shutdown();

  int workers() const { return static_cast<int>(workers_.size()); }
  // Connections each worker holds now (index = worker).
  std::vector<int> worker_loads() const;
  // Connections each worker's listeners accepted so far (index = worker).
  std::vector<uint64_t> worker_accepts() const;
  // Client connections open now, all frontends.
  int64_t open_connections() const;
  // Receives that found every buffer of their worker in use and waited for
  // one (back-pressure); a steadily rising count means buffers_per_worker is
  // too small for the load.
  uint64_t buffer_starvations() const;
  // The snapshot the workers use for `key` (null if not served): for
  // PreviewPick (kpxctl trace).
  std::shared_ptr<const FrontendConfig> FrontendSnapshot(const controller::FrontendKey& key) const;
  // Connection directions moved to splice(2) (RelayMode::kSplice).
  uint64_t spliced_flows() const;
  // Frontends served by one listener shared by all workers (fd budget).
  int shared_listeners() const;

 private:
  struct Frontend {
    std::shared_ptr<FrontendShared> shared;
    std::shared_ptr<const FrontendConfig> config;
    bool listening = false;
    bool holds_vip = false;
    int listener_fds = 0;  // descriptors its listeners use: workers, or 1 if shared
  };

  UringProxy() = default;
  absl::Status CheckNetns() const;
  absl::Status UpsertLocked(const controller::ServiceRule& rule) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RemoveLocked(const controller::FrontendKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StartListeningLocked(Frontend& fe) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StopListeningLocked(Frontend& fe) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseVipLocked(Frontend& fe) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs make(i) on worker i, on all workers at once; waits for all of them,
  // or, inside Apply, adds to batch_ (posted and waited for at the diff's end).
  absl::Status OnAllWorkers(const std::string& what, const std::function<std::function<void()>(int)>& make)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Posts batch[i] to worker i as one command (in order) and waits for all.
  absl::Status PostAndWait(std::vector<std::vector<std::function<void()>>> batch,
                           absl::string_view what);

  std::unique_ptr<WorkerContext> ctx_;
  // Steers each frontend's connections to the worker on the SYN's CPU
  // (null when workers are not pinned).
  std::unique_ptr<CpuSteering> steering_;
  std::unique_ptr<VipDevice> device_;
  std::vector<std::unique_ptr<Worker>> workers_;
  ino_t netns_ino_ = 0;

  mutable absl::Mutex mu_;
  absl::btree_map<controller::FrontendKey, Frontend> frontends_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  // Listener descriptors open, and how many may be before new frontends get
  // one listener shared by all workers instead of one per worker.
  int listener_fds_ ABSL_GUARDED_BY(mu_) = 0;
  int listener_fd_budget_ = 0;
  int shared_listeners_logged_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Set during Apply: each worker's commands, posted to it as one at the
  // end of the diff and waited for once. A round trip per frontend and
  // worker (10k frontends at start: 20k wake-ups waited for one by one) was
  // most of a cold start's Apply; so were 20k wake-ups not waited for.
  std::vector<std::vector<std::function<void()>>>* batch_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace kpx::uring
