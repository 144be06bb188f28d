// Translate(): Services + EndpointSlices (+ legacy Endpoints) + this node ->
// the desired ServiceTable, reimplementing kube-proxy's rules from
// kubernetes/kubernetes pkg/proxy (each rule below names where it comes from).
#include "controller/translate.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kpx::controller {
namespace {

constexpr absl::string_view kLabelServiceName = "kubernetes.io/service-name";
constexpr absl::string_view kLabelServiceProxyName = "service.kubernetes.io/service-proxy-name";
constexpr absl::string_view kLabelHeadless = "service.kubernetes.io/headless";
constexpr absl::string_view kAnnotationPrefix = "kpx.io/";
constexpr absl::string_view kClusterIPNone = "None";

const std::string& EmptyString() {
  static const std::string* const kEmpty = new std::string();
  return *kEmpty;
}

// kube-proxy's informers list Services and EndpointSlices with the selector
// "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
// (cmd/kube-proxy/app/server.go): objects carrying either label never reach it.
bool HasProxyNameLabel(const ObjectMeta& meta) {
  return meta.labels.contains(kLabelServiceProxyName);
}
bool HasHeadlessLabel(const ObjectMeta& meta) { return meta.labels.contains(kLabelHeadless); }
bool FilteredByInformer(const ObjectMeta& meta) {
  return HasProxyNameLabel(meta) || HasHeadlessLabel(meta);
}

// The IPv4 cluster IP kube-proxy's IPv4 proxier uses (GetClusterIPByFamily):
// the first IPv4 entry of spec.clusterIPs, or spec.clusterIP when the list is
// empty. IPv6 entries belong to the other family's proxier: skipped silently.
std::optional<Ipv4> ClusterIPv4(const Service& svc) {
  if (svc.cluster_ips.empty()) return Ipv4::Parse(svc.cluster_ip);
  for (const std::string& ip : svc.cluster_ips) {
    if (auto v4 = Ipv4::Parse(ip)) return v4;
  }
  return std::nullopt;
}

bool ValidPort(int64_t p) { return p > 0 && p <= 65535; }

// One endpoint as kube-proxy's endpointslicecache holds it before selection:
// conditions resolved, address parsed. Strings point into the objects, which
// outlive the translation; only selected endpoints are copied into Backends.
struct Candidate {
  Ipv4 ip;
  uint16_t port = 0;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
  bool local = false;
  const std::string* node = nullptr;
  const std::string* zone = nullptr;
  const std::vector<std::string>* hints = nullptr;  // hints.forZones
};

// An IPv4 EndpointSlice with addresses[0] of each endpoint parsed once per
// Service (not once per port), so a bad address warns once.
struct ParsedSlice {
  const EndpointSlice* slice = nullptr;
  std::vector<std::optional<Ipv4>> address;  // parallel to slice->endpoints
};

uint64_t EndpointKey(Ipv4 ip, uint16_t port) {
  return (static_cast<uint64_t>(ip.be()) << 16) | port;
}

bool PortMatches(const EndpointPort& ep, const ServicePort& sp) {
  // The API server defaults an EndpointSlice port's name to "" (discovery/v1
  // defaults), so an unset name matches the unnamed Service port. kube-proxy
  // keys endpoints by ServicePortName{ns/name, port name, protocol}: both the
  // name and the protocol must match.
  if (ep.protocol != sp.protocol) return false;
  return ep.name ? *ep.name == sp.name : sp.name.empty();
}

// Adds `c` to the deduplicated set. kube-proxy (endpointslicecache.go
// addEndpoints) keys endpoints by "ip:port" and lets a later duplicate replace
// an earlier one unless the later one is terminating, so a running pod wins
// over a terminating one that had the same IP. kube-proxy walks slices in Go
// map order (random); we walk them by slice name (ClusterState's order) and
// endpoints in slice order, so among duplicates the last non-terminating one
// wins, or the first one when all are terminating. Deterministic.
void AddCandidate(const Candidate& c, std::vector<Candidate>* out,
                  absl::flat_hash_map<uint64_t, size_t>* seen) {
  auto [it, inserted] = seen->try_emplace(EndpointKey(c.ip, c.port), out->size());
  if (inserted) {
    out->push_back(c);
  } else if (!c.terminating) {
    (*out)[it->second] = c;
  }
}

// Candidates for one Service port, from EndpointSlices.
std::vector<Candidate> CandidatesFromSlices(const std::vector<ParsedSlice>& slices,
                                            const ServicePort& sp, const NodeInfo& node) {
  std::vector<Candidate> out;
  absl::flat_hash_map<uint64_t, size_t> seen;
  for (const ParsedSlice& ps : slices) {
    for (const EndpointPort& port : ps.slice->ports) {
      if (!PortMatches(port, sp)) continue;
      // kube-proxy ignores ports without a number ("TODO: handle nil ports
      // to mean all") and port 0.
      if (!port.port || !ValidPort(*port.port)) continue;
      const auto backend_port = static_cast<uint16_t>(*port.port);
      for (size_t i = 0; i < ps.slice->endpoints.size(); ++i) {
        if (!ps.address[i]) continue;
        const Endpoint& ep = ps.slice->endpoints[i];
        Candidate c;
        c.ip = *ps.address[i];
        c.port = backend_port;
        // endpointslicecache.go: ready unset = true, serving unset = true
        // (kube-proxy does not defer an unset serving to ready),
        // terminating unset = false.
        c.ready = ep.conditions.ready.value_or(true);
        c.serving = ep.conditions.serving.value_or(true);
        c.terminating = ep.conditions.terminating.value_or(false);
        c.local = !node.name.empty() && ep.node_name == node.name;
        c.node = &ep.node_name;
        c.zone = &ep.zone;
        c.hints = ep.hint_zones.empty() ? nullptr : &ep.hint_zones;
        AddCandidate(c, &out, &seen);
      }
    }
  }
  return out;
}

// Candidates for one Service port, from a legacy Endpoints object (used only
// when the Service has no EndpointSlice). addresses are ready; notReadyAddresses
// are neither ready, serving nor terminating, so selection never picks them
// (as in the pre-EndpointSlice kube-proxy, which ignored them).
std::vector<Candidate> CandidatesFromLegacy(const Endpoints& eps, const ServicePort& sp,
                                            const NodeInfo& node) {
  std::vector<Candidate> out;
  absl::flat_hash_map<uint64_t, size_t> seen;
  for (size_t s = 0; s < eps.subsets.size(); ++s) {
    const EndpointsSubset& subset = eps.subsets[s];
    for (const EndpointPort& port : subset.ports) {
      if (!PortMatches(port, sp)) continue;
      if (!port.port || !ValidPort(*port.port)) continue;
      const auto backend_port = static_cast<uint16_t>(*port.port);
      auto add = [&](const std::vector<EndpointAddress>& addrs, bool ready) {
        for (const EndpointAddress& a : addrs) {
          std::optional<Ipv4> ip = Ipv4::Parse(a.ip);
          if (!ip) continue;  // warned once per Service by WarnLegacyAddresses
          Candidate c;
          c.ip = *ip;
          c.port = backend_port;
          c.ready = ready;
          c.serving = ready;
          c.terminating = false;
          c.local = !node.name.empty() && a.node_name == node.name;
          c.node = &a.node_name;
          c.zone = &EmptyString();
          // A ready address beats a not-ready duplicate; otherwise first wins.
          auto [it, inserted] = seen.try_emplace(EndpointKey(c.ip, c.port), out.size());
          if (inserted) {
            out.push_back(c);
          } else if (ready && !out[it->second].ready) {
            out[it->second] = c;
          }
        }
      };
      add(subset.addresses, true);
      add(subset.not_ready_addresses, false);
    }
  }
  return out;
}

void WarnLegacyAddresses(const Endpoints& eps, std::vector<std::string>* warnings) {
  for (size_t s = 0; s < eps.subsets.size(); ++s) {
    auto check = [&](const std::vector<EndpointAddress>& addrs, absl::string_view field) {
      for (size_t i = 0; i < addrs.size(); ++i) {
        const std::string& ip = addrs[i].ip;
        if (Ipv4::Parse(ip) || LooksLikeIpv6(ip)) continue;
        warnings->push_back(absl::StrCat(eps.meta.id.String(), " (Endpoints): subsets[", s, "].",
                                         field, "[", i, "].ip \"", ip,
                                         "\" is not an IPv4 address; ignored"));
      }
    };
    check(eps.subsets[s].addresses, "addresses");
    check(eps.subsets[s].not_ready_addresses, "notReadyAddresses");
  }
}

bool HintedFor(const Candidate& c, const std::string& zone) {
  return c.hints != nullptr && std::find(c.hints->begin(), c.hints->end(), zone) != c.hints->end();
}

// Same-zone topology (topology.go topologyModeFromHints): used only when the
// node's zone is known, every ready endpoint carries a zone hint, and at least
// one ready endpoint is hinted for this zone. Current kube-proxy decides on
// the hints alone: the annotation/trafficDistribution gate of older releases
// was dropped because the EndpointSlice controller writes hints only when one
// of those asks for them.
bool UseZoneHints(const std::vector<Candidate>& cands, const std::string& zone) {
  if (zone.empty()) return false;
  bool has_ready = false;
  bool has_for_zone = false;
  for (const Candidate& c : cands) {
    if (!c.ready) continue;
    has_ready = true;
    if (c.hints == nullptr) return false;
    if (HintedFor(c, zone)) has_for_zone = true;
  }
  return has_ready && has_for_zone;
}

Backend ToBackend(const Candidate& c) {
  Backend b;
  b.ip = c.ip;
  b.port = c.port;
  b.node = *c.node;
  b.zone = *c.zone;
  b.ready = c.ready;
  b.serving = c.serving;
  b.terminating = c.terminating;
  return b;
}

template <typename Pred>
std::vector<Backend> Select(const std::vector<Candidate>& cands, Pred pred) {
  std::vector<Backend> out;
  for (const Candidate& c : cands) {
    if (pred(c)) out.push_back(ToBackend(c));
  }
  return out;
}

// topology.go CategorizeEndpoints, Cluster policy: ready endpoints (narrowed
// by zone hints when usable); if none is ready anywhere, the serving and
// terminating ones (graceful termination; topology is not considered then).
std::vector<Backend> ClusterBackends(const std::vector<Candidate>& cands, const NodeInfo& node) {
  const bool topo = UseZoneHints(cands, node.zone);
  std::vector<Backend> out =
      Select(cands, [&](const Candidate& c) { return c.ready && (!topo || HintedFor(c, node.zone)); });
  if (out.empty()) {
    out = Select(cands, [](const Candidate& c) { return c.serving && c.terminating; });
  }
  return out;
}

// Local policy: this node's ready endpoints, else this node's serving and
// terminating ones. Never remote endpoints, even when there is no local one.
std::vector<Backend> LocalBackends(const std::vector<Candidate>& cands) {
  std::vector<Backend> out = Select(cands, [](const Candidate& c) { return c.local && c.ready; });
  if (out.empty()) {
    out = Select(cands,
                 [](const Candidate& c) { return c.local && c.serving && c.terminating; });
  }
  return out;
}

std::string PortLabel(const ServicePort& sp) {
  return absl::StrCat(sp.name.empty() ? absl::StrCat(sp.port) : sp.name, "/",
                      ProtocolName(sp.protocol));
}

}  // namespace

