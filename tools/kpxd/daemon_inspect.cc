// kpxd's read-only inspection behind `kpxctl health` and `kpxctl trace`:
// per-backend health, and which backend one flow gets and why, answered by
// the dataplane in use (eBPF: a replay over its maps; io_uring: the picking
// algorithm's next answer).
#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controller/table_format.h"
#include "dataplane/uring/pick_preview.h"
#include "tools/kpxd/daemon.h"

namespace kpx::kpxd {
namespace {

using Result = std::pair<int, nlohmann::json>;

std::string Addr(Ipv4 ip, uint16_t port) { return absl::StrCat(ip.ToString(), ":", port); }

// "IP" or "IP:PORT" (port optional only when `port_optional`).
bool ParseHostPort(const std::string& text, bool port_optional, Ipv4* ip, uint16_t* port,
                   std::string* error) {
  size_t colon = text.rfind(':');
  std::string host = colon == std::string::npos ? text : text.substr(0, colon);
  std::optional<Ipv4> a = Ipv4::Parse(host);
  if (!a || a->IsUnspecified()) {
    *error = absl::StrCat("\"", text, "\": not an IPv4 address");
    return false;
  }
  *ip = *a;
  *port = 0;
  if (colon == std::string::npos) {
    if (port_optional) return true;
    *error = absl::StrCat("\"", text, "\": must be IP:PORT");
    return false;
  }
  int p = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &p) || p < 1 || p > 65535) {
    *error = absl::StrCat("\"", text, "\": port must be 1..65535");
    return false;
  }
  *port = static_cast<uint16_t>(p);
  return true;
}

std::string TimeString(absl::Time t) {
  if (t == absl::InfinitePast()) return "";
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

}  // namespace

Result Daemon::HealthJson(const std::string& name) const {
  absl::flat_hash_map<controller::BackendAddr, health::BackendHealthStats> probed;
  health::HealthStats totals;
  if (health_ != nullptr) {
    totals = health_->Stats();
    for (const auto& b : totals.backends) probed[b.backend] = b;
  }
  nlohmann::json services = nlohmann::json::array();
  absl::btree_map<controller::NamespacedName, std::vector<const controller::ServiceRule*>> by_svc;
  if (name.empty()) {
    for (const auto& [key, rule] : reconciler_->desired()) by_svc[rule.service.service].push_back(&rule);
  } else if (size_t slash = name.find('/'); slash != std::string::npos) {
    // One Service: its own rules, not a walk of the table.
    controller::NamespacedName svc{name.substr(0, slash), name.substr(slash + 1)};
    std::vector<const controller::ServiceRule*> rules = reconciler_->DesiredRulesOf(svc);
    std::sort(rules.begin(), rules.end(), [](const auto* a, const auto* b) { return a->frontend < b->frontend; });
    if (!rules.empty()) by_svc[svc] = std::move(rules);
  }
  if (!name.empty() && by_svc.empty()) {
    return {404, {{"error", absl::StrCat("service ", name, " not found (no frontend programmed)")}}};
  }
  for (const auto& [svc, rules] : by_svc) {
    auto ov = reconciler_->overrides().find(svc);
    nlohmann::json backends = nlohmann::json::array();
    absl::flat_hash_set<controller::BackendAddr> seen;
    absl::btree_map<std::string, int> counts;
    nlohmann::json frontends = nlohmann::json::array();
    for (const controller::ServiceRule* rule : rules) {
      frontends.push_back(rule->frontend.String());
      for (const controller::Backend& b : rule->backends) {
        controller::BackendAddr a{b.ip, b.port};
        if (!seen.insert(a).second) continue;
        bool drained = false;
        if (ov != reconciler_->overrides().end()) {
          for (const auto& d : ov->second.drain) drained |= d == a;
        }
        nlohmann::json jb = {{"backend", Addr(b.ip, b.port)},
                             {"ready", b.ready},
                             {"in_rotation", b.healthy},
                             {"draining", drained}};
        std::string state = health_ == nullptr ? "disabled" : "not_probed";
        auto p = probed.find(a);
        if (p != probed.end()) {
          const health::BackendHealthStats& h = p->second;
          state = health::HealthStateName(h.state);
          jb["check"] = h.spec.String();
          jb["probes"] = h.probes;
          jb["failures"] = h.failures;
          jb["passive_failures"] = h.passive_failures;
          jb["last_latency_ms"] = absl::ToDoubleMilliseconds(h.last_latency);
          jb["last_result"] = h.last_error != 0 ? std::string(strerror(h.last_error))
                              : h.last_http_status != 0 ? absl::StrCat("HTTP ", h.last_http_status)
                              : h.probes > 0 ? "ok" : "";
          if (h.last_change != absl::InfinitePast()) jb["last_change"] = TimeString(h.last_change);
        }
        jb["state"] = state;
        ++counts[state];
        backends.push_back(std::move(jb));
      }
    }
    services.push_back({{"service", svc.String()},
                        {"frontends", std::move(frontends)},
                        {"counts", counts},
                        {"backends", std::move(backends)}});
  }
  nlohmann::json out = {{"services", std::move(services)}, {"enabled", health_ != nullptr}};
  if (health_ != nullptr) {
    out["totals"] = {{"targets", totals.targets},     {"down", totals.down},
                     {"probes", totals.probes_sent},  {"probe_failures", totals.probe_failures},
                     {"passive_failures", totals.passive_failures},
                     {"went_down", totals.went_down}, {"came_up", totals.came_up}};
  }
  return {200, std::move(out)};
}

