// The Kubernetes objects kpx reads: Service (v1), EndpointSlice
// (discovery.k8s.io/v1) and legacy Endpoints (v1), reduced to the fields that
// kube-proxy's semantics read. Decoded by manifest_parser.h (files) and, later,
// by the API watch source; consumed only by translate.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/hash/hash.h"

namespace kpx::controller {

// Where an object came from, so every error and warning can name it.
struct SourceRef {
  std::string file;    // path as given, or "api" for the watch source
  int line = 0;        // 1-based line of the object's first key, 0 if unknown
  int document = 0;    // 0-based document index in a multi-document file
  std::string String() const;  // "svc.yaml:14" or "svc.yaml (document 2)"
};

struct NamespacedName {
  std::string ns;
  std::string name;
  std::string String() const { return ns + "/" + name; }
  friend bool operator==(const NamespacedName&, const NamespacedName&) = default;
  friend auto operator<=>(const NamespacedName&, const NamespacedName&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const NamespacedName& n) {
    return H::combine(std::move(h), n.ns, n.name);
  }
};

struct ObjectMeta {
  NamespacedName id;  // namespace defaults to "default"
  absl::btree_map<std::string, std::string> labels;
  absl::btree_map<std::string, std::string> annotations;
  std::string resource_version;
  SourceRef source;
};

enum class Protocol : uint8_t { kTCP, kUDP, kSCTP };
const char* ProtocolName(Protocol p);

// ---------------------------------------------------------------- Service

struct ServicePort {
  std::string name;  // "" when the Service has a single unnamed port
  Protocol protocol = Protocol::kTCP;
  int32_t port = 0;
  // targetPort as written (number or named container port). Informational:
  // the port actually used comes from the EndpointSlice, as in kube-proxy.
  std::string target_port;
  int32_t node_port = 0;  // 0 = none
};

enum class ServiceType : uint8_t { kClusterIP, kNodePort, kLoadBalancer, kExternalName };
const char* ServiceTypeName(ServiceType t);

enum class TrafficPolicy : uint8_t { kCluster, kLocal };

struct LoadBalancerIngress {
  std::string ip;        // may be empty (hostname-only ingress)
  std::string hostname;
  std::string ip_mode;   // "", "VIP" or "Proxy" (kube-proxy skips "Proxy")
};

struct Service {
  ObjectMeta meta;
  ServiceType type = ServiceType::kClusterIP;
  std::string cluster_ip;                 // spec.clusterIP ("None" = headless)
  std::vector<std::string> cluster_ips;   // spec.clusterIPs (dual-stack)
  bool has_selector = false;
  std::vector<ServicePort> ports;
  std::vector<std::string> external_ips;
  std::vector<LoadBalancerIngress> lb_ingress;  // status.loadBalancer.ingress
  TrafficPolicy external_traffic_policy = TrafficPolicy::kCluster;
  TrafficPolicy internal_traffic_policy = TrafficPolicy::kCluster;
  bool session_affinity_client_ip = false;
  int32_t affinity_timeout_s = 10800;     // sessionAffinityConfig.clientIP.timeoutSeconds
  std::string external_name;
};

// ---------------------------------------------------------- EndpointSlice

struct EndpointConditions {
  std::optional<bool> ready;        // unset means ready
  std::optional<bool> serving;      // unset means serving (kube-proxy's reading)
  std::optional<bool> terminating;  // unset means false
  bool IsReady() const { return ready.value_or(true); }
  bool IsServing() const { return serving.value_or(true); }
  bool IsTerminating() const { return terminating.value_or(false); }
};

struct Endpoint {
  std::vector<std::string> addresses;  // kube-proxy uses addresses[0]
  EndpointConditions conditions;
  std::string node_name;               // "" = unknown
  std::string zone;
  std::vector<std::string> hint_zones;  // hints.forZones[].name
};

struct EndpointPort {
  std::optional<std::string> name;  // unset is the same as "" for matching
  Protocol protocol = Protocol::kTCP;
  std::optional<int32_t> port;      // unset: "all ports" (ignored by kube-proxy)
};

struct EndpointSlice {
  ObjectMeta meta;
  std::string service_name;  // label kubernetes.io/service-name ("" = orphan)
  std::string address_type;  // "IPv4", "IPv6" or "FQDN"
  std::vector<Endpoint> endpoints;
  std::vector<EndpointPort> ports;
};

// -------------------------------------------------------- Endpoints (legacy)

struct EndpointAddress {
  std::string ip;
  std::string node_name;
};

struct EndpointsSubset {
  std::vector<EndpointAddress> addresses;            // ready
  std::vector<EndpointAddress> not_ready_addresses;  // not ready
  std::vector<EndpointPort> ports;
};

struct Endpoints {
  ObjectMeta meta;  // same namespace/name as its Service
  std::vector<EndpointsSubset> subsets;
};

// Everything one source (a file, an API list) contributed.
struct ObjectSet {
  std::vector<Service> services;
  std::vector<EndpointSlice> slices;
  std::vector<Endpoints> endpoints;
};

}  // namespace kpx::controller
