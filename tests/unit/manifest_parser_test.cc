// Tests for the manifest parser: every input format, every decoded field and
// default, and the exact text of each class of error (file, line, object,
// field, value), since those messages are what an operator acts on.
#include "controller/manifest_parser.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/testlib.h"

namespace kpx::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::SizeIs;

ParseResult MustParse(std::string_view content, std::string_view file = "svc.yaml") {
  absl::StatusOr<ParseResult> r = ParseManifest(content, file);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : ParseResult{};
}

// The error message of a file that must fail, or "<parsed>" if it did not.
std::string ErrorOf(std::string_view content, std::string_view file = "svc.yaml") {
  absl::StatusOr<ParseResult> r = ParseManifest(content, file);
  if (r.ok()) return "<parsed>";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  return std::string(r.status().message());
}

// ---------------------------------------------------------------- formats

constexpr char kMultiDoc[] = R"(# web and its endpoints
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
---
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: [10.1.0.1]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses:
  - ip: 10.1.0.1
)";

TEST(ManifestParserTest, MultiDocumentYamlSkipsEmptyDocuments) {
  ParseResult r = MustParse(kMultiDoc);
  EXPECT_EQ(r.documents, 3);
  ASSERT_THAT(r.objects.services, SizeIs(1));
  ASSERT_THAT(r.objects.slices, SizeIs(1));
  ASSERT_THAT(r.objects.endpoints, SizeIs(1));
  const SourceRef& svc = r.objects.services[0].meta.source;
  EXPECT_EQ(svc.file, "svc.yaml");
  EXPECT_EQ(svc.line, 3);
  EXPECT_EQ(svc.document, 0);
  EXPECT_EQ(r.objects.slices[0].meta.source.line, 13);
  EXPECT_EQ(r.objects.slices[0].meta.source.document, 2);  // the empty one counts
  EXPECT_EQ(r.objects.endpoints[0].meta.source.line, 23);
  EXPECT_EQ(r.objects.endpoints[0].meta.source.document, 3);
  EXPECT_EQ(r.objects.slices[0].service_name, "web");
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_TRUE(r.ignored_kinds.empty());
}

TEST(ManifestParserTest, DocumentEndMarkerSeparatesDocuments) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: Service
metadata: {name: a}
...
---
apiVersion: v1
kind: Service
metadata: {name: b}
)");
  ASSERT_THAT(r.objects.services, SizeIs(2));
  EXPECT_EQ(r.objects.services[1].meta.id.name, "b");
  EXPECT_EQ(r.objects.services[1].meta.source.line, 6);
  EXPECT_EQ(r.objects.services[1].meta.source.document, 1);
  // YAML 1.1 (libyaml) wants a "---" after "..." before the next document.
  EXPECT_EQ(ErrorOf("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n...\nkind: Service\n"),
            "svc.yaml:5: invalid YAML: did not find expected <document start>");
}

TEST(ManifestParserTest, EmptyFileHasNoObjects) {
  ParseResult r = MustParse("# nothing here\n---\n---\n");
  EXPECT_EQ(r.documents, 0);
  EXPECT_TRUE(r.objects.services.empty());
}

TEST(ManifestParserTest, JsonSingleObject) {
  ParseResult r = MustParse(R"({
	"apiVersion": "v1",
	"kind": "Service",
	"metadata": {"name": "web", "namespace": "shop"},
	"spec": {
		"clusterIP": "10.96.0.5",
		"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "UDP"}],
		"sessionAffinity": "ClientIP"
	}
})", "svc.json");
  ASSERT_THAT(r.objects.services, SizeIs(1));
  const Service& s = r.objects.services[0];
  EXPECT_EQ(s.meta.id.String(), "shop/web");
  EXPECT_EQ(s.meta.source.line, 1);
  EXPECT_EQ(s.cluster_ip, "10.96.0.5");
  ASSERT_THAT(s.ports, SizeIs(1));
  EXPECT_EQ(s.ports[0].port, 80);
  EXPECT_EQ(s.ports[0].target_port, "8080");
  EXPECT_EQ(s.ports[0].protocol, Protocol::kUDP);
  EXPECT_TRUE(s.session_affinity_client_ip);
}

TEST(ManifestParserTest, JsonList) {
  ParseResult r = MustParse(R"({"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
   "spec": {"ports": [{"port": 80}]}},
  {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
   "metadata": {"name": "a-1", "labels": {"kubernetes.io/service-name": "a"}},
   "addressType": "IPv4",
   "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}],
   "ports": [{"port": 8080}]}
]})", "list.json");
  EXPECT_EQ(r.documents, 1);
  ASSERT_THAT(r.objects.services, SizeIs(1));
  ASSERT_THAT(r.objects.slices, SizeIs(1));
  EXPECT_EQ(r.objects.services[0].meta.source.line, 2);
  EXPECT_EQ(r.objects.slices[0].meta.source.line, 4);
  EXPECT_EQ(r.objects.slices[0].endpoints[0].conditions.ready, false);
  EXPECT_EQ(r.objects.slices[0].ports[0].port, 8080);
}