Result Daemon::TraceJson(const std::string& src, const std::string& dst) {
  Ipv4 sip, dip;
  uint16_t sport = 0, dport = 0;
  std::string error;
  if (src.empty() || dst.empty()) return {400, {{"error", "\"src\" (IP[:PORT]) and \"dst\" (VIP:PORT) are required"}}};
  if (!ParseHostPort(src, /*port_optional=*/true, &sip, &sport, &error) ||
      !ParseHostPort(dst, /*port_optional=*/false, &dip, &dport, &error)) {
    return {400, {{"error", error}}};
  }
  const controller::ServiceTable& table = reconciler_->desired();
  auto* x = dynamic_cast<xdp::XdpDataplane*>(dataplane_.get());
  auto rule_it = table.find(controller::FrontendKey{dip, dport, controller::Protocol::kTCP});
  bool nodeport = false;
  if (rule_it == table.end()) {
    bool node_addr = x == nullptr;  // io_uring: NodePorts listen on every local address
    if (x != nullptr) {
      for (Ipv4 a : x->node_addresses()) node_addr |= a == dip;
    }
    auto np = table.find(controller::FrontendKey{Ipv4(), dport, controller::Protocol::kTCP});
    if (node_addr && np != table.end()) {
      rule_it = np;
      nodeport = true;
    }
  }
  if (rule_it == table.end()) {
    return {404, {{"error", absl::StrCat("no TCP frontend ", dst, ": kpxd serves ", table.size(),
                                         " frontends (kpxctl get services)")}}};
  }
  const controller::ServiceRule& rule = rule_it->second;
  nlohmann::json out = {{"flow", {{"src", src}, {"dst", dst}, {"protocol", "TCP"}}},
                        {"dataplane", std::string(dataplane_->Name())},
                        {"service", rule.service.service.String()},
                        {"port", rule.service.port},
                        {"frontend", rule.frontend.String()},
                        {"type", controller::FrontendTypeName(rule.type)}};
  std::vector<std::string> steps;
  steps.push_back(absl::StrCat(nodeport ? "NodePort " : "frontend ", rule.frontend.String(),
                               " -> Service ", rule.service.String(), " (",
                               controller::FrontendTypeName(rule.type), ")"));
  auto ov = reconciler_->overrides().find(rule.service.service);
  out["overridden"] = ov != reconciler_->overrides().end();
  size_t in_rotation = 0;
  nlohmann::json backends = nlohmann::json::array();
  for (const controller::Backend& b : rule.backends) {
    controller::BackendAddr a{b.ip, b.port};
    bool drained = false;
    if (ov != reconciler_->overrides().end()) {
      for (const auto& d : ov->second.drain) drained |= d == a;
    }
    std::string health = health_ == nullptr ? "disabled" : "not_probed";
    if (health_ != nullptr) {
      if (auto s = health_->StateOf(a)) health = health::HealthStateName(*s);
    }
    in_rotation += b.healthy;
    backends.push_back({{"backend", Addr(b.ip, b.port)},
                        {"in_rotation", b.healthy},
                        {"draining", drained},
                        {"health", health}});
    if (!b.healthy) {
      steps.push_back(absl::StrCat("backend ", Addr(b.ip, b.port), " takes no new flows: ",
                                   drained ? "drained (kpxctl drain)" : "health checks failed (",
                                   drained ? "" : health, drained ? "" : ")"));
    }
  }
  out["backends"] = std::move(backends);
  bool fail_open = !rule.backends.empty() && in_rotation == 0;
  out["fail_open"] = fail_open;
  if (ov != reconciler_->overrides().end()) {
    steps.push_back(absl::StrCat("endpoint override active for ", rule.service.service.String(),
                                 " (kpxctl endpoints/drain; reset with kpxctl endpoints reset)"));
  }
  if (fail_open) {
    steps.push_back("every backend is out of rotation: failing open, all of them are used");
  }
  steps.push_back(absl::StrCat(rule.backends.size(), " backends, ", in_rotation, " in rotation",
                               rule.affinity_timeout_s > 0
                                   ? absl::StrCat(", ClientIP affinity ", rule.affinity_timeout_s, "s")
                                   : ""));
  nlohmann::json dp = x != nullptr ? TraceXdp(sip, sport, dip, dport) : TraceUring(rule, sip);
  if (dp.contains("error")) return {503, dp};
  for (const auto& s : dp["steps"]) steps.push_back(s.get<std::string>());
  dp.erase("steps");
  out.update(dp);
  out["steps"] = steps;
  return {200, std::move(out)};
}

