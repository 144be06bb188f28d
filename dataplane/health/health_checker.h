// HealthChecker: kpx's backend health checker. Its own thread runs a
// HealthScheduler over one Prober (io_uring by default): active probes per
// HealthSpec, passive failures from the io_uring proxy (it is the proxy's
// ProxyEventSink), a global probe rate cap, and a callback on every
// transition into or out of Down that kpxd turns into
// Reconciler::SetBackendHealth. Fail-open is the dataplanes' business: they
// use every ready backend when none is healthy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/reconciler.h"
#include "controller/service_table.h"
#include "dataplane/health/clock.h"
#include "dataplane/health/health_scheduler.h"
#include "dataplane/health/health_spec.h"
#include "dataplane/health/prober.h"
#include "dataplane/uring/proxy_options.h"

namespace kpx::health {

struct HealthOptions {
  SchedulerOptions scheduler;  // rate cap (--health_max_probes_per_second), in-flight cap, seed
  unsigned ring_entries = 512;
  // Probes due this close together start in one wake-up (HealthScheduler::
  // RunDue): fewer loop turns and syscalls at high probe rates, at the cost
  // of probe gaps up to this much shorter than configured.
  absl::Duration batch_window = absl::Milliseconds(1);
  // Test seams. nullptr / empty: MonotonicClock, and a UringProber created on
  // the checker thread (its ring must be owned by the thread that submits).
  Clock* clock = nullptr;
  std::function<absl::StatusOr<std::unique_ptr<Prober>>()> make_prober;
};

class HealthChecker final : public uring::ProxyEventSink {
 public:
  using ChangeCallback = std::function<void(controller::BackendAddr backend, bool healthy)>;

  // Starts the checker thread (in the calling thread's network namespace:
  // probes leave from there) with no targets. `on_change` runs on that thread
  // for every transition into (false) or out of (true) Down, including a Down
  // target being removed (true: its overlay must not outlive it). It may call
  // Stats/StateOf/CountDown but should not block for long: probes wait.
  static absl::StatusOr<std::unique_ptr<HealthChecker>> Create(HealthOptions options,
                                                               ChangeCallback on_change);
  ~HealthChecker() override;  // Stop()

  // Thread-safe. Replaces the target set (see HealthScheduler::SetTargets:
  // remaining targets keep their state). Applied asynchronously, in order.
  void SetTargets(std::vector<HealthTarget> targets);

  // Thread-safe and cheap (a set insert under a short lock, one eventfd write
  // per batch). A failure makes the backend Suspect, counts toward fall and
  // gets it probed at once; successes carry no news for the state machine
  // (probes decide recovery) and cost nothing.
  void ReportPassive(controller::BackendAddr backend, bool ok);

  // uring::ProxyEventSink, called from proxy workers. Errors that are about
  // this node (EMFILE, EADDRNOTAVAIL, ...) are not held against the backend.
  void OnConnectFailed(Ipv4 ip, uint16_t port, int err) override;
  void OnConnectSucceeded(Ipv4 ip, uint16_t port) override;

  // Thread-safe snapshots.
  HealthStats Stats(bool per_backend = true) const;
  std::optional<HealthState> StateOf(controller::BackendAddr backend) const;
  size_t CountDown(const controller::ServiceRule& rule) const;

  // Stops the thread (in-flight probes are abandoned, no callback after it
  // returns). Idempotent. A UringProxy using this sink must be shut down
  // first, or its reports are simply dropped.
  void Stop();

 private:
  HealthChecker(HealthOptions options, ChangeCallback on_change);
  void Run();
  void Loop();

  HealthOptions options_;
  ChangeCallback on_change_;
  Clock* clock_;
  std::thread thread_;

  // Start-up handshake with Create.
  absl::Mutex init_mu_;
  std::optional<absl::Status> init_status_ ABSL_GUARDED_BY(init_mu_);

  // Commands from other threads.
  absl::Mutex cmd_mu_;
  bool stopping_ ABSL_GUARDED_BY(cmd_mu_) = false;
  std::optional<std::vector<HealthTarget>> pending_targets_ ABSL_GUARDED_BY(cmd_mu_);
  absl::flat_hash_set<controller::BackendAddr> pending_passive_ ABSL_GUARDED_BY(cmd_mu_);
  bool wake_pending_ ABSL_GUARDED_BY(cmd_mu_) = false;

  // The scheduler, owned by the checker thread; readers take mu_.
  mutable absl::Mutex mu_;
  std::unique_ptr<HealthScheduler> scheduler_ ABSL_GUARDED_BY(mu_);

  // Checker thread only. The prober outlives the thread (Wake may still be
  // called by a late SetTargets) and goes with the object.
  std::unique_ptr<Prober> prober_;
  std::vector<std::pair<uint64_t, ProbeResult>> done_;
  std::vector<std::pair<controller::BackendAddr, bool>> changes_;
};

}  // namespace kpx::health
