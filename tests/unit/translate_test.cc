// Fixture-table tests of Translate(): each case is objects + node -> the whole
// rendered table (frontends, flags, backends), so removing any kube-proxy rule
// implemented in controller/translate.cc makes at least one case fail.
#include "controller/translate.h"

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// ------------------------------------------------------------ object builders

NamespacedName Id(absl::string_view ns_name) {
  std::vector<std::string> parts = absl::StrSplit(ns_name, '/');
  return NamespacedName{parts.at(0), parts.at(1)};
}

ServicePort Port(std::string name, int32_t port, Protocol proto = Protocol::kTCP,
                 int32_t node_port = 0) {
  ServicePort p;
  p.name = std::move(name);
  p.port = port;
  p.protocol = proto;
  p.node_port = node_port;
  return p;
}

Service Svc(absl::string_view id, std::string cluster_ip, std::vector<ServicePort> ports,
            std::function<void(Service&)> tweak = nullptr) {
  Service s;
  s.meta.id = Id(id);
  s.cluster_ip = std::move(cluster_ip);
  s.has_selector = true;
  s.ports = std::move(ports);
  if (tweak) tweak(s);
  return s;
}

EndpointPort EPort(std::optional<std::string> name, std::optional<int32_t> port,
                   Protocol proto = Protocol::kTCP) {
  EndpointPort p;
  p.name = std::move(name);
  p.port = port;
  p.protocol = proto;
  return p;
}

struct Cond {
  std::optional<bool> ready, serving, terminating;
};
const Cond kReady{};                                   // all unset: ready
const Cond kNotReady{false, false, false};
const Cond kTerminatingServing{false, true, true};
const Cond kTerminatingNotServing{false, false, true};

Endpoint Ep(std::string ip, std::string node = "", Cond c = kReady,
            std::vector<std::string> hints = {}, std::string zone = "") {
  Endpoint e;
  e.addresses = {std::move(ip)};
  e.node_name = std::move(node);
  e.conditions.ready = c.ready;
  e.conditions.serving = c.serving;
  e.conditions.terminating = c.terminating;
  e.hint_zones = std::move(hints);
  e.zone = std::move(zone);
  return e;
}

EndpointSlice Slice(absl::string_view id, std::string service, std::vector<EndpointPort> ports,
                    std::vector<Endpoint> endpoints,
                    std::function<void(EndpointSlice&)> tweak = nullptr) {
  EndpointSlice s;
  s.meta.id = Id(id);
  s.service_name = std::move(service);
  if (!s.service_name.empty()) s.meta.labels["kubernetes.io/service-name"] = s.service_name;
  s.address_type = "IPv4";
  s.ports = std::move(ports);
  s.endpoints = std::move(endpoints);
  if (tweak) tweak(s);
  return s;
}

struct Objects {
  std::vector<Service> services;
  std::vector<EndpointSlice> slices;
  std::vector<Endpoints> endpoints;
};

ClusterState State(const Objects& o) {
  ClusterState st;
  for (const Service& s : o.services) st.services[s.meta.id] = s;
  for (const EndpointSlice& s : o.slices) st.slices[s.meta.id] = s;
  for (const Endpoints& e : o.endpoints) st.endpoints[e.meta.id] = e;
  return st;
}

// ------------------------------------------------------------------ rendering

// "ClusterIP 10.96.0.1:80/TCP ns/name:port -> 10.0.0.1:8080 10.0.0.2:8080 [flags]"
std::string Render(const ServiceRule& r) {
  std::vector<std::string> backends;
  for (const Backend& b : r.backends) backends.push_back(absl::StrCat(b.ip.ToString(), ":", b.port));
  std::string out = absl::StrCat(FrontendTypeName(r.type), " ", r.frontend.String(), " ",
                                 r.service.String(), " ->");
  if (!backends.empty()) absl::StrAppend(&out, " ", absl::StrJoin(backends, " "));
  if (r.local_only) absl::StrAppend(&out, " [local]");
  if (r.affinity_timeout_s != 0) absl::StrAppend(&out, " [affinity=", r.affinity_timeout_s, "]");
  if (!r.supported) absl::StrAppend(&out, " [unsupported]");
  return out;
}

std::vector<std::string> RenderTable(const ServiceTable& t) {
  std::vector<std::string> out;
  for (const auto& [key, rule] : t) {
    EXPECT_EQ(key, rule.frontend);
    out.push_back(Render(rule));
  }
  return out;
}

// --------------------------------------------------------------- the table

struct Case {
  std::string name;
  Objects objects;
  std::vector<std::string> rules;  // in table (frontend) order
  std::vector<std::pair<std::string, SkipReason>> skipped = {};
  std::vector<std::string> warnings = {};  // substrings, each must match one warning
  NodeInfo node = {"node-a", "zone-a"};
};

const std::vector<EndpointPort> kHttp = {EPort("http", 8080)};
const std::vector<ServicePort> kHttpSvc = {Port("http", 80)};