TEST(ManifestParserTest, YamlList) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: v1
  kind: Service
  metadata: {name: b, namespace: x}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
)");
  EXPECT_EQ(r.documents, 1);
  ASSERT_THAT(r.objects.services, SizeIs(2));
  EXPECT_EQ(r.objects.services[0].meta.id.String(), "default/a");
  EXPECT_EQ(r.objects.services[0].meta.source.line, 4);
  EXPECT_EQ(r.objects.services[1].meta.id.String(), "x/b");
  EXPECT_EQ(r.objects.services[1].meta.source.line, 7);
  EXPECT_THAT(r.ignored_kinds, ElementsAre(Pair("v1/ConfigMap", 1)));
}

// Typed lists as the API server returns them: items carry no kind.
TEST(ManifestParserTest, TypedListItemsTakeTheListsKind) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: ServiceList
items:
- metadata: {name: a}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
items:
- metadata: {name: a-1}
  addressType: IPv6
  endpoints:
  - addresses: ["fd00::1"]
---
apiVersion: v1
kind: EndpointsList
items:
- metadata: {name: a}
)");
  EXPECT_EQ(r.documents, 3);
  ASSERT_THAT(r.objects.services, SizeIs(1));
  ASSERT_THAT(r.objects.slices, SizeIs(1));
  ASSERT_THAT(r.objects.endpoints, SizeIs(1));
  EXPECT_EQ(r.objects.slices[0].address_type, "IPv6");
  EXPECT_EQ(r.objects.slices[0].meta.source.document, 1);
  EXPECT_THAT(r.objects.slices[0].endpoints[0].addresses, ElementsAre("fd00::1"));
}

TEST(ManifestParserTest, KubectlGetOutputFile) {
  absl::StatusOr<ParseResult> parsed =
      ParseManifestFile(kpx::testing::SourcePath("tests/unit/testdata/parser/kubectl_get.yaml"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ParseResult& r = *parsed;
  EXPECT_EQ(r.documents, 1);
  EXPECT_THAT(r.ignored_kinds, ElementsAre(Pair("apps/v1/Deployment", 1)));
  ASSERT_THAT(r.objects.services, SizeIs(1));
  const Service& s = r.objects.services[0];
  EXPECT_EQ(s.meta.id.String(), "shop/web");
  EXPECT_EQ(s.meta.resource_version, "48213");
  EXPECT_THAT(s.meta.source.file, HasSubstr("kubectl_get.yaml"));
  EXPECT_EQ(s.meta.source.line, 3);
  EXPECT_EQ(s.cluster_ip, "10.96.12.34");
  EXPECT_TRUE(s.has_selector);
  ASSERT_THAT(s.ports, SizeIs(1));
  EXPECT_EQ(s.ports[0].target_port, "http-web");
  EXPECT_TRUE(s.lb_ingress.empty());
  EXPECT_THAT(s.meta.annotations.at("kubectl.kubernetes.io/last-applied-configuration"),
              HasSubstr("\"kind\":\"Service\""));

  ASSERT_THAT(r.objects.slices, SizeIs(2));
  const EndpointSlice& es = r.objects.slices[0];
  EXPECT_EQ(es.meta.id.String(), "shop/web-x7k2p");
  EXPECT_EQ(es.service_name, "web");
  ASSERT_THAT(es.endpoints, SizeIs(2));
  EXPECT_EQ(es.endpoints[1].conditions.ready, false);
  EXPECT_EQ(es.endpoints[1].conditions.terminating, true);
  EXPECT_EQ(es.endpoints[1].node_name, "node-b");
  // `endpoints: null` / `ports: null` are what kubectl prints for an empty slice.
  EXPECT_EQ(r.objects.slices[1].service_name, "idle");
  EXPECT_TRUE(r.objects.slices[1].endpoints.empty());
  EXPECT_TRUE(r.objects.slices[1].ports.empty());
}

// yaml-cpp rejects some valid JSON (here: a surrogate pair); nlohmann::json
// takes over and the objects come out the same, without line numbers.
TEST(ManifestParserTest, JsonThatYamlCppRejectsFallsBack) {
  constexpr char kJson[] = R"({"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "web", "annotations": {"emoji": "\ud83d\ude00"}},
  "spec": {"ports": [{"port": 80, "nodePort": 30080}], "selector": {"a": "b"}}})";
  ParseResult r = MustParse(kJson, "svc.json");
  ASSERT_THAT(r.objects.services, SizeIs(1));
  const Service& s = r.objects.services[0];
  EXPECT_EQ(s.meta.annotations.at("emoji"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(s.ports[0].node_port, 30080);
  EXPECT_TRUE(s.has_selector);
  EXPECT_EQ(s.meta.source.line, 0);
  EXPECT_EQ(s.meta.source.document, 0);

  // Errors in such a file name the document instead of a line.
  EXPECT_EQ(ErrorOf(R"({"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "web", "annotations": {"emoji": "\ud83d\ude00"}},
  "spec": {"ports": [{"port": "http"}]}})", "svc.json"),
            "svc.json (document 1): default/web: spec.ports[0].port: \"http\" is not a port "
            "number");
}

// ---------------------------------------------------------------- fields

