// Translate(): Kubernetes objects + this node -> the desired ServiceTable, with
// kube-proxy's semantics (pkg/proxy). A pure function: no I/O, no clock, no
// globals; `kpxctl render` prints exactly its output.
#pragma once

#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "controller/objects.h"
#include "controller/service_table.h"

namespace kpx::controller {

// All objects known at one instant, keyed by namespace/name.
struct ClusterState {
  absl::btree_map<NamespacedName, Service> services;
  absl::btree_map<NamespacedName, EndpointSlice> slices;     // keyed by slice name
  absl::btree_map<NamespacedName, Endpoints> endpoints;      // same key as the Service
};

// ObjectStore's effective objects: each points into the source that won it, so a
// Replace stores a file's objects once (copying 10k Services and slices into
// a second map was a third of a cold start's store + translate stage).
// Pointers stay valid until the next Replace/Remove.
struct StoreState {
  absl::btree_map<NamespacedName, const Service*> services;
  absl::btree_map<NamespacedName, const EndpointSlice*> slices;     // keyed by slice name
  absl::btree_map<NamespacedName, const Endpoints*> endpoints;      // same key as the Service
};

// The endpoint objects that belong to one Service.
struct ServiceEndpoints {
  std::vector<const EndpointSlice*> slices;  // label kubernetes.io/service-name, same namespace
  const Endpoints* legacy = nullptr;         // used only when `slices` is empty
};

// Why a Service produced no rules (kpxctl render lists these).
enum class SkipReason : uint8_t { kNone, kHeadless, kExternalName, kProxyName, kNoClusterIP };
const char* SkipReasonName(SkipReason r);

// Returns the reason a Service is not proxied at all, or kNone.
SkipReason ShouldSkip(const Service& svc);

// The rules of one Service: every port x frontend (ClusterIP, NodePort,
// externalIPs, LoadBalancer ingress). Pure; appends human-readable warnings
// (unsupported protocols, unusable addresses) naming the object and field.
std::vector<ServiceRule> TranslateService(const Service& svc, const ServiceEndpoints& eps,
                                          const NodeInfo& node,
                                          std::vector<std::string>* warnings);

struct TranslateResult {
  ServiceTable table;
  std::vector<std::string> warnings;
  absl::btree_map<NamespacedName, SkipReason> skipped;
};

// Groups slices/Endpoints by Service and translates every Service. Two
// Services claiming the same frontend: the one whose namespace/name sorts
// first keeps it, and a warning names both.
TranslateResult Translate(const ClusterState& state, const NodeInfo& node);
TranslateResult Translate(const StoreState& state, const NodeInfo& node);

// Index of slices by the Service they belong to (namespace + service-name label).
absl::btree_map<NamespacedName, ServiceEndpoints> IndexEndpoints(const ClusterState& state);

}  // namespace kpx::controller
