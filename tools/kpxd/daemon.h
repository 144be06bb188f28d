// Daemon: kpxd's wiring. Owns the sources, the reconciler, the dataplane and
// the single reconcile loop (poll over the manifest directory, signals and the
// LoopQueue). main.cc only turns flags into DaemonOptions.
#pragma once

#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "controller/base/latest_file_writer.h"
#include "controller/base/loop_queue.h"
#include "controller/base/prometheus_text.h"
#include "controller/base/sync_health.h"
#include "controller/reconciler.h"
#include "controller/source/k8s_api_source.h"
#include "controller/source/manifest_dir_source.h"
#include "dataplane/dataplane.h"
#include "dataplane/health/health_checker.h"
#include "dataplane/health/health_spec.h"
#include "dataplane/uring/uring_proxy.h"
#include "dataplane/xdp/flow_trace.h"
#include "dataplane/xdp/xdp_dataplane.h"
#include "nlohmann/json.hpp"

namespace kpx::kpxd {

struct DaemonOptions {
  std::string manifest_dir;  // "" = no manifest directory
  // Kubernetes API source: on when use_api (kubeconfig / master / in-cluster).
  bool use_api = false;
  std::string kubeconfig;
  std::string master;
  controller::NodeInfo node;
  std::string dataplane = "auto";  // auto|xdp|uring
  uring::UringProxyOptions uring;
  xdp::XdpOptions xdp;
  // Active + passive health checking (dataplane/health); off = trust
  // EndpointSlice readiness only, as kube-proxy does.
  bool health = true;
  health::HealthSpec health_defaults;
  absl::Duration drain_timeout = absl::Seconds(30);
  std::string status_file;
  std::string admin_socket;  // "" = no admin API
  // Persistent operator state: overrides.json (kpxctl endpoints/drain) and
  // applied/ (manifests pushed with kpxctl apply, watched like --manifest-dir).
  // "" = nothing persisted (overrides and applies then die with the process).
  std::string state_dir;
  // Monitoring listeners (HOST:PORT, "" = off; port 0 = any free port).
  std::string metrics_bind_address;
  std::string healthz_bind_address;
  // /healthz turns 503 when a change waits longer than this to be programmed
  // (kube-proxy: 2 x its sync period = 60s by default).
  absl::Duration healthz_timeout = absl::Seconds(60);
};

class AdminServer;
class HttpEndpoints;

class Daemon {
 public:
  // A non-null `dataplane` is used instead of the one options.dataplane
  // selects (the admin API fuzzer runs the daemon on a FakeDataplane).
  static absl::StatusOr<std::unique_ptr<Daemon>> Create(
      DaemonOptions options, std::unique_ptr<dataplane::Dataplane> dataplane = nullptr);
  ~Daemon();

  // Runs until SIGTERM/SIGINT arrives on `signal_fd` (a signalfd; SIGHUP
  // rescans the manifest directory). Drains and returns the exit code.
  int Run(int signal_fd);

  LoopQueue& loop() { return loop_; }

  // Admin API views. Call on the reconcile loop only (AdminServer does).
  nlohmann::json VersionJson() const;
  nlohmann::json StatsJson() const;
  // 200 + {"services": [...]} (all, or those of `name` = "ns/name"), 404 if
  // `name` matches nothing.
  std::pair<int, nlohmann::json> ServicesJson(const std::string& name) const;
  // Mutations: validate everything first, change nothing on error (4xx).
  std::pair<int, nlohmann::json> HandleEndpoints(const nlohmann::json& request);
  std::pair<int, nlohmann::json> HandleDrain(const nlohmann::json& request);
  std::pair<int, nlohmann::json> HandleApply(const nlohmann::json& request);
  std::pair<int, nlohmann::json> HandleDelete(const nlohmann::json& request);
  // GET /v1/health?name=NS/NAME: per-backend health (all Services if "").
  std::pair<int, nlohmann::json> HealthJson(const std::string& name) const;
  // GET /v1/trace?src=IP[:PORT]&dst=VIP:PORT: the backend that flow gets and why.
  std::pair<int, nlohmann::json> TraceJson(const std::string& src, const std::string& dst);