TEST(ManifestParserTest, ServiceEveryField) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  resourceVersion: "42"
  labels:
    app: web
    service.kubernetes.io/service-proxy-name: other
  annotations:
    note: hello
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
  - name: dns
    protocol: UDP
    port: 53
    targetPort: dns-port
  - name: sig
    protocol: SCTP
    port: 9999
  externalIPs:
  - 192.0.2.10
  - 2001:db8::10
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 600
  externalName: ignored.example.com
status:
  loadBalancer:
    ingress:
    - ip: 203.0.113.7
    - hostname: lb.example.com
    - ip: 203.0.113.8
      ipMode: Proxy
)");
  ASSERT_THAT(r.objects.services, SizeIs(1));
  const Service& s = r.objects.services[0];
  EXPECT_EQ(s.meta.id.ns, "shop");
  EXPECT_EQ(s.meta.id.name, "web");
  EXPECT_EQ(s.meta.resource_version, "42");
  EXPECT_THAT(s.meta.labels, ElementsAre(Pair("app", "web"),
                                         Pair("service.kubernetes.io/service-proxy-name", "other")));
  EXPECT_THAT(s.meta.annotations, ElementsAre(Pair("note", "hello")));
  EXPECT_EQ(s.type, ServiceType::kLoadBalancer);
  EXPECT_EQ(s.cluster_ip, "10.96.0.10");
  EXPECT_THAT(s.cluster_ips, ElementsAre("10.96.0.10", "fd00::10"));
  EXPECT_TRUE(s.has_selector);
  ASSERT_THAT(s.ports, SizeIs(3));
  EXPECT_EQ(s.ports[0].name, "http");
  EXPECT_EQ(s.ports[0].protocol, Protocol::kTCP);
  EXPECT_EQ(s.ports[0].port, 80);
  EXPECT_EQ(s.ports[0].target_port, "8080");
  EXPECT_EQ(s.ports[0].node_port, 30080);
  EXPECT_EQ(s.ports[1].name, "dns");
  EXPECT_EQ(s.ports[1].protocol, Protocol::kUDP);
  EXPECT_EQ(s.ports[1].port, 53);
  EXPECT_EQ(s.ports[1].target_port, "dns-port");
  EXPECT_EQ(s.ports[1].node_port, 0);
  EXPECT_EQ(s.ports[2].protocol, Protocol::kSCTP);
  EXPECT_EQ(s.ports[2].target_port, "");
  EXPECT_THAT(s.external_ips, ElementsAre("192.0.2.10", "2001:db8::10"));
  EXPECT_EQ(s.external_traffic_policy, TrafficPolicy::kLocal);
  EXPECT_EQ(s.internal_traffic_policy, TrafficPolicy::kLocal);
  EXPECT_TRUE(s.session_affinity_client_ip);
  EXPECT_EQ(s.affinity_timeout_s, 600);
  EXPECT_EQ(s.external_name, "ignored.example.com");
  ASSERT_THAT(s.lb_ingress, SizeIs(3));
  EXPECT_EQ(s.lb_ingress[0].ip, "203.0.113.7");
  EXPECT_EQ(s.lb_ingress[0].ip_mode, "");
  EXPECT_EQ(s.lb_ingress[1].ip, "");
  EXPECT_EQ(s.lb_ingress[1].hostname, "lb.example.com");
  EXPECT_EQ(s.lb_ingress[2].ip, "203.0.113.8");
  EXPECT_EQ(s.lb_ingress[2].ip_mode, "Proxy");
}

TEST(ManifestParserTest, ServiceTypesAndLegacyGlobalPolicy) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: Service
metadata: {name: np}
spec: {type: NodePort, externalTrafficPolicy: Global, clusterIP: None}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec: {selector: {}}
)");
  ASSERT_THAT(r.objects.services, SizeIs(3));
  EXPECT_EQ(r.objects.services[0].type, ServiceType::kNodePort);
  EXPECT_EQ(r.objects.services[0].external_traffic_policy, TrafficPolicy::kCluster);
  EXPECT_EQ(r.objects.services[0].cluster_ip, "None");
  EXPECT_EQ(r.objects.services[1].type, ServiceType::kExternalName);
  EXPECT_EQ(r.objects.services[1].external_name, "db.example.com");
  EXPECT_FALSE(r.objects.services[2].has_selector);  // an empty selector selects nothing
}

TEST(ManifestParserTest, ServiceDefaults) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  sessionAffinity: ClientIP
  ports:
  - port: 80
)");
  ASSERT_THAT(r.objects.services, SizeIs(1));
  const Service& s = r.objects.services[0];
  EXPECT_EQ(s.meta.id.ns, "default");
  EXPECT_EQ(s.type, ServiceType::kClusterIP);
  EXPECT_EQ(s.cluster_ip, "");
  EXPECT_FALSE(s.has_selector);
  EXPECT_EQ(s.ports[0].name, "");
  EXPECT_EQ(s.ports[0].protocol, Protocol::kTCP);
  EXPECT_EQ(s.ports[0].node_port, 0);
  EXPECT_EQ(s.external_traffic_policy, TrafficPolicy::kCluster);
  EXPECT_EQ(s.internal_traffic_policy, TrafficPolicy::kCluster);
  EXPECT_TRUE(s.session_affinity_client_ip);
  EXPECT_EQ(s.affinity_timeout_s, 10800);
}