nlohmann::json Daemon::TraceXdp(Ipv4 src, uint16_t sport, Ipv4 dst, uint16_t dport) {
  auto* x = static_cast<xdp::XdpDataplane*>(dataplane_.get());
  if (!trace_lookups_) {
    auto l = xdp::PinnedTraceLookups(x->pin_dir());
    if (!l.ok()) return {{"error", absl::StrCat("eBPF maps: ", l.status().message())}};
    trace_lookups_ = std::move(*l);
  }
  xdp::FlowTrace tr = xdp::TraceFlow(*trace_lookups_, {src, sport, dst, dport}, xdp::MonotonicNowNs());
  nlohmann::json j = {{"decision", xdp::DecisionName(tr.decision)}, {"steps", tr.steps}};
  j["backend"] = tr.backend ? nlohmann::json(Addr(Ipv4::FromBe(tr.backend->addr), ntohs(tr.backend->port)))
                            : nlohmann::json(nullptr);
  if (tr.decision != xdp::FlowTrace::Decision::kNoFrontend) {
    j["service_id"] = tr.svc.id;
    if (tr.hash != 0 || tr.probes > 0) {
      j["maglev"] = {{"hash", tr.hash}, {"table_size", tr.svc.maglev_m}, {"slot", tr.slot},
                     {"probes", tr.probes}, {"backend_id", tr.backend_id}};
    }
    if (tr.conntrack) {
      j["conntrack"] = {{"backend_id", tr.conntrack->backend_id},
                        {"seen_reply", (tr.conntrack->flags & KPX_CT_F_SEEN_REPLY) != 0}};
    }
    if (tr.half_open) {
      j["half_open"] = {{"backend_id", tr.half_open->backend_id},
                        {"seen_reply", (tr.half_open->flags & KPX_CT_F_SEEN_REPLY) != 0}};
    }
    if (tr.affinity) {
      j["affinity"] = {{"backend_id", tr.affinity->backend_id},
                       {"age_s", tr.affinity_age_ns / 1e9},
                       {"fresh", tr.affinity_fresh}};
    }
  }
  return j;
}

nlohmann::json Daemon::TraceUring(const controller::ServiceRule& rule, Ipv4 client) const {
  std::shared_ptr<const uring::FrontendConfig> config = uring_->FrontendSnapshot(rule.frontend);
  if (config == nullptr) {
    return {{"decision", "no_frontend"},
            {"backend", nullptr},
            {"steps", {"the io_uring proxy does not serve this frontend (unsupported protocol?)"}}};
  }
  uring::PickPreview p = uring::PreviewPick(std::move(config), client, absl::Now());
  std::vector<std::string> steps;
  nlohmann::json candidates = nlohmann::json::array();
  for (const auto* b : p.candidates) candidates.push_back(Addr(b->ip, b->port));
  nlohmann::json j = {{"decision", uring::PickDecisionName(p.decision)},
                      {"algorithm", uring::LbAlgorithmName(p.config->algorithm)},
                      {"candidates", candidates}};
  j["backend"] = p.backend ? nlohmann::json(Addr(p.backend->ip, p.backend->port)) : nlohmann::json(nullptr);
  switch (p.decision) {
    case uring::PickPreview::Decision::kNoBackend:
      steps.push_back("no backend: the connection is accepted and reset");
      break;
    case uring::PickPreview::Decision::kAffinity:
      steps.push_back(absl::StrCat("ClientIP affinity: ", client.ToString(), " is pinned to ",
                                   Addr(p.backend->ip, p.backend->port)));
      break;
    case uring::PickPreview::Decision::kRoundRobin:
      steps.push_back(absl::StrCat("round-robin: the next connection gets ",
                                   Addr(p.backend->ip, p.backend->port), " (cursor ",
                                   p.config->shared->next_rr.load(), " % ", p.candidates.size(), ")"));
      break;
    case uring::PickPreview::Decision::kLeastConn:
      steps.push_back(p.backend ? absl::StrCat("least-conn: ", Addr(p.backend->ip, p.backend->port),
                                               " has the fewest active connections (",
                                               p.backend->active.load(), ")")
                                : "least-conn: several backends tie for the fewest active "
                                  "connections; one of them at random");
      break;
    case uring::PickPreview::Decision::kRandom:
      steps.push_back(absl::StrCat("random: uniformly one of the ", p.candidates.size(),
                                   " candidates (the source port plays no part)"));
      break;
  }
  if (p.decision != uring::PickPreview::Decision::kNoBackend) {
    steps.push_back(absl::StrCat("a refused or timed-out connect is retried on another candidate (",
                                 "up to 2 more)"));
  }
  j["steps"] = steps;
  return j;
}

}  // namespace kpx::kpxd
