// ObjectStore merges the objects of many sources (manifest files, the API
// watch, admin-API applies) into one StoreState, and tells the caller which
// Services a change can affect, so only those are re-translated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "controller/objects.h"
#include "controller/translate.h"

namespace kpx::controller {

class ObjectStore {
 public:
  using ServiceSet = absl::btree_set<NamespacedName>;

  // Replaces everything `source` contributed with `objects`. When two sources
  // define the same object, the most recently replaced source wins, with a
  // warning: files given as `-f a -f b`, a directory's files in name order, or
  // a file rewritten later, behave like `kubectl apply` in that order.
  ServiceSet Replace(const std::string& source, ObjectSet objects);
  // Forgets `source` (file deleted).
  ServiceSet Remove(const std::string& source);

  bool HasSource(const std::string& source) const { return sources_.contains(source); }
  const StoreState& state() const { return state_; }

  // The slices / legacy Endpoints of one Service. Pointers are valid until the
  // next Replace/Remove.
  ServiceEndpoints EndpointsFor(const NamespacedName& service) const;

  // Warnings produced since the last call (duplicate definitions).
  std::vector<std::string> TakeWarnings();

 private:
  struct Source {
    uint64_t seq = 0;
    std::unique_ptr<ObjectSet> objects;
  };
  // For each object key: the contributing sources' objects, by source seq.
  template <typename T>
  using Candidates = absl::flat_hash_map<NamespacedName, absl::btree_map<uint64_t, const T*>>;

  template <typename T>
  void Withdraw(uint64_t seq, const std::vector<T>& objs, Candidates<T>* cands,
                absl::btree_map<NamespacedName, const T*>* effective, ServiceSet* affected);
  template <typename T>
  void Contribute(uint64_t seq, const std::vector<T>& objs, Candidates<T>* cands,
                  absl::btree_map<NamespacedName, const T*>* effective, ServiceSet* affected);
  void IndexSlice(const EndpointSlice& slice, bool add);

  uint64_t next_seq_ = 1;
  absl::flat_hash_map<std::string, Source> sources_;
  Candidates<Service> service_cands_;
  Candidates<EndpointSlice> slice_cands_;
  Candidates<Endpoints> endpoints_cands_;
  StoreState state_;
  // Service -> names of its slices (label kubernetes.io/service-name).
  absl::btree_map<NamespacedName, absl::btree_set<NamespacedName>> slices_by_service_;
  std::vector<std::string> warnings_;
};

// The Service an EndpointSlice belongs to ({} when it carries no label).
NamespacedName OwningService(const EndpointSlice& slice);

}  // namespace kpx::controller
