// The desired virtual-IP rules: what Translate() produces from objects and what
// every dataplane consumes. Dataplanes see only these types, never Kubernetes
// objects. One ServiceRule per frontend (VIP:port/proto, or *:nodePort).
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/btree_map.h"
#include "controller/base/ipv4.h"
#include "controller/objects.h"

namespace kpx::controller {

// kube-proxy's ServicePortName: "ns/name:port" ("ns/name" for an unnamed port).
struct ServicePortName {
  NamespacedName service;
  std::string port;
  Protocol protocol = Protocol::kTCP;
  std::string String() const;
  friend bool operator==(const ServicePortName&, const ServicePortName&) = default;
  friend auto operator<=>(const ServicePortName&, const ServicePortName&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const ServicePortName& n) {
    return H::combine(std::move(h), n.service, n.port, n.protocol);
  }
};

enum class FrontendType : uint8_t { kClusterIP, kNodePort, kExternalIP, kLoadBalancer };
const char* FrontendTypeName(FrontendType t);

// The identity of a frontend in every dataplane. A NodePort has ip 0.0.0.0
// (any local address).
struct FrontendKey {
  Ipv4 ip;
  uint16_t port = 0;
  Protocol protocol = Protocol::kTCP;
  std::string String() const;  // "10.96.0.1:443/TCP", "*:30080/TCP"
  friend bool operator==(const FrontendKey&, const FrontendKey&) = default;
  friend bool operator<(const FrontendKey& a, const FrontendKey& b) {
    return std::tuple(a.ip.host(), a.port, a.protocol) < std::tuple(b.ip.host(), b.port, b.protocol);
  }
  template <typename H>
  friend H AbslHashValue(H h, const FrontendKey& k) {
    return H::combine(std::move(h), k.ip, k.port, k.protocol);
  }
};

struct Backend {
  Ipv4 ip;
  uint16_t port = 0;
  std::string node;  // nodeName ("" = unknown)
  std::string zone;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
  // Health overlay (dataplane/health): a backend that failed its checks stays
  // in the rule, marked down, so it can come back without a table rebuild.
  bool healthy = true;
  friend bool operator==(const Backend&, const Backend&) = default;
};

struct ServiceRule {
  ServicePortName service;
  FrontendType type = FrontendType::kClusterIP;
  FrontendKey frontend;
  uint32_t affinity_timeout_s = 0;  // 0 = no ClientIP affinity
  bool local_only = false;           // traffic policy Local applied to this frontend
  bool supported = true;             // false: protocol the dataplanes do not serve yet
  // The backend set kube-proxy would use for this frontend, sorted by (ip, port).
  std::vector<Backend> backends;
  // Serving + terminating endpoints that are not in `backends` (ready ones
  // exist): never picked for new flows, but their established flows must
  // finish, as they do with kube-proxy's conntrack. A dataplane that tracks
  // backend lifetimes (the eBPF one) keeps them alive while listed here.
  std::vector<Backend> draining;
  // Annotations of the Service that dataplanes/health read (kpx.io/*).
  absl::btree_map<std::string, std::string> annotations;
  friend bool operator==(const ServiceRule&, const ServiceRule&) = default;
};

// Ordered by frontend so diffs and prints are deterministic.
using ServiceTable = absl::btree_map<FrontendKey, ServiceRule>;

// Who runs the node: endpoint locality and topology hints depend on it.
struct NodeInfo {
  std::string name;
  std::string zone;  // "" = unknown (topology hints then ignored)
};

}  // namespace kpx::controller