TEST(ManifestParserTest, EndpointSliceEveryField) {
  ParseResult r = MustParse(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  resourceVersion: "7"
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: [10.1.0.1, 10.1.0.2]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-a
  zone: zone-a
  hints:
    forZones:
    - name: zone-a
    - name: zone-b
- addresses: [10.1.0.3]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [10.1.0.4]
  conditions: {}
ports:
- name: http
  protocol: TCP
  port: 8080
- name: ""
  protocol: UDP
  port: 53
- protocol: SCTP
- name: all
)");
  ASSERT_THAT(r.objects.slices, SizeIs(1));
  const EndpointSlice& es = r.objects.slices[0];
  EXPECT_EQ(es.meta.id.String(), "shop/web-abc");
  EXPECT_EQ(es.meta.resource_version, "7");
  EXPECT_EQ(es.service_name, "web");
  EXPECT_EQ(es.address_type, "IPv4");
  ASSERT_THAT(es.endpoints, SizeIs(3));
  const Endpoint& e0 = es.endpoints[0];
  EXPECT_THAT(e0.addresses, ElementsAre("10.1.0.1", "10.1.0.2"));
  EXPECT_EQ(e0.conditions.ready, true);
  EXPECT_EQ(e0.conditions.serving, true);
  EXPECT_EQ(e0.conditions.terminating, false);
  EXPECT_EQ(e0.node_name, "node-a");
  EXPECT_EQ(e0.zone, "zone-a");
  EXPECT_THAT(e0.hint_zones, ElementsAre("zone-a", "zone-b"));
  EXPECT_EQ(es.endpoints[1].conditions.ready, false);
  EXPECT_EQ(es.endpoints[1].conditions.serving, false);
  EXPECT_EQ(es.endpoints[1].conditions.terminating, true);
  // Unset conditions stay unset: "ready" is then implied, not written.
  const EndpointConditions& c2 = es.endpoints[2].conditions;
  EXPECT_FALSE(c2.ready.has_value());
  EXPECT_FALSE(c2.serving.has_value());
  EXPECT_FALSE(c2.terminating.has_value());
  EXPECT_TRUE(c2.IsReady());
  EXPECT_EQ(es.endpoints[2].node_name, "");

  ASSERT_THAT(es.ports, SizeIs(4));
  EXPECT_EQ(es.ports[0].name, "http");
  EXPECT_EQ(es.ports[0].protocol, Protocol::kTCP);
  EXPECT_EQ(es.ports[0].port, 8080);
  EXPECT_EQ(es.ports[1].name, "");  // present but empty: set
  EXPECT_EQ(es.ports[1].protocol, Protocol::kUDP);
  EXPECT_FALSE(es.ports[2].name.has_value());
  EXPECT_EQ(es.ports[2].protocol, Protocol::kSCTP);
  EXPECT_FALSE(es.ports[2].port.has_value());
  EXPECT_EQ(es.ports[3].protocol, Protocol::kTCP);  // default
}

TEST(ManifestParserTest, EndpointSliceV1beta1AndFqdn) {
  ParseResult r = MustParse(R"(apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: old-1, labels: {kubernetes.io/service-name: old}}
addressType: IPv4
endpoints:
- addresses: [10.2.0.1]
  conditions: {ready: true}
  topology:
    kubernetes.io/hostname: node-x
    topology.kubernetes.io/zone: zone-x
- addresses: [10.2.0.2]
  nodeName: node-y
  topology: {kubernetes.io/hostname: ignored}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1}
addressType: FQDN
endpoints:
- addresses: [db.example.com]
)");
  ASSERT_THAT(r.objects.slices, SizeIs(2));
  EXPECT_EQ(r.objects.slices[0].service_name, "old");
  EXPECT_EQ(r.objects.slices[0].endpoints[0].node_name, "node-x");
  EXPECT_EQ(r.objects.slices[0].endpoints[0].zone, "zone-x");
  EXPECT_EQ(r.objects.slices[0].endpoints[1].node_name, "node-y");
  EXPECT_EQ(r.objects.slices[1].service_name, "");
  EXPECT_THAT(r.objects.slices[1].endpoints[0].addresses, ElementsAre("db.example.com"));
}

TEST(ManifestParserTest, EndpointsEveryField) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: shop
  resourceVersion: "9"
subsets:
- addresses:
  - ip: 10.3.0.1
    nodeName: node-a
  - ip: "fd00::3"
  notReadyAddresses:
  - ip: 10.3.0.9
    nodeName: node-b
  ports:
  - name: http
    port: 8080
  - name: dns
    port: 53
    protocol: UDP
