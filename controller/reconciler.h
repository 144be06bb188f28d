// Reconciler: owns the object store, the desired table and the "applied"
// table, and programs a Dataplane with diffs. A change re-translates only the
// Services it can affect and diffs only their frontends, so one endpoint change
// is O(1) dataplane work (kube-proxy's iptables mode rewrites the world).
// Not thread-safe: one reconcile thread owns it (see DESIGN.md).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "controller/diff.h"
#include "controller/object_store.h"
#include "controller/service_table.h"
#include "dataplane/dataplane.h"

namespace kpx::controller {

struct ReconcilerStats {
  uint64_t syncs = 0;              // Apply calls that succeeded
  uint64_t sync_errors = 0;        // Apply calls that failed (retried by Resync)
  // Of those, the ones the dataplane refused for lack of room (a full BPF
  // map: ResourceExhausted). Existing rules keep serving meanwhile.
  uint64_t capacity_errors = 0;
  std::string last_error;          // of the last failed Apply; "" once one succeeds
  uint64_t endpoint_changes = 0;   // upserts + removals sent
  uint64_t service_changes = 0;    // Services re-translated because a source changed them
  absl::Duration last_sync_duration;  // translate + diff + Apply of the last sync
  absl::Duration last_apply_duration;  // of which the dataplane's Apply
  absl::Time last_sync_time;
  absl::Time last_success_time = absl::InfinitePast();  // of the last Apply that succeeded
  size_t frontends = 0;
  size_t services = 0;
};

// A backend address as the health overlay names it.
struct BackendAddr {
  Ipv4 ip;
  uint16_t port = 0;
  friend bool operator==(const BackendAddr&, const BackendAddr&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BackendAddr& b) {
    return H::combine(std::move(h), b.ip, b.port);
  }
};

// Operator overrides of one Service's backends (kpxctl endpoints / drain),
// applied on top of what the EndpointSlices say, to every port of the Service.
struct EndpointOverride {
  std::optional<std::vector<BackendAddr>> set;  // replaces the slice-derived backends
  std::vector<BackendAddr> add;                 // appended (ready) if absent
  std::vector<BackendAddr> remove;              // dropped
  std::vector<BackendAddr> drain;               // kept for existing flows, no new ones
  bool empty() const { return !set && add.empty() && remove.empty() && drain.empty(); }
  friend bool operator==(const EndpointOverride&, const EndpointOverride&) = default;
};

class Reconciler {
 public:
  Reconciler(NodeInfo node, dataplane::Dataplane* dataplane);

  // Replaces a source's objects (a manifest file, an API list) and programs
  // the dataplane. On a dataplane error the desired state is kept and the
  // error returned; call Resync() to retry.
  absl::Status Update(const std::string& source, ObjectSet objects);
  absl::Status RemoveSource(const std::string& source);

  // Several source changes programmed as one diff (start-up, a burst of file
  // events): one Apply instead of one per file.
  struct SourceChange {
    std::string source;
    std::optional<ObjectSet> objects;  // nullopt = remove the source
  };
  absl::Status UpdateMany(std::vector<SourceChange> changes);

  // Health overlay: marks a backend down/up everywhere it is used. The rule
  // keeps the backend (healthy=false) so dataplanes can bring it back cheaply.
  absl::Status SetBackendHealth(BackendAddr backend, bool healthy);

  // Replaces (or with nullopt removes) the override of one Service and
  // programs the result. The Service need not exist yet.
  absl::Status SetOverride(const NamespacedName& service, std::optional<EndpointOverride> o);
  const absl::btree_map<NamespacedName, EndpointOverride>& overrides() const { return overrides_; }

  // Sends Diff(desired, applied) in full: after an Apply error, or to check.
  absl::Status Resync();

  const ServiceTable& desired() const { return desired_; }
  const ServiceTable& applied() const { return applied_; }
  const ObjectStore& store() const { return store_; }
  const ReconcilerStats& stats() const { return stats_; }
  bool in_sync() const { return !dirty_all_; }
  // The desired rules `service` owns (frontends it lost to another Service
  // left out), unordered. O(its frontends): the admin API answers for one
  // Service without walking the table.
  std::vector<const ServiceRule*> DesiredRulesOf(const NamespacedName& service) const;
  // Frontends whose desired rule was recomputed (added, changed, removed)
  // since the last call, so per-change bookkeeping (kpxd's fail-open
  // accounting) looks at those only. At most one entry per frontend.
  std::vector<FrontendKey> TakeChangedFrontends();
  std::vector<std::string> TakeWarnings();
  // Called with the duration of every successful Apply (metrics histograms).
  void set_sync_observer(std::function<void(absl::Duration)> fn) { sync_observer_ = std::move(fn); }

 private:
  // Re-translates `services`, updates desired_, and programs the frontends
  // that changed.
  absl::Status Sync(const ObjectStore::ServiceSet& services);
  // The rules `service` produces now (translation, overrides, health):
  // reads the store and overlays only, so Sync runs it for many services
  // at once on worker threads. nullopt: the Service is gone or skipped.
  std::optional<std::vector<ServiceRule>> ComputeRules(const NamespacedName& service,
                                                       std::vector<std::string>* warnings) const;
  // Replaces `service`'s rules (and its claims and backend index entries)
  // with `rules`, noting every frontend either set had in `touched`.
  void RetranslateService(const NamespacedName& service, std::optional<std::vector<ServiceRule>> rules,
                          absl::btree_set<FrontendKey>* touched);
  void ApplyHealth(ServiceRule* rule) const;
  void ApplyOverride(const EndpointOverride& o, ServiceRule* rule) const;
  absl::Status Program(TableDiff diff, absl::Time start);

  // A sorted set of Service names that is almost always one name: inline, no
  // allocation (a btree_set per backend was ~100k allocations at a 10k-Service
  // cold start).
  using NameSet = absl::InlinedVector<NamespacedName, 1>;
  static void AddName(NameSet* set, const NamespacedName& name);
  static void RemoveName(NameSet* set, const NamespacedName& name);

  NodeInfo node_;
  dataplane::Dataplane* dataplane_;
  ObjectStore store_;
  // The rules each Service produced (before conflict resolution).
  absl::flat_hash_map<NamespacedName, std::vector<ServiceRule>> rules_by_service_;
  // Every Service claiming a frontend; the first (sorted) one owns it.
  absl::flat_hash_map<FrontendKey, NameSet> claims_;
  absl::flat_hash_set<BackendAddr> unhealthy_;
  absl::btree_map<NamespacedName, EndpointOverride> overrides_;
  // Backend -> Services using it, for the health overlay.
  absl::flat_hash_map<BackendAddr, NameSet> services_by_backend_;
  ServiceTable desired_;
  ServiceTable applied_;
  bool dirty_all_ = false;  // an Apply failed: applied_ may lag desired_
  // Frontends of failed Applies: the dataplane may have programmed some of
  // those operations (Apply continues past a failing one), so applied_ does
  // not know whether they exist there. Resync removes the ones no longer
  // desired even if applied_ never had them (removals are idempotent).
  absl::btree_set<FrontendKey> uncertain_;
  ReconcilerStats stats_;
  absl::flat_hash_set<FrontendKey> changed_;  // see TakeChangedFrontends
  std::vector<std::string> warnings_;
  std::function<void(absl::Duration)> sync_observer_;
};

}  // namespace kpx::controller
