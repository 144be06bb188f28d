// kpxd's reconcile loop and lifecycle.
#include "tools/kpxd/daemon.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/container/flat_hash_map.h"
#include "controller/base/status_macros.h"
#include "controller/table_format.h"
#include "tools/kpxd/admin_server.h"
#include "tools/kpxd/http_endpoints.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace kpx::kpxd {

using controller::Reconciler;
using controller::SourceUpdate;

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Create(
    DaemonOptions options, std::unique_ptr<dataplane::Dataplane> dataplane) {
  std::unique_ptr<Daemon> d(new Daemon(std::move(options)));
  if (d->loop_.fd() < 0) return absl::InternalError("eventfd for the reconcile loop failed");
  if (d->options_.health) {
    Daemon* self = d.get();
    auto checker = health::HealthChecker::Create(
        health::HealthOptions{}, [self](controller::BackendAddr b, bool healthy) {
          const absl::Time decided = absl::Now();
          self->loop_.Post([self, b, healthy, decided] { self->OnHealthChange(b, healthy, decided); });
        });
    if (!checker.ok()) {
      return absl::Status(checker.status().code(),
                          absl::StrCat("health checker: ", checker.status().message()));
    }
    d->health_ = std::move(*checker);
  }
  if (!d->options_.manifest_dir.empty()) {
    KPX_ASSIGN_OR_RETURN(d->manifests_,
                         controller::ManifestDirSource::Create(d->options_.manifest_dir));
    // The watch is in place before the scan, so nothing written meanwhile is
    // missed; parsing 10k files (~0.6 s on 2 cores) overlaps loading and
    // verifying the BPF programs (~0.3 s) instead of following it.
    d->prefetched_ = std::async(std::launch::async, [src = d->manifests_.get()] {
      Prefetched p;
      p.started = absl::Now();
      p.updates = src->Rescan();
      p.took = absl::Now() - p.started;
      return p;
    });
  }
  if (dataplane != nullptr) {
    d->dataplane_ = std::move(dataplane);
  } else {
    KPX_RETURN_IF_ERROR(d->CreateDataplane());
  }
  if (d->options_.use_api) {
    auto access = controller::ResolveClusterAccess(d->options_.kubeconfig, d->options_.master);
    if (!access.ok()) return access.status();
    controller::K8sApiOptions api_opts;
    api_opts.access = *access;
    KPX_ASSIGN_OR_RETURN(d->api_, controller::K8sApiSource::Create(api_opts));
  }
  d->reconciler_ = std::make_unique<Reconciler>(d->options_.node, d->dataplane_.get());
  d->reconciler_->set_sync_observer([self = d.get()](absl::Duration took) {
    self->sync_duration_.Observe(absl::ToDoubleSeconds(took));
  });
  if (!d->options_.state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(d->options_.state_dir + "/applied", ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("--state-dir ", d->options_.state_dir, ": ", ec.message()));
    }
    KPX_ASSIGN_OR_RETURN(d->applied_, controller::ManifestDirSource::Create(
                                          d->options_.state_dir + "/applied"));
    if (absl::Status s = d->LoadOverrides(); !s.ok()) LOG(ERROR) << s.message();
  }
  return d;
}