- addresses:
  - ip: 10.3.1.1
  ports:
  - port: 9000
)");
  ASSERT_THAT(r.objects.endpoints, SizeIs(1));
  const Endpoints& e = r.objects.endpoints[0];
  EXPECT_EQ(e.meta.id.String(), "shop/web");
  EXPECT_EQ(e.meta.resource_version, "9");
  ASSERT_THAT(e.subsets, SizeIs(2));
  const EndpointsSubset& s0 = e.subsets[0];
  ASSERT_THAT(s0.addresses, SizeIs(2));
  EXPECT_EQ(s0.addresses[0].ip, "10.3.0.1");
  EXPECT_EQ(s0.addresses[0].node_name, "node-a");
  EXPECT_EQ(s0.addresses[1].ip, "fd00::3");
  EXPECT_EQ(s0.addresses[1].node_name, "");
  ASSERT_THAT(s0.not_ready_addresses, SizeIs(1));
  EXPECT_EQ(s0.not_ready_addresses[0].ip, "10.3.0.9");
  EXPECT_EQ(s0.not_ready_addresses[0].node_name, "node-b");
  ASSERT_THAT(s0.ports, SizeIs(2));
  EXPECT_EQ(s0.ports[0].name, "http");
  EXPECT_EQ(s0.ports[0].port, 8080);
  EXPECT_EQ(s0.ports[0].protocol, Protocol::kTCP);
  EXPECT_EQ(s0.ports[1].protocol, Protocol::kUDP);
  EXPECT_FALSE(e.subsets[1].ports[0].name.has_value());
  EXPECT_EQ(e.subsets[1].ports[0].port, 9000);
}

TEST(ManifestParserTest, QuotedNumbersAndBoolsReadAsTheirValues) {
  ParseResult r = MustParse(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: q}
addressType: IPv4
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: "false", serving: yes, terminating: False}
ports:
- port: "8080"
)");
  const EndpointSlice& es = r.objects.slices.at(0);
  EXPECT_EQ(es.endpoints[0].conditions.ready, false);
  EXPECT_EQ(es.endpoints[0].conditions.serving, true);
  EXPECT_EQ(es.endpoints[0].conditions.terminating, false);
  EXPECT_EQ(es.ports[0].port, 8080);
}

TEST(ManifestParserTest, OtherKindsAreCountedNotErrors) {
  ParseResult r = MustParse(R"(apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
---
apiVersion: v1
kind: Pod
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
---
apiVersion: example.com/v1
kind: Service
metadata: {name: not-core}
spec: {type: Weird}
)");
  EXPECT_EQ(r.documents, 5);
  EXPECT_TRUE(r.objects.services.empty());
  EXPECT_THAT(r.ignored_kinds,
              ElementsAre(Pair("apps/v1/Deployment", 2), Pair("example.com/v1/Service", 1),
                          Pair("v1/ConfigMap", 1), Pair("v1/Pod", 1)));
}

TEST(ManifestParserTest, DuplicateObjectsWarnAndLastWins) {
  ParseResult r = MustParse(R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.0.0.1}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec: {clusterIP: 10.0.0.3}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.0.0.2}
)");
  // Same name in another namespace or of another kind is not a duplicate.
  ASSERT_THAT(r.objects.services, SizeIs(2));
  ASSERT_THAT(r.objects.endpoints, SizeIs(1));
  EXPECT_EQ(r.objects.services[0].meta.id.String(), "default/web");
  EXPECT_EQ(r.objects.services[0].cluster_ip, "10.0.0.2");
  EXPECT_EQ(r.objects.services[0].meta.source.line, 15);
  EXPECT_EQ(r.objects.services[1].cluster_ip, "10.0.0.3");
  EXPECT_THAT(r.warnings,
              ElementsAre("svc.yaml:15: default/web: duplicate Service (also at svc.yaml:1); "
                          "the later one wins"));
}

// ---------------------------------------------------------------- errors

constexpr char kSvc[] = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n";
constexpr char kSlice[] =
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n"
    "addressType: IPv4\n";  // line 6 onwards is the test's
constexpr char kEps[] = "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\nsubsets:\n";

struct BadInput {
  const char* name;
  std::string content;
  std::string message;
};

class BadInputTest : public ::testing::TestWithParam<BadInput> {};

TEST_P(BadInputTest, FailsWithExactMessage) {
  EXPECT_EQ(ErrorOf(GetParam().content), GetParam().message) << GetParam().content;
}

std::string Svc(const char* rest) { return std::string(kSvc) + rest; }
std::string Slice(const char* rest) { return std::string(kSlice) + rest; }
std::string Eps(const char* rest) { return std::string(kEps) + rest; }