const char* SkipReasonName(SkipReason r) {
  switch (r) {
    case SkipReason::kNone: return "none";
    case SkipReason::kHeadless: return "headless";
    case SkipReason::kExternalName: return "type ExternalName";
    case SkipReason::kProxyName: return "label service.kubernetes.io/service-proxy-name";
    case SkipReason::kNoClusterIP: return "no IPv4 cluster IP";
  }
  return "?";
}

SkipReason ShouldSkip(const Service& svc) {
  // Informer label selector first: such Services never reach kube-proxy.
  if (HasProxyNameLabel(svc.meta)) return SkipReason::kProxyName;
  if (HasHeadlessLabel(svc.meta)) return SkipReason::kHeadless;
  // proxy/util ShouldSkipService: clusterIP "None" or "", then ExternalName.
  // ExternalName is checked before the empty clusterIP so the reason printed
  // for an ExternalName Service (which normally has no cluster IP) says so.
  if (svc.cluster_ip == kClusterIPNone) return SkipReason::kHeadless;
  if (svc.type == ServiceType::kExternalName) return SkipReason::kExternalName;
  if (svc.cluster_ip.empty()) return SkipReason::kNoClusterIP;
  // The IPv4 proxier ignores a Service without an IPv4 cluster IP
  // (servicechangetracker.go serviceToServiceMap), NodePorts included.
  if (!ClusterIPv4(svc)) return SkipReason::kNoClusterIP;
  return SkipReason::kNone;
}