// --dataplane: xdp, uring, or auto = XDP when it loads and attaches here,
// else the io_uring proxy, with the reason logged.
absl::Status Daemon::CreateDataplane() {
  const std::string& want = options_.dataplane;
  if (want != "auto" && want != "xdp" && want != "uring") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dataplane=", want, ": must be auto, xdp or uring"));
  }
  if (want != "uring") {
    // auto asks first, with throwaway unpinned maps, so that a kernel that
    // cannot run the programs leaves no pinned state behind before falling
    // back. An explicit xdp needs no second verification of both programs
    // (~80 ms here): the real load fails the same way, and it changes
    // nothing pinned by a running kpxd before the programs have loaded.
    absl::Status probe = want == "auto" ? xdp::XdpDataplane::Probe() : absl::OkStatus();
    if (probe.ok()) {
      auto x = xdp::XdpDataplane::Create(options_.xdp);
      if (x.ok()) {
        const auto& adopted = (*x)->adoption();
        LOG(INFO) << "eBPF dataplane: XDP on " << (*x)->xdp_attachments().size()
                  << " interface(s), tc on " << options_.xdp.tc_interfaces.size()
                  << "; pinned at " << (*x)->pin_dir() << "; adopted " << adopted.frontends
                  << " frontends from a previous kpxd";
        dataplane_ = std::move(*x);
        return absl::OkStatus();
      }
      probe = x.status();
    }
    if (want == "xdp") {
      return absl::Status(probe.code(), absl::StrCat("XDP dataplane: ", probe.message()));
    }
    fallback_reason_ = std::string(probe.message());
    LOG(WARNING) << "--dataplane=auto: XDP unavailable (" << fallback_reason_
                 << "); using the io_uring proxy";
  }
  auto proxy = uring::UringProxy::Create(options_.uring, health_.get());
  if (!proxy.ok()) {
    return absl::Status(proxy.status().code(),
                        absl::StrCat("io_uring dataplane: ", proxy.status().message()));
  }
  uring_ = proxy->get();
  dataplane_ = std::move(*proxy);
  return absl::OkStatus();
}

// Buckets as kube-proxy's pkg/proxy/metrics: syncs 1ms..16s doubling;
// network programming 0.25s..5min (its MergeBuckets also leads with 0).
Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      sync_health_(options_.healthz_timeout),
      sync_duration_(PromExponentialBuckets(0.001, 2, 15)),
      programming_latency_([] {
        std::vector<double> b = {0};
        for (const auto& part : {PromLinearBuckets(0.25, 0.25, 2), PromLinearBuckets(1, 1, 59),
                                 PromLinearBuckets(60, 5, 12), PromLinearBuckets(120, 30, 7)}) {
          b.insert(b.end(), part.begin(), part.end());
        }
        return b;
      }()) {}
Daemon::~Daemon() = default;

nlohmann::json Daemon::VersionJson() const {
  return {{"version", "0.1.0"}, {"dataplane", std::string(dataplane_->Name())},
          {"node", options_.node.name}};
}

nlohmann::json Daemon::StatsJson() const {
  const auto& st = reconciler_->stats();
  nlohmann::json j = {{"dataplane", std::string(dataplane_->Name())},
          {"in_sync", reconciler_->in_sync()},
          {"frontends", st.frontends},
          {"services", st.services},
          {"syncs", st.syncs},
          {"sync_errors", st.sync_errors},
          {"capacity_errors", st.capacity_errors},
          {"last_sync_error", st.last_error},
          {"endpoint_changes", st.endpoint_changes},
          {"last_sync_duration_us", absl::ToInt64Microseconds(st.last_sync_duration)},
          {"last_programming_latency_us", absl::ToInt64Microseconds(last_programming_latency_)},
          {"initial_sync", InitialSyncJson()},
          {"manifest_files", manifests_ ? manifests_->loaded_files() : 0},
          {"manifest_updates", manifests_ ? manifests_->stats().updates : 0},
          {"parse_errors", manifests_ ? manifests_->stats().parse_errors : 0}};
  if (api_ != nullptr) {
    const auto st_api = api_->stats();
    j["api"] = {{"synced", api_->Synced()},
                {"updates", api_updates_},
                {"services", {{"relists", st_api.services.relists},
                              {"reconnects", st_api.services.reconnects},
                              {"malformed", st_api.services.malformed},
                              {"events", st_api.services.events}}},
                {"endpointslices", {{"relists", st_api.slices.relists},
                                    {"reconnects", st_api.slices.reconnects},
                                    {"malformed", st_api.slices.malformed},
                                    {"events", st_api.slices.events}}}};
  }
  if (!fallback_reason_.empty()) j["xdp_unavailable"] = fallback_reason_;
  if (auto* x = dynamic_cast<xdp::XdpDataplane*>(dataplane_.get())) {
    auto verdicts = x->VerdictStats();
    if (verdicts.ok()) {
      nlohmann::json v = nlohmann::json::object();
      for (int i = 0; i < KPX_V_MAX; ++i) v[xdp::XdpDataplane::VerdictName(i)] = (*verdicts)[i];
      j["xdp_verdicts"] = std::move(v);
    }
  }
  return j;
}