INSTANTIATE_TEST_SUITE_P(
    ManifestParser, BadInputTest,
    ::testing::Values(
        // The issue's own example, at line 14.
        BadInput{"PortNotANumber",
                 Svc("  selector:\n    app: web\n  ports:\n  - name: metrics\n    port: 9090\n"
                     "    protocol: TCP\n  - name: http\n    protocol: TCP\n    port: http\n"),
                 "svc.yaml:14: default/web: spec.ports[1].port: \"http\" is not a port number"},
        BadInput{"YamlSyntax", "apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
                 "svc.yaml:4: invalid YAML: did not find expected ',' or '}' (while parsing a flow "
                 "mapping started at line 3)"},
        BadInput{"YamlBadIndent", "apiVersion: v1\nkind: Service\n metadata: x\n",
                 "svc.yaml:3: invalid YAML: mapping values are not allowed in this context"},
        BadInput{"JsonSyntax",
                 "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Service\"\n  \"metadata\": {}\n}\n",
                 "svc.yaml:4: invalid JSON: syntax error while parsing object - unexpected "
                 "string literal; expected '}'"},
        // yaml-cpp 0.7's LoadAll looped forever on these (jbeder/yaml-cpp#1319).
        BadInput{"YamlCppLoopingInput", ",\n",
                 "svc.yaml:1: invalid YAML: did not find expected node content (while parsing a "
                 "block node started at line 1)"},
        BadInput{"YamlCppLoopingJson", "{\"a\": 1,\n \"kind\":} \"List\",\n \"x\": 2\n}\n",
                 "svc.yaml:2: invalid JSON: syntax error while parsing value - unexpected '}'; "
                 "expected '[', '{', or a literal"},
        BadInput{"DocumentIsAList", "- a\n- b\n",
                 "svc.yaml:1: document 1 is a list, not a mapping (a Kubernetes object)"},
        BadInput{"SecondDocumentIsAString", Svc("  type: ClusterIP\n---\njust text\n"),
                 "svc.yaml:8: document 2 is a string, not a mapping (a Kubernetes object)"},
        BadInput{"MissingName", "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: x\n",
                 "svc.yaml:4: Service: metadata.name: is required"},
        BadInput{"MissingMetadata", "apiVersion: v1\nkind: Service\nspec: {}\n",
                 "svc.yaml:1: Service: metadata.name: is required"},
        BadInput{"MetadataIsAList", "apiVersion: v1\nkind: Service\nmetadata:\n- web\n",
                 "svc.yaml:4: Service: metadata: expected a map, found a list"},
        BadInput{"MissingKind", "apiVersion: v1\nmetadata:\n  name: web\n",
                 "svc.yaml:1: default/web: kind: is required"},
        BadInput{"MissingApiVersion", "kind: Service\nmetadata:\n  name: web\n  namespace: x\n",
                 "svc.yaml:1: x/web: apiVersion: is required"},
        BadInput{"PortOutOfRange", Svc("  ports:\n  - port: 70000\n"),
                 "svc.yaml:7: default/web: spec.ports[0].port: \"70000\" is out of range "
                 "(1..65535)"},
        BadInput{"PortZero", Svc("  ports:\n  - port: 0\n"),
                 "svc.yaml:7: default/web: spec.ports[0].port: \"0\" is out of range (1..65535)"},
        BadInput{"PortMissing", Svc("  ports:\n  - name: http\n"),
                 "svc.yaml:7: default/web: spec.ports[0].port: is required"},
        BadInput{"PortIsAList", Svc("  ports:\n  - port: [80]\n"),
                 "svc.yaml:7: default/web: spec.ports[0].port: expected a port number, found a "
                 "list"},
        BadInput{"NodePortOutOfRange",
                 Svc("  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 65536\n"),
                 "svc.yaml:9: default/web: spec.ports[0].nodePort: \"65536\" is out of range "
                 "(0..65535)"},
        BadInput{"TargetPortOutOfRange", Svc("  ports:\n  - port: 80\n    targetPort: 99999\n"),
                 "svc.yaml:8: default/web: spec.ports[0].targetPort: \"99999\" is out of range "
                 "(1..65535)"},
        BadInput{"UnknownProtocol", Svc("  ports:\n  - port: 53\n    protocol: ICMP\n"),
                 "svc.yaml:8: default/web: spec.ports[0].protocol: \"ICMP\" is not a protocol "
                 "(TCP, UDP or SCTP)"},
        BadInput{"UnknownType", Svc("  type: Headless\n"),
                 "svc.yaml:6: default/web: spec.type: \"Headless\" is not a Service type "
                 "(ClusterIP, NodePort, LoadBalancer or ExternalName)"},
        BadInput{"UnknownExternalTrafficPolicy", Svc("  externalTrafficPolicy: Nearest\n"),
                 "svc.yaml:6: default/web: spec.externalTrafficPolicy: \"Nearest\" is not a "
                 "traffic policy (Cluster or Local)"},
        BadInput{"GlobalIsNotAnInternalTrafficPolicy", Svc("  internalTrafficPolicy: Global\n"),
                 "svc.yaml:6: default/web: spec.internalTrafficPolicy: \"Global\" is not a "
                 "traffic policy (Cluster or Local)"},
        BadInput{"UnknownSessionAffinity", Svc("  sessionAffinity: Cookie\n"),
                 "svc.yaml:6: default/web: spec.sessionAffinity: \"Cookie\" is not a session "
                 "affinity (None or ClientIP)"},
        BadInput{"AffinityTimeoutOutOfRange",
                 Svc("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n"
                     "      timeoutSeconds: 86401\n"),
                 "svc.yaml:9: default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: "
                 "\"86401\" is out of range (1..86400)"},
        BadInput{"AffinityTimeoutNotANumber",
                 Svc("  sessionAffinityConfig: {clientIP: {timeoutSeconds: 3h}}\n"),
                 "svc.yaml:6: default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: "
                 "\"3h\" is not a number of seconds"},
        BadInput{"BadClusterIP", Svc("  clusterIP: 10.0.0.300\n"),
                 "svc.yaml:6: default/web: spec.clusterIP: \"10.0.0.300\" is not an IP address "
                 "or \"None\""},
        BadInput{"BadClusterIPs", Svc("  clusterIPs:\n  - 10.0.0.1\n  - fd00::zz\n"),
                 "svc.yaml:8: default/web: spec.clusterIPs[1]: \"fd00::zz\" is not an IP "
                 "address or \"None\""},
        BadInput{"BadExternalIP", Svc("  externalIPs: [1.2.3.4, example.com]\n"),
                 "svc.yaml:6: default/web: spec.externalIPs[1]: \"example.com\" is not an IP "
                 "address"},
        BadInput{"BadIngressIP",
                 Svc("  type: LoadBalancer\nstatus:\n  loadBalancer:\n    ingress:\n"
                     "    - ip: 300.1.1.1\n"),
                 "svc.yaml:10: default/web: status.loadBalancer.ingress[0].ip: \"300.1.1.1\" "
                 "is not an IP address"},
        BadInput{"PortsIsAString", Svc("  ports: \"80\"\n"),
                 "svc.yaml:6: default/web: spec.ports: \"80\" is not a list"},
        BadInput{"PortsIsAMap", Svc("  ports:\n    port: 80\n"),
                 "svc.yaml:7: default/web: spec.ports: expected a list, found a map"},
        BadInput{"PortItemIsAScalar", Svc("  ports:\n  - 80\n"),
                 "svc.yaml:7: default/web: spec.ports[0]: \"80\" is not a map"},
        BadInput{"LabelValueIsAMap", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
                                     "  labels:\n    app: {x: y}\n",
                 "svc.yaml:6: default/web: metadata.labels[\"app\"]: expected a string, found "
                 "a map"},
        BadInput{"ValueIsEscaped", Svc("  type: \"Cluster\\\"IP\\n\"\n"),
                 "svc.yaml:6: default/web: spec.type: \"Cluster\\\"IP\\n\" is not a Service "
                 "type (ClusterIP, NodePort, LoadBalancer or ExternalName)"},
        BadInput{"SliceBadAddress", Slice("endpoints:\n- addresses: [10.1.1.1, 10.1.1]\n"),
                 "svc.yaml:7: default/web-abc: endpoints[0].addresses[1]: \"10.1.1\" is not an "
                 "IP address"},
        BadInput{"SliceConditionNotABool",
                 Slice("endpoints:\n- addresses: [10.1.1.1]\n  conditions:\n    ready: maybe\n"),
                 "svc.yaml:9: default/web-abc: endpoints[0].conditions.ready: \"maybe\" is not "
                 "a bool (true or false)"},
        BadInput{"SliceConditionsIsAList",
                 Slice("endpoints:\n- addresses: [10.1.1.1]\n  conditions: [ready]\n"),
                 "svc.yaml:8: default/web-abc: endpoints[0].conditions: expected a map, found "
                 "a list"},
        BadInput{"SliceHintZoneNameIsAList",
                 Slice("endpoints:\n- addresses: [10.1.1.1]\n  hints:\n    forZones:\n    - name: [a]\n"),
                 "svc.yaml:10: default/web-abc: endpoints[0].hints.forZones[0].name: expected a string, "
                 "found a list"},
        BadInput{"SliceEndpointWithoutAddresses", Slice("endpoints:\n- nodeName: a\n"),
                 "svc.yaml:7: default/web-abc: endpoints[0].addresses: is required (at least "
                 "one address)"},
        BadInput{"SlicePortOutOfRange", Slice("ports:\n- name: http\n  port: -1\n"),
                 "svc.yaml:8: default/web-abc: ports[0].port: \"-1\" is out of range (1..65535)"},
        BadInput{"SliceUnknownAddressType",
                 "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\n"
                 "addressType: IPv5\n",
                 "svc.yaml:4: default/s: addressType: \"IPv5\" is not an address type (IPv4, "
                 "IPv6 or FQDN)"},
        BadInput{"SliceMissingAddressType",
                 "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\n",
                 "svc.yaml:1: default/s: addressType: is required (IPv4, IPv6 or FQDN)"},
        BadInput{"EndpointsBadIp", Eps("- addresses:\n  - ip: 10.1.1.1\n  - ip: bad\n"),
                 "svc.yaml:8: default/web: subsets[0].addresses[1].ip: \"bad\" is not an IP "
                 "address"},
        BadInput{"EndpointsNotReadyWithoutIp", Eps("- notReadyAddresses:\n  - nodeName: a\n"),
                 "svc.yaml:7: default/web: subsets[0].notReadyAddresses[0].ip: is required"},
        BadInput{"EndpointsPortWithoutNumber", Eps("- ports:\n  - name: http\n"),
                 "svc.yaml:7: default/web: subsets[0].ports[0].port: is required"},
        BadInput{"ListItemNotAMap", "apiVersion: v1\nkind: List\nitems:\n- 42\n",
                 "svc.yaml:4: List: items[0]: \"42\" is not a map"},
        BadInput{"ListItemsNotAList", "apiVersion: v1\nkind: List\nitems: {}\n",
                 "svc.yaml:3: List: items: expected a list, found a map"},
        BadInput{"ListItemWithoutKind",
                 "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  metadata:\n"
                 "    name: web\n",
                 "svc.yaml:4: default/web: kind: is required"},
        BadInput{"ListItemWithoutAnything", "apiVersion: v1\nkind: List\nitems:\n- {a: b}\n",
                 "svc.yaml:4: List items[0]: apiVersion: is required\n"
                 "svc.yaml:4: List items[0]: kind: is required"}),
    [](const ::testing::TestParamInfo<BadInput>& info) { return info.param.name; });