// Translate over ClusterState (objects by value) or StoreState (pointers).
template <typename T>
const T& Deref(const T& v) {
  return v;
}
template <typename T>
const T& Deref(const T* v) {
  return *v;
}

template <typename State>
absl::btree_map<NamespacedName, ServiceEndpoints> IndexEndpointsOf(const State& state) {
  absl::btree_map<NamespacedName, ServiceEndpoints> index;
  // ClusterState orders slices by (namespace, slice name): each Service's
  // list comes out sorted by slice name, which dedup relies on.
  for (const auto& [key, slice_v] : state.slices) {
    const EndpointSlice& slice = Deref(slice_v);
    if (FilteredByInformer(slice.meta)) continue;
    absl::string_view service = slice.service_name;
    if (service.empty()) {
      auto it = slice.meta.labels.find(kLabelServiceName);
      if (it != slice.meta.labels.end()) service = it->second;
    }
    if (service.empty()) continue;  // orphan: kube-proxy cannot key it
    index[NamespacedName{key.ns, std::string(service)}].slices.push_back(&slice);
  }
  for (const auto& [key, eps_v] : state.endpoints) {
    const Endpoints& eps = Deref(eps_v);
    if (FilteredByInformer(eps.meta)) continue;
    index[key].legacy = &eps;
  }
  return index;
}