std::pair<int, nlohmann::json> Daemon::ServicesJson(const std::string& name) const {
  // One Service (the admin API's answer to a change, `kpxctl get services
  // NAME`): its own rules and counters only, O(its frontends), not a sort and
  // a stats read of the whole table.
  std::vector<const controller::ServiceRule*> rules;
  if (name.empty()) {
    rules = controller::DisplayOrder(reconciler_->desired());
  } else if (size_t slash = name.find('/'); slash != std::string::npos) {
    rules = reconciler_->DesiredRulesOf({name.substr(0, slash), name.substr(slash + 1)});
    controller::SortForDisplay(&rules);
  }
  dataplane::DataplaneStats dp_stats;
  if (name.empty()) {
    dp_stats = dataplane_->Stats();
  } else {
    std::vector<controller::FrontendKey> keys;
    for (const controller::ServiceRule* r : rules) keys.push_back(r->frontend);
    dp_stats = dataplane_->StatsOf(keys);
  }
  absl::flat_hash_map<controller::FrontendKey, dataplane::FrontendStats> stats;
  for (auto& f : dp_stats.frontends) stats[f.frontend] = std::move(f);
  nlohmann::json services = nlohmann::json::array();
  for (const controller::ServiceRule* r : rules) {
    const controller::ServiceRule& rule = *r;
    const controller::FrontendKey& key = rule.frontend;
    nlohmann::json j = controller::RuleToJson(rule);
    auto applied = reconciler_->applied().find(key);
    j["programmed"] = applied != reconciler_->applied().end() && applied->second == rule;
    auto ov = reconciler_->overrides().find(rule.service.service);
    j["overridden"] = ov != reconciler_->overrides().end();
    j["dataplane"] = std::string(dataplane_->Name());
    auto st = stats.find(key);
    if (st != stats.end()) {
      j["connections"] = {{"active", st->second.active},
                          {"total", st->second.total},
                          {"rejected", st->second.rejected}};
    }
    for (size_t i = 0; i < rule.backends.size(); ++i) {
      const controller::Backend& b = rule.backends[i];
      nlohmann::json& jb = j["backends"][i];
      jb["healthy"] = b.healthy;
      if (auto hc = health_changes_.find(controller::BackendAddr{b.ip, b.port});
          hc != health_changes_.end()) {
        // Wall-clock microseconds, so a tool can time kill -> removal
        // without polling faster than it wants precision (kpx-bench health).
        jb["health_change"] = {{"healthy", hc->second.healthy},
                               {"decided_unix_us", absl::ToUnixMicros(hc->second.decided)},
                               {"programmed_unix_us", absl::ToUnixMicros(hc->second.programmed)}};
      }
      if (ov != reconciler_->overrides().end()) {
        for (const controller::BackendAddr& d : ov->second.drain) {
          if (d.ip == b.ip && d.port == b.port) jb["draining"] = true;
        }
      }
      if (st == stats.end()) continue;
      for (const dataplane::BackendStats& bs : st->second.backends) {
        if (bs.ip == b.ip && bs.port == b.port) {
          jb["connections"] = {{"active", bs.active},
                               {"total", bs.total},
                               {"failed_connects", bs.failed_connects},
                               {"bytes_to_backend", bs.bytes_to_backend},
                               {"bytes_to_client", bs.bytes_to_client}};
        }
      }
    }
    services.push_back(std::move(j));
  }
  if (!name.empty() && services.empty()) {
    return {404, {{"error", absl::StrCat("service ", name, " not found (no frontend programmed)")}}};
  }
  return {200, {{"services", std::move(services)}}};
}