TEST(ManifestParserTest, OneBadObjectFailsTheWholeFile) {
  absl::StatusOr<ParseResult> r = ParseManifest(
      Svc("  ports:\n  - port: 80\n---\n") + Slice("endpoints:\n- addresses: [10.1.1.x]\n"),
      "mixed.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(r.status().message()),
            "mixed.yaml:15: default/web-abc: endpoints[0].addresses[0]: \"10.1.1.x\" is not an "
            "IP address");
}

TEST(ManifestParserTest, ReportsSeveralErrorsAtOnce) {
  EXPECT_EQ(ErrorOf(Svc("  type: Bad\n  ports:\n  - port: x\n")),
            "svc.yaml:6: default/web: spec.type: \"Bad\" is not a Service type (ClusterIP, "
            "NodePort, LoadBalancer or ExternalName)\n"
            "svc.yaml:8: default/web: spec.ports[0].port: \"x\" is not a port number");
}

TEST(ManifestParserTest, ManyErrorsAreCapped) {
  std::string content = Svc("  ports:\n");
  for (int i = 0; i < 30; ++i) content += "  - port: x\n";
  const std::string message = ErrorOf(content);
  EXPECT_THAT(message, HasSubstr("spec.ports[19].port"));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("spec.ports[20].port")));
  EXPECT_THAT(message, ::testing::EndsWith("\n... and 10 more errors"));
}