std::vector<Case> Cases() {
  std::vector<Case> c;

  // ---------------------------------------------------------------- frontends
  c.push_back({"clusterip_backends_sorted",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp, {Ep("10.0.0.2"), Ep("10.0.0.10"), Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080 10.0.0.2:8080 10.0.0.10:8080"}});
  c.push_back({"cluster_ips_first_ipv4_wins_over_cluster_ip_and_ipv6_skipped",
               {{Svc("default/web", "fd00::1", kHttpSvc,
                     [](Service& s) { s.cluster_ips = {"fd00::1", "10.96.0.7"}; })},
                {Slice("default/web-1", "web", kHttp, {Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.7:80/TCP default/web:http -> 10.0.0.1:8080"}});
  c.push_back({"ipv6_only_service_skipped",
               {{Svc("default/v6", "fd00::1", kHttpSvc, [](Service& s) { s.cluster_ips = {"fd00::1"}; })}},
               {},
               {{"default/v6", SkipReason::kNoClusterIP}}});
  c.push_back({"nodeport",
               {{Svc("default/np", "10.96.0.2", {Port("http", 80, Protocol::kTCP, 30080)},
                     [](Service& s) { s.type = ServiceType::kNodePort; })},
                {Slice("default/np-1", "np", kHttp, {Ep("10.0.0.1")})}},
               {"NodePort *:30080/TCP default/np:http -> 10.0.0.1:8080",
                "ClusterIP 10.96.0.2:80/TCP default/np:http -> 10.0.0.1:8080"}});
  c.push_back({"nodeport_ignored_on_clusterip_type",
               {{Svc("default/np", "10.96.0.2", {Port("http", 80, Protocol::kTCP, 30080)})},
                {Slice("default/np-1", "np", kHttp, {Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.2:80/TCP default/np:http -> 10.0.0.1:8080"},
               {},
               {"default/np: spec.ports[0].nodePort 30080 ignored: type ClusterIP"}});
  c.push_back({"external_ips_ipv4_only",
               {{Svc("default/ext", "10.96.0.3", kHttpSvc,
                     [](Service& s) { s.external_ips = {"203.0.113.9", "2001:db8::1", "bogus", "203.0.113.5"}; })},
                {Slice("default/ext-1", "ext", kHttp, {Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.3:80/TCP default/ext:http -> 10.0.0.1:8080",
                "ExternalIP 203.0.113.5:80/TCP default/ext:http -> 10.0.0.1:8080",
                "ExternalIP 203.0.113.9:80/TCP default/ext:http -> 10.0.0.1:8080"},
               {},
               {"default/ext: spec.externalIPs[2] \"bogus\" is not an IP address"}});
  c.push_back({"loadbalancer_vip_ingress_only",
               {{Svc("default/lb", "10.96.0.4", {Port("http", 80, Protocol::kTCP, 30081)},
                     [](Service& s) {
                       s.type = ServiceType::kLoadBalancer;
                       s.lb_ingress = {{"198.51.100.1", "", ""},
                                       {"198.51.100.2", "", "VIP"},
                                       {"198.51.100.3", "", "Proxy"},
                                       {"", "lb.example.com", ""},
                                       {"2001:db8::2", "", ""}};
                     })},
                {Slice("default/lb-1", "lb", kHttp, {Ep("10.0.0.1")})}},
               {"NodePort *:30081/TCP default/lb:http -> 10.0.0.1:8080",
                "ClusterIP 10.96.0.4:80/TCP default/lb:http -> 10.0.0.1:8080",
                "LoadBalancer 198.51.100.1:80/TCP default/lb:http -> 10.0.0.1:8080",
                "LoadBalancer 198.51.100.2:80/TCP default/lb:http -> 10.0.0.1:8080"}});
  c.push_back({"lb_ingress_ignored_unless_type_loadbalancer",
               {{Svc("default/np", "10.96.0.5", {Port("http", 80, Protocol::kTCP, 30082)},
                     [](Service& s) {
                       s.type = ServiceType::kNodePort;
                       s.lb_ingress = {{"198.51.100.1", "", ""}};
                     })},
                {Slice("default/np-1", "np", kHttp, {Ep("10.0.0.1")})}},
               {"NodePort *:30082/TCP default/np:http -> 10.0.0.1:8080",
                "ClusterIP 10.96.0.5:80/TCP default/np:http -> 10.0.0.1:8080"},
               {},
               {"status.loadBalancer.ingress[0].ip 198.51.100.1 ignored: type NodePort"}});

  // ------------------------------------------------------------ skip reasons
  c.push_back({"skip_reasons",
               {{Svc("default/headless", "None", kHttpSvc),
                 Svc("default/extname", "", kHttpSvc,
                     [](Service& s) {
                       s.type = ServiceType::kExternalName;
                       s.external_name = "db.example.com";
                     }),
                 Svc("default/extname-ip", "10.96.0.9", kHttpSvc,
                     [](Service& s) { s.type = ServiceType::kExternalName; }),
                 Svc("default/other-proxy", "10.96.0.10", kHttpSvc,
                     [](Service& s) { s.meta.labels["service.kubernetes.io/service-proxy-name"] = "x"; }),
                 Svc("default/headless-label", "10.96.0.11", kHttpSvc,
                     [](Service& s) { s.meta.labels["service.kubernetes.io/headless"] = ""; }),
                 Svc("default/no-ip", "", kHttpSvc),
                 Svc("default/kept", "10.96.0.12", kHttpSvc)},
                {Slice("default/headless-1", "headless", kHttp, {Ep("10.0.0.1")}),
                 Slice("default/other-proxy-1", "other-proxy", kHttp, {Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.12:80/TCP default/kept:http ->"},
               {{"default/extname", SkipReason::kExternalName},
                {"default/extname-ip", SkipReason::kExternalName},
                {"default/headless", SkipReason::kHeadless},
                {"default/headless-label", SkipReason::kHeadless},
                {"default/no-ip", SkipReason::kNoClusterIP},
                {"default/other-proxy", SkipReason::kProxyName}}});
  c.push_back({"slices_with_informer_excluded_labels_ignored",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-a", "web", kHttp, {Ep("10.0.0.1")}),
                 Slice("default/web-b", "web", kHttp, {Ep("10.0.0.2")},
                       [](EndpointSlice& s) { s.meta.labels["service.kubernetes.io/service-proxy-name"] = "x"; }),
                 Slice("default/web-c", "web", kHttp, {Ep("10.0.0.3")},
                       [](EndpointSlice& s) { s.meta.labels["service.kubernetes.io/headless"] = ""; })}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080"}});

  // ----------------------------------------------------------- port matching
  c.push_back({"ports_matched_by_name_backend_port_from_slice",
               {{Svc("default/web", "10.96.0.1", {Port("http", 80), Port("metrics", 9090)})},
                {Slice("default/web-1", "web", {EPort("metrics", 19090), EPort("http", 8080)},
                       {Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080",
                "ClusterIP 10.96.0.1:9090/TCP default/web:metrics -> 10.0.0.1:19090"}});
  c.push_back({"unnamed_port_matches_unset_and_empty_name",
               {{Svc("default/a", "10.96.0.1", {Port("", 80)}), Svc("default/b", "10.96.0.2", {Port("", 80)})},
                {Slice("default/a-1", "a", {EPort(std::nullopt, 8080)}, {Ep("10.0.0.1")}),
                 Slice("default/b-1", "b", {EPort("", 8081)}, {Ep("10.0.0.2")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/a -> 10.0.0.1:8080",
                "ClusterIP 10.96.0.2:80/TCP default/b -> 10.0.0.2:8081"}});
  c.push_back({"name_mismatch_protocol_mismatch_and_portless_give_no_backends",
               {{Svc("default/a", "10.96.0.1", {Port("http", 80)}),
                 Svc("default/b", "10.96.0.2", {Port("http", 80)}),
                 Svc("default/c", "10.96.0.3", {Port("http", 80)}),
                 Svc("default/d", "10.96.0.4", {Port("http", 80)}),
                 Svc("default/e", "10.96.0.5", {Port("http", 80)})},
                {Slice("default/a-1", "a", {EPort("web", 8080)}, {Ep("10.0.0.1")}),
                 Slice("default/b-1", "b", {EPort("http", 8080, Protocol::kUDP)}, {Ep("10.0.0.2")}),
                 Slice("default/c-1", "c", {EPort("http", std::nullopt)}, {Ep("10.0.0.3")}),
                 Slice("default/d-1", "d", {EPort(std::nullopt, 8080)}, {Ep("10.0.0.4")}),
                 Slice("default/e-1", "e", {EPort("http", 0)}, {Ep("10.0.0.5")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/a:http ->",
                "ClusterIP 10.96.0.2:80/TCP default/b:http ->",
                "ClusterIP 10.96.0.3:80/TCP default/c:http ->",
                "ClusterIP 10.96.0.4:80/TCP default/d:http ->",
                "ClusterIP 10.96.0.5:80/TCP default/e:http ->"}});

  // ---------------------------------------------------- slices: join + dedup
  c.push_back({"multiple_slices_merged_and_deduplicated",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {// Same IP in both: a's copy is terminating, b's is not -> b's wins.
                 Slice("default/web-a", "web", kHttp,
                       {Ep("10.0.0.1", "node-x", kTerminatingServing), Ep("10.0.0.2")}),
                 Slice("default/web-b", "web", kHttp,
                       {Ep("10.0.0.1", "node-y"), Ep("10.0.0.3")}),
                 // addresses[0] only.
                 Slice("default/web-c", "web", kHttp, {},
                       [](EndpointSlice& s) {
                         Endpoint e = Ep("10.0.0.4");
                         e.addresses.push_back("10.0.0.5");
                         s.endpoints.push_back(e);
                         s.endpoints.push_back(Endpoint{});  // no address: ignored
                       })}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080 10.0.0.2:8080 "
                "10.0.0.3:8080 10.0.0.4:8080"}});
  c.push_back({"orphan_other_namespace_and_non_ipv4_slices_ignored",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp, {Ep("10.0.0.1")}),
                 Slice("default/orphan", "", kHttp, {Ep("10.0.0.2")}),
                 Slice("other/web-1", "web", kHttp, {Ep("10.0.0.3")}),
                 Slice("default/web-v6", "web", kHttp, {Ep("fd00::4")},
                       [](EndpointSlice& s) { s.address_type = "IPv6"; }),
                 Slice("default/web-fqdn", "web", kHttp, {Ep("10.0.0.5")},
                       [](EndpointSlice& s) { s.address_type = "FQDN"; })}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080"}});
  c.push_back({"bad_endpoint_address_warned_and_ignored",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp, {Ep("10.0.0.1"), Ep("10.0.0.300")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080"},
               {},
               {"default/web-1 (EndpointSlice of default/web): endpoints[1].addresses[0] \"10.0.0.300\""}});

  // ---------------------------------------------------------- legacy Endpoints
  Endpoints legacy;
  legacy.meta.id = Id("default/old");
  legacy.subsets = {{{{"10.1.0.2", "node-a"}, {"10.1.0.1", ""}},
                     {{"10.1.0.3", ""}},
                     {EPort("http", 8080), EPort("http", 9999, Protocol::kUDP), EPort("x", 1)}}};
  c.push_back({"legacy_endpoints_when_no_slice",
               {{Svc("default/old", "10.96.0.20", kHttpSvc)}, {}, {legacy}},
               {"ClusterIP 10.96.0.20:80/TCP default/old:http -> 10.1.0.1:8080 10.1.0.2:8080"}});
  Endpoints shadowed = legacy;
  shadowed.meta.id = Id("default/web");
  c.push_back({"slices_take_precedence_over_legacy_endpoints",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp, {Ep("10.0.0.1")})},
                {shadowed}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080"}});
  Endpoints legacy_not_ready;
  legacy_not_ready.meta.id = Id("default/old");
  legacy_not_ready.subsets = {{{}, {{"10.1.0.3", ""}}, {EPort("http", 8080)}}};
  c.push_back({"legacy_not_ready_addresses_never_selected",
               {{Svc("default/old", "10.96.0.20", kHttpSvc)}, {}, {legacy_not_ready}},
               {"ClusterIP 10.96.0.20:80/TCP default/old:http ->"}});

  // ------------------------------------------------------- condition ladder
  c.push_back({"ready_only_when_any_ready",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp,
                       {Ep("10.0.0.1", "", {std::nullopt, std::nullopt, std::nullopt}),  // unset = ready
                        Ep("10.0.0.2", "", {true, true, false}),
                        Ep("10.0.0.3", "", kTerminatingServing),
                        Ep("10.0.0.4", "", kNotReady)})}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080 10.0.0.2:8080"}});
  c.push_back({"serving_terminating_fallback_when_none_ready",
               {{Svc("default/web", "10.96.0.1", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp,
                       {Ep("10.0.0.3", "", kTerminatingServing),
                        Ep("10.0.0.4", "", kNotReady),
                        Ep("10.0.0.5", "", kTerminatingNotServing),
                        // kube-proxy reads an unset serving as true.
                        Ep("10.0.0.6", "", {false, std::nullopt, true})})}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.3:8080 10.0.0.6:8080"}});
  c.push_back({"no_usable_endpoint_keeps_frontend_without_backends",
               {{Svc("default/web", "10.96.0.1", kHttpSvc), Svc("default/empty", "10.96.0.2", kHttpSvc)},
                {Slice("default/web-1", "web", kHttp,
                       {Ep("10.0.0.4", "", kNotReady), Ep("10.0.0.5", "", kTerminatingNotServing)})}},
               {"ClusterIP 10.96.0.1:80/TCP default/web:http ->",
                "ClusterIP 10.96.0.2:80/TCP default/empty:http ->"}});

  // ----------------------------------------------------------- traffic policy
  auto np_svc = [](std::string id, TrafficPolicy internal, TrafficPolicy external) {
    return Svc(id, "10.96.0.30", {Port("http", 80, Protocol::kTCP, 30090)}, [=](Service& s) {
      s.type = ServiceType::kLoadBalancer;
      s.external_ips = {"203.0.113.1"};
      s.lb_ingress = {{"198.51.100.1", "", ""}};
      s.internal_traffic_policy = internal;
      s.external_traffic_policy = external;
    });
  };
  const std::vector<Endpoint> mixed = {Ep("10.0.0.1", "node-a"), Ep("10.0.0.2", "node-b"),
                                       Ep("10.0.0.3", "node-a", kTerminatingServing)};
  c.push_back({"internal_local_applies_to_clusterip_only",
               {{np_svc("default/p", TrafficPolicy::kLocal, TrafficPolicy::kCluster)},
                {Slice("default/p-1", "p", kHttp, mixed)}},
               {"NodePort *:30090/TCP default/p:http -> 10.0.0.1:8080 10.0.0.2:8080",
                "ClusterIP 10.96.0.30:80/TCP default/p:http -> 10.0.0.1:8080 [local]",
                "LoadBalancer 198.51.100.1:80/TCP default/p:http -> 10.0.0.1:8080 10.0.0.2:8080",
                "ExternalIP 203.0.113.1:80/TCP default/p:http -> 10.0.0.1:8080 10.0.0.2:8080"}});
  c.push_back({"external_local_applies_to_nodeport_externalip_lb",
               {{np_svc("default/p", TrafficPolicy::kCluster, TrafficPolicy::kLocal)},
                {Slice("default/p-1", "p", kHttp, mixed)}},
               {"NodePort *:30090/TCP default/p:http -> 10.0.0.1:8080 [local]",
                "ClusterIP 10.96.0.30:80/TCP default/p:http -> 10.0.0.1:8080 10.0.0.2:8080",
                "LoadBalancer 198.51.100.1:80/TCP default/p:http -> 10.0.0.1:8080 [local]",
                "ExternalIP 203.0.113.1:80/TCP default/p:http -> 10.0.0.1:8080 [local]"}});
  c.push_back({"local_has_no_remote_fallback",
               {{np_svc("default/p", TrafficPolicy::kLocal, TrafficPolicy::kLocal)},
                {Slice("default/p-1", "p", kHttp, {Ep("10.0.0.2", "node-b")})}},
               {"NodePort *:30090/TCP default/p:http -> [local]",
                "ClusterIP 10.96.0.30:80/TCP default/p:http -> [local]",
                "LoadBalancer 198.51.100.1:80/TCP default/p:http -> [local]",
                "ExternalIP 203.0.113.1:80/TCP default/p:http -> [local]"}});
  c.push_back({"local_serving_terminating_fallback",
               {{np_svc("default/p", TrafficPolicy::kLocal, TrafficPolicy::kCluster)},
                {Slice("default/p-1", "p", kHttp,
                       {Ep("10.0.0.2", "node-b"), Ep("10.0.0.3", "node-a", kTerminatingServing),
                        Ep("10.0.0.4", "node-a", kTerminatingNotServing)})}},
               {"NodePort *:30090/TCP default/p:http -> 10.0.0.2:8080",
                "ClusterIP 10.96.0.30:80/TCP default/p:http -> 10.0.0.3:8080 [local]",
                "LoadBalancer 198.51.100.1:80/TCP default/p:http -> 10.0.0.2:8080",
                "ExternalIP 203.0.113.1:80/TCP default/p:http -> 10.0.0.2:8080"}});
  c.push_back({"empty_node_name_matches_no_endpoint",
               {{Svc("default/l", "10.96.0.1", kHttpSvc,
                     [](Service& s) { s.internal_traffic_policy = TrafficPolicy::kLocal; })},
                {Slice("default/l-1", "l", kHttp, {Ep("10.0.0.1", "")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/l:http -> [local]"},
               {},
               {},
               NodeInfo{"", "zone-a"}});

  // ---------------------------------------------------------------- affinity
  c.push_back({"session_affinity",
               {{Svc("default/none", "10.96.0.1", kHttpSvc),
                 Svc("default/dflt", "10.96.0.2", {Port("http", 80, Protocol::kTCP, 30100)},
                     [](Service& s) {
                       s.type = ServiceType::kNodePort;
                       s.session_affinity_client_ip = true;
                     }),
                 Svc("default/custom", "10.96.0.3", kHttpSvc, [](Service& s) {
                   s.session_affinity_client_ip = true;
                   s.affinity_timeout_s = 600;
                 })},
                {}},
               {"NodePort *:30100/TCP default/dflt:http -> [affinity=10800]",
                "ClusterIP 10.96.0.1:80/TCP default/none:http ->",
                "ClusterIP 10.96.0.2:80/TCP default/dflt:http -> [affinity=10800]",
                "ClusterIP 10.96.0.3:80/TCP default/custom:http -> [affinity=600]"}});

  // ------------------------------------------------------ protocols, conflicts
  c.push_back({"udp_and_sctp_rendered_unsupported",
               {{Svc("default/dns", "10.96.0.10",
                     {Port("dns", 53, Protocol::kUDP), Port("dns-tcp", 53), Port("s", 9, Protocol::kSCTP)})},
                {Slice("default/dns-1", "dns",
                       {EPort("dns", 5353, Protocol::kUDP), EPort("dns-tcp", 5353), EPort("s", 99, Protocol::kSCTP)},
                       {Ep("10.0.0.53")})}},
               {"ClusterIP 10.96.0.10:9/SCTP default/dns:s -> 10.0.0.53:99 [unsupported]",
                "ClusterIP 10.96.0.10:53/TCP default/dns:dns-tcp -> 10.0.0.53:5353",
                "ClusterIP 10.96.0.10:53/UDP default/dns:dns -> 10.0.0.53:5353 [unsupported]"},
               {},
               {"default/dns: spec.ports[0] (dns/UDP): protocol UDP is not supported yet; rule "
                "rendered but not programmed",
                "default/dns: spec.ports[2] (s/SCTP): protocol SCTP is not supported yet"}});
  c.push_back({"frontend_conflict_first_name_wins",
               {{Svc("zeta/b", "10.96.0.50", kHttpSvc), Svc("alpha/z", "10.96.0.50", kHttpSvc)},
                {Slice("zeta/b-1", "b", kHttp, {Ep("10.0.0.2")}),
                 Slice("alpha/z-1", "z", kHttp, {Ep("10.0.0.1")})}},
               {"ClusterIP 10.96.0.50:80/TCP alpha/z:http -> 10.0.0.1:8080"},
               {},
               {"frontend 10.96.0.50:80/TCP is claimed by alpha/z:http (ClusterIP) and zeta/b:http "
                "(ClusterIP); alpha/z:http keeps it"}});

  // ---------------------------------------------------------------- topology
  const std::vector<Endpoint> hinted = {Ep("10.0.0.1", "n1", kReady, {"zone-a"}),
                                        Ep("10.0.0.2", "n2", kReady, {"zone-b"}),
                                        Ep("10.0.0.3", "n3", kReady, {"zone-b", "zone-a"}),
                                        // Not ready: its missing hint does not matter.
                                        Ep("10.0.0.4", "n4", kNotReady)};
  c.push_back({"topology_hints_used_for_cluster_policy_only",
               {{np_svc("default/p", TrafficPolicy::kCluster, TrafficPolicy::kLocal)},
                {Slice("default/p-1", "p", kHttp,
                       {hinted[0], hinted[1], hinted[2], hinted[3],
                        Ep("10.0.0.9", "node-a", kReady, {"zone-b"})})}},
               {"NodePort *:30090/TCP default/p:http -> 10.0.0.9:8080 [local]",
                "ClusterIP 10.96.0.30:80/TCP default/p:http -> 10.0.0.1:8080 10.0.0.3:8080",
                "LoadBalancer 198.51.100.1:80/TCP default/p:http -> 10.0.0.9:8080 [local]",
                "ExternalIP 203.0.113.1:80/TCP default/p:http -> 10.0.0.9:8080 [local]"}});
  c.push_back({"topology_ignored_when_a_ready_endpoint_lacks_hints",
               {{Svc("default/t", "10.96.0.1", kHttpSvc)},
                {Slice("default/t-1", "t", kHttp, {hinted[0], hinted[1], Ep("10.0.0.5", "n5")})}},
               {"ClusterIP 10.96.0.1:80/TCP default/t:http -> 10.0.0.1:8080 10.0.0.2:8080 10.0.0.5:8080"}});
  c.push_back({"topology_ignored_when_no_hint_for_our_zone",
               {{Svc("default/t", "10.96.0.1", kHttpSvc)},
                {Slice("default/t-1", "t", kHttp, {hinted[1], Ep("10.0.0.6", "n6", kReady, {"zone-c"})})}},
               {"ClusterIP 10.96.0.1:80/TCP default/t:http -> 10.0.0.2:8080 10.0.0.6:8080"}});
  // An (odd) empty zone hint must not match a node whose zone is unknown.
  c.push_back({"topology_ignored_when_node_zone_unknown",
               {{Svc("default/t", "10.96.0.1", kHttpSvc)},
                {Slice("default/t-1", "t", kHttp,
                       {Ep("10.0.0.1", "n1", kReady, {""}), hinted[1]})}},
               {"ClusterIP 10.96.0.1:80/TCP default/t:http -> 10.0.0.1:8080 10.0.0.2:8080"},
               {},
               {},
               NodeInfo{"node-a", ""}});
  return c;
}

class TranslateTableTest : public ::testing::TestWithParam<Case> {};

TEST_P(TranslateTableTest, RendersExpectedTable) {
  const Case& tc = GetParam();
  TranslateResult r = Translate(State(tc.objects), tc.node);
  EXPECT_THAT(RenderTable(r.table), ElementsAreArray(tc.rules));

  std::vector<std::pair<std::string, SkipReason>> skipped;
  for (const auto& [id, reason] : r.skipped) skipped.emplace_back(id.String(), reason);
  EXPECT_THAT(skipped, ElementsAreArray(tc.skipped));

  for (const std::string& want : tc.warnings) {
    EXPECT_THAT(r.warnings, Contains(HasSubstr(want))) << absl::StrJoin(r.warnings, "\n");
  }
  EXPECT_EQ(r.warnings.size(), tc.warnings.size()) << absl::StrJoin(r.warnings, "\n");
  // Pure and deterministic: a second run gives the same answer.
  TranslateResult again = Translate(State(tc.objects), tc.node);
  EXPECT_EQ(again.table, r.table);
  EXPECT_EQ(again.warnings, r.warnings);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TranslateTableTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// ------------------------------------------------------- field-level checks

TEST(TranslateTest, BackendCarriesNodeZoneAndConditions) {
  Objects o{{Svc("default/web", "10.96.0.1", kHttpSvc)},
            {Slice("default/web-1", "web", kHttp,
                   {Ep("10.0.0.3", "node-b", kTerminatingServing, {}, "zone-b")})}};
  TranslateResult r = Translate(State(o), {"node-a", ""});
  ASSERT_EQ(r.table.size(), 1u);
  const ServiceRule& rule = r.table.begin()->second;
  EXPECT_EQ(rule.service, (ServicePortName{Id("default/web"), "http", Protocol::kTCP}));
  EXPECT_EQ(rule.type, FrontendType::kClusterIP);
  ASSERT_EQ(rule.backends.size(), 1u);
  const Backend& b = rule.backends[0];
  EXPECT_EQ(b.ip.ToString(), "10.0.0.3");
  EXPECT_EQ(b.port, 8080);
  EXPECT_EQ(b.node, "node-b");
  EXPECT_EQ(b.zone, "zone-b");
  EXPECT_FALSE(b.ready);
  EXPECT_TRUE(b.serving);
  EXPECT_TRUE(b.terminating);
  EXPECT_TRUE(b.healthy);
}

TEST(TranslateTest, UnsetConditionsResolveToReadyServingNotTerminating) {
  Objects o{{Svc("default/web", "10.96.0.1", kHttpSvc)},
            {Slice("default/web-1", "web", kHttp, {Ep("10.0.0.1")})}};
  const TranslateResult r = Translate(State(o), {});
  const Backend& b = r.table.begin()->second.backends.at(0);
  EXPECT_TRUE(b.ready);
  EXPECT_TRUE(b.serving);
  EXPECT_FALSE(b.terminating);
}

TEST(TranslateTest, DuplicateKeepsNonTerminatingCopyWhicheverSliceHasIt) {
  // The non-terminating copy wins whether it comes first or last by slice name.
  for (bool terminating_first : {true, false}) {
    Cond first = terminating_first ? kTerminatingServing : kReady;
    Cond second = terminating_first ? kReady : kTerminatingServing;
    Objects o{{Svc("default/web", "10.96.0.1", kHttpSvc)},
              {Slice("default/web-a", "web", kHttp, {Ep("10.0.0.1", "n-first", first)}),
               Slice("default/web-b", "web", kHttp, {Ep("10.0.0.1", "n-second", second)})}};
    const TranslateResult r = Translate(State(o), {});
    const std::vector<Backend>& bs = r.table.begin()->second.backends;
    ASSERT_EQ(bs.size(), 1u);
    EXPECT_FALSE(bs[0].terminating);
    EXPECT_EQ(bs[0].node, terminating_first ? "n-second" : "n-first");
  }
  // All copies terminating: the first by slice name is kept.
  Objects o{{Svc("default/web", "10.96.0.1", kHttpSvc)},
            {Slice("default/web-b", "web", kHttp, {Ep("10.0.0.1", "n-b", kTerminatingServing)}),
             Slice("default/web-a", "web", kHttp, {Ep("10.0.0.1", "n-a", kTerminatingServing)})}};
  const TranslateResult r = Translate(State(o), {});
  const std::vector<Backend>& bs = r.table.begin()->second.backends;
  ASSERT_EQ(bs.size(), 1u);
  EXPECT_EQ(bs[0].node, "n-a");
}

TEST(TranslateTest, KpxAnnotationsCopiedToEveryFrontend) {
  Objects o{{Svc("default/web", "10.96.0.1", {Port("http", 80, Protocol::kTCP, 30080)},
                 [](Service& s) {
                   s.type = ServiceType::kNodePort;
                   s.meta.annotations = {{"kpx.io/health-path", "/healthz"},
                                         {"kpx.io/scheduler", "maglev"},
                                         {"kpx.iox/nope", "1"},
                                         {"example.com/other", "2"}};
                 })},
            {}};
  TranslateResult r = Translate(State(o), {});
  ASSERT_EQ(r.table.size(), 2u);
  for (const auto& [key, rule] : r.table) {
    EXPECT_THAT(rule.annotations,
                ElementsAre(std::pair<const std::string, std::string>("kpx.io/health-path", "/healthz"),
                            std::pair<const std::string, std::string>("kpx.io/scheduler", "maglev")))
        << key.String();
  }
}

TEST(TranslateTest, ShouldSkipAndNames) {
  EXPECT_EQ(ShouldSkip(Svc("a/b", "10.0.0.1", kHttpSvc)), SkipReason::kNone);
  EXPECT_EQ(ShouldSkip(Svc("a/b", "None", kHttpSvc)), SkipReason::kHeadless);
  EXPECT_EQ(ShouldSkip(Svc("a/b", "", kHttpSvc)), SkipReason::kNoClusterIP);
  EXPECT_STREQ(SkipReasonName(SkipReason::kNone), "none");
  EXPECT_STREQ(SkipReasonName(SkipReason::kHeadless), "headless");
  EXPECT_STREQ(SkipReasonName(SkipReason::kExternalName), "type ExternalName");
  EXPECT_STREQ(SkipReasonName(SkipReason::kProxyName),
               "label service.kubernetes.io/service-proxy-name");
  EXPECT_STREQ(SkipReasonName(SkipReason::kNoClusterIP), "no IPv4 cluster IP");
}

TEST(TranslateTest, IndexEndpointsGroupsByServiceLabelInNamespaceSortedByName) {
  Objects o{{},
            {Slice("default/web-b", "web", kHttp, {}), Slice("default/web-a", "web", kHttp, {}),
             Slice("other/web-c", "web", kHttp, {}), Slice("default/orphan", "", kHttp, {})}};
  Endpoints e;
  e.meta.id = Id("default/web");
  o.endpoints.push_back(e);
  ClusterState st = State(o);
  auto index = IndexEndpoints(st);
  ASSERT_EQ(index.size(), 2u);
  const ServiceEndpoints& web = index.at(Id("default/web"));
  ASSERT_EQ(web.slices.size(), 2u);
  EXPECT_EQ(web.slices[0]->meta.id.name, "web-a");
  EXPECT_EQ(web.slices[1]->meta.id.name, "web-b");
  EXPECT_EQ(web.legacy, &st.endpoints.at(Id("default/web")));
  EXPECT_EQ(index.at(Id("other/web")).slices.size(), 1u);
}

TEST(TranslateTest, TranslateServiceDirect) {
  Service svc = Svc("default/web", "10.96.0.1", kHttpSvc);
  EndpointSlice slice = Slice("default/web-1", "web", kHttp, {Ep("10.0.0.1")});
  ServiceEndpoints eps;
  eps.slices.push_back(&slice);
  std::vector<std::string> warnings;
  std::vector<ServiceRule> rules = TranslateService(svc, eps, {"node-a", ""}, &warnings);
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(Render(rules[0]), "ClusterIP 10.96.0.1:80/TCP default/web:http -> 10.0.0.1:8080");
  EXPECT_THAT(warnings, IsEmpty());
  // A skipped Service yields nothing.
  svc.cluster_ip = "None";
  EXPECT_THAT(TranslateService(svc, eps, {}, &warnings), IsEmpty());
}

// Graceful termination: a serving + terminating pod is not a backend while
// ready ones exist, but is listed as draining (its flows must finish); a
// terminating pod that stopped serving is neither. Local rules list only
// this node's draining pods.
TEST(TranslateTest, ServingTerminatingPodsAreDrainingWhileReadyOnesExist) {
  Service svc = Svc("default/web", "10.96.0.1", kHttpSvc,
                    [](Service& s) { s.external_ips = {"192.0.2.1"};
                                     s.external_traffic_policy = TrafficPolicy::kLocal; });
  EndpointSlice slice =
      Slice("default/web-1", "web", kHttp,
            {Ep("10.0.0.1", "node-a"), Ep("10.0.0.2", "node-b", kTerminatingServing),
             Ep("10.0.0.3", "node-a", kTerminatingServing),
             Ep("10.0.0.4", "node-a", kTerminatingNotServing)});
  ServiceEndpoints eps;
  eps.slices.push_back(&slice);
  std::vector<std::string> warnings;
  std::vector<ServiceRule> rules = TranslateService(svc, eps, {"node-a", ""}, &warnings);
  ASSERT_EQ(rules.size(), 2u);
  auto ips = [](const std::vector<Backend>& v) {
    std::vector<std::string> out;
    for (const Backend& b : v) out.push_back(b.ip.ToString());
    return out;
  };
  EXPECT_THAT(ips(rules[0].backends), ::testing::ElementsAre("10.0.0.1"));
  EXPECT_THAT(ips(rules[0].draining), ::testing::ElementsAre("10.0.0.2", "10.0.0.3"));
  EXPECT_THAT(ips(rules[1].backends), ::testing::ElementsAre("10.0.0.1"));     // Local
  EXPECT_THAT(ips(rules[1].draining), ::testing::ElementsAre("10.0.0.3"));    // node-a only
  // Once no pod is ready, the serving ones are the backends, none draining.
  slice.endpoints[0].conditions.ready = false;
  slice.endpoints[0].conditions.serving = false;
  rules = TranslateService(svc, eps, {"node-a", ""}, &warnings);
  EXPECT_THAT(ips(rules[0].backends), ::testing::ElementsAre("10.0.0.2", "10.0.0.3"));
  EXPECT_THAT(rules[0].draining, IsEmpty());
}

}  // namespace
}  // namespace kpx::controller