// Programs a batch of file updates as one diff and records how long the
// oldest change took to reach the dataplane.
void Daemon::ApplyUpdates(std::vector<SourceUpdate> updates) {
  if (updates.empty()) return;
  absl::Time oldest = updates.front().observed;
  for (const SourceUpdate& u : updates) oldest = std::min(oldest, u.observed);
  sync_health_.Queued(oldest);
  last_queued_ = std::max(last_queued_, absl::Now());
  std::vector<Reconciler::SourceChange> changes;
  changes.reserve(updates.size());
  for (SourceUpdate& u : updates) {
    if (u.kind == SourceUpdate::Kind::kReplace) {
      changes.push_back({u.source, std::move(u.objects)});
    } else {
      changes.push_back({u.source, std::nullopt});
    }
  }
  absl::Status s = reconciler_->UpdateMany(std::move(changes));
  for (const std::string& w : reconciler_->TakeWarnings()) LOG(WARNING) << w;
  if (!s.ok()) {
    LOG(ERROR) << "programming the dataplane failed: " << s.message() << " (will retry)";
    return;
  }
  last_programming_latency_ = absl::Now() - oldest;
  programming_latency_.Observe(absl::ToDoubleSeconds(last_programming_latency_));
  LOG(INFO) << "applied " << updates.size() << " source change(s): "
            << reconciler_->stats().frontends << " frontends; change -> dataplane programmed in "
            << absl::FormatDuration(last_programming_latency_);
}

void Daemon::OnHealthChange(controller::BackendAddr backend, bool healthy, absl::Time decided) {
  LOG(INFO) << "backend " << backend.ip.ToString() << ":" << backend.port
            << (healthy ? " is healthy again: back in rotation" : " failed its health checks: out of rotation");
  if (absl::Status s = reconciler_->SetBackendHealth(backend, healthy); !s.ok()) {
    LOG(ERROR) << "programming the health change failed: " << s.message() << " (will retry)";
    return;
  }
  // SetBackendHealth returns once the dataplane has it (eBPF: map written;
  // io_uring: new config published to the workers).
  health_changes_[backend] = HealthChange{healthy, decided, absl::Now()};
}

// Probe targets follow the desired table: rebuilt after every programmed
// change (cheap next to the sync that caused it), pushed only when different.
void Daemon::UpdateHealthTargets() {
  if (health_ == nullptr || reconciler_->stats().syncs == health_synced_at_) return;
  health_synced_at_ = reconciler_->stats().syncs;
  health::HealthTargets targets = health::BuildTargets(reconciler_->desired(), options_.health_defaults);
  if (targets == health_targets_) return;
  for (const std::string& e : targets.errors) {
    if (std::find(health_targets_.errors.begin(), health_targets_.errors.end(), e) ==
        health_targets_.errors.end()) {
      LOG(WARNING) << e;
    }
  }
  health_->SetTargets(targets.targets);
  health_targets_ = std::move(targets);
}

nlohmann::json Daemon::InitialSyncJson() const {
  auto us = [](absl::Duration d) { return absl::ToInt64Microseconds(d); };
  return {{"scan_parse_us", us(initial_sync_.scan_parse)},
          {"reconcile_us", us(initial_sync_.reconcile)},
          {"apply_us", us(initial_sync_.apply)},
          {"prune_us", us(initial_sync_.prune)},
          {"health_targets_us", us(initial_sync_.health)},
          {"total_us", us(initial_sync_.total)}};
}