std::vector<ServiceRule> TranslateService(const Service& svc, const ServiceEndpoints& eps,
                                          const NodeInfo& node,
                                          std::vector<std::string>* warnings) {
  std::vector<ServiceRule> rules;
  if (ShouldSkip(svc) != SkipReason::kNone) return rules;
  const std::string id = svc.meta.id.String();
  const Ipv4 cluster_ip = *ClusterIPv4(svc);

  // Only IPv4 slices: the IPv4 proxier's change tracker drops other address
  // types (endpointschangetracker.go EndpointSliceUpdate).
  std::vector<ParsedSlice> slices;
  slices.reserve(eps.slices.size());
  for (const EndpointSlice* slice : eps.slices) {
    if (slice->address_type != "IPv4") continue;
    ParsedSlice ps;
    ps.slice = slice;
    ps.address.reserve(slice->endpoints.size());
    for (size_t i = 0; i < slice->endpoints.size(); ++i) {
      const Endpoint& ep = slice->endpoints[i];
      if (ep.addresses.empty()) {  // kube-proxy: "endpoint with empty address"
        ps.address.push_back(std::nullopt);
        continue;
      }
      std::optional<Ipv4> ip = Ipv4::Parse(ep.addresses[0]);
      if (!ip) {
        warnings->push_back(absl::StrCat(slice->meta.id.String(), " (EndpointSlice of ", id,
                                         "): endpoints[", i, "].addresses[0] \"",
                                         ep.addresses[0], "\" is not an IPv4 address; ignored"));
      }
      ps.address.push_back(ip);
    }
    slices.push_back(std::move(ps));
  }
  // Legacy Endpoints only when the Service has no EndpointSlice at all (of
  // any address type): a Service with slices is managed by the slice
  // controller, whose view is the current one.
  const bool use_legacy = eps.slices.empty() && eps.legacy != nullptr;
  if (use_legacy) WarnLegacyAddresses(*eps.legacy, warnings);

  std::vector<Ipv4> external_ips;
  for (size_t i = 0; i < svc.external_ips.size(); ++i) {
    const std::string& text = svc.external_ips[i];
    if (auto ip = Ipv4::Parse(text)) {
      external_ips.push_back(*ip);
    } else if (!LooksLikeIpv6(text)) {
      warnings->push_back(absl::StrCat(id, ": spec.externalIPs[", i, "] \"", text,
                                       "\" is not an IP address; ignored"));
    }
  }

  // status.loadBalancer.ingress: IP-bearing, VIP-mode (ipMode unset or "VIP";
  // "Proxy" load balancers deliver to the node, not to the VIP: proxy/util
  // IsVIPMode), IPv4. kube-proxy does not look at the type; the API server
  // keeps these only on LoadBalancer Services, so a hand-written manifest that
  // puts them elsewhere gets a warning instead of a frontend.
  std::vector<Ipv4> lb_ips;
  for (size_t i = 0; i < svc.lb_ingress.size(); ++i) {
    const LoadBalancerIngress& ing = svc.lb_ingress[i];
    if (ing.ip.empty()) continue;
    if (!ing.ip_mode.empty() && ing.ip_mode != "VIP") continue;
    if (svc.type != ServiceType::kLoadBalancer) {
      warnings->push_back(absl::StrCat(id, ": status.loadBalancer.ingress[", i, "].ip ", ing.ip,
                                       " ignored: type ", ServiceTypeName(svc.type),
                                       " is not LoadBalancer"));
      continue;
    }
    if (auto ip = Ipv4::Parse(ing.ip)) {
      lb_ips.push_back(*ip);
    } else if (!LooksLikeIpv6(ing.ip)) {
      warnings->push_back(absl::StrCat(id, ": status.loadBalancer.ingress[", i, "].ip \"",
                                       ing.ip, "\" is not an IP address; ignored"));
    }
  }
  const bool has_node_ports =
      svc.type == ServiceType::kNodePort || svc.type == ServiceType::kLoadBalancer;
  const bool internal_local = svc.internal_traffic_policy == TrafficPolicy::kLocal;
  const bool external_local = svc.external_traffic_policy == TrafficPolicy::kLocal;
  const uint32_t affinity =
      svc.session_affinity_client_ip ? static_cast<uint32_t>(std::max(0, svc.affinity_timeout_s))
                                     : 0;
  absl::btree_map<std::string, std::string> annotations;
  for (const auto& [k, v] : svc.meta.annotations) {
    if (absl::StartsWith(k, kAnnotationPrefix)) annotations.emplace(k, v);
  }

  for (size_t p = 0; p < svc.ports.size(); ++p) {
    const ServicePort& sp = svc.ports[p];
    if (!ValidPort(sp.port)) {
      warnings->push_back(absl::StrCat(id, ": spec.ports[", p, "].port ", sp.port,
                                       " is out of range 1-65535; port ignored"));
      continue;
    }
    const bool supported = sp.protocol == Protocol::kTCP;
    if (!supported) {
      warnings->push_back(absl::StrCat(id, ": spec.ports[", p, "] (", PortLabel(sp),
                                       "): protocol ", ProtocolName(sp.protocol),
                                       " is not supported yet; rule rendered but not programmed"));
    }
    uint16_t node_port = 0;
    if (sp.node_port != 0) {
      if (!has_node_ports) {
        warnings->push_back(absl::StrCat(id, ": spec.ports[", p, "].nodePort ", sp.node_port,
                                         " ignored: type ", ServiceTypeName(svc.type),
                                         " has no node ports"));
      } else if (!ValidPort(sp.node_port)) {
        warnings->push_back(absl::StrCat(id, ": spec.ports[", p, "].nodePort ", sp.node_port,
                                         " is out of range 1-65535; ignored"));
      } else {
        node_port = static_cast<uint16_t>(sp.node_port);
      }
    }

    std::vector<Candidate> cands =
        use_legacy ? CandidatesFromLegacy(*eps.legacy, sp, node)
                   : CandidatesFromSlices(slices, sp, node);
    std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
      return std::pair(a.ip.host(), a.port) < std::pair(b.ip.host(), b.port);
    });
    // Cluster and Local sets are computed once per port, only if some
    // frontend of this port uses them.
    const bool external = node_port != 0 || !external_ips.empty() || !lb_ips.empty();
    std::optional<std::vector<Backend>> cluster_set, local_set;
    if (!internal_local || (external && !external_local)) cluster_set = ClusterBackends(cands, node);
    if (internal_local || (external && external_local)) local_set = LocalBackends(cands);
    // Graceful termination: serving + terminating endpoints left out because
    // ready ones exist still carry established flows.
    auto draining_for = [&](const std::vector<Backend>& chosen, bool local) {
      std::vector<Backend> out;
      for (const Candidate& c : cands) {
        if (!(c.serving && c.terminating) || (local && !c.local)) continue;
        bool chosen_already = std::any_of(chosen.begin(), chosen.end(), [&](const Backend& b) {
          return b.ip == c.ip && b.port == c.port;
        });
        if (!chosen_already) out.push_back(ToBackend(c));
      }
      return out;
    };

    const ServicePortName spn{svc.meta.id, sp.name, sp.protocol};
    auto emit = [&](FrontendType type, Ipv4 ip, uint16_t port, bool local) {
      ServiceRule r;
      r.service = spn;
      r.type = type;
      r.frontend = FrontendKey{ip, port, sp.protocol};
      r.affinity_timeout_s = affinity;
      r.local_only = local;
      r.supported = supported;
      r.backends = local ? *local_set : *cluster_set;
      r.draining = draining_for(r.backends, local);
      r.annotations = annotations;
      rules.push_back(std::move(r));
    };
    const auto port = static_cast<uint16_t>(sp.port);
    emit(FrontendType::kClusterIP, cluster_ip, port, internal_local);
    if (node_port != 0) emit(FrontendType::kNodePort, Ipv4(), node_port, external_local);
    for (Ipv4 ip : external_ips) emit(FrontendType::kExternalIP, ip, port, external_local);
    for (Ipv4 ip : lb_ips) emit(FrontendType::kLoadBalancer, ip, port, external_local);
  }
  return rules;
}

