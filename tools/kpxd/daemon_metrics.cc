// kpxd's Prometheus metrics (/metrics): kube-proxy's kubeproxy_* names where
// the meaning carries over, kpx_* for the rest. Built on the reconcile loop
// from the reconciler, the dataplane's counters and the health checker.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "controller/table_format.h"
#include "glog/logging.h"
#include "tools/kpxd/daemon.h"

namespace kpx::kpxd {
namespace {

using Type = kpx::MetricsText::Type;

double Seconds(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToDoubleSeconds(t - absl::UnixEpoch());
}

std::string Addr(Ipv4 ip, uint16_t port) { return absl::StrCat(ip.ToString(), ":", port); }

PromLabels FrontendLabels(const controller::ServiceRule& r) {
  return {{"namespace", r.service.service.ns},
          {"service", r.service.service.name},
          {"port", r.service.port},
          {"frontend", r.frontend.String()},
          {"type", controller::FrontendTypeName(r.type)}};
}

PromLabels With(PromLabels l, std::string key, std::string value) {
  l.emplace_back(std::move(key), std::move(value));
  return l;
}

bool FailingOpen(const controller::ServiceRule& r) {
  return !r.backends.empty() &&
         std::none_of(r.backends.begin(), r.backends.end(),
                      [](const controller::Backend& b) { return b.healthy; });
}

}  // namespace

void Daemon::CountHealthz(bool livez, int code) {
  absl::MutexLock lock(&healthz_mu_);
  ++healthz_codes_[{livez, code}];
}

void Daemon::AfterLoopTurn() {
  absl::Time now = absl::Now();
  if (reconciler_->in_sync()) {
    sync_health_.Synced(now);
  } else {
    sync_health_.Queued(now);  // a failed Apply: the retry is pending
  }
  // Only frontends whose rule changed can start or stop failing open: one
  // change costs O(its frontends), not a walk of the table per loop turn.
  for (const controller::FrontendKey& key : reconciler_->TakeChangedFrontends()) {
    auto it = reconciler_->desired().find(key);
    if (it == reconciler_->desired().end() || !FailingOpen(it->second)) {
      failing_open_.erase(key);
      continue;
    }
    if (failing_open_.insert(key).second) {
      ++fail_open_events_;
      const controller::ServiceRule& rule = it->second;
      LOG(WARNING) << rule.service.String() << " (" << key.String() << "): all "
                   << rule.backends.size()
                   << " backends are unhealthy or drained; failing open (using all of them)";
    }
  }
}

std::string Daemon::MetricsText() const {
  kpx::MetricsText m;
  const controller::ReconcilerStats& st = reconciler_->stats();

  // ---- kube-proxy's names (pkg/proxy/metrics).
  m.Family("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
           Type::kHistogram);
  m.AddHistogram({}, sync_duration_);
  m.Family("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
           "The last time proxy rules were successfully synced", Type::kGauge);
  m.Add({}, Seconds(st.last_success_time));
  m.Family("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
           "The last time a sync of proxy rules was queued", Type::kGauge);
  m.Add({}, Seconds(last_queued_));
  m.Family("kubeproxy_network_programming_duration_seconds",
           "In Cluster Network Programming Latency in seconds (from the source seeing a change "
           "to the dataplane programmed)",
           Type::kHistogram);
  m.AddHistogram({}, programming_latency_);
  m.Family("kubeproxy_sync_proxy_rules_endpoint_changes_total",
           "Cumulative proxy rules Endpoint changes (frontend upserts and removals programmed)",
           Type::kCounter);
  m.Add({}, st.endpoint_changes);
  m.Family("kubeproxy_sync_proxy_rules_service_changes_total",
           "Cumulative proxy rules Service changes", Type::kCounter);
  m.Add({}, st.service_changes);
  size_t pending = 0;
  for (const auto& [key, rule] : reconciler_->desired()) {
    auto a = reconciler_->applied().find(key);
    if (a == reconciler_->applied().end() || !(a->second == rule)) ++pending;
  }
  for (const auto& [key, rule] : reconciler_->applied()) pending += !reconciler_->desired().contains(key);
  m.Family("kubeproxy_sync_proxy_rules_endpoint_changes_pending",
           "Pending proxy rules Endpoint changes (frontends not yet programmed)", Type::kGauge);
  m.Add({}, pending);
  size_t no_local_internal = 0, no_local_external = 0;
  for (const auto& [key, rule] : reconciler_->desired()) {
    if (!rule.local_only || !rule.backends.empty()) continue;
    (rule.type == controller::FrontendType::kClusterIP ? no_local_internal : no_local_external)++;
  }
  m.Family("kubeproxy_sync_proxy_rules_no_local_endpoints_total",
           "Number of services with a Local traffic policy and no endpoints", Type::kGauge);
  m.Add({{"traffic_policy", "internal"}}, no_local_internal);
  m.Add({{"traffic_policy", "external"}}, no_local_external);
  {
    absl::MutexLock lock(&healthz_mu_);
    m.Family("kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status",
             Type::kCounter);
    for (const auto& [k, n] : healthz_codes_) {
      if (!k.first) m.Add({{"code", std::to_string(k.second)}}, n);
    }
    m.Family("kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", Type::kCounter);
    for (const auto& [k, n] : healthz_codes_) {
      if (k.first) m.Add({{"code", std::to_string(k.second)}}, n);
    }
  }

  // ---- kpx: process, sync, sources.
  m.Family("kpx_build_info", "kpxd's version and the dataplane it runs (value 1)", Type::kGauge);
  m.Add({{"version", "0.1.0"}, {"dataplane", std::string(dataplane_->Name())}}, 1);
  m.Family("kpx_dataplane", "1 for the dataplane in use", Type::kGauge);
  for (const char* dp : {"xdp", "uring"}) m.Add({{"dataplane", dp}}, dataplane_->Name() == dp);
  m.Family("kpx_xdp_fallback", "1 when --dataplane=auto could not use XDP (reason in the log and "
                               "kpxctl stats)", Type::kGauge);
  m.Add({}, !fallback_reason_.empty());
  m.Family("kpx_in_sync", "1 when the dataplane holds the desired table", Type::kGauge);
  m.Add({}, reconciler_->in_sync());
  m.Family("kpx_syncs_total", "Dataplane programming calls that succeeded", Type::kCounter);
  m.Add({}, st.syncs);
  m.Family("kpx_sync_errors_total", "Dataplane programming calls that failed (retried)",
           Type::kCounter);
  m.Add({}, st.sync_errors);
  m.Family("kpx_frontends", "Frontends (VIP:port/proto, NodePorts) in the desired table",
           Type::kGauge);
  m.Add({}, st.frontends);
  m.Family("kpx_services", "Services with at least one frontend", Type::kGauge);
  m.Add({}, st.services);
  m.Family("kpx_endpoint_overrides", "Services with an operator override (kpxctl endpoints/drain)",
           Type::kGauge);
  m.Add({}, reconciler_->overrides().size());
  m.Family("kpx_fail_open", "1 per frontend whose backends are all unhealthy (all are used)",
           Type::kGauge);
  m.Add({}, failing_open_.size());
  m.Family("kpx_fail_open_events_total", "Times a frontend started failing open", Type::kCounter);
  m.Add({}, fail_open_events_);
  m.Family("kpx_manifest_parse_errors_total",
           "Manifest files that failed to parse (the previous version keeps serving)",
           Type::kCounter);
  m.Family("kpx_manifest_files", "Manifest files loaded", Type::kGauge);
  m.Family("kpx_source_updates_total", "Source updates applied", Type::kCounter);
  for (auto [name, src] : {std::pair{"manifest_dir", manifests_.get()},
                           std::pair{"applied", applied_.get()}}) {
    if (src == nullptr) continue;
    m.Family("kpx_manifest_parse_errors_total", "", Type::kCounter);
    m.Add({{"source", name}}, src->stats().parse_errors);
    m.Family("kpx_manifest_files", "", Type::kGauge);
    m.Add({{"source", name}}, src->loaded_files());
    m.Family("kpx_source_updates_total", "", Type::kCounter);
    m.Add({{"source", name}}, src->stats().updates);
  }
  if (api_ != nullptr) {
    m.Family("kpx_source_updates_total", "", Type::kCounter);
    m.Add({{"source", "api"}}, api_updates_);
    const auto api = api_->stats();
    m.Family("kpx_api_synced", "1 once the API lists are synced", Type::kGauge);
    m.Add({}, api_->Synced());
    m.Family("kpx_api_watch_events_total", "Watch events received", Type::kCounter);
    m.Add({{"resource", "services"}}, api.services.events);
    m.Add({{"resource", "endpointslices"}}, api.slices.events);
    m.Family("kpx_api_relists_total", "Full relists (start, 410 Gone)", Type::kCounter);
    m.Add({{"resource", "services"}}, api.services.relists);
    m.Add({{"resource", "endpointslices"}}, api.slices.relists);
    m.Family("kpx_api_reconnects_total", "Watch reconnects", Type::kCounter);
    m.Add({{"resource", "services"}}, api.services.reconnects);
    m.Add({{"resource", "endpointslices"}}, api.slices.reconnects);
  }

  // ---- kpx: per frontend and per backend.
  absl::flat_hash_map<controller::FrontendKey, dataplane::FrontendStats> stats;
  for (auto& f : dataplane_->Stats().frontends) stats[f.frontend] = std::move(f);
  auto* x = dynamic_cast<xdp::XdpDataplane*>(dataplane_.get());
  absl::flat_hash_map<controller::FrontendKey, kpx_svc_stats> xdp_counters;
  if (x != nullptr) {
    if (auto c = x->Counters(); c.ok()) {
      for (const auto& fc : *c) xdp_counters[fc.frontend] = fc.stats;
    }
  }
  struct Row {
    const controller::ServiceRule* rule;
    const dataplane::FrontendStats* st;
  };
  std::vector<Row> rows;
  for (const controller::ServiceRule* r : controller::DisplayOrder(reconciler_->desired())) {
    auto it = stats.find(r->frontend);
    rows.push_back({r, it == stats.end() ? nullptr : &it->second});
  }
  m.Family("kpx_service_connections_total", "Connections (eBPF: new flows) per frontend",
           Type::kCounter);
  for (const Row& r : rows) if (r.st) m.Add(FrontendLabels(*r.rule), r.st->total);
  m.Family("kpx_service_active_connections",
           "Connections open now per frontend (io_uring dataplane only)", Type::kGauge);
  if (x == nullptr) {
    for (const Row& r : rows) if (r.st) m.Add(FrontendLabels(*r.rule), r.st->active);
  }
  m.Family("kpx_service_rejected_connections_total",
           "Connections reset for want of a usable backend", Type::kCounter);
  for (const Row& r : rows) if (r.st) m.Add(FrontendLabels(*r.rule), r.st->rejected);
  m.Family("kpx_service_packets_total", "Packets to the frontend (eBPF dataplane)", Type::kCounter);
  m.Family("kpx_service_bytes_total",
           "Bytes through the frontend (eBPF: client packets incl. headers; io_uring: payload "
           "both ways)",
           Type::kCounter);
  for (const Row& r : rows) {
    if (x != nullptr) {
      auto c = xdp_counters.find(r.rule->frontend);
      if (c == xdp_counters.end()) continue;
      m.Family("kpx_service_packets_total", "", Type::kCounter);
      m.Add(FrontendLabels(*r.rule), c->second.packets);
      m.Family("kpx_service_bytes_total", "", Type::kCounter);
      m.Add(FrontendLabels(*r.rule), c->second.bytes);
    } else if (r.st) {
      uint64_t bytes = 0;
      for (const auto& b : r.st->backends) bytes += b.bytes_to_backend + b.bytes_to_client;
      m.Family("kpx_service_bytes_total", "", Type::kCounter);
      m.Add(FrontendLabels(*r.rule), bytes);
    }
  }
  m.Family("kpx_service_backends", "Backends per frontend by state", Type::kGauge);
  for (const Row& r : rows) {
    size_t healthy = 0;
    for (const auto& b : r.rule->backends) healthy += b.healthy;
    m.Add(With(FrontendLabels(*r.rule), "state", "in_rotation"), healthy);
    m.Add(With(FrontendLabels(*r.rule), "state", "out_of_rotation"),
          r.rule->backends.size() - healthy);
    m.Add(With(FrontendLabels(*r.rule), "state", "terminating"), r.rule->draining.size());
  }
  m.Family("kpx_backend_up",
           "1 when the backend takes new connections (ready, healthy, not drained)", Type::kGauge);
  for (const Row& r : rows) {
    for (const auto& b : r.rule->backends) {
      m.Add(With(FrontendLabels(*r.rule), "backend", Addr(b.ip, b.port)), b.healthy);
    }
  }
  m.Family("kpx_backend_connections_total", "Connections established to the backend (io_uring)",
           Type::kCounter);
  m.Family("kpx_backend_active_connections", "Connections open to the backend (io_uring)",
           Type::kGauge);
  m.Family("kpx_backend_failed_connects_total", "Refused or timed-out connects (io_uring)",
           Type::kCounter);
  m.Family("kpx_backend_bytes_total", "Payload bytes relayed (io_uring)", Type::kCounter);
  if (x == nullptr) {
    for (const Row& r : rows) {
      if (!r.st) continue;
      for (const auto& b : r.st->backends) {
        PromLabels l = With(FrontendLabels(*r.rule), "backend", Addr(b.ip, b.port));
        m.Family("kpx_backend_connections_total", "", Type::kCounter);
        m.Add(l, b.total);
        m.Family("kpx_backend_active_connections", "", Type::kGauge);
        m.Add(l, b.active);
        m.Family("kpx_backend_failed_connects_total", "", Type::kCounter);
        m.Add(l, b.failed_connects);
        m.Family("kpx_backend_bytes_total", "", Type::kCounter);
        m.Add(With(l, "direction", "to_backend"), b.bytes_to_backend);
        m.Add(With(l, "direction", "to_client"), b.bytes_to_client);
      }
    }
  }

  // ---- kpx: health checking.
  if (health_ != nullptr) {
    health::HealthStats hs = health_->Stats();
    m.Family("kpx_health_probes_total", "Health probes started", Type::kCounter);
    m.Add({}, hs.probes_sent);
    m.Family("kpx_health_probe_failures_total", "Health probes that failed", Type::kCounter);
    m.Add({}, hs.probe_failures);
    m.Family("kpx_health_passive_failures_total",
             "Connect failures seen by the proxy that counted toward fall", Type::kCounter);
    m.Add({}, hs.passive_failures);
    m.Family("kpx_health_local_errors_total",
             "Probes that could not run for a local reason (not held against backends)",
             Type::kCounter);
    m.Add({}, hs.local_errors);
    m.Family("kpx_health_transitions_total", "Backends taken out of (down) or back into (up) "
                                             "rotation by health checks", Type::kCounter);
    m.Add({{"to", "down"}}, hs.went_down);
    m.Add({{"to", "up"}}, hs.came_up);
    m.Family("kpx_health_targets", "Backends being probed", Type::kGauge);
    m.Add({}, hs.targets);
    m.Family("kpx_health_backends_down", "Probed backends that are down", Type::kGauge);
    m.Add({}, hs.down);
    m.Family("kpx_health_backend_state", "Health state of a probed backend (1 for the current state)",
             Type::kGauge);
    for (const auto& b : hs.backends) {
      for (auto s : {health::HealthState::kUnknown, health::HealthState::kHealthy,
                     health::HealthState::kSuspect, health::HealthState::kDown}) {
        m.Add({{"backend", Addr(b.backend.ip, b.backend.port)},
               {"service", b.service},
               {"state", health::HealthStateName(s)}},
              b.state == s);
      }
    }
    m.Family("kpx_health_backend_probes_total", "Probes of one backend", Type::kCounter);
    for (const auto& b : hs.backends) {
      m.Add({{"backend", Addr(b.backend.ip, b.backend.port)}, {"service", b.service}}, b.probes);
    }
    m.Family("kpx_health_backend_probe_failures_total", "Failed probes of one backend",
             Type::kCounter);
    for (const auto& b : hs.backends) {
      m.Add({{"backend", Addr(b.backend.ip, b.backend.port)}, {"service", b.service}}, b.failures);
    }
    m.Family("kpx_health_backend_probe_latency_seconds", "Duration of the last finished probe",
             Type::kGauge);
    for (const auto& b : hs.backends) {
      m.Add({{"backend", Addr(b.backend.ip, b.backend.port)}, {"service", b.service}},
            absl::ToDoubleSeconds(b.last_latency));
    }
  }

  // ---- kpx: dataplane internals.
  if (x != nullptr) {
    if (auto v = x->VerdictStats(); v.ok()) {
      m.Family("kpx_xdp_verdicts_total", "Packets by eBPF verdict (XDP + tc)", Type::kCounter);
      for (int i = 0; i < KPX_V_MAX; ++i) m.Add({{"verdict", xdp::XdpDataplane::VerdictName(i)}}, (*v)[i]);
    }
    const xdp::MapCapacities caps = x->maps()->capacities();
    m.Family("kpx_bpf_map_max_entries", "Capacity of kpx's BPF maps", Type::kGauge);
    m.Add({{"map", "kpx_services"}}, caps.services);
    m.Add({{"map", "kpx_backends"}}, caps.backends);
    m.Add({{"map", "kpx_svc_stats"}}, caps.service_ids);
    const xdp::SlotPoolUsage pool = x->PoolUsage();
    // The Maglev pool counts slots: its limit, and (entries) slots in tables.
    m.Add({{"map", "kpx_maglev_slots"}}, static_cast<double>(pool.max_chunks) * pool.chunk_slots);
    m.Family("kpx_bpf_map_entries", "Entries in use in kpx's BPF maps", Type::kGauge);
    if (auto svcs = x->maps()->ListServices(); svcs.ok()) {
      m.Add({{"map", "kpx_services"}}, svcs->size());
    }
    m.Add({{"map", "kpx_maglev_slots"}}, pool.used_slots);
    m.Family("kpx_maglev_pool_slots",
             "Maglev slot pool: slots in tables (used, of which quarantined after a resize or removal), "
             "slots of the chunks created so far (allocated), and the --bpf-maglev-chunks limit",
             Type::kGauge);
    m.Add({{"state", "used"}}, pool.used_slots);
    m.Add({{"state", "quarantined"}}, pool.quarantined_slots);
    m.Add({{"state", "allocated"}}, pool.capacity_slots);
    m.Add({{"state", "limit"}}, static_cast<double>(pool.max_chunks) * pool.chunk_slots);
  }
  if (uring_ != nullptr) {
    m.Family("kpx_uring_workers", "io_uring worker threads", Type::kGauge);
    m.Add({}, uring_->workers());
    m.Family("kpx_uring_open_connections", "Client connections open now", Type::kGauge);
    m.Add({}, uring_->open_connections());
    m.Family("kpx_uring_buffer_starvations_total",
             "Receives that waited for a free buffer (back-pressure)", Type::kCounter);
    m.Add({}, uring_->buffer_starvations());
  }
  return m.Render();
}

}  // namespace kpx::kpxd