void Daemon::WriteStatus() {
  if (options_.status_file.empty()) return;
  nlohmann::json errors = nlohmann::json::object();
  controller::ManifestDirStats mstats;
  size_t files = 0;
  for (const auto* src : {manifests_.get(), applied_.get()}) {
    if (src == nullptr) continue;
    for (const auto& [file, error] : src->stats().file_errors) {
      if (!error.empty()) errors[file] = error;
    }
    mstats.parse_errors += src->stats().parse_errors;
    mstats.updates += src->stats().updates;
    files += src->loaded_files();
  }
  const auto& st = reconciler_->stats();
  nlohmann::json status = {
      {"dataplane", std::string(dataplane_->Name())},
      {"in_sync", reconciler_->in_sync()},
      {"frontends", st.frontends},
      {"services", st.services},
      {"syncs", st.syncs},
      {"sync_errors", st.sync_errors},
      {"capacity_errors", st.capacity_errors},
      {"last_sync_error", st.last_error},
      {"endpoint_changes", st.endpoint_changes},
      {"last_sync_duration_us", absl::ToInt64Microseconds(st.last_sync_duration)},
      {"last_programming_latency_us", absl::ToInt64Microseconds(last_programming_latency_)},
      {"parse_errors", mstats.parse_errors},
      {"files", files},
      {"updates", mstats.updates + (api_ ? api_updates_ : 0)},
      {"file_errors", std::move(errors)},
      {"initial_sync", InitialSyncJson()},
  };
  if (http_ != nullptr) {
    status["metrics_address"] = http_->metrics_bound();
    status["healthz_address"] = http_->healthz_bound();
  }
  if (api_ != nullptr) {
    status["api_synced"] = api_->Synced();
    status["api_updates"] = api_updates_;
  }
  // file_errors quote the files' bytes: a binary file must not make dump()
  // throw (that killed kpxd), so invalid UTF-8 is replaced. The write itself
  // happens on the writer's thread: a stalled disk once held health changes
  // back by seconds (kpx-bench health).
  if (status_writer_ == nullptr) status_writer_ = std::make_unique<LatestFileWriter>(options_.status_file);
  status_writer_->Post(status.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

int Daemon::Run(int signal_fd) {
  if (!options_.admin_socket.empty()) {
    auto admin = AdminServer::Start(options_.admin_socket, this);
    if (!admin.ok()) {
      LOG(ERROR) << admin.status().message();
      return 2;
    }
    admin_ = std::move(*admin);
  }
  // Until the initial sync is programmed, kpxd has a change pending.
  sync_health_.Queued(absl::Now());
  if (!options_.metrics_bind_address.empty() || !options_.healthz_bind_address.empty()) {
    http_ = HttpEndpoints::Start(options_.metrics_bind_address, options_.healthz_bind_address, this);
  }
  LOG(INFO) << "kpxd starting: node " << options_.node.name << ", dataplane "
            << dataplane_->Name() << ", manifests "
            << (options_.manifest_dir.empty() ? "(none)" : options_.manifest_dir)
            << (options_.use_api ? ", Kubernetes API watch" : "");
  if (api_ != nullptr) {
    if (absl::Status s = api_->Start(); !s.ok()) {
      LOG(ERROR) << "Kubernetes API source: " << s.message();
      return 2;
    }
  }
  absl::Time sync_start = absl::Now();
  {
    std::vector<SourceUpdate> initial;
    absl::Duration parse;
    if (prefetched_.valid()) {
      // total then counts from the scan's start, dataplane setup included.
      Prefetched p = prefetched_.get();
      initial = std::move(p.updates);
      sync_start = p.started;
      parse = p.took;
    } else if (manifests_ != nullptr) {
      initial = manifests_->Rescan();
      parse = absl::Now() - sync_start;
    }
    if (applied_ != nullptr) {
      const absl::Time t0 = absl::Now();
      for (SourceUpdate& u : applied_->Rescan()) initial.push_back(std::move(u));
      parse += absl::Now() - t0;
    }
    initial_sync_.scan_parse = parse;
    const absl::Time t = absl::Now();
    const uint64_t syncs = reconciler_->stats().syncs;
    ApplyUpdates(std::move(initial));
    initial_sync_.reconcile = absl::Now() - t;
    if (reconciler_->stats().syncs != syncs) {
      initial_sync_.apply = reconciler_->stats().last_apply_duration;
      initial_sync_.reconcile -= initial_sync_.apply;
    }
  }
  // Whatever a previous kpxd left in the dataplane and the first sync did not
  // claim goes now, not before: a restart never interrupts live rules.
  absl::Time t = absl::Now();
  if (absl::Status s = dataplane_->Prune(reconciler_->desired()); !s.ok()) {
    LOG(WARNING) << "pruning state left by a previous kpxd: " << s.message();
  }
  initial_sync_.prune = absl::Now() - t;
  t = absl::Now();
  UpdateHealthTargets();
  initial_sync_.health = absl::Now() - t;
  AfterLoopTurn();
  initial_sync_.total = absl::Now() - sync_start;
  WriteStatus();
  LOG(INFO) << "initial sync done: " << reconciler_->stats().frontends << " frontends, "
            << reconciler_->stats().services << " services in "
            << absl::FormatDuration(initial_sync_.total) << " (" << InitialSyncJson().dump() << ")";

  bool running = true;
  while (running) {
    pollfd fds[5] = {{manifests_ ? manifests_->fd() : -1, POLLIN, 0},
                     {signal_fd, POLLIN, 0},
                     {loop_.fd(), POLLIN, 0},
                     {applied_ ? applied_->fd() : -1, POLLIN, 0},
                     {api_ ? api_->fd() : -1, POLLIN, 0}};
    int n = poll(fds, 5, reconciler_->in_sync() ? -1 : 1000);
    if (n < 0 && errno != EINTR) PLOG(FATAL) << "poll";
    if (!reconciler_->in_sync()) {
      if (absl::Status s = reconciler_->Resync(); !s.ok()) LOG(ERROR) << "resync: " << s.message();
    }
    if (n > 0 && (fds[2].revents & POLLIN)) loop_.RunPending();
    if (n > 0 && (fds[0].revents & POLLIN)) ApplyUpdates(manifests_->ReadEvents());
    if (n > 0 && (fds[3].revents & POLLIN)) ApplyUpdates(applied_->ReadEvents());
    if (n > 0 && (fds[4].revents & POLLIN)) {
      std::vector<SourceUpdate> updates = api_->TakeUpdates();
      api_updates_ += updates.size();
      ApplyUpdates(std::move(updates));
    }
    if (n > 0 && (fds[1].revents & POLLIN)) {
      signalfd_siginfo si;
      while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
          LOG(INFO) << "SIGHUP: rescanning the manifest directories";
          if (manifests_ != nullptr) ApplyUpdates(manifests_->Rescan());
          if (applied_ != nullptr) ApplyUpdates(applied_->Rescan());
        } else {
          LOG(INFO) << "signal " << si.ssi_signo << ": draining (up to "
                    << absl::FormatDuration(options_.drain_timeout) << ")";
          running = false;
        }
      }
    }
    UpdateHealthTargets();
    AfterLoopTurn();
    WriteStatus();
  }
  http_.reset();
  admin_.reset();
  if (api_ != nullptr) api_->Stop();
  Shutdown();
  if (health_ != nullptr) health_->Stop();
  LOG(INFO) << "kpxd stopped";
  return 0;
}

void Daemon::Shutdown() {
  if (uring_ != nullptr) {
    uring_->StopAccepting();
    bool idle = uring_->WaitIdle(options_.drain_timeout);
    LOG(INFO) << (idle ? "all connections finished" : "drain timeout reached; closing the rest");
    uring_->Shutdown();
  }
}

}  // namespace kpx::kpxd