template <typename State>
TranslateResult TranslateState(const State& state, const NodeInfo& node) {
  TranslateResult result;
  const absl::btree_map<NamespacedName, ServiceEndpoints> index = IndexEndpointsOf(state);
  const ServiceEndpoints no_endpoints;
  // Services are visited in namespace/name order, so on a frontend conflict
  // the first inserted (the one that sorts first) keeps the frontend.
  for (const auto& [key, svc_v] : state.services) {
    const Service& svc = Deref(svc_v);
    if (SkipReason reason = ShouldSkip(svc); reason != SkipReason::kNone) {
      result.skipped.emplace(key, reason);
      continue;
    }
    auto it = index.find(key);
    const ServiceEndpoints& eps = it == index.end() ? no_endpoints : it->second;
    for (ServiceRule& rule : TranslateService(svc, eps, node, &result.warnings)) {
      auto slot = result.table.lower_bound(rule.frontend);
      if (slot == result.table.end() || slot->first != rule.frontend) {
        const FrontendKey key = rule.frontend;
        result.table.emplace_hint(slot, key, std::move(rule));
      } else {
        const ServiceRule& keeper = slot->second;
        result.warnings.push_back(absl::StrCat(
            "frontend ", keeper.frontend.String(), " is claimed by ", keeper.service.String(),
            " (", FrontendTypeName(keeper.type), ") and ", rule.service.String(), " (",
            FrontendTypeName(rule.type), "); ", keeper.service.String(), " keeps it"));
      }
    }
  }
  return result;
}

absl::btree_map<NamespacedName, ServiceEndpoints> IndexEndpoints(const ClusterState& state) {
  return IndexEndpointsOf(state);
}
TranslateResult Translate(const ClusterState& state, const NodeInfo& node) { return TranslateState(state, node); }
TranslateResult Translate(const StoreState& state, const NodeInfo& node) { return TranslateState(state, node); }

}  // namespace kpx::controller