// Garbage must yield a Status, never an exception or a crash.
TEST(ManifestParserTest, GarbageNeverThrows) {
  for (std::string_view input :
       {std::string_view("\x00\x01\x02", 3), std::string_view("{{{{{{{{"),
        std::string_view("[[[[[[]"), std::string_view("key: &a [*a]"),
        std::string_view("? [a, b]\n: c\n"), std::string_view("apiVersion: v1\nkind: [List]\n"),
        std::string_view("apiVersion: v1\nkind: List\nitems:\n- kind: List\n  apiVersion: v1\n"
                         "  items: [~]\n"),
        std::string_view("\xEF\xBB\xBF{\"apiVersion\": 1, \"kind\": {}}")}) {
    absl::StatusOr<ParseResult> r = ParseManifest(input, "junk");
    if (!r.ok()) {
      EXPECT_THAT(r.status().message(), HasSubstr("junk")) << r.status();
    }
  }
  std::string deep(5000, '[');
  EXPECT_FALSE(ParseManifest(deep, "deep.json").ok());
  // Valid JSON too deep for yaml-cpp reaches the JSON fallback, which bounds it too.
  EXPECT_EQ(ErrorOf(deep + std::string(5000, ']'), "deep.json"),
            "deep.json: JSON nested deeper than 512 levels");
}

// ---------------------------------------------------------------- files

class ManifestFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kpx_parser_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    EXPECT_FALSE(ec) << ec.message();
  }
  std::string Write(const std::string& name, const std::string& content) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
  std::string dir_;
};

TEST_F(ManifestFileTest, ReadsAndNamesTheFile) {
  const std::string path = Write("svc.yaml", Svc("  ports:\n  - port: 80\n"));
  absl::StatusOr<ParseResult> r = ParseManifestFile(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->objects.services.at(0).meta.source.file, path);

  const std::string bad = Write("bad.yaml", Svc("  ports:\n  - port: 0\n"));
  r = ParseManifestFile(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), bad + ":7: default/web: spec.ports[0].port: \"0\" is out of "
                                        "range (1..65535)");
}

TEST_F(ManifestFileTest, MissingFileIsNotFound) {
  const std::string path = dir_ + "/nope.yaml";
  absl::StatusOr<ParseResult> r = ParseManifestFile(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(path));
}

TEST_F(ManifestFileTest, DirectoryIsAnError) {
  absl::StatusOr<ParseResult> r = ParseManifestFile(dir_);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(dir_));
}

TEST_F(ManifestFileTest, UnreadableFileIsPermissionDenied) {
  const std::string path = Write("secret.yaml", "a: b\n");
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  auto check = [&]() -> bool {
    absl::StatusOr<ParseResult> r = ParseManifestFile(path);
    return r.status().code() == absl::StatusCode::kPermissionDenied &&
           r.status().message().find(path) != absl::string_view::npos;
  };
  if (geteuid() != 0) {
    EXPECT_TRUE(check());
    return;
  }
  // Root reads files regardless of mode: check as an unprivileged user in a
  // child process so the test still runs on CI (root).
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(3);
    _exit(check() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "as uid 65534: expected PermissionDenied naming " << path;
}

}  // namespace
}  // namespace kpx::controller