  // Monitoring (daemon_metrics.cc). MetricsText runs on the reconcile loop;
  // sync_health and CountHealthz are thread-safe.
  std::string MetricsText() const;
  SyncHealth& sync_health() { return sync_health_; }
  void CountHealthz(bool livez, int code);

 private:
  explicit Daemon(DaemonOptions options);
  void ApplyUpdates(std::vector<controller::SourceUpdate> updates);
  void WriteStatus();
  absl::Status LoadOverrides();
  absl::Status SaveOverrides() const;
  std::string AppliedPath(const std::string& name) const;
  void Shutdown();
  // `decided`: when the checker reported it (its thread), before the hop to this loop.
  void OnHealthChange(controller::BackendAddr backend, bool healthy, absl::Time decided);
  void UpdateHealthTargets();
  absl::Status CreateDataplane();
  // After every loop turn: healthz bookkeeping and fail-open accounting.
  void AfterLoopTurn();
  nlohmann::json TraceUring(const controller::ServiceRule& rule, Ipv4 client) const;
  nlohmann::json TraceXdp(Ipv4 src, uint16_t sport, Ipv4 dst, uint16_t dport);

  DaemonOptions options_;
  LoopQueue loop_;
  // Declared before the dataplane: the io_uring proxy reports passive signals
  // to it, so it must outlive the proxy's workers.
  std::unique_ptr<health::HealthChecker> health_;
  health::HealthTargets health_targets_;
  uint64_t health_synced_at_ = ~0ull;  // reconciler syncs when targets were last built
  // The last health transition programmed per backend, shown by the admin API
  // (`health_change` of a backend in /v1/services).
  struct HealthChange {
    bool healthy;
    absl::Time decided;    // checker's verdict
    absl::Time programmed; // the dataplane has it
  };
  absl::flat_hash_map<controller::BackendAddr, HealthChange> health_changes_;
  std::unique_ptr<dataplane::Dataplane> dataplane_;
  std::unique_ptr<LatestFileWriter> status_writer_;  // --status-file, off the loop
  uring::UringProxy* uring_ = nullptr;  // dataplane_ when it is the io_uring proxy
  std::string fallback_reason_;         // why --dataplane=auto did not use XDP
  std::unique_ptr<controller::Reconciler> reconciler_;
  std::unique_ptr<controller::ManifestDirSource> manifests_;
  std::unique_ptr<controller::ManifestDirSource> applied_;  // <state_dir>/applied
  // The manifest directory's first scan, started in Create so that parsing
  // overlaps the dataplane's setup (BPF load and verification, listeners);
  // Run takes the result. Declared after manifests_: destroyed (joined)
  // before the source it reads.
  struct Prefetched {
    std::vector<controller::SourceUpdate> updates;
    absl::Time started;
    absl::Duration took;
  };
  std::future<Prefetched> prefetched_;
  std::unique_ptr<controller::K8sApiSource> api_;
  uint64_t api_updates_ = 0;
  absl::Duration last_programming_latency_;
  // Where kpxd's first sync spent its time (status file, stats, log), so a
  // slow start names its stage: directory scan + read + parse, object store +
  // translate + diff, the dataplane's Apply, pruning state a previous kpxd
  // left, health targets.
  struct InitialSync {
    absl::Duration scan_parse, reconcile, apply, prune, health, total;
  };
  InitialSync initial_sync_;
  nlohmann::json InitialSyncJson() const;
  std::unique_ptr<AdminServer> admin_;

  // Monitoring state (reconcile loop only, except where noted).
  SyncHealth sync_health_;  // thread-safe
  PromHistogram sync_duration_;
  PromHistogram programming_latency_;
  absl::Time last_queued_ = absl::InfinitePast();
  absl::flat_hash_set<controller::FrontendKey> failing_open_;
  uint64_t fail_open_events_ = 0;
  mutable absl::Mutex healthz_mu_;
  std::map<std::pair<bool, int>, uint64_t> healthz_codes_ ABSL_GUARDED_BY(healthz_mu_);
  std::optional<xdp::TraceLookups> trace_lookups_;  // opened on the first eBPF trace
  std::unique_ptr<HttpEndpoints> http_;
};

}  // namespace kpx::kpxd
